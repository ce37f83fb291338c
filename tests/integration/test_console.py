"""The console against the real detector on the local stack: the boxes it draws are
OpenCV's, a large image goes through S3 and is gone afterwards, and a golden case
stops a deploy whose boxes moved before its alias does."""

import io
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from django.urls import reverse

from deploy import aws, lambdas
from portal.deployments.requesting import request_deploy
from portal.models import ConsoleRun, GoldenCase, Membership
from tests.detector_fixtures import FUNCTION_DIR, assert_same_boxes, b64, sample_path
from tests.integration.conftest import SHIFTED_HANDLER_FILE, SHIFTED_HANDLER_TAIL, wait_done

pytestmark = pytest.mark.integration


@pytest.fixture
def owner(detector_function, django_user_model):
    user = django_user_model.objects.create_user("olga", "olga@example.org", "olga-password-1")
    Membership.objects.create(function=detector_function, user=user, role=Membership.Role.OWNER)
    return user


def send(client, function, image: bytes, name: str, **fields):
    handle = io.BytesIO(image)
    handle.name = name
    response = client.post(reverse("portal-console", args=[function.name]),
                           {"image": handle, "target": "live", "detector": "face", **fields})
    assert response.status_code == 302, response.content.decode()[-3000:]
    return ConsoleRun.objects.get(pk=response["Location"].rstrip("/").rsplit("/", 1)[1])


def test_the_console_draws_the_boxes_opencv_finds_on_a_face(client, owner, detector_function, detector_plane,
                                                            detector):
    client.force_login(owner)
    astronaut = sample_path("astronaut.png").read_bytes()
    run = send(client, detector_function, astronaut, "astronaut.png")
    expected = detector.process_image({"image_base64": b64(astronaut)})["boxes"]
    assert run.outcome == "ok" and len(expected) == 1
    assert_same_boxes(run.boxes, expected)
    assert run.executed_version == detector_plane.versions["real"]["version"]
    page = client.get(reverse("portal-console-run", args=[detector_function.name, run.pk])).content.decode()
    box = run.boxes[0]
    assert f'<rect x="{box["x"]}" y="{box["y"]}" width="{box["w"]}" height="{box["h"]}"' in page


def test_a_large_image_goes_through_s3_and_the_object_is_gone_afterwards(client, owner, detector_function):
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(3).integers(0, 256, (1330, 1330, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG", compress_level=1)
    client.force_login(owner)
    run = send(client, detector_function, out.getvalue(), "noise.png", max_side="256")
    assert run.via_s3 and set(run.request) >= {"bucket", "key"}
    assert run.outcome == "ok" and run.result["image"] == {"width": 1330, "height": 1330, "format": "png"}
    s3 = aws.client("s3")
    s3.head_bucket(Bucket=run.request["bucket"])  # so that the 404 below is the object's, not the bucket's
    with pytest.raises(ClientError) as gone:
        s3.head_object(Bucket=run.request["bucket"], Key=run.request["key"])
    assert gone.value.response["Error"]["Code"] in ("404", "NoSuchKey")


def test_a_golden_case_stops_a_deploy_whose_boxes_moved_and_the_alias_stays(client, owner, detector_function,
                                                                             detector_plane, worker, repo):
    client.force_login(owner)
    run = send(client, detector_function, sample_path("astronaut.png").read_bytes(), "astronaut.png")
    client.post(reverse("portal-golden-save", args=[detector_function.name, run.pk]), {"name": "astronaut"})
    assert GoldenCase.objects.get(function=detector_function).boxes == run.boxes != []
    kept = [p for p in FUNCTION_DIR.rglob("*") if p.is_file() and not {"__pycache__", "samples"} & set(p.parts)]
    files = {path.relative_to(FUNCTION_DIR).as_posix(): path.read_text() for path in kept}
    for folder in {Path(name).parent for name in files}:
        (repo.path / folder).mkdir(parents=True, exist_ok=True)
    files[SHIFTED_HANDLER_FILE] += SHIFTED_HANDLER_TAIL
    sha = repo.commit("every box 20 px off", files)
    detector_function.repository_url = str(repo.path)
    detector_function.save()
    deployment = wait_done(request_deploy(detector_function, trigger="ui", user=owner, commit=sha), timeout=300)
    assert deployment.status == "failed" and deployment.error_code == "golden-mismatch", deployment.error_message
    verify = deployment.steps.get(name="verify").output
    assert "golden case 'astronaut'" in verify and "moved: face at" in verify and "IoU 0." in verify
    assert [s.name for s in deployment.steps.order_by("position")][-1] == "verify"  # never reached the shift
    assert lambdas.alias_version(detector_plane.lambda_name, "live") == detector_plane.versions["real"]["version"]
