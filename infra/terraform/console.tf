resource "aws_s3_bucket" "console" {
  bucket = var.console_bucket
}

resource "aws_s3_bucket_public_access_block" "console" {
  bucket                  = aws_s3_bucket.console.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "console" {
  bucket = aws_s3_bucket.console.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

# The console deletes each object right after the invoke; this catches what an
# interrupted invoke left behind.
resource "aws_s3_bucket_lifecycle_configuration" "console" {
  bucket = aws_s3_bucket.console.id
  rule {
    id     = "leftovers"
    status = "Enabled"
    filter {}
    expiration {
      days = 1
    }
  }
}
