"""A Lambda function run by the local plane reaches the plane's S3 from its container."""

import json

import pytest

from deploy import aws
from tests.conftest import build_handler_image

pytestmark = pytest.mark.integration

HANDLER = b"""
import os, boto3
s3 = boto3.client("s3")
def handler(event, context):
    body = s3.get_object(Bucket=event["bucket"], Key=event["key"])["Body"].read().decode()
    return {"body": body, "endpoint": os.environ.get("AWS_ENDPOINT_URL")}
"""


def test_a_lambda_container_reads_s3_on_the_plane(docker_client, container_aws_endpoint, unique):
    aws.reset()
    s3, lam = aws.client("s3"), aws.client("lambda")
    bucket, name, tag = f"slipway-test-{unique}", f"slipway-test-s3-{unique}", f"slipway-test/s3-reader:{unique}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="greeting.txt", Body=f"hello {unique}".encode())
    build_handler_image(docker_client, tag, "arm64", HANDLER)
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
