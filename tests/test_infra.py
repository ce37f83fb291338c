"""infra: the Terraform, read with python-hcl2 (the terraform binary and the AWS
provider cannot be installed here), checked for what must hold on AWS."""

from __future__ import annotations

import re

import pytest

from tests import terraform as tf

FUNCTION_ATTRIBUTES_SLIPWAY_EDITS = {"image_uri", "memory_size", "timeout", "environment", "architectures", "role"}
ALIAS_ATTRIBUTES_SLIPWAY_EDITS = {"function_version", "routing_config"}


def test_every_terraform_file_parses():
    assert {"ecr.tf", "lambda.tf", "iam.tf", "console.tf", "variables.tf"} <= set(tf.files())


def test_terraform_never_undoes_what_slipway_changes_on_the_function():
    function = tf.blocks("resource", "aws_lambda_function")["function"]
    ignored = set(function["lifecycle"][0]["ignore_changes"])
    assert FUNCTION_ATTRIBUTES_SLIPWAY_EDITS <= ignored, FUNCTION_ATTRIBUTES_SLIPWAY_EDITS - ignored


def test_terraform_never_moves_the_alias_back():
    alias = tf.blocks("resource", "aws_lambda_alias")["live"]
    assert tf.unquote(alias["name"]) == "live"
    ignored = set(alias["lifecycle"][0]["ignore_changes"])
    assert ALIAS_ATTRIBUTES_SLIPWAY_EDITS <= ignored, ALIAS_ATTRIBUTES_SLIPWAY_EDITS - ignored


def test_the_function_is_an_arm64_image_from_the_bootstrap_variable_and_never_published_by_terraform():
    function = tf.blocks("resource", "aws_lambda_function")["function"]
    assert tf.unquote(function["package_type"]) == "Image"
    assert tf.unquote(function["architectures"]) == ["arm64"]
    assert function["image_uri"] == "${var.bootstrap_image_uri}"
    assert function["publish"] is False


def test_the_repository_has_immutable_tags_scans_on_push_and_expires_only_untagged_images():
    repository = tf.blocks("resource", "aws_ecr_repository")["function"]
    assert tf.unquote(repository["image_tag_mutability"]) == "IMMUTABLE"
    assert repository["image_scanning_configuration"][0]["scan_on_push"] is True
    lifecycle = tf.blocks("resource", "aws_ecr_lifecycle_policy")["function"]["policy"]
    statuses = re.findall(r'tagStatus\s*=\s*\\?"(\w+)', lifecycle)
    assert statuses == ["untagged"], lifecycle


def test_the_execution_role_reads_the_console_bucket():
    assert tf.allows("execution_console", "s3:GetObject")
    (statement,) = tf.statements("execution_console")
    assert tf.unquote(statement["resources"]) == ["${local.bucket_arn}/*"]


def test_no_policy_has_a_wildcard_principal():
    principals = [p for statements in tf.policy_documents().values() for s in statements
                  for p in s.get("principals", [])]
    assert len(principals) >= 4  # lambda, ec2, two OIDC trusts, the repository's Lambda grant
    for principal in principals:
        assert tf.unquote(principal["type"]) in ("Service", "Federated"), principal
        assert "*" not in "".join(tf.unquote(principal["identifiers"])), principal
    text = "".join(path.read_text() for path in tf.TERRAFORM.glob("*.tf"))
    assert not re.search(r'"?Principal"?\s*[:=]\s*"\*"', text)


@pytest.mark.parametrize("document, account", [("worker_trust_eks", "worker_service_account"),
                                               ("web_trust_eks", "web_service_account")])
def test_the_oidc_trust_is_pinned_to_one_service_account(document, account):
    (statement,) = tf.statements(document)
    assert tf.unquote(statement["actions"]) == ["sts:AssumeRoleWithWebIdentity"]
    subs = [c for c in statement["condition"] if tf.unquote(c["variable"]).endswith(":sub")]
    assert len(subs) == 1
    assert tf.unquote(subs[0]["test"]) == "StringEquals"  # not StringLike: no pattern can match another account
    assert tf.unquote(subs[0]["values"]) == [f"system:serviceaccount:${{var.kubernetes_namespace}}:${{var.{account}}}"]


def test_each_process_role_trusts_its_own_service_account_on_eks():
    roles = tf.blocks("resource", "aws_iam_role")
    assert "worker_trust_eks" in roles["worker"]["assume_role_policy"]
    assert "web_trust_eks" in roles["web"]["assume_role_policy"]
    assert "access_key" not in str(tf.files())  # no long-lived keys anywhere


def test_no_write_action_is_allowed_on_every_resource():
    checked = 0
    for name, statements in tf.policy_documents().items():
        for statement in statements:
            actions = tf.unquote(statement["actions"])
            assert all("*" not in action for action in actions), (name, actions)
            if "*" not in tf.unquote(statement.get("resources", [])):
                continue
            checked += 1
            writes = [a for a in actions if tf.is_write(a) and a not in tf.STAR_ONLY]
            assert not writes, (name, writes)
    assert checked >= 2  # the registry token and the health page's listing


def test_pass_role_is_limited_to_the_allowed_execution_roles_and_to_lambda():
    (statement,) = [s for s in tf.statements("worker") if "iam:PassRole" in tf.unquote(s["actions"])]
    assert statement["resources"] == "${local.passable_roles}"
    (condition,) = statement["condition"]
    assert tf.unquote(condition["variable"]) == "iam:PassedToService"
    assert tf.unquote(condition["values"]) == ["lambda.amazonaws.com"]


def test_retention_may_delete_versions_but_not_a_function():
    (statement,) = [s for s in tf.statements("worker") if "lambda:DeleteFunction" in tf.unquote(s["actions"])]
    assert tf.unquote(statement["resources"]) == ["${local.lambda_arns}:*"]  # qualified ARNs only: name:N
    assert tf.allows("worker", "ecr:BatchDeleteImage")
    assert not tf.allows("web", "lambda:DeleteFunction") and not tf.allows("web", "ecr:BatchDeleteImage")


def test_the_worker_may_tag_a_lambda_with_its_owning_function_and_nothing_else():
    (statement,) = [s for s in tf.statements("worker") if "lambda:TagResource" in tf.unquote(s["actions"])]
    assert tf.unquote(statement["actions"]) == ["lambda:TagResource"]
    (condition,) = statement["condition"]
    assert tf.unquote(condition["variable"]) == "aws:TagKeys"
    assert tf.unquote(condition["values"]) == ["slipway:function"]
    assert tf.allows("worker", "lambda:ListTags")


def test_the_web_role_cannot_deploy_but_may_put_a_release_back_without_the_queue():
    for action in ("lambda:UpdateFunctionCode", "lambda:UpdateFunctionConfiguration", "lambda:PublishVersion",
                   "lambda:CreateFunction", "ecr:PutImage", "ecr:CreateRepository", "iam:PassRole"):
        assert not tf.allows("web", action), action
    assert tf.allows("web", "lambda:InvokeFunction")
    assert [a for a in sorted(tf.ROLLBACK_WITHOUT_QUEUE) if not tf.allows("web", a)] == []
    assert tf.ROLLBACK_WITHOUT_QUEUE <= tf.calls_in_code()["worker"]  # deploy/ calls them: the list is not made up
    (tagging,) = [s for s in tf.statements("web") if "lambda:TagResource" in tf.unquote(s["actions"])]
    assert tf.unquote(tagging["condition"][0]["values"]) == ["slipway:function"]


@pytest.mark.parametrize("role", ["worker", "web"])
def test_each_policy_covers_every_aws_operation_its_code_calls(role):
    calls = tf.calls_in_code()[role]
    assert "lambda:Invoke" in calls  # the console (web) and verify (worker) both invoke
    actions = {tf.iam_action(op) for op in calls - tf.LOCAL_ONLY} | tf.IMPLIED[role]
    assert [a for a in sorted(actions) if not tf.allows(role, a)] == []


def test_the_code_scan_finds_the_pipeline_and_retention_calls():
    calls = tf.calls_in_code()["worker"]
    for operation in ("ecr:DescribeImages", "ecr:BatchDeleteImage", "ecr:GetAuthorizationToken",
                      "lambda:UpdateFunctionCode", "lambda:PublishVersion", "lambda:ListVersionsByFunction",
                      "lambda:ListAliases", "lambda:DeleteFunction", "lambda:CreateFunction", "lambda:TagResource",
                      "lambda:ListTags"):
        assert operation in calls, operation


def test_the_worker_may_create_and_delete_only_slipways_alarms_and_never_force_their_state():
    calls = tf.calls_in_code()["worker"]
    assert {"cloudwatch:PutMetricAlarm", "cloudwatch:DescribeAlarms", "cloudwatch:DeleteAlarms"} <= calls
    (writes,) = [s for s in tf.statements("worker") if "cloudwatch:PutMetricAlarm" in tf.unquote(s["actions"])]
    assert sorted(tf.unquote(writes["actions"])) == ["cloudwatch:DeleteAlarms", "cloudwatch:PutMetricAlarm"]
    assert tf.unquote(writes["resources"]) == ["${local.alarm_arns}"]
    (alarm_arns,) = [block["alarm_arns"] for block in tf.files()["versions.tf"]["locals"] if "alarm_arns" in block]
    assert tf.unquote(alarm_arns).endswith(":alarm:slipway-*")
    (reads,) = [s for s in tf.statements("worker") if "cloudwatch:DescribeAlarms" in tf.unquote(s["actions"])]
    assert tf.unquote(reads["resources"]) == ["*"]  # composite alarms are returned only on "*"
    assert "cloudwatch:SetAlarmState" in calls  # deploy/alarms.set_state exists, for tests...
    assert not tf.allows("worker", "cloudwatch:SetAlarmState") and not tf.allows("web", "cloudwatch:PutMetricAlarm")
    assert tf.not_allowed("worker", {"monitoring:DescribeAlarms", "monitoring:SetAlarmState"}) == []


def test_the_worker_makes_urls_and_public_statements_on_preview_aliases_only():
    calls = tf.calls_in_code()["worker"]
    for operation in ("lambda:CreateFunctionUrlConfig", "lambda:DeleteFunctionUrlConfig", "lambda:AddPermission",
                      "lambda:RemovePermission", "lambda:GetPolicy", "lambda:DeleteAlias"):
        assert operation in calls, operation  # deploy/lambdas.py calls them: the list is not made up
        (statement,) = [s for s in tf.statements("worker") if operation in tf.unquote(s["actions"])]
        assert tf.unquote(statement["resources"]) == ["${local.lambda_arns}:mr-*"], operation
    assert not tf.allows("web", "lambda:AddPermission") and not tf.allows("web", "lambda:CreateFunctionUrlConfig")


def test_local_only_calls_are_excused_by_the_name_they_are_recorded_under():
    # Recorded as botocore signs them: s3:HeadBucket (IAM: s3:ListBucket), monitoring:SetAlarmState
    # (IAM: cloudwatch:SetAlarmState). Both are the local plane's or the tests' only.
    assert tf.not_allowed("web", {"s3:HeadBucket", "s3:CreateBucket"}) == []
    assert tf.not_allowed("worker", {"monitoring:SetAlarmState", "s3:HeadBucket"}) == []
    assert tf.not_allowed("web", {"s3:HeadBucket", "lambda:DeleteFunction"}) == ["lambda:DeleteFunction"]
