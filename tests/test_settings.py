import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from devstack.common import REPO_ROOT
from portal.core import env


def test_it_reads_booleans(monkeypatch):
    monkeypatch.setenv("X_FLAG", "Yes")
    assert env.env_bool("X_FLAG") is True
    monkeypatch.setenv("X_FLAG", "off")
    assert env.env_bool("X_FLAG", True) is False


def test_it_rejects_a_bad_boolean_naming_the_variable(monkeypatch):
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match=r"X_FLAG='maybe' is not a boolean"):
        env.env_bool("X_FLAG")


def test_it_rejects_a_non_integer_and_out_of_range_values(monkeypatch):
    monkeypatch.setenv("X_N", "ten")
    with pytest.raises(ImproperlyConfigured, match="X_N='ten' is not an integer"):
        env.env_int("X_N", 1)
    monkeypatch.setenv("X_N", "3")
    with pytest.raises(ImproperlyConfigured, match="X_N=3 is below the minimum 10"):
        env.env_int("X_N", 1, minimum=10)


def test_it_rejects_a_url_with_the_wrong_scheme_without_echoing_the_password(monkeypatch):
    monkeypatch.setenv("X_URL", "http://user:hunter2@host:1/0")
    with pytest.raises(ImproperlyConfigured) as info:
        env.env_url("X_URL", schemes=("redis",))
    assert "X_URL must be a URL with scheme redis" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_it_uses_sqlite_by_default_and_postgres_from_database_url(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert env.database_from_url("DATABASE_URL", "/tmp/x.db")["ENGINE"] == "django.db.backends.sqlite3"
    monkeypatch.setenv("DATABASE_URL", "postgres://slip:p%40ss@db.internal:5433/slipway")
    db = env.database_from_url("DATABASE_URL", "/tmp/x.db")
    assert (db["ENGINE"], db["HOST"], db["PORT"], db["NAME"], db["USER"], db["PASSWORD"]) == (
        "django.db.backends.postgresql", "db.internal", "5433", "slipway", "slip", "p@ss")


def test_it_rejects_a_postgres_url_without_a_database_name(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://slip@db.internal:5432/")
    with pytest.raises(ImproperlyConfigured, match="names no database"):
        env.database_from_url("DATABASE_URL", "/tmp/x.db")


def _load_settings(**overrides):
    """Import the real settings module in a clean interpreter with `overrides`."""
    clean = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "portal.settings", **overrides}
    return subprocess.run([sys.executable, "-c", "import django; django.setup()"], env=clean, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)


def test_settings_refuse_to_start_without_a_secret_key_outside_local_mode():
    done = _load_settings()
    assert done.returncode != 0
    assert "ImproperlyConfigured: DJANGO_SECRET_KEY is required unless SLIPWAY_LOCAL=1" in done.stderr


def test_settings_refuse_a_hard_time_limit_below_the_soft_one(tmp_path):
    done = _load_settings(SLIPWAY_LOCAL="1", SLIPWAY_STATE_DIR=str(tmp_path),
                          SLIPWAY_TASK_SOFT_TIME_LIMIT="600", SLIPWAY_TASK_TIME_LIMIT="300")
    assert "SLIPWAY_TASK_TIME_LIMIT must be greater than SLIPWAY_TASK_SOFT_TIME_LIMIT" in done.stderr


def test_settings_start_in_local_mode_with_defaults(tmp_path):
    done = _load_settings(SLIPWAY_LOCAL="1", SLIPWAY_STATE_DIR=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_celery_visibility_timeout_outlasts_the_longest_task(settings):
    from portal.celery import app

    assert app.conf.task_acks_late is True
    assert app.conf.worker_prefetch_multiplier == 1
    for options in (app.conf.broker_transport_options, app.conf.result_backend_transport_options):
        assert options["visibility_timeout"] > app.conf.task_time_limit > app.conf.task_soft_time_limit


@pytest.mark.parametrize("raw", ["1", "true", "True", "yes", "on"])
def test_the_testing_switch_reads_like_every_other_boolean(monkeypatch, tmp_path, raw):
    from deploy import aws

    monkeypatch.setenv("SLIPWAY_FAULTS_FILE", str(tmp_path / "faults.json"))
    monkeypatch.setenv("SLIPWAY_TESTING", raw)
    aws.reset()
    try:
        assert aws.client("lambda") is not None  # fault injection accepted, not refused
    finally:
        aws.reset()
    assert env.env_bool("SLIPWAY_TESTING") is True


def test_fault_injection_is_refused_when_testing_is_off(monkeypatch, tmp_path):
    from deploy import aws

    monkeypatch.setenv("SLIPWAY_FAULTS_FILE", str(tmp_path / "faults.json"))
    monkeypatch.setenv("SLIPWAY_TESTING", "false")
    aws.reset()
    with pytest.raises(RuntimeError, match="test-only switch"):
        aws.client("lambda")
    aws.reset()


def test_a_sqlite_database_url_names_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/portal.sqlite3")
    database = env.database_from_url("DATABASE_URL", "/unused")
    assert (database["ENGINE"], database["NAME"]) == ("django.db.backends.sqlite3", f"{tmp_path}/portal.sqlite3")


def test_a_postgres_database_url_still_needs_a_host(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres:///slipway")
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL must be a URL"):
        env.database_from_url("DATABASE_URL", "/unused")


def test_production_settings_pass_the_deploy_checks_with_no_warning(tmp_path):
    env = {"DJANGO_SECRET_KEY": "k" * 30 + "0123456789abcdefghij", "DJANGO_ALLOWED_HOSTS": "slipway.example.org",
           "DATABASE_URL": f"sqlite:////{tmp_path}/db.sqlite3", "SLIPWAY_STATE_DIR": str(tmp_path),
           "SLIPWAY_BEHIND_TLS_PROXY": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "no issues" in done.stdout


def test_a_short_secret_key_is_refused(tmp_path):
    done = _load_settings(DJANGO_SECRET_KEY="x" * 40, SLIPWAY_STATE_DIR=str(tmp_path))
    assert "DJANGO_SECRET_KEY must be at least 50 random characters" in done.stderr


def test_log_lines_are_json_with_the_deployment_and_no_secret():
    import json
    import logging

    from portal.core.jsonlog import JsonFormatter, bound

    record = logging.LogRecord("workers", logging.WARNING, __file__, 1, "login with password=hunter22 failed",
                               None, None)
    with bound(deployment=42, function="detector"):
        line = json.loads(JsonFormatter().format(record))
    assert (line["deployment"], line["function"], line["level"]) == (42, "detector", "warning")
    assert "hunter22" not in line["message"]


def test_local_mode_keeps_a_private_fernet_key_in_the_state_dir(tmp_path):
    done = _load_settings(SLIPWAY_LOCAL="1", SLIPWAY_STATE_DIR=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "fernet_key").stat().st_mode & 0o077 == 0


def test_settings_refuse_a_fernet_key_that_is_not_one_without_echoing_it(tmp_path):
    done = _load_settings(SLIPWAY_LOCAL="1", SLIPWAY_STATE_DIR=str(tmp_path), SLIPWAY_FERNET_KEY="hunter2-key")
    assert "SLIPWAY_FERNET_KEY holds a value that is not a Fernet key" in done.stderr
    assert "hunter2" not in done.stderr


def test_a_new_fernet_key_first_still_reads_what_the_old_one_sealed(settings):
    from cryptography.fernet import Fernet

    from portal.core import crypto

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.SLIPWAY_FERNET_KEYS = [old]
    sealed = crypto.encrypt("whsec_c2VjcmV0")
    settings.SLIPWAY_FERNET_KEYS = [new, old]
    assert crypto.decrypt(sealed) == "whsec_c2VjcmV0"
    settings.SLIPWAY_FERNET_KEYS = [new]
    with pytest.raises(crypto.Unavailable):
        crypto.decrypt(sealed)
