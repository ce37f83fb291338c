"""The move of a function's Lambda settings and drift state to its environments
(migrations 0016 to 0018), on a database as main left it (0015): each function gets
one environment, `production`, holding every value as it was (secret variables as
stored), every deployment points at it, its drift state moves with it; and the way
back puts it all on the function again."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from portal.core import crypto

BEFORE = ("portal", "0015_function_one_concern")
MOVED = ("lambda_name", "alias", "memory_mb", "timeout_s", "secret_keys", "execution_role_arn", "paused_reason")
DRIFT = ("expected_state", "drift_observed", "drift_fingerprint", "drift_detected_at", "drift_checked_at")


def _settings(n: int) -> dict:
    """Every moved field of function `n`; a secret variable's value is stored as written
    (here a Fernet token, to show it is copied byte for byte, never opened)."""
    return {"lambda_name": f"slipway-fn-{n}", "alias": "live" if n == 1 else f"prod-{n}", "memory_mb": 256 * n,
            "timeout_s": 10 * n, "environment": {"MODE": "fast", "API_KEY": crypto.encrypt(f"key-{n}")},
            "secret_keys": ["API_KEY"], "execution_role_arn": f"arn:aws:iam::000000000000:role/fn-{n}",
            "paused_reason": "rolled back to version 1 by ann" if n == 1 else ""}


def _drift(n: int) -> dict:
    expected = {"alias_version": str(n), "image_digest": "sha256:" + str(n) * 64, "memory_mb": 256 * n,
                "timeout_s": 10 * n, "architecture": "arm64", "environment": {"MODE": "fast", "API_KEY": f"key-{n}"}}
    return {"expected_state": expected, "drift_observed": {**expected, "memory_mb": 1024},
            "drift_fingerprint": f"{n}" * 64, "drift_detected_at": datetime(2026, 11, n, 13, 0, 0, 654321, tzinfo=UTC),
            "drift_checked_at": datetime(2026, 11, n, 14, 0, 0, tzinfo=UTC)}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_each_function_becomes_one_production_environment_with_every_value_and_the_way_back_restores_it(
        migrations):
    old = migrations(BEFORE)
    Fn, Build, Deployment = (old.get_model("portal", name) for name in ("Function", "Build", "Deployment"))
    OldDrift = old.get_model("portal", "DriftState")
    stored = {n: _settings(n) for n in (1, 2)}
    made = {n: Fn.objects.create(name=f"fn-{n}", repository_url=f"https://gitlab.example.com/team/fn-{n}.git",
                                 ecr_repository=f"slipway/fn-{n}", **stored[n]) for n in (1, 2)}
    bare = Fn.objects.create(name="bare", repository_url="https://gitlab.example.com/team/bare.git",
                             ecr_repository="slipway/bare", lambda_name="slipway-bare")
    for n, function in made.items():
        OldDrift.objects.create(function_id=function.pk, **_drift(n))
    OldDrift.objects.create(function_id=bare.pk)
    rows = {}
    for function in (*made.values(), bare):
        build = Build.objects.create(function=function, commit_sha="c" * 40, architecture="arm64",
                                     inputs_digest=f"{function.pk:064x}", status="succeeded",
                                     digest="sha256:" + "d" * 64)
        rows[function.pk] = [Deployment.objects.create(function=function, build=build, trigger="cli", status=status,
                                                       version=str(v)).pk
                             for v, status in enumerate(("succeeded", "failed", "queued"), start=1)]

    new = migrations()
    Env = new.get_model("portal", "Environment")
    assert Env.objects.count() == 3
    for n, function in made.items():
        env = Env.objects.get(function_id=function.pk)
        assert (env.name, env.position) == ("production", 0)
        expected = {**{f: stored[n][f] for f in MOVED}, "variables": stored[n]["environment"]}
        assert {f: getattr(env, f) for f in expected} == expected, n
        # The secret value as stored (never opened and sealed again), and it still opens.
        assert env.variables["API_KEY"] == stored[n]["environment"]["API_KEY"]
        assert crypto.decrypt(env.variables["API_KEY"]) == f"key-{n}"
    env = Env.objects.get(function_id=bare.pk)
    assert {f: getattr(env, f) for f in (*MOVED, "variables")} == {
        **{f: getattr(Fn(), f) for f in MOVED if f != "lambda_name"}, "lambda_name": "slipway-bare",
        "variables": {}}  # the defaults, as the bare function had them
    NewDeployment = new.get_model("portal", "Deployment")
    for function_id, pks in rows.items():
        env_pk = Env.objects.get(function_id=function_id).pk
        assert list(NewDeployment.objects.filter(pk__in=pks).values_list("environment_id", flat=True)) == [env_pk] * 3
    Drift = new.get_model("portal", "DriftState")
    for n, function in made.items():
        drift = Drift.objects.get(environment__function_id=function.pk)
        assert {f: getattr(drift, f) for f in DRIFT} == _drift(n), n
    assert Drift.objects.get(environment__function_id=bare.pk).expected_state == {}
    assert Drift.objects.count() == 3
    fields = {f.name for f in new.get_model("portal", "Function")._meta.get_fields()}
    assert not fields & {*MOVED, "environment", "drift_state"}
    assert not NewDeployment._meta.get_field("environment").null

    back = migrations(BEFORE)
    Fn = back.get_model("portal", "Function")
    assert Fn._meta.get_field("lambda_name").unique  # unique on the function again
    for n, function in made.items():
        again = Fn.objects.get(pk=function.pk)
        assert {f: getattr(again, f) for f in stored[n]} == stored[n], n
        drift = back.get_model("portal", "DriftState").objects.get(function_id=function.pk)
        assert {f: getattr(drift, f) for f in DRIFT} == _drift(n), n
    assert Fn.objects.get(pk=bare.pk).lambda_name == "slipway-bare"
    assert "environment" not in {f.name for f in back.get_model("portal", "Deployment")._meta.get_fields()}
