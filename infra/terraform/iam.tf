# The roles of Slipway's own processes. No long-lived keys: on EKS each
# process's service account assumes its role through the cluster's OIDC
# provider (the `sub` condition pins the exact service account); elsewhere the
# roles go to EC2 instance profiles. boto3's default credential chain finds
# either (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE, or the instance metadata).
#
# Least privilege, by process: each statement names the Slipway code that
# needs it. tests/test_infra.py checks these against the AWS operations the
# processes were seen calling in the test suite.

# --- Trust ----------------------------------------------------------------------------

data "aws_iam_policy_document" "worker_trust_eks" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.eks_oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.eks_oidc_issuer}:sub"
      values   = ["system:serviceaccount:${var.kubernetes_namespace}:${var.worker_service_account}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.eks_oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "web_trust_eks" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.eks_oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.eks_oidc_issuer}:sub"
      values   = ["system:serviceaccount:${var.kubernetes_namespace}:${var.web_service_account}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.eks_oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "ec2_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "worker" {
  name               = "slipway-worker"
  assume_role_policy = local.use_eks ? data.aws_iam_policy_document.worker_trust_eks.json : data.aws_iam_policy_document.ec2_trust.json
}

resource "aws_iam_role" "web" {
  name               = "slipway-web"
  assume_role_policy = local.use_eks ? data.aws_iam_policy_document.web_trust_eks.json : data.aws_iam_policy_document.ec2_trust.json
}

resource "aws_iam_instance_profile" "worker" {
  count = local.use_eks ? 0 : 1
  name  = "slipway-worker"
  role  = aws_iam_role.worker.name
}

resource "aws_iam_instance_profile" "web" {
  count = local.use_eks ? 0 : 1
  name  = "slipway-web"
  role  = aws_iam_role.web.name
}

# --- The worker: builds, pushes, deploys, rolls back, verifies, cleans up ---------------

data "aws_iam_policy_document" "worker" {
  # deploy/ecr.py login(): the registry token is account-wide; AWS allows no narrower resource.
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  # fetch_source (ensure_repository, find), push's check_single_image, check_release,
  # retention's listing; Lambda reads the repository policy on CreateFunction.
  statement {
    sid = "EcrRead"
    actions = [
      "ecr:DescribeRepositories",
      "ecr:DescribeImages",
      "ecr:ListImages",
      "ecr:BatchGetImage",
      "ecr:BatchCheckLayerAvailability",
      "ecr:GetDownloadUrlForLayer",
      "ecr:GetRepositoryPolicy",
    ]
    resources = [local.repository_arns]
  }

  # ensure_repository() creates a function's repository (immutable tags, scan on
  # push) on its first deploy; CreateFunction lets Lambda grant itself pull access.
  statement {
    sid       = "EcrCreateRepository"
    actions   = ["ecr:CreateRepository", "ecr:SetRepositoryPolicy"]
    resources = [local.repository_arns]
  }

  # The push step: the Docker engine uploads layers and the manifest with the token.
  statement {
    sid = "EcrPush"
    actions = [
      "ecr:InitiateLayerUpload",
      "ecr:UploadLayerPart",
      "ecr:CompleteLayerUpload",
      "ecr:PutImage",
    ]
    resources = [local.repository_arns]
  }

  # Retention: images no remaining Lambda version uses, by digest.
  statement {
    sid       = "EcrRetention"
    actions   = ["ecr:BatchDeleteImage"]
    resources = [local.repository_arns]
  }

  # update, wait, check_release, retention; ListTags: whose Lambda it is (check_owner).
  statement {
    sid = "LambdaRead"
    actions = [
      "lambda:GetFunction",
      "lambda:GetFunctionConfiguration",
      "lambda:GetAlias",
      "lambda:ListAliases",
      "lambda:ListTags",
      "lambda:ListVersionsByFunction",
    ]
    resources = [local.lambda_arns]
  }

  # create or update by digest, publish, verify (the smoke event and golden cases), shift.
  statement {
    sid = "LambdaDeploy"
    actions = [
      "lambda:CreateFunction",
      "lambda:UpdateFunctionCode",
      "lambda:UpdateFunctionConfiguration",
      "lambda:PublishVersion",
      "lambda:InvokeFunction",
      "lambda:CreateAlias",
      "lambda:UpdateAlias",
    ]
    resources = [local.lambda_arns]
  }

  # The update step tags what Slipway creates with the function that owns it
  # (slipway:function), and nothing else.
  statement {
    sid       = "LambdaOwnerTag"
    actions   = ["lambda:TagResource"]
    resources = [local.lambda_arns]
    condition {
      test     = "ForAllValues:StringEquals"
      variable = "aws:TagKeys"
      values   = ["slipway:function"]
    }
  }

  # Merge requests' previews (portal/deployments/preview_pipeline.py, preview_cleanup.py): the
  # alias mr-<iid>, its function URL and the URL's two permission statements, created and removed
  # on the alias only (`name:mr-*`): this role cannot make a URL or a public statement on an
  # environment's alias, $LATEST or the function itself.
  statement {
    sid = "LambdaPreviewAlias"
    actions = [
      "lambda:CreateFunctionUrlConfig",
      "lambda:UpdateFunctionUrlConfig",
      "lambda:GetFunctionUrlConfig",
      "lambda:DeleteFunctionUrlConfig",
      "lambda:AddPermission",
      "lambda:RemovePermission",
      "lambda:GetPolicy",
      "lambda:DeleteAlias",
    ]
    resources = ["${local.lambda_arns}:mr-*"]
  }

  # The preview sweep lists a preview Lambda's URLs to find those no open preview owns.
  statement {
    sid       = "LambdaPreviewList"
    actions   = ["lambda:ListFunctionUrlConfigs"]
    resources = [local.lambda_arns]
  }

  # Retention deletes published versions: qualified ARNs only (`name:N`), so
  # this role cannot delete a function itself.
  statement {
    sid       = "LambdaRetention"
    actions   = ["lambda:DeleteFunction"]
    resources = ["${local.lambda_arns}:*"]
  }

  # CreateFunction on a first deploy hands the function its execution role:
  # only the roles Slipway is allowed to pass, and only to Lambda.
  statement {
    sid       = "PassExecutionRole"
    actions   = ["iam:PassRole"]
    resources = local.passable_roles
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["lambda.amazonaws.com"]
    }
  }

  # Golden cases larger than Lambda's payload go through the console bucket.
  statement {
    sid       = "ConsoleObjects"
    actions   = ["s3:PutObject", "s3:DeleteObject"]
    resources = ["${local.bucket_arn}/*"]
  }

  # The health page's AWS row (portal/core/health.py check_aws) lists one function.
  statement {
    sid       = "Health"
    actions   = ["lambda:ListFunctions"]
    resources = ["*"]
  }

  # A rollout's health signals (portal/deployments/health.py): the alarm made from the
  # environment's template for each rollout, deleted after it. Only alarms named slipway-*;
  # never SetAlarmState (tests force states on the local plane only).
  statement {
    sid       = "RolloutAlarms"
    actions   = ["cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms"]
    resources = [local.alarm_arns]
  }

  # The tick reads every running rollout's alarms in one call per 100 names. CloudWatch returns
  # composite alarms (an owner's may be one) only when DescribeAlarms is allowed on "*"; read-only.
  statement {
    sid       = "RolloutAlarmsRead"
    actions   = ["cloudwatch:DescribeAlarms"]
    resources = ["*"]
  }
}

# --- The web process: the test console and the health page ------------------------------

data "aws_iam_policy_document" "web" {
  # portal/console/invoke.py: invoke the alias or a version of a function.
  statement {
    sid       = "ConsoleInvoke"
    actions   = ["lambda:InvokeFunction"]
    resources = [local.lambda_arns]
  }

  # portal/console/invoke.py: an image over 6 MB goes through the bucket and is deleted after the invoke.
  statement {
    sid       = "ConsoleObjects"
    actions   = ["s3:PutObject", "s3:DeleteObject"]
    resources = ["${local.bucket_arn}/*"]
  }

  # portal/core/health.py check_aws: ListFunctions takes no resource narrower than "*"; read-only.
  statement {
    sid       = "Health"
    actions   = ["lambda:ListFunctions"]
    resources = ["*"]
  }

  # portal/deployments/rollback.py, when the queue does not answer: a rollback to a version that still
  # exists (check the image and the version, check the owner, move the alias). It never
  # updates code or publishes: a rollback that must waits for the worker.
  statement {
    sid = "RollbackWithoutQueue"
    actions = [
      "lambda:GetFunction",
      "lambda:GetFunctionConfiguration",
      "lambda:ListTags",
      "lambda:GetAlias",
      "lambda:CreateAlias",
      "lambda:UpdateAlias",
    ]
    resources = [local.lambda_arns]
  }

  statement {
    sid       = "RollbackImageCheck"
    actions   = ["ecr:DescribeImages"]
    resources = [local.repository_arns]
  }

  # The same owner check as the worker's: a Lambda Slipway created before it tagged what it
  # creates is tagged with its function on first sight, and nothing else.
  statement {
    sid       = "RollbackOwnerTag"
    actions   = ["lambda:TagResource"]
    resources = [local.lambda_arns]
    condition {
      test     = "ForAllValues:StringEquals"
      variable = "aws:TagKeys"
      values   = ["slipway:function"]
    }
  }
}

resource "aws_iam_role_policy" "worker" {
  name   = "slipway-worker"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.worker.json
}

resource "aws_iam_role_policy" "web" {
  name   = "slipway-web"
  role   = aws_iam_role.web.id
  policy = data.aws_iam_policy_document.web.json
}
