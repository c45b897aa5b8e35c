# The edges' policy: read certificates, challenges and the manifest, and create (never
# replace) requests/ objects: nothing else, no account credentials. scripts/check_iam_split.py
# asserts this, here and in template.yaml.
data "aws_iam_policy_document" "edge" {
  statement {
    sid     = "ReadServedObjects"
    actions = ["s3:GetObject"]
    resources = [
      "${local.objects}v1/certs/*",
      "${local.objects}v1/challenges/*",
      "${local.objects}v1/manifest.json",
    ]
  }
  # Without s3:ListBucket S3 answers 403, not 404, for a missing key; the edge must tell
  # "no such challenge/certificate/manifest yet" from "cannot read the store". Limited to
  # the prefixes it may read.
  statement {
    sid       = "MissingMeans404"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values = [
        "${local.key_prefix}v1/certs/*",
        "${local.key_prefix}v1/challenges/*",
        "${local.key_prefix}v1/manifest.json",
      ]
    }
  }
  statement {
    sid       = "CreateRequests"
    actions   = ["s3:PutObject"]
    resources = ["${local.objects}v1/requests/*"]
    # Only create-if-absent (If-None-Match: *), as the edge writes them.
    condition {
      test     = "Null"
      variable = "s3:if-none-match"
      values   = ["false"]
    }
  }
  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "UseBucketKey"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_policy" "edge" {
  name        = "${var.name}-edge"
  description = "certbucket edge - read certs/, challenges/, manifest.json; create requests/."
  policy      = data.aws_iam_policy_document.edge.json
  tags        = var.tags
}

data "aws_iam_policy_document" "edge_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = var.edge_trusted_services
    }
  }
}

resource "aws_iam_role" "edge" {
  count              = var.create_edge_role ? 1 : 0
  name               = "${var.name}-edge"
  description        = "certbucket edges"
  assume_role_policy = data.aws_iam_policy_document.edge_trust.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "edge" {
  count      = var.create_edge_role ? 1 : 0
  role       = aws_iam_role.edge[0].name
  policy_arn = aws_iam_policy.edge.arn
}

resource "aws_iam_instance_profile" "edge" {
  count = var.create_edge_role && contains(var.edge_trusted_services, "ec2.amazonaws.com") ? 1 : 0
  name  = "${var.name}-edge"
  role  = aws_iam_role.edge[0].name
  tags  = var.tags
}
