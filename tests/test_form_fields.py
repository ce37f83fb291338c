"""The function form's structured fields take the page's text and the API's JSON by
the same rules: one value, one set of errors, whichever way it came."""

import pytest
from django import forms

from portal.functions.fields import EnvironmentField, JSONObjectField, NamesField


def _clean(field, value):
    try:
        return field.clean(value), None
    except forms.ValidationError as exc:
        return None, " ".join(exc.messages)


@pytest.mark.parametrize("text, structured", [
    ("A=1\n# a comment\n\nB_2=two=2", {"A": "1", "B_2": "two=2"}),
    ("", {}),
    ("EMPTY=", {"EMPTY": ""}),
])
def test_an_environment_reads_the_same_from_lines_and_from_an_object(text, structured):
    field = EnvironmentField(required=False)
    assert _clean(field, text) == (structured, None)
    assert _clean(field, structured) == (structured, None)


@pytest.mark.parametrize("text, structured, error", [
    ("AWS_REGION=x", {"AWS_REGION": "x"}, "AWS_REGION is reserved by Lambda"),
    ("1A=x", {"1A": "x"}, "'1A' is not a valid variable name (a letter, then letters, digits or _)"),
    ("TZ=UTC", {"TZ": "UTC"}, "TZ is reserved by Lambda"),
])
def test_an_environment_is_refused_for_the_same_reason_either_way(text, structured, error):
    field = EnvironmentField(required=False)
    value, from_text = _clean(field, text)
    assert value is None and from_text == f"line 1: {error}"
    value, from_object = _clean(field, structured)
    assert value is None and from_object == error


def test_lines_can_say_what_an_object_cannot():
    field = EnvironmentField(required=False)
    assert _clean(field, "A=1\nA=2") == (None, "line 2: A is set twice")
    assert _clean(field, "NOEQUALS") == (None, "line 1: write KEY=value")
    assert _clean(field, {"A": 1}) == (None, "A: the value must be a string")


def test_a_json_object_is_the_same_as_text_or_decoded():
    field = JSONObjectField(what="The smoke event", required=False)
    assert _clean(field, '{"a": [1, 2]}') == ({"a": [1, 2]}, None)
    assert _clean(field, {"a": [1, 2]}) == ({"a": [1, 2]}, None)
    assert _clean(field, "") == ({}, None)
    assert _clean(field, "[1]") == (None, "The smoke event must be a JSON object")
    assert _clean(field, [1]) == (None, "The smoke event must be a JSON object")
    value, error = _clean(field, "{nope")
    assert value is None and error.startswith("The smoke event is not valid JSON")


def test_names_come_once_each_in_order_from_text_or_a_list():
    field = NamesField(required=False)
    assert _clean(field, "b, a\nb  c") == (["b", "a", "c"], None)
    assert _clean(field, ["b", "a", "b", " c "]) == (["b", "a", "c"], None)
    assert _clean(field, "ok not/a/name") == (None, "not a function name: not/a/name")
    assert _clean(field, ["ok", 3]) == (None, "give function names as strings")
    assert _clean(field, "x" * 4001) == (None, "at most 4000 characters")
