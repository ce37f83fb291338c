resource "aws_ecr_repository" "function" {
  name                 = var.ecr_repository
  image_tag_mutability = "IMMUTABLE" # a tag is a commit's build: it never moves

  image_scanning_configuration {
    scan_on_push = true
  }
}

# Only untagged images expire here. Tagged images are releases: Slipway's
# retention deletes them by digest, once no remaining Lambda version uses them.
resource "aws_ecr_lifecycle_policy" "function" {
  repository = aws_ecr_repository.function.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "untagged images (interrupted pushes)"
      selection = {
        tagStatus   = "untagged"
        countType   = "sinceImagePushed"
        countUnit   = "days"
        countNumber = var.untagged_image_days
      }
      action = { type = "expire" }
    }]
  })
}

# Lambda pulls the function's image with this grant (otherwise CreateFunction
# asks the caller for ecr:SetRepositoryPolicy to add it).
data "aws_iam_policy_document" "repository_lambda_pull" {
  statement {
    sid     = "LambdaPull"
    actions = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
    condition {
      test     = "StringLike"
      variable = "aws:sourceArn"
      values   = [local.lambda_arns]
    }
  }
}

resource "aws_ecr_repository_policy" "function" {
  repository = aws_ecr_repository.function.name
  policy     = data.aws_iam_policy_document.repository_lambda_pull.json
}
