"""The embedded stack refuses clearly and leaves nothing half-started."""

import os
import socket
import sys
from unittest import mock

import pytest

from devstack import stack, system
from devstack.common import StackError
from devstack.runner import Runner, Service
from tests.conftest import free_port


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_a_service_that_dies_while_starting_stops_the_run_with_its_last_line(tmp_path):
    with Runner(log_dir=tmp_path, echo=False) as runner:
        runner.start(Service("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"]))
        sleeper = runner.procs[0][1]
        with pytest.raises(StackError, match="broken exited with 3 while starting: config file is missing"):
            runner.start(Service("broken", [sys.executable, "-c",
                                            "import sys; print('config file is missing'); sys.exit(3)"]))
    assert sleeper.poll() is not None
    assert "config file is missing" in (tmp_path / "broken.log").read_text()


def test_a_taken_port_stops_the_stack_before_anything_starts(tmp_path, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        profile = stack.Profile("test", redis_port=port, aws_port=free_port(), web_port=free_port(), persist=False)
        with Runner(log_dir=tmp_path, echo=False) as runner:
            with pytest.raises(StackError, match=rf"port 127.0.0.1:{port} for Redis is already in use"):
                stack.start_infrastructure(runner, profile)
            assert runner.procs == []


def test_a_later_failure_stops_what_already_started(tmp_path, monkeypatch):
    monkeypatch.setattr(stack, "plane_venv", lambda: tmp_path / "no-such-venv")
    profile = stack.Profile("test", redis_port=free_port(), aws_port=free_port(), web_port=free_port(), persist=False)
    with Runner(log_dir=tmp_path, echo=False) as runner:
        with pytest.raises(StackError, match="aws: .*no-such-venv/bin/ministack not found"):
            stack.start_infrastructure(runner, profile)
        redis_pid = runner.procs[0][1].pid
    assert not _alive(redis_pid) or open(f"/proc/{redis_pid}/stat").read().split()[2] == "Z"


def test_it_lists_missing_packages_and_how_to_install_them_when_not_root(monkeypatch):
    monkeypatch.setattr(system, "which", lambda name: None if name == "mmdebstrap" else "/usr/bin/" + name)
    monkeypatch.setattr(system, "is_root", lambda: False)
    wanted = r"missing Debian packages: mmdebstrap — run: sudo apt-get install -y mmdebstrap"
    with pytest.raises(StackError, match=wanted):
        system.ensure_packages()


def test_a_bad_port_variable_is_refused(monkeypatch):
    monkeypatch.setenv("SLIPWAY_TEST_AWS_PORT", "80")
    with pytest.raises(StackError, match="SLIPWAY_TEST_AWS_PORT='80' is not a port number"):
        stack.Profile.for_test()


def test_it_installs_the_pinned_axe_core_once_and_exports_its_path(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIPWAY_STATE_DIR", str(tmp_path))

    def npm_install(args, **kwargs):  # what `npm install --prefix` leaves
        stack.axe_script().parent.mkdir(parents=True)
        stack.axe_script().write_text("/* axe */")

    with mock.patch.object(stack, "run", autospec=True, side_effect=npm_install) as run:
        assert (stack.ensure_axe(), stack.ensure_axe()) == ("installed", "cached")
    assert [c.args[0] for c in run.call_args_list] == [
        ["npm", "install", "--prefix", str(tmp_path / "node"), "--no-audit", "--no-fund", "--no-save", stack.AXE_CORE]]
    assert stack.portal_env(stack.Profile.for_test())["SLIPWAY_AXE_JS"] == str(stack.axe_script())
