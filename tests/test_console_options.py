"""The detector's options exist once: function/src/detector/options.json, which the detector
validates with and the console form is built from, in the repository and in the portal's image."""

import fnmatch
import json
import shlex
import shutil
from pathlib import Path, PurePosixPath

import pytest

from portal.console import options
from portal.console.forms import ConsoleForm
from tests.detector_fixtures import REPO_ROOT

TARGETS = [("live", "live")]


def dockerfile_copies(dockerfile: Path) -> tuple[PurePosixPath, list[tuple[str, PurePosixPath]]]:
    """The portal Dockerfile's last WORKDIR and its COPY instructions as (source, destination in the image)."""
    workdir, copies = PurePosixPath("/"), []
    for line in dockerfile.read_text().splitlines():
        if line.split(" ", 1)[0] not in ("WORKDIR", "COPY"):
            continue
        words = shlex.split(line, comments=True)
        if words[0] == "WORKDIR":
            workdir = workdir / words[1]
        elif not any(w.startswith("--from") for w in words):
            *sources, dest = words[1:]
            copies += [(source, workdir / dest) for source in sources]
    return workdir, copies


def in_build_context(path: str) -> bool:
    """Whether .dockerignore lets `path` into the build context: the last matching line decides."""
    kept = True
    for line in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        parts = PurePosixPath(path).parts
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            kept = negated
    return kept


@pytest.fixture
def image_schema(tmp_path, monkeypatch) -> Path:
    """The schema where the portal's image holds it, staged under tmp_path as the Dockerfile copies it,
    and portal.console.options pointed at it as it would find it there."""
    workdir, copies = dockerfile_copies(REPO_ROOT / "Dockerfile")
    schema_copies = [(source, dest) for source, dest in copies if source.endswith("options.json")]
    assert len(schema_copies) == 1, "the portal's Dockerfile copies the detector's options.json once"
    source, dest = schema_copies[0]
    assert in_build_context(source), f".dockerignore keeps {source} out of the portal's build context"
    assert (REPO_ROOT / source).resolve() == options.SCHEMA_PATH, "the image holds the schema the detector reads"
    # In the image the application is WORKDIR; options.SCHEMA_PATH must name the copy from there.
    assert dest == workdir / options.SCHEMA_PATH.relative_to(REPO_ROOT).as_posix()
    staged = tmp_path / dest.relative_to("/")
    staged.parent.mkdir(parents=True)
    shutil.copy(REPO_ROOT / source, staged)
    monkeypatch.setattr(options, "SCHEMA_PATH", staged)
    return staged


def test_the_portal_image_holds_the_detectors_schema_and_only_that_of_function():
    assert in_build_context("function/src/detector/options.json")
    for elsewhere in ("function/src/detector/detection.py", "function/Dockerfile", "function/requirements.txt"):
        assert not in_build_context(elsewhere), elsewhere


def test_the_console_form_is_built_from_the_schema_the_image_holds(image_schema):
    schema = json.loads(image_schema.read_text())
    form = ConsoleForm(targets=TARGETS)
    assert [value for value, _ in form.fields["detector"].choices] == list(schema["detectors"])
    assert list(form.fields)[-len(schema["options"]):] == list(schema["options"])
    spec = schema["options"]
    assert (form.fields["scale_factor"].min_value, form.fields["scale_factor"].max_value) == (1.01, 2.0) == (
        spec["scale_factor"]["min"], spec["scale_factor"]["max"])
    assert (form.fields["min_neighbors"].min_value, form.fields["min_neighbors"].max_value) == (
        spec["min_neighbors"]["min"], spec["min_neighbors"]["max"])
    assert form.fields["max_side"].min_value == spec["max_side"]["min"]
    attrs = {name: form.fields[name].widget.attrs for name in spec}
    assert attrs["scale_factor"]["data-haar"] == "default: 1.1" and attrs["scale_factor"]["data-people"] == (
        "default: 1.05")
    assert attrs["min_neighbors"]["data-haar"] == "default: 5" and attrs["min_neighbors"]["data-people"] == (
        "not used")
    assert attrs["min_size"]["placeholder"] == "default: 30x30" and attrs["max_size"]["placeholder"] == (
        "default: none")


def test_the_console_form_follows_a_change_to_the_schema(image_schema):
    schema = json.loads(image_schema.read_text())
    schema["detectors"]["dog_face"] = "haar"
    schema["options"]["scale_factor"].update({"max": 3.0, "default": {"haar": 1.2, "hog": 1.3}})
    schema["options"]["min_size"].update({"max": 500})
    image_schema.write_text(json.dumps(schema))
    form = ConsoleForm({"target": "live", "detector": "dog_face", "sample": "astronaut", "scale_factor": "2.5",
                        "min_size": "501"}, targets=TARGETS)
    assert not form.is_valid()
    assert form.errors == {"min_size": ["min size: each side must be between 1 and 500"]}
    assert form.fields["scale_factor"].widget.attrs["data-people"] == "default: 1.3"


# Each bound the form applies, and the step that takes a value just past it: (option, which bound, step).
OUTSIDE = [
    ("scale_factor", "low", -0.01), ("scale_factor", "high", 0.01),
    ("min_neighbors", "low", -1), ("min_neighbors", "high", 1),
    ("min_size", "low", -1), ("min_size", "high", 1), ("max_size", "low", -1), ("max_size", "high", 1),
    ("max_side", "low", -1),
]


@pytest.mark.parametrize("name, end, step", OUTSIDE, ids=[f"{n}-{e}" for n, e, _ in OUTSIDE])
def test_the_detector_refuses_an_option_past_the_bound_the_form_uses(detector, name, end, step):
    low, high = options.bounds(name)
    bound = low if end == "low" else high
    outside = round(bound + step, 2)
    size = options.spec(name)["type"] == "size"
    given = f"{outside}x{bound}" if size else str(outside)
    fields = {"target": "live", "detector": "face", "sample": "astronaut"}
    if name == "max_size":
        fields["min_size"] = "1"  # so that the smallest max_size is not below the default min_size
    form = ConsoleForm({**fields, name: given}, targets=TARGETS)
    at_bound = ConsoleForm({**fields, name: str(bound)}, targets=TARGETS)
    assert not form.is_valid() and name in form.errors
    assert at_bound.is_valid(), at_bound.errors
    with pytest.raises(detector.BadInput) as refused:
        detector.options.parse({name: [outside, bound] if size else outside})
    assert refused.value.code == "invalid_option"
    assert f"between {low} and {detector.options.HIGH[name]}" in refused.value.message
    if end == "high":
        assert detector.options.HIGH[name] == high
    _, params = detector.options.parse(at_bound.options())
    assert params[name] == ([bound, bound] if size else bound)


def test_max_side_is_bounded_by_the_schema_in_the_detector_and_by_the_largest_size_in_the_form(detector):
    spec = options.spec("max_side")
    assert detector.options.MAX_SIDE == spec["max"]  # no DETECTOR_MAX_SIDE in the test environment
    with pytest.raises(detector.BadInput, match=f"between {spec['min']} and {spec['max']}"):
        detector.options.parse({"max_side": spec["max"] + 1})
    # A function's environment may raise it (max_env); the form cannot see it, so it stops only what no image needs.
    assert options.bounds("max_side") == (spec["min"], options.spec("min_size")["max"])


def test_the_detector_validates_with_the_schema_the_portal_reads(detector):
    schema = options.schema()
    assert detector.options.SCHEMA == schema
    assert detector.options.DETECTORS == tuple(schema["detectors"])
    assert set(detector.detection.HAAR_CASCADES) == {d for d, f in schema["detectors"].items() if f == "haar"}
    _, haar = detector.options.parse({})
    _, hog = detector.options.parse({"detector": "people"})
    for name, spec in schema["options"].items():
        for family, params in (("haar", haar), ("hog", hog)):
            expected = spec["default"].get(family)  # absent: not used, so not in the answer's params
            assert params.get(name) == (detector.options.MAX_SIDE if expected == "max" else expected), (name, family)
