"""Build args are validated before they reach the docker CLI's argument list."""

import pytest

from deploy.build import validate_build_args
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
