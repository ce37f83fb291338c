"""Golden cases as the pipeline sees them: the box matching, the verify step's gate
(deploys only), and the retention of console images. deploy.aws.client is the one
seam patched."""

import base64
import io
import json
from datetime import timedelta
from unittest import mock

import pytest
from django.conf import settings
from django.utils import timezone

from deploy.errors import UserError
from portal.console import boxes
from portal.models import ConsoleImage, ConsoleRun, Deployment, GoldenCase
from tests.conftest import set_environment
from tests.detector_fixtures import sample_path

FACE = {"label": "face", "x": 177, "y": 66, "w": 95, "h": 95, "score": 40}
SHIFTED = {**FACE, "x": 197, "y": 86}


def test_a_box_shifted_by_20_px_is_the_same_object_moved():
    found = boxes.match([FACE], [SHIFTED], 0.9)
    assert [round(p.iou, 2) for p in found.moved] == [0.45]
    assert not found.same and not found.only_left and not found.only_right


def test_the_diff_names_moved_missing_and_new_boxes():
    eye = {"label": "eye", "x": 300, "y": 100, "w": 20, "h": 20}
    lines = boxes.diff([FACE, eye], [SHIFTED, {**eye, "label": "cat_face"}], 0.9)
    assert lines == ["moved: face at (177,66 95x95) is now face at (197,86 95x95) (IoU 0.45 < 0.90)",
                     "missing: eye at (300,100 20x20)", "new: cat_face at (300,100 20x20)"]
    assert boxes.diff([FACE], [dict(FACE)], 0.9) == []


def test_the_console_pixel_cap_is_the_detectors(detector):
    assert settings.SLIPWAY_CONSOLE_MAX_PIXELS == detector.sniff.MAX_PIXELS


@pytest.fixture
def lam():
    with mock.patch("deploy.aws.client", autospec=True) as client:
        yield client.return_value


def answers(lam, *results) -> None:
    found = iter(results)
    lam.invoke.side_effect = lambda **kw: {"Payload": io.BytesIO(json.dumps(next(found)).encode()),
                                           "ExecutedVersion": kw["Qualifier"]}


@pytest.fixture
def case(function):
    data = sample_path("astronaut.png").read_bytes()
    image = ConsoleImage.objects.create(function=function, sha256="a" * 64, data=data, format="png", width=512,
                                        height=512, size_bytes=len(data))
    return GoldenCase.objects.create(function=function, name="astronaut", image=image,
                                     options={"detector": "face", "min_neighbors": 4}, boxes=[FACE], version="1")


def verify(function, *, golden: bool, kind: str = "deploy") -> list[str]:
    from portal.deployments import steps

    deployment = Deployment.objects.create(function=function, trigger="ui", kind=kind, version="3",
                                           status=Deployment.Status.VERIFYING)
    lines: list[str] = []
    steps.verify_version(steps.Run(deployment), lines.append, golden=golden)
    return lines


def test_a_new_version_whose_boxes_moved_fails_verify_with_the_diff(function, case, lam):
    answers(lam, {"boxes": [FACE]}, {"boxes": [SHIFTED]})
    with pytest.raises(UserError) as failed:
        verify(function, golden=True)
    assert failed.value.code == "golden-mismatch" and "fails 1 of 1 golden case(s)" in failed.value.message
    event = json.loads(lam.invoke.call_args.kwargs["Payload"])
    assert base64.b64decode(event["image_base64"]) == bytes(case.image.data) and event["min_neighbors"] == 4
    assert lam.invoke.call_args.kwargs["Qualifier"] == "3"


def test_a_new_version_with_the_same_boxes_passes_its_golden_cases(function, case, lam):
    answers(lam, {"boxes": [FACE]}, {"boxes": [{**FACE, "x": 178}]})
    lines = verify(function, golden=True)
    assert any("golden case 'astronaut'" in line and "passed" in line for line in lines)
    assert lam.invoke.call_count == 2


def test_an_error_answer_to_a_golden_case_fails_verify(function, case, lam):
    answers(lam, {"boxes": [FACE]}, {"error": {"code": "invalid_option", "message": "min_neighbors"}})
    with pytest.raises(UserError, match="answered error_result: invalid_option"):
        verify(function, golden=True)


def test_a_rollbacks_verify_sends_only_the_smoke_event_though_a_golden_case_exists(function, case, lam):
    answers(lam, {"boxes": [FACE]})
    lines = verify(function, golden=False, kind="rollback")
    assert lam.invoke.call_count == 1 and "rollback is never blocked" in lines[-1]


def test_a_rollbacks_fallback_ships_without_golden_cases_and_a_deploy_with_them(function):
    from portal.deployments import pipeline, steps
    from portal.deployments.recording import Recorder

    gated = {}
    for kind in ("rollback", "deploy"):
        deployment = Deployment.objects.create(function=function, trigger="ui", kind=kind, status="checking")
        with mock.patch.multiple(steps, enter_lambda_steps=mock.DEFAULT, update_function=mock.DEFAULT,
                                 wait_updated=mock.DEFAULT, publish_version=mock.DEFAULT,
                                 verify_version=mock.DEFAULT, autospec=True) as patched:
            patched["enter_lambda_steps"].return_value = 0.0
            pipeline.ship(steps.Run(deployment), Recorder(deployment))
        gated[kind] = patched["verify_version"].call_args.kwargs["golden"]
    assert gated == {"rollback": False, "deploy": True}


# --- Retention ---------------------------------------------------------------------------


def _image(function, name: str, hours_ago: float) -> ConsoleImage:
    return ConsoleImage.objects.create(function=function, sha256=name * 64, data=b"x", format="png", width=1,
                                       height=1, size_bytes=1, last_used_at=timezone.now() - timedelta(hours=hours_ago))


def test_the_cleanup_removes_old_images_but_keeps_golden_ones_and_the_answers(function):
    from workers.tasks import console_cleanup

    old, recent, golden = _image(function, "a", 30), _image(function, "b", 1), _image(function, "c", 30)
    GoldenCase.objects.create(function=function, name="kept", image=golden)
    run = ConsoleRun.objects.create(function=function, image=old, target="live", outcome="ok",
                                    result={"boxes": [FACE]}, box_count=1, round_trip_ms=5)
    assert console_cleanup() == 1
    assert set(ConsoleImage.objects.values_list("pk", flat=True)) == {recent.pk, golden.pk}
    run.refresh_from_db()
    assert run.image_id is None and run.boxes == [FACE]


def test_the_cleanup_runs_periodically_under_its_task_name():
    from portal.celery import CONSOLE_CLEANUP_TASK, app
    from workers import tasks  # noqa: F401 - registers the tasks, as the worker does

    scheduled = [entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()]
    assert CONSOLE_CLEANUP_TASK == "slipway.console_cleanup" and CONSOLE_CLEANUP_TASK in scheduled
    assert CONSOLE_CLEANUP_TASK in app.tasks
    assert settings.CELERY_TASK_ROUTES[CONSOLE_CLEANUP_TASK] == {"queue": "rollbacks"}


def test_owners_set_the_golden_iou_threshold_and_leaving_it_out_keeps_it(client, cast, function):
    from django.urls import reverse

    from tests.test_views import _form

    function.ecr_repository = "slipway/hello"
    function.save()
    set_environment(function, lambda_name="slipway-hello")
    client.force_login(cast["alice"])
    url = reverse("portal-function-edit", args=["hello"])
    data = _form(name="hello", lambda_name="slipway-hello", ecr_repository="slipway/hello")
    assert client.post(url, {**data, "golden_iou": "0.75"}).status_code == 302
    assert client.post(url, data).status_code == 302  # an older client that does not know the field
    function.refresh_from_db()
    assert function.golden_iou == 0.75
    assert client.post(url, {**data, "golden_iou": "1.5"}).status_code == 400
