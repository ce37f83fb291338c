"""What ECR holds is checked before it is deployed: one single-platform image
manifest, never an index or an attestation (at the AWS seam, deploy.aws.client)."""

import json
from unittest import mock

import pytest

from deploy import ecr
from deploy.errors import UserError

DIGEST = "sha256:" + "a" * 64
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SINGLE = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
          "config": {"mediaType": "application/vnd.oci.image.config.v1+json"},
          "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}]}
INDEX = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
    {"mediaType": OCI_MANIFEST, "digest": DIGEST, "platform": {"os": "linux", "architecture": "arm64"}},
    {"mediaType": OCI_MANIFEST, "digest": DIGEST, "platform": {"os": "unknown", "architecture": "unknown"}}]}
ATTESTATION = {**SINGLE, "layers": [{"mediaType": "application/vnd.in-toto+json"}]}


def held(listed_as: str, body: dict, reported_as: str = ""):
    """Check an image ECR lists as `listed_as` and returns as `body`."""
    with mock.patch("deploy.aws.client", autospec=True) as client:
        client.return_value.batch_get_image.return_value = {"images": [
            {"imageManifest": json.dumps(body), "imageManifestMediaType": reported_as or listed_as}]}
        ecr.check_single_image(ecr.Image("team/hello", "abc-amd64", DIGEST, 100, listed_as))
    assert client.return_value.batch_get_image.call_args.kwargs["imageIds"] == [{"imageDigest": DIGEST}]


def test_a_single_platform_manifest_passes():
    held(OCI_MANIFEST, SINGLE)


def test_an_image_index_is_refused_naming_its_platforms():
    with pytest.raises(UserError) as refused:
        held(OCI_INDEX, INDEX)
    assert refused.value.code == "image-index"
    assert "linux/arm64" in refused.value.message and "team/hello:abc-amd64" in refused.value.message


def test_an_index_that_ecr_lists_as_a_plain_manifest_is_refused_too():
    with pytest.raises(UserError) as refused:
        held(OCI_MANIFEST, INDEX, reported_as=OCI_MANIFEST)
    assert refused.value.code == "image-index"


def test_an_attestation_manifest_is_refused():
    with pytest.raises(UserError) as refused:
        held(OCI_MANIFEST, ATTESTATION)
    assert refused.value.code == "attestation-manifest"
