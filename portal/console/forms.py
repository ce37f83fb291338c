"""The console's forms: an image with the detector's options, and naming a golden case.
"""

from __future__ import annotations

import re

from django import forms

from portal.console import options

SIZE = re.compile(r"^\s*(\d{1,5})\s*(?:[x,]\s*(\d{1,5}))?\s*$", re.IGNORECASE)


class SizeField(forms.CharField):
    """A size as the detector takes it: WIDTHxHEIGHT, or one number for a square; empty: None."""

    def __init__(self, *, low: int, high: int, what: str, **kwargs):
        super().__init__(max_length=20, **kwargs)
        self.low, self.high, self.what = low, high, what  # what: the size's name in messages

    def clean(self, value):
        value = super().clean(value)
        if not value.strip():
            return None
        what = self.what
        found = SIZE.match(value)
        if not found:
            raise forms.ValidationError(f"{what}: write WIDTHxHEIGHT (e.g. 30x30) or one number for a square")
        width, height = int(found.group(1)), int(found.group(2) or found.group(1))
        if not (self.low <= width <= self.high and self.low <= height <= self.high):
            raise forms.ValidationError(f"{what}: each side must be between {self.low} and {self.high}")
        return [width, height]


def _option_field(name: str) -> forms.Field:
    """The field for one of the detector's options, bounded as the detector bounds it (options.json)."""
    kind, (low, high) = options.spec(name)["type"], options.bounds(name)
    if kind == "size":
        return SizeField(required=False, low=low, high=high, what=name.replace("_", " "))
    field = forms.FloatField if kind == "number" else forms.IntegerField
    return field(required=False, min_value=low, max_value=high)


class ConsoleForm(forms.Form):
    """One console invoke: an image (upload, sample, or one already stored), the target
    (and a second one to compare), the detector and its options. Empty options are not
    sent: the function applies its own defaults, which the form shows as placeholders.
    Detectors, ranges and defaults are the detector's own (its options.json, read by
    portal.console.options), so a typo costs no invoke."""

    image = forms.FileField(required=False, allow_empty_file=True)
    sample = forms.ChoiceField(required=False, choices=[("", "—")])
    image_id = forms.IntegerField(required=False, widget=forms.HiddenInput)
    target = forms.ChoiceField(choices=[])
    compare_with = forms.ChoiceField(required=False, choices=[], label="Compare with")
    detector = forms.ChoiceField(choices=[])
    # Then one field per option of the detector's schema, added in __init__ (after this one, in its order).

    def __init__(self, *args, targets: list[tuple[str, str]], **kwargs):
        from portal.console import images

        super().__init__(*args, **kwargs)
        self.fields["target"].choices = targets
        self.fields["compare_with"].choices = [("", "— no comparison —"), *targets]
        self.fields["detector"].choices = [(d, d) for d in options.detectors()]
        self.fields["sample"].choices = [("", "—")] + [(k, f"{k} ({v['what']})") for k, v in images.SAMPLES.items()]
        for name in options.names():
            self.fields[name] = _option_field(name)
            shown = {family: options.placeholder(name, family) for family in options.families()}
            # The page swaps the placeholder when the detector changes: data-people holds the HOG family's
            # (people is its one detector), data-haar the cascades'.
            self.fields[name].widget.attrs.update({"placeholder": shown["haar"], "data-haar": shown["haar"],
                                                   "data-people": shown["hog"], "style": "min-width:8rem"})
        self.fields["scale_factor"].widget.attrs["step"] = "0.01"

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
        given = {"detector": data["detector"]}
        for name in options.names():
            if data.get(name) not in (None, ""):
                given[name] = data[name]
        return given


class GoldenCaseForm(forms.Form):
    name = forms.CharField(max_length=100)
