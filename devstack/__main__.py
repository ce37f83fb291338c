"""`python -m devstack run|test|prepare` — the embedded stack's entry point.

run      set up the machine, start Redis, the AWS plane, Celery and the web
         server on 127.0.0.1, and wait until Ctrl-C.
test     set up the machine, start a private Redis, Postgres and AWS plane on
         the test ports, run pytest on SQLite (extra arguments are passed to
         it), then the tests marked `postgres` again on Postgres, stop them.
prepare  only the machine-level setup (packages, engine, QEMU, base images).
bench    start a private Redis, Postgres and AWS plane on the bench ports and run a
         benchmark script against them, e.g. `bench bench/pipeline_redeploy.py`.
manage   run manage.py against the portal of `run`, e.g.
         `python -m devstack manage deploy detector --wait`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

from devstack import stack
from devstack.common import REPO_ROOT, StackError, say
from devstack.runner import Runner


def _wait_healthy(port: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:  # 503: some part still down
            body = json.load(exc)
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(1)
    return body


def cmd_run() -> int:
    started = time.monotonic()
    profile = stack.Profile.for_run()
    stack.check_ports(profile)
    stack.prepare()
    with Runner(log_dir=profile.dir("log")) as runner:
        stack.start_infrastructure(runner, profile)
        stack.start_portal(runner, profile)
        health = _wait_healthy(profile.web_port)
        down = {name: c["message"] for name, c in health.get("checks", {}).items() if not c["ok"]}
        for name, message in down.items():
            say(f"health: {name} is down: {message}")
        state = "healthy" if health.get("ok") else "running, but not healthy"
        say(f"portal {state} at http://127.0.0.1:{profile.web_port}/ after {time.monotonic() - started:.1f} s "
            "— Ctrl-C stops everything")
        return runner.wait()


def postgres_pass_args(pytest_args: list[str]) -> list[str]:
    """The user's arguments for the Postgres pass: `-m postgres`, and-ed with their own `-m` if any."""
    rest, expression = [], ""
    args = iter(pytest_args)
    for arg in args:
        if arg == "-m":
            expression = next(args, "")  # as in pytest, the last -m wins
        elif arg.startswith("-m") and len(arg) > 2:
            expression = arg[2:]
        else:
            rest.append(arg)
    return ["-m", f"postgres and ({expression})" if expression else "postgres", *rest]


def cmd_test(pytest_args: list[str]) -> int:
    started = time.monotonic()
    profile = stack.Profile.for_test()
    timings = stack.prepare()
    setup_s = time.monotonic() - started
    pg_s = 0.0
    with Runner(log_dir=profile.dir("log"), echo=False) as runner:
        stack.start_infrastructure(runner, profile)
        say(f"test stack up (Redis :{profile.redis_port}, Postgres :{profile.pg_port}, "
            f"AWS plane :{profile.aws_port}); service logs in {profile.dir('log')}")
        env = {**os.environ, **stack.portal_env(profile), "DJANGO_SETTINGS_MODULE": "tests.settings"}
        tests_started = time.monotonic()
        code = subprocess.call([sys.executable, "-m", "pytest", *pytest_args], env=env, cwd=REPO_ROOT)
        tests_s = time.monotonic() - tests_started
        if code in (2, 3, 4):  # interrupted, internal or usage error: the second pass would only repeat it
            say(f"pytest exited with {code}; skipping the Postgres pass")
        else:
            say(f"Postgres pass: the tests marked `postgres` on {profile.postgres_url}")
            pg_started = time.monotonic()
            pg_code = subprocess.call([sys.executable, "-m", "pytest", *postgres_pass_args(pytest_args)],
                                      env={**env, "DATABASE_URL": profile.postgres_url}, cwd=REPO_ROOT)
            pg_s = time.monotonic() - pg_started
            if pg_code == 5:  # nothing selected, e.g. the chosen files have no `postgres` tests
                say("Postgres pass: no test selected")
            code = code or (0 if pg_code == 5 else pg_code)
    images_s = max((seconds for part, _, seconds in timings if part.startswith("base image")), default=0.0)
    say(f"phases: setup {setup_s - images_s:.1f} s, base images {images_s:.1f} s, tests {tests_s:.1f} s, "
        f"postgres tests {pg_s:.1f} s, total {time.monotonic() - started:.1f} s")
    return code


def cmd_bench(args: list[str]) -> int:
    if not args:
        print("usage: python -m devstack bench SCRIPT [ARGS]", file=sys.stderr)
        return 2
    profile = stack.Profile.for_bench()
    stack.prepare()
    with Runner(log_dir=profile.dir("log"), echo=False) as runner:
        stack.start_infrastructure(runner, profile)
        env = {**os.environ, **stack.portal_env(profile)}
        return subprocess.call([sys.executable, *args], env=env, cwd=REPO_ROOT)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test", "prepare", "manage", "bench"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        if argv[0] == "run":
            return cmd_run()
        if argv[0] == "test":
            return cmd_test(argv[1:])
        if argv[0] == "bench":
            return cmd_bench(argv[1:])
        if argv[0] == "manage":
            env = {**os.environ, **stack.portal_env(stack.Profile.for_run())}
            return subprocess.call([sys.executable, "manage.py", *argv[1:]], env=env, cwd=REPO_ROOT)
        stack.prepare()
        return 0
    except StackError as exc:
        print(f"[stack] FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
