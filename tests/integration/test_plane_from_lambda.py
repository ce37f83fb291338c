"""A Lambda function run by the local plane reaches the plane's S3 from its container."""

import io
import json
import tarfile

import pytest

from deploy import aws
from deploy.local import base_images
from tests.conftest import TEST_LABEL

pytestmark = pytest.mark.integration

HANDLER = b"""
import os, boto3
s3 = boto3.client("s3")
def handler(event, context):
    body = s3.get_object(Bucket=event["bucket"], Key=event["key"])["Body"].read().decode()
    return {"body": body, "endpoint": os.environ.get("AWS_ENDPOINT_URL")}
"""


def _image(docker_client, tag: str) -> None:
    dockerfile = f'FROM {base_images.image_tag("arm64")}\nCOPY app.py /var/task/\nCMD ["app.handler"]\n'.encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("Dockerfile", dockerfile), ("app.py", HANDLER)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    docker_client.images.build(fileobj=buf, custom_context=True, tag=tag, platform="linux/arm64",
                               labels={TEST_LABEL: "1"}, rm=True)


def test_a_lambda_container_reads_s3_on_the_plane(docker_client, container_aws_endpoint, unique):
    aws.reset()
    s3, lam = aws.client("s3"), aws.client("lambda")
    bucket, name, tag = f"slipway-test-{unique}", f"slipway-test-s3-{unique}", f"slipway-test/s3-reader:{unique}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="greeting.txt", Body=f"hello {unique}".encode())
    _image(docker_client, tag)
    try:
        lam.create_function(FunctionName=name, PackageType="Image", Code={"ImageUri": tag}, Timeout=60,
                            Role="arn:aws:iam::000000000000:role/slipway-test", Architectures=["arm64"])
        lam.get_waiter("function_active_v2").wait(FunctionName=name)
        response = lam.invoke(FunctionName=name, Payload=json.dumps({"bucket": bucket, "key": "greeting.txt"}))
        result = json.loads(response["Payload"].read())
        assert "FunctionError" not in response, result
        assert result == {"body": f"hello {unique}", "endpoint": container_aws_endpoint}
    finally:
        lam.delete_function(FunctionName=name)
        docker_client.images.remove(tag, force=True)
