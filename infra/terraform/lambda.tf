data "aws_iam_policy_document" "lambda_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.function_name}-execution"
  assume_role_policy = data.aws_iam_policy_document.lambda_trust.json
}

resource "aws_iam_role_policy_attachment" "execution_logs" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
}

# The detector reads an image the console put in the bucket ({"bucket", "key"} events).
data "aws_iam_policy_document" "execution_console" {
  statement {
    sid       = "ReadConsoleImages"
    actions   = ["s3:GetObject"]
    resources = ["${local.bucket_arn}/*"]
  }
}

resource "aws_iam_role_policy" "execution_console" {
  name   = "console-bucket-read"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution_console.json
}

resource "aws_lambda_function" "function" {
  function_name = var.function_name
  package_type  = "Image"
  image_uri     = var.bootstrap_image_uri
  architectures = ["arm64"]
  role          = aws_iam_role.execution.arn
  memory_size   = 1024
  timeout       = 30
  publish       = false # versions are Slipway's: one per deployment, verified before the alias moves

  # Slipway edits these at every deploy (the image by digest) and from the
  # function's settings page: Terraform must not put its own values back.
  lifecycle {
    ignore_changes = [image_uri, memory_size, timeout, environment, architectures, role]
  }

  depends_on = [aws_ecr_repository_policy.function]
}

resource "aws_lambda_alias" "live" {
  name             = "live"
  function_name    = aws_lambda_function.function.function_name
  function_version = "$LATEST" # until Slipway's first deploy publishes version 1 and moves it there

  # Deploys and rollbacks move the alias; an apply must never move it back.
  lifecycle {
    ignore_changes = [function_version, routing_config]
  }
}
