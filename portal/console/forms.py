"""The console's forms: an image with the detector's options, and naming a golden case.
"""

from __future__ import annotations

import re

from django import forms

SIZE = re.compile(r"^\s*(\d{1,5})\s*(?:[x,]\s*(\d{1,5}))?\s*$", re.IGNORECASE)


def _size(value: str, field: str) -> list[int] | None:
    if not value.strip():
        return None
    found = SIZE.match(value)
    if not found:
        raise forms.ValidationError(f"{field}: write WIDTHxHEIGHT (e.g. 30x30) or one number for a square")
    width, height = int(found.group(1)), int(found.group(2) or found.group(1))
    if not (1 <= width <= 20000 and 1 <= height <= 20000):
        raise forms.ValidationError(f"{field}: each side must be between 1 and 20000")
    return [width, height]


class ConsoleForm(forms.Form):
    """One console invoke: an image (upload, sample, or one already stored), the target
    (and a second one to compare), the detector and its options. Empty options are not
    sent: the function applies its own defaults, which the form shows as placeholders.
    Ranges are the detector's (function/src/handler.py), so a typo costs no invoke."""

    image = forms.FileField(required=False, allow_empty_file=True)
    sample = forms.ChoiceField(required=False, choices=[("", "—")])
    image_id = forms.IntegerField(required=False, widget=forms.HiddenInput)
    target = forms.ChoiceField(choices=[])
    compare_with = forms.ChoiceField(required=False, choices=[], label="Compare with")
    detector = forms.ChoiceField(choices=[])
    scale_factor = forms.FloatField(required=False, min_value=1.01, max_value=2.0)
    min_neighbors = forms.IntegerField(required=False, min_value=0, max_value=100)
    min_size = forms.CharField(required=False, max_length=20)
    max_size = forms.CharField(required=False, max_length=20)
    max_side = forms.IntegerField(required=False, min_value=32, max_value=20000)

    def __init__(self, *args, targets: list[tuple[str, str]], **kwargs):
        from portal.console import images

        super().__init__(*args, **kwargs)
        self.fields["target"].choices = targets
        self.fields["compare_with"].choices = [("", "— no comparison —"), *targets]
        self.fields["detector"].choices = [(d, d) for d in images.DETECTORS]
        self.fields["sample"].choices = [("", "—")] + [(k, f"{k} ({v['what']})") for k, v in images.SAMPLES.items()]
        for name in ("scale_factor", "min_neighbors", "min_size", "max_size", "max_side"):
            unset = "not used" if name == "min_neighbors" else "default: none"
            shown = {kind: f"default: {values[name]}" if values[name] != "" else unset
                     for kind, values in images.DEFAULTS.items()}
            # The page swaps the placeholder when the detector changes (HOG has its own defaults).
            self.fields[name].widget.attrs.update({"placeholder": shown["haar"], "data-haar": shown["haar"],
                                                   "data-people": shown["people"], "style": "min-width:8rem"})
        self.fields["scale_factor"].widget.attrs["step"] = "0.01"

    def clean_min_size(self):
        return _size(self.cleaned_data["min_size"], "min size")

    def clean_max_size(self):
        return _size(self.cleaned_data["max_size"], "max size")

    def clean(self):
        data = super().clean()
        given = [bool(data.get("image")), bool(data.get("sample")), data.get("image_id") is not None]
        if sum(given) == 0 and not self.errors:
            raise forms.ValidationError("choose an image: upload one, drop or paste it, or pick a sample")
        if sum(given) > 1:
            raise forms.ValidationError("send one image: an upload, a sample or the previous image, not several")
        smallest, largest = data.get("min_size"), data.get("max_size")
        if smallest and largest and (largest[0] < smallest[0] or largest[1] < smallest[1]):
            self.add_error("max_size", "max size must not be smaller than min size")
        if data.get("compare_with") and data.get("compare_with") == data.get("target"):
            self.add_error("compare_with", "compare with another target than the first")
        return data

    def options(self) -> dict:
        """The event's options: the detector, and each option that was given."""
        data = self.cleaned_data
        options = {"detector": data["detector"]}
        for name in ("scale_factor", "min_neighbors", "min_size", "max_size", "max_side"):
            if data.get(name) not in (None, ""):
                options[name] = data[name]
        return options


class GoldenCaseForm(forms.Form):
    name = forms.CharField(max_length=100)
