"""The test console's pages, as each of the cast: alice owns `hello`, bob deploys it,
charlie views it, dave has no role. deploy.aws.client is the one seam patched
(autospec): each service gets its own fake client."""

import base64
import io
import json
from unittest import mock

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from django.urls import reverse

from portal.models import AuditEvent, Build, ConsoleImage, ConsoleRun, Deployment, GoldenCase
from tests.conftest import set_environment
from tests.detector_fixtures import png_bomb, sample_path

FACE = {"label": "face", "x": 177, "y": 66, "w": 95, "h": 95, "score": 40}
EMULATOR_TAIL = ("START RequestId: 1d2 Version: 2\n29 Nov 2026 03:47:25,195 [INFO] (rapid) INIT REPORT(durationMs: "
                 "810.500000)\nEND RequestId: 1d2\nREPORT RequestId: 1d2\tInit Duration: 0.05 ms\tDuration: "
                 "854.72 ms\tBilled Duration: 855 ms\tMemory Size: 1024 MB\tMax Memory Used: 1024 MB\t\n")
AWS_TAIL = ("START RequestId: 8f5 Version: 2\nEND RequestId: 8f5\nREPORT RequestId: 8f5\tDuration: 62.34 ms\t"
            "Billed Duration: 63 ms\tMemory Size: 1024 MB\tMax Memory Used: 170 MB\tInit Duration: 350.12 ms\t\n")


def detected(*found, timings=None) -> dict:
    return {"boxes": list(found), "image": {"width": 512, "height": 512, "format": "png"}, "detector": "face",
            "timings_ms": timings or {"fetch": 0.01, "decode": 4.2, "detect": 61.5, "total": 65.7}}


@pytest.fixture
def aws_clients():
    """deploy.aws.client patched with autospec; `clients["lambda"]` and `clients["s3"]` are the fakes."""
    clients = {"lambda": mock.MagicMock(name="lambda"), "s3": mock.MagicMock(name="s3")}
    with mock.patch("deploy.aws.client", autospec=True) as client:
        client.side_effect = lambda service, **_: clients[service]
        yield clients


def answer(clients, result, *, error: str = "", tail: str = EMULATOR_TAIL, version: str = "2") -> None:
    response = {"ExecutedVersion": version, "LogResult": base64.b64encode(tail.encode()).decode(),
                **({"FunctionError": error} if error else {})}
    clients["lambda"].invoke.side_effect = lambda **_: {**response, "Payload": io.BytesIO(json.dumps(result).encode())}


def sent_event(clients, call: int = 0) -> dict:
    return json.loads(clients["lambda"].invoke.call_args_list[call].kwargs["Payload"])


@pytest.fixture
def released(function):
    for version, sha in (("1", "a" * 40), ("2", "b" * 40)):
        build = Build.objects.create(function=function, commit_sha=sha, architecture="arm64", inputs_digest=sha,
                                     status=Build.Status.SUCCEEDED, digest="sha256:" + sha[:2] * 32)
        Deployment.objects.create(function=function, trigger="cli", status="succeeded", version=version, build=build,
                                  commit_sha=sha)
    return function


@pytest.fixture
def astronaut() -> bytes:
    return sample_path("astronaut.png").read_bytes()


def post(client, cast, who, data: dict, name: str = "hello"):
    client.force_login(cast[who])
    return client.post(reverse("portal-console", args=[name]), {"target": "live", "detector": "face", **data})


def upload(data: bytes, name: str = "photo.png") -> io.BytesIO:
    handle = io.BytesIO(data)
    handle.name = name
    return handle


# --- Who may do what --------------------------------------------------------------------


@pytest.mark.parametrize("who, status", [("alice", 302), ("bob", 302), ("charlie", 403), ("dave", 404)])
def test_deployers_and_owners_invoke_viewers_may_not_and_strangers_see_nothing(client, cast, released, aws_clients,
                                                                                astronaut, who, status):
    answer(aws_clients, detected(FACE))
    response = post(client, cast, who, {"image": upload(astronaut)})
    assert response.status_code == status
    assert ConsoleRun.objects.count() == (1 if status == 302 else 0)
    assert aws_clients["lambda"].invoke.call_count == (1 if status == 302 else 0)


def test_a_viewer_sees_the_history_but_no_form(client, cast, released):
    ConsoleRun.objects.create(function=released, user=cast["bob"], target="live", executed_version="2",
                              outcome="ok", result=detected(FACE), box_count=1, round_trip_ms=85.0)
    client.force_login(cast["charlie"])
    page = client.get(reverse("portal-console", args=["hello"])).content.decode()
    assert 'id="console-history"' in page and "bob" in page and "85 ms" in page
    assert 'id="console-form"' not in page and 'id="viewer-note"' in page


# --- Invoking -----------------------------------------------------------------------------


def test_an_upload_is_sent_inline_with_its_options_and_its_box_drawn(client, cast, released, aws_clients, astronaut):
    answer(aws_clients, detected(FACE))
    response = post(client, cast, "bob", {"image": upload(astronaut), "min_neighbors": "3", "min_size": "40x40"})
    event = sent_event(aws_clients)
    assert base64.b64decode(event.pop("image_base64")) == astronaut
    assert event == {"detector": "face", "min_neighbors": 3, "min_size": [40, 40]}
    assert aws_clients["lambda"].invoke.call_args.kwargs["Qualifier"] == "live"
    page = client.get(response["Location"]).content.decode()
    assert '<rect x="177" y="66" width="95" height="95"' in page
    assert 'viewBox="0 0 512 512"' in page and "version 2 ran" in page


def test_an_answer_without_boxes_says_no_objects_detected(client, cast, released, aws_clients, astronaut):
    answer(aws_clients, detected())
    response = post(client, cast, "bob", {"image": upload(astronaut)})
    page = client.get(response["Location"]).content.decode()
    assert 'id="no-objects"' in page and "<rect" not in page
    assert ConsoleRun.objects.get().box_count == 0


@pytest.mark.parametrize("fmt", ["WEBP", "BMP", "JPEG"])
def test_webp_bmp_and_jpeg_uploads_are_sent_as_they_are(client, cast, released, aws_clients, astronaut, fmt):
    from PIL import Image

    converted = io.BytesIO()
    Image.open(io.BytesIO(astronaut)).convert("RGB").save(converted, fmt)
    answer(aws_clients, detected(FACE))
    post(client, cast, "bob", {"image": upload(converted.getvalue(), f"photo.{fmt.lower()}")})
    assert base64.b64decode(sent_event(aws_clients)["image_base64"]) == converted.getvalue()
    assert ConsoleImage.objects.get().format == fmt.lower()


def test_a_functions_own_lower_pixel_cap_is_the_one_checked(client, cast, released, aws_clients, astronaut):
    set_environment(released, environment={"DETECTOR_MAX_PIXELS": "1000"})
    response = post(client, cast, "bob", {"image": upload(astronaut)})
    assert response.status_code == 400 and "over the 1,000 pixel limit" in response.content.decode()
    aws_clients["lambda"].invoke.assert_not_called()


def test_a_sample_image_is_sent_without_an_upload(client, cast, released, aws_clients):
    answer(aws_clients, detected())
    post(client, cast, "bob", {"sample": "chelsea", "detector": "cat_face"})
    sent = base64.b64decode(sent_event(aws_clients)["image_base64"])
    assert sent == sample_path("chelsea.png").read_bytes()
    assert ConsoleRun.objects.get().image_name == "chelsea.png"


def test_the_same_image_sent_twice_is_stored_once(client, cast, released, aws_clients, astronaut):
    answer(aws_clients, detected(FACE))
    post(client, cast, "bob", {"image": upload(astronaut)})
    image = ConsoleImage.objects.get()
    post(client, cast, "bob", {"image_id": str(image.pk)})
    assert ConsoleRun.objects.filter(image=image).count() == 2 and ConsoleImage.objects.count() == 1
    assert base64.b64decode(sent_event(aws_clients, 1)["image_base64"]) == astronaut


def test_the_raw_request_shows_the_options_but_not_the_image_bytes(client, cast, released, aws_clients, astronaut):
    answer(aws_clients, detected(FACE))
    response = post(client, cast, "bob", {"image": upload(astronaut), "max_side": "256"})
    page = client.get(response["Location"]).content.decode()
    encoded = base64.b64encode(astronaut).decode()
    assert encoded[:200] not in page
    assert "characters of base64" in page and "&quot;max_side&quot;: 256" in page


def test_timings_on_the_local_plane_say_what_was_not_measured(client, cast, released, aws_clients, astronaut,
                                                              settings):
    settings.AWS_ENDPOINT_URL = "http://127.0.0.1:4585"
    answer(aws_clients, detected(FACE))
    page = client.get(post(client, cast, "bob", {"image": upload(astronaut)})["Location"]).content.decode()
    run = ConsoleRun.objects.get()
    assert run.init_ms == 810.5 and run.memory_used_mb is None and run.billed_ms is None
    assert "810.5 ms" in page and "61.5 ms" in page  # the cold start; the function's own detect time
    assert page.count("not measured locally") == 2  # billed duration and memory


def test_timings_on_aws_come_from_its_report_line(client, cast, released, aws_clients, astronaut, settings):
    settings.AWS_ENDPOINT_URL = ""
    answer(aws_clients, detected(FACE), tail=AWS_TAIL)
    page = client.get(post(client, cast, "bob", {"image": upload(astronaut)})["Location"]).content.decode()
    assert "350.1 ms" in page and "63.0 ms" in page and "170 MB" in page
    assert "not measured locally" not in page


# --- Bad input: a precise message, no invoke, nothing stored ------------------------------


def _truncated(data: bytes) -> bytes:
    return data[: len(data) * 2 // 3]


@pytest.mark.parametrize("case, status, message", [
    ("empty", 400, "is empty (0 bytes)"),
    ("text", 400, "is not an image"),
    ("gif", 400, "is a GIF image; send JPEG, PNG, WebP or BMP"),
    ("truncated_png", 400, "is truncated or damaged"),
    ("truncated_jpeg", 400, "is truncated or damaged"),
    ("over_pixel_cap", 400, "8000x6000 (48,000,000 pixels), over the 40,000,000 pixel limit"),
])
def test_bad_images_are_refused_precisely_without_invoking(client, cast, released, aws_clients, astronaut,
                                                           case, status, message, tmp_path):
    from PIL import Image

    jpeg = io.BytesIO()
    Image.open(io.BytesIO(astronaut)).convert("RGB").save(jpeg, "JPEG")
    data = {"empty": b"", "text": b"%PDF-1.7 not an image", "truncated_png": _truncated(astronaut),
            "gif": sample_path("no_time_for_that_tiny.gif").read_bytes(), "over_pixel_cap": png_bomb(),
            "truncated_jpeg": _truncated(jpeg.getvalue())}[case]
    response = post(client, cast, "bob", {"image": upload(data)})
    assert response.status_code == status
    assert message in response.content.decode()
    aws_clients["lambda"].invoke.assert_not_called()
    assert ConsoleRun.objects.count() == ConsoleImage.objects.count() == 0


def test_an_upload_over_the_cap_is_refused_before_it_is_read_whole(client, cast, released, aws_clients, astronaut,
                                                                   settings):
    settings.SLIPWAY_CONSOLE_MAX_UPLOAD = len(astronaut) - 1
    response = post(client, cast, "bob", {"image": upload(astronaut)})
    assert response.status_code == 413
    assert f"over the {len(astronaut) - 1:,} byte cap" in response.content.decode()
    aws_clients["lambda"].invoke.assert_not_called()
    assert ConsoleRun.objects.count() == 0


def test_a_bad_option_is_refused_before_invoking(client, cast, released, aws_clients, astronaut):
    response = post(client, cast, "bob", {"image": upload(astronaut), "min_size": "80x80", "max_size": "40x40"})
    assert response.status_code == 400
    assert "max size must not be smaller than min size" in response.content.decode()
    aws_clients["lambda"].invoke.assert_not_called()


def test_a_function_without_a_deployment_is_refused_without_invoking(client, cast, function, aws_clients, astronaut):
    response = post(client, cast, "bob", {"image": upload(astronaut)})
    assert response.status_code == 409 and b"has no deployment yet" in response.content
    aws_clients["lambda"].invoke.assert_not_called()
    assert b'id="console-form"' not in client.get(reverse("portal-console", args=["hello"])).content


def test_the_plane_down_gives_a_precise_message_and_stores_nothing(client, cast, released, aws_clients, astronaut):
    aws_clients["lambda"].invoke.side_effect = EndpointConnectionError(endpoint_url="http://127.0.0.1:4585/")
    response = post(client, cast, "bob", {"image": upload(astronaut)})
    assert response.status_code == 502
    assert "could not reach" in response.content.decode() and "team-hello:live" in response.content.decode()
    assert aws_clients["lambda"].invoke.call_count == 1  # a person waits: not retried
    assert ConsoleRun.objects.count() == ConsoleImage.objects.count() == 0


def test_a_version_lambda_does_not_know_is_named(client, cast, released, aws_clients, astronaut):
    aws_clients["lambda"].invoke.side_effect = ClientError(
        {"Error": {"Code": "ResourceNotFoundException", "Message": "Function not found"}}, "Invoke")
    response = post(client, cast, "bob", {"image": upload(astronaut), "target": "1"})
    assert response.status_code == 404
    assert "team-hello:1 does not exist" in response.content.decode()


# --- What the function answered ------------------------------------------------------------


def test_a_function_error_shows_its_type_and_message(client, cast, released, aws_clients, astronaut):
    answer(aws_clients, {"errorType": "MemoryError", "errorMessage": "cannot allocate 9 GB"}, error="Unhandled")
    page = client.get(post(client, cast, "bob", {"image": upload(astronaut)})["Location"]).content.decode()
    assert "The function raised" in page and "MemoryError" in page and "cannot allocate 9 GB" in page
    assert ConsoleRun.objects.get().outcome == ConsoleRun.Outcome.FUNCTION_ERROR


def test_a_structured_error_answer_shows_its_code_and_message(client, cast, released, aws_clients, astronaut):
    answer(aws_clients, {"error": {"code": "image_too_large", "message": "8000x6000 is over the limit"}})
    page = client.get(post(client, cast, "bob", {"image": upload(astronaut)})["Location"]).content.decode()
    assert "answered with an error" in page and "image_too_large" in page and "8000x6000 is over the limit" in page
    assert ConsoleRun.objects.get().box_count is None


def test_a_timeout_says_the_function_ran_past_its_limit(client, cast, released, aws_clients, astronaut):
    answer(aws_clients, {"errorType": "Sandbox.Timedout", "errorMessage": "Task timed out after 30.00 seconds"},
           error="Unhandled")
    page = client.get(post(client, cast, "bob", {"image": upload(astronaut)})["Location"]).content.decode()
    assert "Timed out" in page and "ran past its 30 s timeout" in page
    assert ConsoleRun.objects.get().outcome == ConsoleRun.Outcome.TIMEOUT


# --- The S3 path ---------------------------------------------------------------------------


@pytest.fixture
def large_png() -> bytes:
    """Noise does not compress: ~5.3 MB of PNG, whose base64 event is over Lambda's 6 MB."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(7).integers(0, 256, (1330, 1330, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG", compress_level=1)
    assert 4.6e6 < len(out.getvalue()) < 20e6
    return out.getvalue()


def test_an_image_over_the_payload_limit_goes_through_s3_and_is_deleted(client, cast, released, aws_clients,
                                                                        large_png):
    answer(aws_clients, detected())
    post(client, cast, "bob", {"image": upload(large_png), "max_side": "512"})
    put = aws_clients["s3"].put_object.call_args.kwargs
    assert put["Bucket"] == "slipway-console" and put["Body"] == large_png
    assert sent_event(aws_clients) == {"bucket": "slipway-console", "key": put["Key"], "detector": "face",
                                       "max_side": 512}
    aws_clients["s3"].delete_object.assert_called_once_with(Bucket="slipway-console", Key=put["Key"])
    assert ConsoleRun.objects.get().via_s3


def test_the_s3_object_is_deleted_even_when_the_invoke_fails(client, cast, released, aws_clients, large_png):
    aws_clients["lambda"].invoke.side_effect = EndpointConnectionError(endpoint_url="http://127.0.0.1:4585/")
    response = post(client, cast, "bob", {"image": upload(large_png)})
    assert response.status_code == 502
    key = aws_clients["s3"].put_object.call_args.kwargs["Key"]
    aws_clients["s3"].delete_object.assert_called_once_with(Bucket="slipway-console", Key=key)


def test_the_console_bucket_is_created_when_missing_on_the_local_plane(client, cast, released, aws_clients,
                                                                       large_png):
    aws_clients["s3"].head_bucket.side_effect = ClientError({"Error": {"Code": "404", "Message": ""}}, "HeadBucket")
    answer(aws_clients, detected())
    post(client, cast, "bob", {"image": upload(large_png)})
    aws_clients["s3"].create_bucket.assert_called_once_with(Bucket="slipway-console")


def test_a_small_image_never_touches_s3(client, cast, released, aws_clients, astronaut):
    answer(aws_clients, detected(FACE))
    post(client, cast, "bob", {"image": upload(astronaut)})
    aws_clients["s3"].put_object.assert_not_called()
    assert "image_base64" in sent_event(aws_clients)


# --- Compare mode --------------------------------------------------------------------------


def test_compare_sends_one_image_to_two_targets_and_marks_what_moved(client, cast, released, aws_clients, astronaut):
    moved = {**FACE, "x": FACE["x"] + 20, "y": FACE["y"] + 20}
    results = iter([detected(FACE, {**FACE, "label": "eye", "x": 300}), detected(moved)])
    aws_clients["lambda"].invoke.side_effect = lambda **kw: {"Payload": io.BytesIO(json.dumps(next(results)).encode()),
                                                             "ExecutedVersion": kw["Qualifier"]}
    response = post(client, cast, "bob", {"image": upload(astronaut), "target": "2", "compare_with": "1"})
    assert [c.kwargs["Qualifier"] for c in aws_clients["lambda"].invoke.call_args_list] == ["2", "1"]
    page = client.get(response["Location"]).content.decode()
    assert "0 same ·" in page and "1 moved" in page and "1 only left, 0 only right" in page
    assert 'class="box moved"' in page and 'class="box unmatched"' in page
    assert ConsoleImage.objects.count() == 1 and ConsoleRun.objects.count() == 2


# --- Golden cases --------------------------------------------------------------------------


@pytest.fixture
def ok_run(released, cast, astronaut):
    image = ConsoleImage.objects.create(function=released, sha256="f" * 64, data=astronaut, format="png", width=512,
                                        height=512, size_bytes=len(astronaut), name="astronaut.png")
    return ConsoleRun.objects.create(function=released, user=cast["bob"], image=image, target="live",
                                     executed_version="2", options={"detector": "face"}, outcome="ok",
                                     result=detected(FACE), box_count=1, round_trip_ms=80)


@pytest.mark.parametrize("who, status", [("alice", 302), ("bob", 403), ("charlie", 403), ("dave", 404)])
def test_only_owners_save_golden_cases(client, cast, ok_run, who, status):
    client.force_login(cast[who])
    response = client.post(reverse("portal-golden-save", args=["hello", ok_run.pk]), {"name": "astronaut"})
    assert response.status_code == status
    assert GoldenCase.objects.count() == (1 if status == 302 else 0)
    if status == 302:
        case = GoldenCase.objects.get()
        assert (case.boxes, case.options, case.version) == ([FACE], {"detector": "face"}, "2")
        assert AuditEvent.objects.filter(action="golden_case.saved", actor=cast["alice"]).exists()


def test_an_error_answer_cannot_become_a_golden_case(client, cast, ok_run):
    ConsoleRun.objects.filter(pk=ok_run.pk).update(outcome="error_result", result={"error": {"code": "x"}})
    client.force_login(cast["alice"])
    client.post(reverse("portal-golden-save", args=["hello", ok_run.pk]), {"name": "broken"})
    assert not GoldenCase.objects.exists()


@pytest.mark.parametrize("who, status", [("alice", 200), ("bob", 200), ("charlie", 200), ("dave", 404)])
def test_members_list_and_view_golden_cases(client, cast, ok_run, who, status):
    case = GoldenCase.objects.create(function=ok_run.function, name="astronaut", image=ok_run.image,
                                     options={"detector": "face"}, boxes=[FACE], version="2")
    client.force_login(cast[who])
    response = client.get(reverse("portal-golden", args=["hello", case.pk]))
    assert response.status_code == status
    if status == 200:
        assert b'<rect x="177" y="66" width="95" height="95"' in response.content
        assert b"astronaut" in client.get(reverse("portal-console", args=["hello"])).content


@pytest.mark.parametrize("who, status", [("alice", 302), ("bob", 403), ("charlie", 403), ("dave", 404)])
def test_only_owners_delete_golden_cases(client, cast, ok_run, who, status):
    case = GoldenCase.objects.create(function=ok_run.function, name="astronaut", image=ok_run.image, boxes=[FACE])
    client.force_login(cast[who])
    assert client.post(reverse("portal-golden-delete", args=["hello", case.pk])).status_code == status
    assert GoldenCase.objects.exists() == (status != 302)


def test_an_image_is_served_to_members_as_the_image_it_is(client, cast, ok_run):
    client.force_login(cast["charlie"])
    response = client.get(reverse("portal-console-image", args=["hello", ok_run.image_id]))
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff" and response.content == bytes(ok_run.image.data)
    client.force_login(cast["dave"])
    assert client.get(reverse("portal-console-image", args=["hello", ok_run.image_id])).status_code == 404


def test_an_invoke_without_the_csrf_token_is_refused(cast, released, aws_clients, astronaut):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(cast["bob"])
    response = client.post(reverse("portal-console", args=["hello"]),
                           {"image": upload(astronaut), "target": "live", "detector": "face"})
    assert response.status_code == 403
    aws_clients["lambda"].invoke.assert_not_called()


def test_a_version_whose_deploy_failed_verify_can_still_be_sent_an_image(client, cast, released, aws_clients,
                                                                         astronaut):
    Deployment.objects.create(function=released, trigger="ui", status="failed", version="3",
                              error_code="golden-mismatch")
    client.force_login(cast["bob"])
    assert "version 3 (its deploy failed)" in client.get(reverse("portal-console", args=["hello"])).content.decode()
    answer(aws_clients, detected(FACE), version="3")
    assert post(client, cast, "bob", {"image": upload(astronaut), "target": "3"}).status_code == 302
    assert aws_clients["lambda"].invoke.call_args.kwargs["Qualifier"] == "3"
