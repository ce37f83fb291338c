output "repository_url" {
  value = aws_ecr_repository.function.repository_url
}

output "function_name" {
  value = aws_lambda_function.function.function_name
}

output "execution_role_arn" {
  description = "SLIPWAY_DEFAULT_EXECUTION_ROLE (and SLIPWAY_ALLOWED_EXECUTION_ROLES)."
  value       = aws_iam_role.execution.arn
}

output "worker_role_arn" {
  description = "EKS: the worker service account's eks.amazonaws.com/role-arn annotation."
  value       = aws_iam_role.worker.arn
}

output "web_role_arn" {
  description = "EKS: the web service account's eks.amazonaws.com/role-arn annotation."
  value       = aws_iam_role.web.arn
}

output "worker_instance_profile" {
  value = local.use_eks ? "" : aws_iam_instance_profile.worker[0].name
}

output "web_instance_profile" {
  value = local.use_eks ? "" : aws_iam_instance_profile.web[0].name
}

output "console_bucket" {
  description = "SLIPWAY_CONSOLE_BUCKET."
  value       = aws_s3_bucket.console.bucket
}
