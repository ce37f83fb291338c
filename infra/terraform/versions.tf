# Slipway on AWS: the ECR repository and the Lambda of one function, the
# console bucket, and the roles of Slipway's web and worker processes.
#
# Terraform creates; Slipway deploys. Everything Slipway changes at each
# deploy or rollback (the function's image, configuration and role, the
# alias's version) is listed in `ignore_changes`, so `terraform apply` never
# puts an old image back or moves the alias behind Slipway's back.

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40"
    }
  }
}

provider "aws" {
  region = var.region
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account   = data.aws_caller_identity.current.account_id
  partition = data.aws_partition.current.partition
  # What Slipway may touch: the prefixes of SLIPWAY_ALLOWED_LAMBDA_PREFIXES and
  # SLIPWAY_ALLOWED_ECR_PREFIXES, as ARNs.
  lambda_arns     = "arn:${local.partition}:lambda:${var.region}:${local.account}:function:${var.lambda_name_prefix}*"
  repository_arns = "arn:${local.partition}:ecr:${var.region}:${local.account}:repository/${var.ecr_repository_prefix}*"
  bucket_arn      = aws_s3_bucket.console.arn
  # The CloudWatch alarms a rollout creates and deletes (portal/deployments/health.py): slipway-<function>-….
  alarm_arns = "arn:${local.partition}:cloudwatch:${var.region}:${local.account}:alarm:slipway-*"
  # The roles Slipway may hand to Lambda on a first deploy (SLIPWAY_ALLOWED_EXECUTION_ROLES).
  passable_roles = concat([aws_iam_role.execution.arn], var.extra_execution_role_arns)
  use_eks        = var.eks_oidc_provider_arn != ""
}
