variable "region" {
  type        = string
  description = "The AWS region of the function, its repository and the console bucket."
}

variable "function_name" {
  type        = string
  default     = "slipway-detector"
  description = "The Lambda function (Slipway's lambda_name); must start with lambda_name_prefix."
}

variable "ecr_repository" {
  type        = string
  default     = "slipway/detector"
  description = "The function's ECR repository; must start with ecr_repository_prefix."
}

variable "bootstrap_image_uri" {
  type        = string
  description = "The image the function is created from (repository@sha256:...); Slipway replaces it at the first deploy."
}

variable "console_bucket" {
  type        = string
  description = "The test console's bucket (SLIPWAY_CONSOLE_BUCKET): images over Lambda's 6 MB payload go through it."
}

variable "lambda_name_prefix" {
  type        = string
  default     = "slipway-"
  description = "Slipway may deploy to functions whose name starts with this (SLIPWAY_ALLOWED_LAMBDA_PREFIXES)."
}

variable "ecr_repository_prefix" {
  type        = string
  default     = "slipway/"
  description = "Slipway may push to and clean repositories whose name starts with this (SLIPWAY_ALLOWED_ECR_PREFIXES)."
}

variable "extra_execution_role_arns" {
  type        = list(string)
  default     = []
  description = "Execution roles besides the one created here that Slipway may pass to Lambda (SLIPWAY_ALLOWED_EXECUTION_ROLES)."
}

variable "eks_oidc_provider_arn" {
  type        = string
  default     = ""
  description = "EKS: the cluster's IAM OIDC provider ARN. Empty: the roles are for EC2 instance profiles."
}

variable "eks_oidc_issuer" {
  type        = string
  default     = ""
  description = "EKS: the OIDC issuer without https:// (oidc.eks.REGION.amazonaws.com/id/XXXX)."
}

variable "kubernetes_namespace" {
  type    = string
  default = "slipway"
}

variable "worker_service_account" {
  type        = string
  default     = "slipway-worker"
  description = "The Kubernetes service account of the Celery workers and beat."
}

variable "web_service_account" {
  type        = string
  default     = "slipway-web"
  description = "The Kubernetes service account of the web process (gunicorn)."
}

variable "untagged_image_days" {
  type        = number
  default     = 7
  description = "Untagged images (left by failed pushes) are expired after this many days; tagged ones never are."
}
