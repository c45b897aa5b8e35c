resource "aws_s3_bucket" "state" {
  #checkov:skip=CKV_AWS_18:No server access logging: small state objects written by this module's functions; CloudTrail data events are the account-wide audit trail, and a log bucket per deployment would be a second unused bucket.
  #checkov:skip=CKV_AWS_144:No cross-region replication: every object is re-creatable (certificates re-issued, accounts re-registered), and a replica needs a bucket in a second region.
  bucket = var.bucket_name
  tags   = var.tags
}

resource "aws_s3_bucket_ownership_controls" "state" {
  bucket = aws_s3_bucket.state.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "state" {
  bucket                  = aws_s3_bucket.state.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "state" {
  bucket = aws_s3_bucket.state.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "state" {
  bucket = aws_s3_bucket.state.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = var.kms_key_arn != null
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "state" {
  bucket     = aws_s3_bucket.state.id
  depends_on = [aws_s3_bucket_versioning.state]

  rule {
    id     = "expire-challenges"
    status = "Enabled"
    filter {
      prefix = "${local.key_prefix}v1/challenges/"
    }
    expiration {
      days = var.challenge_expiry_days
    }
  }

  rule {
    id     = "expire-requests"
    status = "Enabled"
    filter {
      prefix = "${local.key_prefix}v1/requests/"
    }
    expiration {
      days = var.challenge_expiry_days
    }
  }

  rule {
    id     = "old-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiry_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  rule {
    id     = "delete-markers"
    status = "Enabled"
    filter {}
    expiration {
      expired_object_delete_marker = true
    }
  }
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.state.arn, "${aws_s3_bucket.state.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
  statement {
    sid       = "DenyOldTls"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.state.arn, "${aws_s3_bucket.state.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "NumericLessThan"
      variable = "s3:TlsVersion"
      values   = ["1.2"]
    }
  }
}

resource "aws_s3_bucket_policy" "state" {
  bucket     = aws_s3_bucket.state.id
  policy     = data.aws_iam_policy_document.bucket.json
  depends_on = [aws_s3_bucket_public_access_block.state]
}

# An edge asking for a certificate (requests/{host}) wakes apply at once; renew-all serves
# whatever is still pending on its next run. S3 checks apply's permission when the
# notification is written, hence depends_on. (A separate resource here, so no cycle.)
resource "aws_s3_bucket_notification" "requests" {
  bucket = aws_s3_bucket.state.id
  lambda_function {
    lambda_function_arn = aws_lambda_function.apply.arn
    events              = ["s3:ObjectCreated:*"]
    filter_prefix       = "${local.key_prefix}v1/requests/"
  }
  depends_on = [aws_lambda_permission.apply_from_s3]
}
