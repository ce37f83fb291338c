"""ECR: repositories with immutable tags, login, push, and what a tag holds.

Tags are `<sha12>-<arch>` and never move: a tag that ECR already holds is
that commit's image, so build and push are skipped ("build once, deploy
many"). Lambda is always pointed at `repository@digest`.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass

from deploy import arch, aws
from deploy.errors import AppError, UserError

# Lambda runs one single-platform image manifest; it refuses an index (a manifest
# list of platforms, or one platform plus buildx's attestations) and an attestation.
IMAGE_INDEXES = (
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)
IMAGE_MANIFESTS = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)
ATTESTATION_MEDIA_TYPES = ("application/vnd.in-toto+json",)
PREFIX = "ecr"


@dataclass
class Image:
    repository: str
    tag: str
    digest: str
    size: int
    media_type: str


def _call(doing: str, operation: str, missing: tuple[str, ...] = (), **kwargs):
    return aws.call(doing, getattr(aws.client("ecr"), operation), prefix=PREFIX, missing=missing, **kwargs)


def ensure_repository(name: str) -> str:
    """The repository's URI; created with immutable tags if missing."""
    found = _call(f"describing ECR repository {name}", "describe_repositories",
                  missing=("RepositoryNotFoundException",), repositoryNames=[name])
    if found is None:
        created = _call(f"creating ECR repository {name}", "create_repository",
                        missing=("RepositoryAlreadyExistsException",),  # created meanwhile
                        repositoryName=name, imageTagMutability="IMMUTABLE",
                        imageScanningConfiguration={"scanOnPush": True})
        if created is not None:
            return created["repository"]["repositoryUri"]
        found = _call(f"describing ECR repository {name}", "describe_repositories", repositoryNames=[name])
    return found["repositories"][0]["repositoryUri"]


def find(repository: str, *, tag: str = "", digest: str = "") -> Image | None:
    """What ECR holds under `tag` (or `digest`); None when it holds nothing."""
    image_id = {"imageTag": tag} if tag else {"imageDigest": digest}
    found = _call(f"looking up {repository}:{tag or digest}", "describe_images",
                  missing=("ImageNotFoundException", "RepositoryNotFoundException"),
                  repositoryName=repository, imageIds=[image_id])
    if not found or not found["imageDetails"]:
        return None
    details = found["imageDetails"][0]
    return Image(repository, tag, details["imageDigest"], int(details.get("imageSizeInBytes", 0)),
                 details.get("imageManifestMediaType", ""))


def count_images(repository: str) -> int:
    pages = aws.client("ecr").get_paginator("list_images").paginate(repositoryName=repository)
    return sum(len(page["imageIds"]) for page in pages)


def registry_host(repository_uri: str, override: str = "") -> str:
    """Where to push and pull: ECR's host, or the configured override (the local
    plane advertises a host nobody can reach)."""
    return override or repository_uri.split("/", 1)[0]


def image_uri(repository_uri: str, digest: str, override: str = "") -> str:
    return f"{registry_host(repository_uri, override)}/{repository_uri.split('/', 1)[1]}@{digest}"


def login(docker, host: str) -> None:
    data = _call("getting an ECR authorization token", "get_authorization_token")["authorizationData"][0]
    username, password = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
    try:
        docker.login(username=username, password=password, registry=host, reauth=True)
    except Exception as exc:  # docker.errors.APIError or a connection error
        raise AppError("registry-login-failed", f"docker login to {host} failed: {exc}") from None


def check_architecture(docker, local_tag: str, architecture: str) -> dict:
    """Refuse an image whose architecture is not the function's (Lambda would
    fail at invoke time, long after the alias moved). The image config is not
    enough: BuildKit labels a final stage `FROM --platform=linux/amd64` with the
    requested --platform, so the program the image starts is checked too."""
    attrs = docker.images.get(local_tag).attrs
    wanted = arch.get(architecture).docker
    found, program = attrs.get("Architecture"), ""
    if found == wanted:
        program, machine = entry_machine(docker, local_tag, attrs.get("Config") or {})
        found = machine or found
    if found != wanted:
        what = f"its {program} is a linux/{found} program" if program else f"it is built for linux/{found}"
        raise UserError("architecture-mismatch",
                        f"{what} but the function runs on {architecture}; check FROM --platform in the "
                        "Dockerfile's final stage")
    return attrs


@contextlib.contextmanager
def _created(docker, image: str):
    """A container that is created, never started, and always removed."""
    container = docker.containers.create(image, entrypoint=["/"], command=[],
                                         labels={"slipway.purpose": "architecture-check"})
    try:
        yield container
    finally:
        with contextlib.suppress(Exception):
            container.remove(force=True)


def entry_machine(docker, image: str, config: dict) -> tuple[str, str]:
    """(path, architecture) of the program the image starts, read from its ELF
    header through #! lines and symlinks; ("", "") when it cannot be told."""
    command = [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
    path = command[0] if command and command[0].startswith("/") else "/bin/sh"
    try:
        with _created(docker, image) as container:
            for _ in range(8):  # script -> interpreter -> symlink ... bounded
                stream, stat = container.get_archive(path)
                head = _first_file_bytes(b"".join(stream))
                if stat.get("linkTarget") and stat["linkTarget"] != path:
                    path = stat["linkTarget"]
                elif head.startswith(b"#!"):
                    path = head[2:].split(b"\n", 1)[0].split()[0].decode(errors="replace")
                elif head[:4] == b"\x7fELF" and len(head) >= 20:
                    found = arch.by_elf_machine(int.from_bytes(head[18:20], "little"))
                    return path, found.docker if found else "unknown"
                else:
                    return "", ""
    except Exception:  # docker.errors.NotFound and friends: no verdict, the config's word stands
        return "", ""
    return "", ""


def _first_file_bytes(archive: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.next()
        if member is None or not member.isfile():
            return b""
        return tar.extractfile(member).read(256)


def push(docker, local_tag: str, repository_uri: str, tag: str, *, host_override: str = "",
         on_line: Callable[[str], None]) -> Image:
    """Push `local_tag` as `repository:tag` and return what ECR then holds."""
    host = registry_host(repository_uri, host_override)
    remote = f"{host}/{repository_uri.split('/', 1)[1]}"
    docker.images.get(local_tag).tag(remote, tag)
    digest = ""
    try:
        for event in docker.images.push(remote, tag=tag, stream=True, decode=True):
            if "error" in event:
                raise AppError("push-failed", f"pushing {remote}:{tag} failed: {event['error']}")
            if "aux" in event and event["aux"].get("Digest"):
                digest = event["aux"]["Digest"]
            elif event.get("status") and not event.get("progressDetail"):
                on_line(f"{event.get('id', '')} {event['status']}".strip())
    except AppError:
        raise
    except Exception as exc:
        raise AppError("registry-unreachable", f"pushing to {host} failed: {exc}") from None
    finally:
        try:
            docker.images.remove(f"{remote}:{tag}", noprune=True)
        except Exception:
            pass
    repository = repository_uri.split("/", 1)[1]
    image = find(repository, tag=tag)
    if image is None or (digest and image.digest != digest):
        raise AppError("push-unverified", f"ECR does not hold {repository}:{tag} at {digest} after the push")
    check_single_image(image)
    return image


def manifest(repository: str, digest: str) -> tuple[str, dict]:
    """(media type, parsed manifest) of what ECR holds at `digest`."""
    found = _call(f"reading the manifest of {repository}@{digest}", "batch_get_image", repositoryName=repository,
                  imageIds=[{"imageDigest": digest}], acceptedMediaTypes=[*IMAGE_MANIFESTS, *IMAGE_INDEXES])
    if not found or not found.get("images"):
        raise AppError("image-unreadable", f"ECR did not return the manifest of {repository}@{digest}")
    image = found["images"][0]
    try:
        body = json.loads(image.get("imageManifest") or "{}")
    except ValueError:
        raise UserError("image-unreadable", f"the manifest of {repository}@{digest} is not JSON") from None
    return image.get("imageManifestMediaType") or body.get("mediaType", ""), body


def check_single_image(image: Image) -> None:
    """Refuse what Lambda refuses, before the Lambda is touched: an image index
    (also when ECR's listing does not say so) and an attestation manifest."""
    where = f"{image.repository}:{image.tag or image.digest}"
    media_type, body = manifest(image.repository, image.digest)
    kinds = {image.media_type, media_type, body.get("mediaType", "")}
    if kinds & set(IMAGE_INDEXES) or "manifests" in body:
        platforms = sorted({"/".join(filter(None, (m.get("platform", {}).get("os"), m.get("platform", {}).get(
            "architecture")))) or "?" for m in body.get("manifests", [])})
        raise UserError("image-index", f"{where} ({image.digest}) is an image index ({', '.join(platforms)}), "
                        "not a single-platform image, and Lambda refuses it; build one --platform with "
                        "--provenance=false --sbom=false, or delete the tag from ECR")
    layers = [layer.get("mediaType", "") for layer in body.get("layers", [])]
    if any(kind in ATTESTATION_MEDIA_TYPES for kind in layers):
        raise UserError("attestation-manifest", f"{where} ({image.digest}) is an attestation manifest (in-toto), "
                        "not an image, and Lambda refuses it; delete the tag from ECR")


def list_images(repository: str) -> list[Image]:
    """Every image of the repository with its digest (and first tag), page by page
    through the one retry layer; [] when the repository does not exist."""
    images, token = [], None
    while True:
        page = _call(f"listing the images of {repository}", "describe_images",
                     missing=("RepositoryNotFoundException",), repositoryName=repository,
                     **({"nextToken": token} if token else {}))
        if page is None:
            return []
        for details in page.get("imageDetails") or []:
            tags = details.get("imageTags") or []
            images.append(Image(repository, tags[0] if tags else "", details["imageDigest"],
                                int(details.get("imageSizeInBytes", 0)), details.get("imageManifestMediaType", "")))
        token = page.get("nextToken")
        if not token:
            return images


def delete_images(repository: str, digests: list[str]) -> tuple[list[str], dict[str, str]]:
    """Delete images by digest (every tag of each goes with it), 100 per request.
    Returns (the digests ECR deleted or no longer held, {digest: why} for the ones it refused)."""
    gone: list[str] = []
    refused: dict[str, str] = {}
    for start in range(0, len(digests), 100):
        chunk = digests[start:start + 100]
        answer = _call(f"deleting {len(chunk)} image(s) from {repository}", "batch_delete_image",
                       repositoryName=repository, imageIds=[{"imageDigest": digest} for digest in chunk])
        gone += [image_id["imageDigest"] for image_id in answer.get("imageIds") or [] if "imageDigest" in image_id]
        for failure in answer.get("failures") or []:
            digest = (failure.get("imageId") or {}).get("imageDigest", "")
            if failure.get("failureCode") == "ImageNotFound":
                gone.append(digest)
            else:
                refused[digest] = f"{failure.get('failureCode')}: {failure.get('failureReason', '')}"
    return list(dict.fromkeys(gone)), refused
