"""docker-compose.yml end to end, with Debian's docker-compose 1.29: the demo profile
on offline stand-ins of its images, the detector registered, deployed, redeployed,
invoked and rolled back through the API, then everything torn down.

Run only by `make compose-test` (SLIPWAY_COMPOSE_TEST=1; tests/conftest.py leaves
this folder out otherwise). Ports: SLIPWAY_COMPOSE_WEB_PORT (18000) and
SLIPWAY_COMPOSE_PLANE_PORT (14566) on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from devstack import base_images, standins
from devstack.common import REPO_ROOT
from tests.conftest import wait_for

COMPOSE = shutil.which("docker-compose") or "docker-compose"
DOCKER = "/usr/bin/docker"
SERVICES = {"migrate", "web", "worker", "rollback-worker", "feedback-worker", "beat", "redis", "postgres", "plane"}
LONG_RUNNING = SERVICES - {"migrate"}


def _port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


class Stack:
    """One compose project, named uniquely, driven with a clean environment."""

    def __init__(self, tmp: Path):
        self.project = f"slipway-ct-{secrets.token_hex(3)}"
        self.tmp = tmp
        self.web = f"http://127.0.0.1:{_port('SLIPWAY_COMPOSE_WEB_PORT', 18000)}"
        self.plane_port = _port("SLIPWAY_COMPOSE_PLANE_PORT", 14566)
        self.portal_image = f"slipway-compose-test/portal:{self.project}"
        self.lambda_name = f"{self.project}-detector"  # slipway-…: inside the allowed prefix
        self.ecr_repository = f"slipway/{self.project}-detector"
        (tmp / "empty.env").write_text("")  # never a developer's own .env
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
            **({"DOCKER_HOST": os.environ["DOCKER_HOST"]} if os.environ.get("DOCKER_HOST") else {}),
            "COMPOSE_PROFILES": "demo",
            # Offline stand-ins in place of the public defaults.
            "SLIPWAY_IMAGE": self.portal_image,
            "SLIPWAY_BASE_IMAGE": standins.tag("base"),
            "REDIS_IMAGE": standins.tag("redis"),
            "POSTGRES_IMAGE": standins.tag("postgres"),
            "PLANE_IMAGE": standins.tag("ministack"),
            # Generated for this run only.
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
            # The demo settings .env.example lists.
            "SLIPWAY_WEB_PORT": self.web.rsplit(":", 1)[1],
            "SLIPWAY_PLANE_PORT": str(self.plane_port),
            "AWS_ENDPOINT_URL": "http://plane:4566",
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "SLIPWAY_REGISTRY_HOST": f"127.0.0.1:{self.plane_port}",
            "SLIPWAY_PLANE_INSTANCE": self.project,
            "SLIPWAY_NETWORK": self.project,
            "SLIPWAY_DEFAULT_EXECUTION_ROLE": "arn:aws:iam::000000000000:role/slipway-lambda",
            "SLIPWAY_ALLOW_LOCAL_REPOSITORIES": "1",
            "SLIPWAY_DEMO_REPOSITORY": str(tmp / "repository"),
            "DJANGO_SECURE_SSL_REDIRECT": "0", "DJANGO_SECURE_COOKIES": "0",
            "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
            "SLIPWAY_WORKER_STOP_GRACE": "30s",
            # Offline, the functions build on the local Lambda bases (amd64 here).
            "SLIPWAY_BASE_IMAGE_X86_64": base_images.image_tag("amd64"),
            "SLIPWAY_BUILDER_IMAGE": base_images.image_tag("amd64"),
            "SLIPWAY_PYTHON_VERSION": base_images.PYTHON_VERSION,
        }

    def compose(self, *args: str, timeout: float = 600, check: bool = True, **kwargs) -> str:
        command = [COMPOSE, "--project-name", self.project, "--project-directory", str(REPO_ROOT),
                   "--file", str(REPO_ROOT / "docker-compose.yml"), "--env-file", str(self.tmp / "empty.env"), *args]
        done = subprocess.run(command, env=self.env, cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=timeout, **kwargs)
        if check and done.returncode != 0:
            pytest.fail(f"{' '.join(command[6:])} exited {done.returncode}:\n{done.stdout[-3000:]}\n"
                        f"{done.stderr[-3000:]}", pytrace=False)
        return done.stdout

    def docker(self, *args: str) -> str:
        return subprocess.run([DOCKER, *args], capture_output=True, text=True, check=True, timeout=120).stdout

    def health(self) -> dict[str, str]:
        ids = self.docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}").split()
        if not ids:
            return {}
        states = json.loads(self.docker("inspect", *ids))
        return {c["Config"]["Labels"]["com.docker.compose.service"]:
                (c["State"].get("Health") or {}).get("Status", c["State"]["Status"]) for c in states}

    def api(self, method: str, path: str, token: str, body=None) -> requests.Response:
        return requests.request(method, f"{self.web}/api/v1{path}", json=body, timeout=30,
                                headers={"Authorization": f"Bearer {token}"})

    def leftovers(self) -> dict[str, list[str]]:
        """Everything of this project still in the engine."""
        label = f"label=com.docker.compose.project={self.project}"
        images = [line for line in self.docker("images", "--format", "{{.Repository}}:{{.Tag}}").split()
                  if self.project in line]
        return {
            "containers": self.docker("ps", "-aq", "--filter", label).split()
            + self.docker("ps", "-aq", "--filter", f"label=ministack.instance={self.project}").split(),
            "networks": [n for n in self.docker("network", "ls", "--format", "{{.Name}}").split()
                         if n.startswith(self.project)],
            "volumes": self.docker("volume", "ls", "-q", "--filter", label).split(),
            "images": images,
        }

    def tear_down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "30", check=False)
        # Lambda containers the plane started (it stops them on a clean exit; this is the backstop).
        for cid in self.docker("ps", "-aq", "--filter", f"label=ministack.instance={self.project}").split():
            subprocess.run([DOCKER, "rm", "-f", cid], capture_output=True, timeout=60)
        self.compose("down", "--volumes", "--remove-orphans", check=False)  # the network, once they are gone
        # The portal image compose built, and the detector images the deploy worker built and
        # pushed through the host's engine (tagged slipway/<project>-detector and 127.0.0.1:PORT/…).
        # By reference, never by image id: an identical image (same layers, from the shared build
        # cache) may carry another test's tags too. A pushed image is known by its digest only.
        refs = [self.portal_image]
        for line in self.docker("images", "--digests", "--format",
                                "{{.Repository}} {{.Tag}} {{.Digest}}").splitlines():
            repository, image_tag, digest = line.split()
            if self.project in repository:
                refs.append(f"{repository}:{image_tag}" if image_tag != "<none>" else f"{repository}@{digest}")
        for ref in refs:
            subprocess.run([DOCKER, "rmi", ref], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    import docker

    started = time.monotonic()
    engine, digest = docker.from_env(timeout=60), standins.inputs_digest()
    stale = [name for name in standins.IMAGES if not standins.is_current(engine, name, digest)]
    assert not stale, f"stand-ins {stale} missing or stale: `make compose-test` builds them first"
    tmp = tmp_path_factory.mktemp("compose")
    # The demo repository: a clone of this checkout (a worktree's .git is only a pointer).
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO_ROOT), str(tmp / "repository")],
                   check=True, timeout=120)
    stack = Stack(tmp)
    try:
        yield stack
    finally:
        stack.tear_down()
        print(f"\n[compose-test] project {stack.project}: {time.monotonic() - started:.0f} s including teardown")
    left = stack.leftovers()
    assert left == {"containers": [], "networks": [], "volumes": [], "images": []}, left


def _config(stack: Stack) -> dict:
    # PyYAML is not in the test virtualenv; Debian's python3-yaml comes with docker-compose.
    text = stack.compose("config")
    return json.loads(subprocess.run(["/usr/bin/python3", "-c", "import json, sys, yaml; "
                                      "print(json.dumps(yaml.safe_load(sys.stdin)))"],
                                     input=text, capture_output=True, text=True, check=True).stdout)


def test_the_shipped_defaults_are_the_public_images_the_stand_ins_replace(stack):
    env = {k: v for k, v in stack.env.items() if k not in
           ("SLIPWAY_IMAGE", "SLIPWAY_BASE_IMAGE", "REDIS_IMAGE", "POSTGRES_IMAGE", "PLANE_IMAGE")}
    saved, stack.env = stack.env, env
    try:
        services = _config(stack)["services"]
    finally:
        stack.env = saved
    assert {services[name]["image"] for name in ("redis", "postgres", "plane")} == {
        standins.IMAGES[name][0] for name in ("redis", "postgres", "ministack")}
    assert services["web"]["build"]["args"]["BASE_IMAGE"] == standins.IMAGES["base"][0]
    assert services["web"]["image"] == "slipway/portal:latest"


def test_the_config_names_only_local_images_and_publishes_on_loopback_only(stack):
    services = _config(stack)["services"]
    assert set(services) == SERVICES
    images = {name: spec["image"] for name, spec in services.items()}
    local = {stack.portal_image, *(standins.tag(name) for name in standins.IMAGES)}
    assert set(images.values()) <= local, images
    assert services["web"]["build"]["args"]["BASE_IMAGE"] == standins.tag("base")
    published = [(name, port) for name, spec in services.items() for port in spec.get("ports", [])]
    assert sorted(name for name, _ in published) == ["plane", "web"]
    for name, port in published:  # 1.29 prints "HOST_IP:PORT:TARGET/tcp"
        assert str(port).split(":")[0] == "127.0.0.1", (name, port)
    # The Docker socket goes to the deploy worker and the plane, nowhere else.
    with_socket = sorted(name for name, spec in services.items()
                         if any(str(v).split(":")[1] == "/var/run/docker.sock" for v in spec.get("volumes", [])))
    assert with_socket == ["plane", "worker"]


def test_the_demo_stack_deploys_invokes_and_rolls_back_the_detector(stack):
    stack.compose("build", timeout=900)
    stack.compose("up", "--detach", timeout=600)
    # Every long-running service healthy (beat has no health check: running), /healthz all green.
    expected = {**{name: "healthy" for name in LONG_RUNNING}, "beat": "running"}
    try:
        wait_for(lambda: stack.health() == {**expected, "migrate": "exited"} or None, 300,
                 "every service of the compose stack to be healthy", interval=2)
    except BaseException:
        print(stack.health(), stack.compose("logs", "--tail", "40", check=False))
        raise
    assert requests.get(f"{stack.web}/healthz", timeout=10).json()["ok"] is True

    password = secrets.token_urlsafe(18)
    stack.compose("exec", "-T", "-e", f"DJANGO_SUPERUSER_PASSWORD={password}", "web", "python3", "manage.py",
                  "createsuperuser", "--noinput", "--username", "admin", "--email", "admin@localhost")
    token = stack.compose("exec", "-T", "web", "python3", "manage.py", "create_api_token", "admin",
                          "--name", "compose-test").strip()
    assert token.startswith("slp_") and "\n" not in token

    smoke = {"image_base64": base64.b64encode((REPO_ROOT / "function/samples/astronaut-256.jpg").read_bytes())
             .decode(), "detector": "face"}
    created = stack.api("post", "/functions", token, {
        "name": "detector", "repository_url": "/srv/demo-repository", "branch": "main",
        "context_path": "function", "dockerfile_path": "Dockerfile", "architecture": "x86_64",
        "ecr_repository": stack.ecr_repository, "lambda_name": stack.lambda_name, "alias": "live",
        "memory_mb": 1024, "timeout_s": 30, "execution_role_arn": "arn:aws:iam::000000000000:role/slipway-lambda",
        "smoke_event": smoke})
    assert created.status_code == 201, created.text
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=stack.tmp / "repository", capture_output=True,
                          text=True, check=True).stdout.strip()

    def follow(deployment: dict) -> dict:
        def ended():
            body = stack.api("get", f"/deployments/{deployment['id']}", token).json()
            return body if body["terminal"] else None
        try:
            body = wait_for(ended, 600, f"deployment #{deployment['id']} to end", interval=2)
        except BaseException:
            print(stack.compose("logs", "--tail", "60", "worker", "rollback-worker", "plane", check=False))
            raise
        if body["status"] != "succeeded":  # what went wrong, for the failure below
            print(json.dumps(body, indent=1)[-6000:])
            print(stack.compose("logs", "--tail", "60", "worker", "rollback-worker", "plane", check=False))
        return body

    first = follow(stack.api("post", "/functions/detector/deployments", token, {"commit": head}).json())
    assert (first["status"], first["version"]) == ("succeeded", "1"), first
    assert [s["name"] for s in first["steps"]] == ["source", "build", "push", "update", "wait", "publish",
                                                   "verify", "shift"]
    second = follow(stack.api("post", "/functions/detector/deployments", token, {"commit": head}).json())
    assert (second["status"], second["kind"], second["version"]) == ("succeeded", "redeploy", "2"), second

    # Invoke it through the plane, as a client of the Lambda API would.
    import boto3

    lam = boto3.client("lambda", endpoint_url=f"http://127.0.0.1:{stack.plane_port}", region_name="us-east-1",
                       aws_access_key_id="test", aws_secret_access_key="test")

    def invoke() -> tuple[str, dict]:
        answer = lam.invoke(FunctionName=stack.lambda_name, Qualifier="live", Payload=json.dumps(smoke).encode())
        assert "FunctionError" not in answer, answer["Payload"].read()
        return answer["ExecutedVersion"], json.loads(answer["Payload"].read())

    version, result = invoke()
    assert version == "2" and [box["label"] for box in result["boxes"]] == ["face"], result
    # The Lambda container reaches the plane over the stack's network: an image from a bucket
    # there (the console's path for large images) is read by the function itself.
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{stack.plane_port}", region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    bucket = f"{stack.project}-console"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="astronaut.jpg", Body=base64.b64decode(smoke["image_base64"]))
    answer = lam.invoke(FunctionName=stack.lambda_name, Qualifier="live",
                        Payload=json.dumps({"bucket": bucket, "key": "astronaut.jpg", "detector": "face"}).encode())
    from_s3 = json.loads(answer["Payload"].read())
    assert "FunctionError" not in answer and [box["label"] for box in from_s3["boxes"]] == ["face"], from_s3

    rolled = follow(stack.api("post", "/functions/detector/rollback", token, {"to": "1"}).json())
    assert (rolled["status"], rolled["version"], rolled["previous_version"]) == ("succeeded", "1", "2"), rolled
    version, result = invoke()
    assert version == "1" and [box["label"] for box in result["boxes"]] == ["face"], result
    # The rollback ran on the rollback worker (its own queue), the deploys on the deploy worker.
    assert "slipway.rollback[" in stack.compose("logs", "--no-color", "rollback-worker")
    assert "slipway.rollback[" not in stack.compose("logs", "--no-color", "worker")
    assert "slipway.deploy[" in stack.compose("logs", "--no-color", "worker")
    # Metrics count them (read from Postgres at scrape time; loopback inside the web container).
    metrics = stack.compose("exec", "-T", "web", "python3", "-c",
                            "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8000/metrics').read().decode())")
    counted = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("slipway_deployments_total{")}
    assert sum(value for name, value in counted.items() if 'function="detector"' in name
               and 'status="succeeded"' in name) == 3, counted
    assert sum(value for name, value in counted.items() if 'kind="rollback"' in name) == 1, counted
