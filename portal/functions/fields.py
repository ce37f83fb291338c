"""Form fields that take a value as the page writes it or as the API sends it.

The page edits an environment as `KEY=value` lines, build args and the smoke
event as JSON text, and a list of names one a line; the API sends a JSON object
or a list. Each field turns either into the same Python value and checks it by
the same rules, so the API is validated exactly as the page is, without writing
its values back into the page's text first.
"""

from __future__ import annotations

import json
import re

from django import forms

ENV_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# Lambda sets these itself and refuses them in a function's configuration.
RESERVED_ENV = re.compile(r"^(AWS_.*|_HANDLER|_X_AMZN_TRACE_ID|LAMBDA_TASK_ROOT|LAMBDA_RUNTIME_DIR|TZ)$")
SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,64}$")  # a function's name (a SlugField)


def _env_pairs(text: str):
    """(where, key, value) of `KEY=value` lines; blank lines and `#` comments ignored."""
    for number, line in enumerate((text or "").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise forms.ValidationError(f"line {number}: write KEY=value")
        yield f"line {number}: ", key.strip(), value


def _object_pairs(value: dict):
    for key, item in value.items():
        if not isinstance(item, str):
            raise forms.ValidationError(f"{key}: the value must be a string")
        yield "", key, item


class EnvironmentField(forms.CharField):
    """Environment variables: `KEY=value` lines, or an object of strings. A dict."""

    widget = forms.Textarea(attrs={"rows": 4})

    def to_python(self, value) -> dict[str, str]:
        pairs = _object_pairs(value) if isinstance(value, dict) else _env_pairs(super().to_python(value))
        env: dict[str, str] = {}
        for where, key, item in pairs:
            if not ENV_KEY.match(key):
                raise forms.ValidationError(f"{where}{key!r} is not a valid variable name "
                                            "(a letter, then letters, digits or _)")
            if RESERVED_ENV.match(key):
                raise forms.ValidationError(f"{where}{key} is reserved by Lambda")
            if key in env:
                raise forms.ValidationError(f"{where}{key} is set twice")
            env[key] = item
        return env


class JSONObjectField(forms.CharField):
    """A JSON object, as text or already decoded. A dict; empty means {}."""

    widget = forms.Textarea(attrs={"rows": 3})

    def __init__(self, *, what: str, **kwargs):
        self.what = what
        super().__init__(**kwargs)

    def to_python(self, value) -> dict:
        if not isinstance(value, (dict, list, int, float, bool)):
            try:
                value = json.loads(super().to_python(value) or "{}")
            except ValueError as exc:
                raise forms.ValidationError(f"{self.what} is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise forms.ValidationError(f"{self.what} must be a JSON object")
        return value


class NamesField(forms.CharField):
    """Function names, one a line (or separated by spaces or commas), or a list. Each once, in order."""

    widget = forms.Textarea(attrs={"rows": 2})
    LIMIT = 4000  # characters of text, or names in a list

    def to_python(self, value) -> list[str]:
        if isinstance(value, (list, tuple)):
            if not all(isinstance(name, str) for name in value):
                raise forms.ValidationError("give function names as strings")
            names = [name.strip() for name in value]
        else:
            names = re.split(r"[\s,]+", super().to_python(value).strip())
        if len(names) > self.LIMIT or (isinstance(value, str) and len(value) > self.LIMIT):
            raise forms.ValidationError(f"at most {self.LIMIT} characters")
        names = [name for name in dict.fromkeys(names) if name]
        wrong = [name for name in names if not SLUG.match(name)]
        if wrong:
            raise forms.ValidationError(f"not a function name: {', '.join(wrong[:5])}")
        return names

    def validate(self, value) -> None:
        if self.required and not value:
            raise forms.ValidationError(self.error_messages["required"], code="required")
