"""Build args are validated before they reach the docker CLI's argument list, and the
argument list is right for the kind of CLI (at the runner seam, deploy.cli.stream)."""

from unittest import mock

import pytest

from deploy.build import build, validate_build_args
from deploy.errors import UserError


def test_it_passes_identifiers_and_turns_numbers_into_strings():
    assert validate_build_args({"BASE_IMAGE": "slipway/lambda-python:3.11-arm64", "_N": 3, "RATIO": 0.5}) == {
        "BASE_IMAGE": "slipway/lambda-python:3.11-arm64", "_N": "3", "RATIO": "0.5"}


def test_it_accepts_no_build_args():
    assert validate_build_args({}) == validate_build_args(None) == {}


@pytest.mark.parametrize("name", ["1ST", "A-B", "A B", "A=B", "--build-arg", "", "X" * 129])
def test_it_refuses_a_name_that_is_not_an_identifier(name):
    with pytest.raises(UserError, match="not a valid identifier") as refused:
        validate_build_args({name: "x"})
    assert refused.value.code == "bad-build-arg"


@pytest.mark.parametrize("value", ["two\nlines", "carriage\rreturn", "nul\x00byte", None, ["a"], {"a": 1}])
def test_it_refuses_a_value_that_is_not_a_single_line_string(value):
    with pytest.raises(UserError, match="single-line string") as refused:
        validate_build_args({"VALUE": value})
    assert refused.value.code == "bad-build-arg"


def _build_with(builder: str, tmp_path) -> list[str]:
    with mock.patch("deploy.cli.stream", autospec=True, return_value=0) as stream:
        build(builder=builder, context=tmp_path, dockerfile=tmp_path / "Dockerfile", platform="linux/arm64",
              tag="slipway/hello:abc", build_args={}, labels={}, on_line=lambda _: None)
    assert stream.call_count == 1
    return stream.call_args.args[0]


def test_buildx_is_told_to_make_a_single_platform_image_without_attestations(tmp_path):
    args = _build_with("docker buildx", tmp_path)
    assert args[:4] == ["docker", "buildx", "build", "--load"]
    assert "--provenance=false" in args and "--sbom=false" in args


def test_a_cli_with_buildkit_built_in_gets_no_buildx_only_flags(tmp_path):
    args = _build_with("/usr/bin/docker", tmp_path)
    assert args[:2] == ["/usr/bin/docker", "build"]
    assert not any(arg.startswith(("--provenance", "--sbom", "--load")) for arg in args)
