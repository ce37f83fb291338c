"""deploy/process.py: what every child of the product gets (stdin from /dev/null, an
allow-listed environment, its own process group killed on timeout) in each shape."""

import sys
import time
from pathlib import Path

import pytest

from deploy import cli, process, source, ssh
from deploy.errors import AppError

CHILD = [sys.executable, "-c"]


def wait_for(condition, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for a reaper."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def env_of(env: process.Environment) -> dict[str, str]:
    out = process.run(["env", "-0"], env=env, timeout=10).stdout
    return dict(item.split("=", 1) for item in out.split("\0") if item)


# --- stdin ---------------------------------------------------------------------------------------


def test_run_gives_the_child_dev_null_as_stdin_not_the_callers():
    assert process.run(["readlink", "/proc/self/fd/0"], timeout=10).stdout.strip() == "/dev/null"


def test_stream_and_pipe_and_spawn_give_the_child_dev_null_as_stdin(tmp_path):
    lines = []
    assert process.stream(["readlink", "/proc/self/fd/0"], on_line=lines.append, timeout=10) == 0
    piped = process.pipe(["readlink", "/proc/self/fd/0"], lambda out: out.read().decode().strip(), timeout=10)
    with (tmp_path / "out").open("wb") as out:
        spawned = process.spawn(["readlink", "/proc/self/fd/0"], stdout=out, stderr=out)
        spawned.wait(10)
    assert lines == [piped] == [(tmp_path / "out").read_text().strip()] == ["/dev/null"]


def test_run_hands_the_child_the_input_it_is_given():
    assert process.run(["cat"], input="given\n", timeout=10).stdout == "given\n"


# --- environment ---------------------------------------------------------------------------------


def test_a_variable_not_on_the_allow_list_does_not_reach_the_child(monkeypatch):
    monkeypatch.setenv("DJANGO_SECRET_KEY", "not-for-children")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-children-either")
    seen = env_of(process.environment(source.GIT_ALLOW))
    assert "PATH" in seen
    assert "DJANGO_SECRET_KEY" not in seen and "AWS_SECRET_ACCESS_KEY" not in seen


def test_a_variable_the_readme_documents_reaches_the_child_of_its_caller(monkeypatch):
    monkeypatch.setenv("GIT_SSL_CAINFO", "/etc/ssl/internal-ca.pem")
    monkeypatch.setenv("GIT_SSH_COMMAND", "ssh -o ProxyJump=bastion")
    monkeypatch.setenv("DOCKER_HOST", "tcp://builder:2376")
    git, docker = env_of(process.environment(source.GIT_ALLOW)), env_of(cli.environ(DOCKER_BUILDKIT="1"))
    assert git["GIT_SSL_CAINFO"] == "/etc/ssl/internal-ca.pem" and git["GIT_SSH_COMMAND"] == "ssh -o ProxyJump=bastion"
    assert docker["DOCKER_HOST"] == "tcp://builder:2376" and docker["DOCKER_BUILDKIT"] == "1"
    assert "GIT_SSL_CAINFO" not in docker and "DOCKER_HOST" not in git  # each caller its own list


def test_the_ssh_tunnel_keeps_the_agent_and_nothing_else_of_the_callers(monkeypatch):
    monkeypatch.setenv("SSH_AUTH_SOCK", "/run/agent.sock")
    monkeypatch.setenv("DOCKER_HOST", "tcp://builder:2376")
    seen = env_of(process.environment(ssh.ALLOW))
    assert seen["SSH_AUTH_SOCK"] == "/run/agent.sock" and "DOCKER_HOST" not in seen


def test_extra_variables_reach_the_child_and_none_leaves_one_out(monkeypatch):
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    seen = env_of(process.environment(extra={"GIT_TERMINAL_PROMPT": "0", "LANG": None}))
    assert seen["GIT_TERMINAL_PROMPT"] == "0" and "LANG" not in seen


def test_an_allowed_variable_set_empty_counts_as_unset(monkeypatch):
    monkeypatch.setenv("GIT_SSH_COMMAND", "")
    monkeypatch.setenv("GIT_SSL_CAINFO", "/etc/ssl/internal-ca.pem")
    seen = env_of(process.environment(source.GIT_ALLOW))
    assert "GIT_SSH_COMMAND" not in seen and seen["GIT_SSL_CAINFO"] == "/etc/ssl/internal-ca.pem"


def test_a_plain_dict_is_refused_as_an_environment():
    with pytest.raises(TypeError, match="process.environment"):
        process.run(["true"], env={"PATH": "/usr/bin:/bin"}, timeout=10)


# --- timeouts ------------------------------------------------------------------------------------


def spawns_a_grandchild(pid_file: Path) -> list[str]:
    """A shell that starts a `sleep` of its own, writes its pid, and waits for it. The sleep
    holds none of the shell's pipes: killing the shell alone would end the call and leave it."""
    return ["sh", "-c", f'sleep 60 </dev/null >/dev/null 2>&1 & echo $! > {pid_file}; echo started; wait']


def test_a_timeout_in_run_kills_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "grandchild"
    with pytest.raises(process.Timeout) as late:
        process.run(spawns_a_grandchild(pid_file), timeout=1, what="the spawner", timeout_code="spawner-timeout")
    assert isinstance(late.value, AppError) and late.value.code == "spawner-timeout"
    assert late.value.message == "the spawner took longer than 1 s"
    grandchild = int(pid_file.read_text())
    assert wait_for(lambda: not alive(grandchild)), f"the grandchild {grandchild} outlived the timeout"


def test_a_timeout_in_stream_kills_the_whole_process_group(tmp_path):
    pid_file, lines = tmp_path / "grandchild", []
    with pytest.raises(process.Timeout) as late:
        process.stream(spawns_a_grandchild(pid_file), on_line=lines.append, timeout=1)
    assert lines == ["started"] and late.value.code == "process-timeout"
    grandchild = int(pid_file.read_text())
    assert wait_for(lambda: not alive(grandchild)), f"the grandchild {grandchild} outlived the timeout"


def test_a_timeout_in_pipe_kills_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "grandchild"
    with pytest.raises(process.Timeout):
        process.pipe(spawns_a_grandchild(pid_file), lambda out: out.read(), timeout=1, timeout_code="git-timeout")
    grandchild = int(pid_file.read_text())
    assert wait_for(lambda: not alive(grandchild)), f"the grandchild {grandchild} outlived the timeout"


def test_stop_ends_a_spawned_process_and_its_group(tmp_path):
    pid_file = tmp_path / "grandchild"
    with (tmp_path / "log").open("wb") as log:
        proc = process.spawn(spawns_a_grandchild(pid_file), stdout=log, stderr=log)
        assert wait_for(lambda: pid_file.exists() and pid_file.read_text().strip())
        process.stop(proc)
    grandchild = int(pid_file.read_text())
    assert proc.returncode is not None
    assert wait_for(lambda: not alive(grandchild)), f"the grandchild {grandchild} outlived stop"


# --- shapes --------------------------------------------------------------------------------------


def test_stream_hands_over_each_line_while_the_process_still_runs(tmp_path):
    """The child prints its second line only once the first has been handed over."""
    flag, lines = tmp_path / "first-seen", []
    script = (f"import pathlib, time\nprint('first', flush=True)\nflag = pathlib.Path({str(flag)!r})\n"
              "deadline = time.monotonic() + 10\n"
              "while not flag.exists() and time.monotonic() < deadline:\n    time.sleep(0.01)\n"
              "print('second' if flag.exists() else 'only at the end')\n")

    def on_line(line: str) -> None:
        lines.append(line)
        if line == "first":
            flag.touch()

    assert process.stream([*CHILD, script], on_line=on_line, timeout=30) == 0
    assert lines == ["first", "second"]


def test_stream_returns_the_exit_status_and_gives_the_pid_first():
    started, lines = [], []
    status = process.stream(["sh", "-c", "echo out; echo err >&2; exit 4"], on_line=lines.append, timeout=10,
                            on_start=started.append)
    assert status == 4 and sorted(lines) == ["err", "out"] and len(started) == 1 and started[0] > 0


def test_pipe_returns_what_the_downstream_made_of_the_output():
    assert process.pipe(["printf", "a\\nb\\n"], lambda out: out.read().decode().split(), timeout=10) == ["a", "b"]


def test_pipe_fails_with_the_upstreams_own_words_when_it_fails():
    with pytest.raises(process.Failed) as failed:
        process.pipe(["sh", "-c", "echo partial; echo 'fatal: no such commit' >&2; exit 128"],
                     lambda out: out.read(), timeout=10, failed_code="git-archive-failed")
    assert failed.value.code == "git-archive-failed" and failed.value.message == "fatal: no such commit"


def test_pipe_blames_the_upstream_when_its_failure_broke_the_downstream():
    def strict(out):
        if out.read() != b"complete\n":
            raise ValueError("truncated")

    with pytest.raises(process.Failed) as failed:
        process.pipe(["sh", "-c", "echo partial; exit 2"], strict, timeout=10, what="the producer")
    assert failed.value.message == "the producer exited 2"
    assert isinstance(failed.value.__cause__, ValueError)


def test_pipe_kills_an_upstream_the_downstream_stopped_reading_and_raises_the_downstreams_error():
    def refuse(out):
        out.read(10)
        raise ValueError("refused")

    started = time.monotonic()
    with pytest.raises(ValueError, match="refused"):
        process.pipe(["yes"], refuse, timeout=30)  # endless: only the kill ends it
    assert time.monotonic() - started < 30
