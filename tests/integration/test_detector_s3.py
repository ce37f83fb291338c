"""The detector handler in-process, reading from S3 on the local AWS plane."""

import boto3
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def plane_detector(detector, detector_bucket, monkeypatch):
    """The handler with its module-level S3 client pointed at the plane."""
    client = boto3.client("s3", endpoint_url=detector_bucket.endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    monkeypatch.setattr(detector.inputs, "S3", client)
    return detector


def test_it_reads_the_image_from_s3(plane_detector, detector_bucket, detector_samples):
    where = detector_bucket.put("in-process/chelsea.png", detector_samples.chelsea_png)
    result = plane_detector.process_image(where | {"detector": "cat_face", "min_neighbors": 2})
    assert len(result["boxes"]) == 1
    assert result["image"]["format"] == "png"


def test_it_reports_a_missing_object(plane_detector, detector_bucket):
    result = plane_detector.process_image({"bucket": detector_bucket.name, "key": "missing.png"})
    assert result["error"]["code"] == "s3_object_not_found"


def test_it_reports_a_missing_bucket(plane_detector):
    result = plane_detector.process_image({"bucket": "slipway-test-no-such-bucket", "key": "a.png"})
    assert result["error"]["code"] == "s3_object_not_found"


def test_it_refuses_an_object_over_the_size_limit(plane_detector, detector_bucket, monkeypatch):
    monkeypatch.setattr(plane_detector.inputs, "MAX_BYTES", 1000)
    result = plane_detector.process_image(detector_bucket.put("in-process/big.bin", b"\0" * 1001))
    assert result["error"]["code"] == "s3_object_too_large"
