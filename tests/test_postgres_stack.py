"""The private Postgres cluster's choices, checked without starting a server."""

import os

import pytest

from devstack import postgres, stack
from devstack.__main__ import postgres_pass_args
from devstack.common import StackError

ME = postgres.Account("me", os.getuid(), os.getgid(), frozenset({os.getgid()}))
STRANGER = postgres.Account("stranger", 54321, 54321, frozenset({54321}))


def test_it_keeps_the_cluster_under_the_state_dir_when_the_server_user_can_reach_it(tmp_path):
    profile_dir = tmp_path / "var" / "test"
    profile_dir.mkdir(parents=True)
    assert postgres.cluster_dir(profile_dir, ME) == profile_dir.resolve() / "postgres"


def test_it_moves_the_cluster_to_a_per_checkout_dir_when_an_ancestor_is_not_traversable(tmp_path):
    home = tmp_path / "home"
    (home / "ci" / "var" / "test").mkdir(parents=True)
    (home / "other" / "var" / "test").mkdir(parents=True)
    home.chmod(0o700)
    chosen = postgres.cluster_dir(home / "ci" / "var" / "test", STRANGER, fallback_root=tmp_path / "vartmp")
    assert chosen.parent == tmp_path / "vartmp"
    assert chosen.name.startswith("slipway-postgres-test-")
    assert chosen == postgres.cluster_dir(home / "ci" / "var" / "test", STRANGER, fallback_root=tmp_path / "vartmp")
    assert chosen != postgres.cluster_dir(home / "other" / "var" / "test", STRANGER, fallback_root=tmp_path / "vartmp")


def test_it_judges_a_directory_by_its_owner_bits_when_the_server_user_owns_it(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o671)  # others may search it, its owner may not
    assert not postgres.can_traverse(locked, ME)
    locked.chmod(0o700)
    assert postgres.can_traverse(locked, ME)


def test_it_binds_only_to_127_0_0_1_and_trusts_only_that_address():
    conf = postgres.server_conf(5499, "/srv/cluster", throwaway=True)
    assert [line for line in conf.splitlines() if line.startswith("listen_addresses")] == [
        "listen_addresses = '127.0.0.1'"]
    assert "port = 5499" in conf.splitlines()
    rules = [line.split() for line in postgres.HBA.splitlines() if line and not line.startswith("#")]
    assert rules == [["host", "all", "all", "127.0.0.1/32", "trust"]]


def test_it_turns_durability_off_only_for_a_throwaway_cluster():
    fast = {"fsync = off", "synchronous_commit = off", "full_page_writes = off"}
    assert fast <= set(postgres.server_conf(5499, "", throwaway=True).splitlines())
    assert not fast & set(postgres.server_conf(5432, "", throwaway=False).splitlines())


def test_it_puts_the_socket_in_the_cluster_dir_unless_the_path_is_too_long(tmp_path):
    assert postgres.socket_dir_for(tmp_path, 5499) == str(tmp_path)
    assert postgres.socket_dir_for(tmp_path / ("x" * 120), 5499) == ""


def test_it_refuses_a_cluster_dir_that_is_a_symlink(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "cluster").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StackError, match="is not a directory"):
        postgres._own(tmp_path / "cluster", ME)


def test_it_runs_only_the_postgres_tests_in_the_second_pass_within_the_users_selection():
    assert postgres_pass_args([]) == ["-m", "postgres"]
    assert postgres_pass_args(["tests/test_models.py", "-x"]) == ["-m", "postgres", "tests/test_models.py", "-x"]
    assert postgres_pass_args(["-m", "not integration", "-q"]) == ["-m", "postgres and (not integration)", "-q"]
    assert postgres_pass_args(["-mintegration"]) == ["-m", "postgres and (integration)"]


def test_it_gives_tests_the_cluster_url_but_leaves_database_url_to_sqlite(monkeypatch):
    monkeypatch.setattr(stack, "_gateway_or_empty", lambda: "")
    monkeypatch.delenv("SLIPWAY_TEST_PG_PORT", raising=False)
    env = stack.portal_env(stack.Profile.for_test())
    assert env["SLIPWAY_TEST_POSTGRES_URL"] == "postgres://slipway@127.0.0.1:5499/slipway"
    assert "DATABASE_URL" not in env
