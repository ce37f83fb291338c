"""Code-only redeploy: Slipway vs the original GitLab pipeline by hand.

Run with `python -m devstack bench bench/pipeline_redeploy.py` (it starts
a private Redis and AWS plane on the bench ports). It measures an arm64 and an
amd64 function one after the other in the same run (BENCH_ARCHITECTURES,
default `arm64,x86_64`): on an x86 host the arm64 side runs under QEMU. Both sides work on the
same detector (function/) in the same git repository, against the same local
plane, in the same run:

- Slipway: request -> alias live, through a real Celery worker (the image is
  built once per commit; the redeploy reuses the layer cache).
- Baseline, the commands of the original pipeline: `docker build
  --cache-from` (BuildKit, inline cache), `docker save | gzip`, `docker load`,
  `docker push`, UpdateFunctionCode, wait.

Rollback has its own benchmark against fair baselines (bench/rollback.py): no
user rebuilds an image the registry still holds.

Prints a table and the ratios; nothing asserts on a time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from deploy import arch as arches  # noqa: E402
from deploy import aws, lambdas  # noqa: E402
from portal.deployments.requesting import request_deploy  # noqa: E402
from portal.models import Deployment, Environment, Function  # noqa: E402

DOCKER = settings.SLIPWAY_BUILDKIT_DOCKER
RUNS = int(os.environ.get("BENCH_RUNS", "3"))


def sh(args: list[str], **kwargs) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, **kwargs)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.org", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout.strip()


def commit_code_change(repo: Path, n: int) -> str:
    """A code-only change: the handler's version string."""
    handler = repo / "src" / "detector" / "adapter.py"  # where __version__ is
    text = handler.read_text()
    start = text.index('__version__ = "')
    end = text.index('"', start + len('__version__ = "'))
    handler.write_text(text[:start] + f'__version__ = "1.0.{n}' + text[end:])
    git(repo, "commit", "-qam", f"bench change {n}")
    return git(repo, "rev-parse", "HEAD")


def wait_done(deployment: Deployment, timeout: float = 900) -> Deployment:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deployment.refresh_from_db()
        if deployment.is_terminal:
            if deployment.status != Deployment.Status.SUCCEEDED:
                raise SystemExit(f"deployment #{deployment.pk} {deployment.status}: {deployment.error_message}")
            return deployment
        time.sleep(0.1)
    raise SystemExit(f"deployment #{deployment.pk} did not finish")


def step_times(deployment: Deployment) -> dict[str, float]:
    return {s.name: (s.finished_at - s.started_at).total_seconds() for s in deployment.steps.all()}


class Baseline:
    """The original pipeline's commands, run by hand."""

    def __init__(self, repo: Path, lambda_name: str, repository: str, architecture: str):
        self.repo, self.name, self.repository = repo, lambda_name, repository
        self.architecture, self.docker_arch = architecture, arches.get(architecture).docker
        # The original pipeline pushed to a mutable repository (it re-tags on rebuild).
        uri = aws.client("ecr").create_repository(repositoryName=repository)["repository"]["repositoryUri"]
        self.remote = f"{settings.SLIPWAY_REGISTRY_HOST}/{uri.split('/', 1)[1]}"
        self.created = False

    def ship(self, sha: str, previous: str | None) -> dict[str, float]:
        tag = f"{self.remote}:{sha[:12]}"
        times = {}
        with tempfile.TemporaryDirectory() as tmp:
            context = Path(tmp) / "src"
            sh(["git", "worktree", "add", "--detach", "-q", str(context), sha], cwd=self.repo)
            try:
                started = time.perf_counter()
                args = [DOCKER, "build", "--platform", f"linux/{self.docker_arch}", "--tag", tag,
                        "--build-arg", "BUILDKIT_INLINE_CACHE=1",
                        "--build-arg", f"BASE_IMAGE={settings.SLIPWAY_BASE_IMAGES[self.architecture]}",
                        "--build-arg", f"BUILDER_IMAGE={settings.SLIPWAY_BUILDER_IMAGE}",
                        "--build-arg", f"PYTHON_VERSION={settings.SLIPWAY_PYTHON_VERSION}"]
                if previous:
                    args += ["--cache-from", f"{self.remote}:{previous[:12]}"]
                sh([*args, str(context)], env={**os.environ, "DOCKER_BUILDKIT": "1"})
                times["build"] = time.perf_counter() - started
            finally:
                sh(["git", "worktree", "remove", "--force", str(context)], cwd=self.repo)
            archive = Path(tmp) / "image.tar.gz"
            started = time.perf_counter()
            with archive.open("wb") as out:
                save = subprocess.Popen([DOCKER, "save", tag], stdout=subprocess.PIPE)
                subprocess.run(["gzip", "-1"], stdin=save.stdout, stdout=out, check=True)
                save.wait()
            times["save|gzip"] = time.perf_counter() - started
            started = time.perf_counter()
            with archive.open("rb") as src:
                unzip = subprocess.Popen(["gunzip", "-c"], stdin=src, stdout=subprocess.PIPE)
                sh([DOCKER, "load"], stdin=unzip.stdout)
                unzip.wait()
            times["load"] = time.perf_counter() - started
        started = time.perf_counter()
        sh([DOCKER, "push", tag])
        times["push"] = time.perf_counter() - started
        started = time.perf_counter()
        client = aws.client("lambda")
        if not self.created:
            client.create_function(FunctionName=self.name, PackageType="Image", Code={"ImageUri": tag},
                                   Role="arn:aws:iam::000000000000:role/bench", Architectures=[self.architecture],
                                   MemorySize=1024, Timeout=30)
            self.created = True
        else:
            client.update_function_code(FunctionName=self.name, ImageUri=tag, Architectures=[self.architecture])
        times["update"] = time.perf_counter() - started
        started = time.perf_counter()
        lambdas.wait_updated(self.name)
        times["wait"] = time.perf_counter() - started
        return times


@contextlib.contextmanager
def worker_and_workspace(name: str):
    """A real deploys-and-rollbacks worker (its log in the state dir) and a scratch
    directory, both gone afterwards; the database migrated first."""
    call_command("migrate", verbosity=0)
    worker_log = Path(settings.STATE_DIR) / f"{name}-worker.log"
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "deploys,rollbacks", "-c", "2",
         "-n", f"{name}-{os.getpid()}@localhost", "--without-mingle", "--without-gossip"],
        cwd=REPO_ROOT, stdout=worker_log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    work = Path(tempfile.mkdtemp(prefix=f"slipway-{name}-"))
    try:
        yield work
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(30)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    architectures = os.environ.get("BENCH_ARCHITECTURES", "arm64,x86_64").split(",")
    with worker_and_workspace("bench") as work:
        for architecture in architectures:  # one after the other, in the same run
            bench(architecture, work)


def bench(architecture: str, work: Path) -> None:
    docker_arch = arches.get(architecture).docker
    suffix = f"{int(time.time())}-{docker_arch}"
    repo = work / f"detector-{docker_arch}"
    shutil.copytree(REPO_ROOT / "function", repo)
    git(repo, "init", "-q", "--initial-branch=main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "detector")
    first = git(repo, "rev-parse", "HEAD")
    from portal.management.commands.bootstrap_local import detector_smoke_event

    function = Function.objects.create(
        name=f"bench-{suffix}", repository_url=str(repo), ecr_repository=f"bench/slipway-{suffix}",
        architecture=architecture, smoke_event=detector_smoke_event())
    Environment.objects.create(function=function, lambda_name=f"bench-slipway-{suffix}", memory_mb=1024, timeout_s=30,
                               execution_role_arn="arn:aws:iam::000000000000:role/bench")
    baseline = Baseline(repo, f"bench-baseline-{suffix}", f"bench/baseline-{suffix}", architecture)

    print(f"\n# {architecture} function\n\nwarming up: first deploy of each side (cold builds, not compared)",
          flush=True)
    started = time.perf_counter()
    wait_done(request_deploy(function, trigger="cli"))
    cold_ours = time.perf_counter() - started
    cold_base = sum(baseline.ship(first, None).values())
    print(f"  cold: slipway {cold_ours:.1f} s, baseline {cold_base:.1f} s", flush=True)

    ours, theirs, our_steps, their_steps = [], [], [], []
    previous = first
    for n in range(1, RUNS + 1):
        sha = commit_code_change(repo, n)
        started = time.perf_counter()
        done = wait_done(request_deploy(function, trigger="cli"))
        ours.append(time.perf_counter() - started)
        our_steps.append(step_times(done))
        times = baseline.ship(sha, previous)
        theirs.append(sum(times.values()))
        their_steps.append(times)
        previous = sha
        print(f"  redeploy {n}: slipway {ours[-1]:.2f} s, baseline {theirs[-1]:.2f} s", flush=True)

    med = statistics.median
    print(f"\n## {architecture}: code-only redeploy, request -> live (median of {RUNS})\n")
    print("| step | Slipway s | | baseline step | s |\n|---|---|---|---|---|")
    ours_med = {k: med([s.get(k, 0) for s in our_steps]) for k in our_steps[0]}
    theirs_med = {k: med([s[k] for s in their_steps]) for k in their_steps[0]}
    rows = max(len(ours_med), len(theirs_med))
    left, right = list(ours_med.items()), list(theirs_med.items())
    for i in range(rows):
        a = left[i] if i < len(left) else ("", None)
        b = right[i] if i < len(right) else ("", None)
        fa = f"{a[1]:.2f}" if a[1] is not None else ""
        fb = f"{b[1]:.2f}" if b[1] is not None else ""
        print(f"| {a[0]} | {fa} | | {b[0]} | {fb} |")
    print(f"| **total (wall)** | **{med(ours):.2f}** | | **total** | **{med(theirs):.2f}** |")
    print(f"\nredeploy ratio against the original pipeline by hand (build --cache-from, save|gzip, load, push, "
          f"update, wait): {med(ours):.2f} / {med(theirs):.2f} = **{med(ours) / med(theirs):.3f}x** (goal <= 0.3x)")
    without = med(ours) - ours_med.get("verify", 0)
    print(f"  without the verify step (the baseline has none): {without:.2f} / {med(theirs):.2f} = "
          f"{without / med(theirs):.3f}x")
    print(f"cold first deploy: slipway {cold_ours:.1f} s (build+push+create+verify+shift), "
          f"baseline {cold_base:.1f} s", flush=True)


if __name__ == "__main__":
    main()
