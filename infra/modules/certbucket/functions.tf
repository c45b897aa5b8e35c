locals {
  functions = {
    apply     = { description = "certbucket apply - POST/PATCH /acme and on-demand requests (S3 requests/ events)", timeout = 300, memory = 256 }
    list      = { description = "certbucket list - GET /acme/certificates[/{host}]", timeout = 30, memory = 128 }
    renew-all = { description = "certbucket renew-all - scheduled renewals, PATCH /acme, pending requests/", timeout = 900, memory = 256 }
  }
}

resource "aws_cloudwatch_log_group" "function" {
  #checkov:skip=CKV_AWS_158:Logs never contain keys or credentials (STYLE.md); CloudWatch Logs encrypts at rest by default.
  #checkov:skip=CKV_AWS_338:Retention is var.log_retention_days (30 by default): these are operational logs, not an audit trail.
  for_each          = local.functions
  name              = "/aws/lambda/${var.name}-${each.key}"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

data "aws_iam_policy_document" "lambda_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "function" {
  for_each           = local.functions
  name               = "${var.name}-${each.key}"
  description        = "certbucket ${each.key} function"
  assume_role_policy = data.aws_iam_policy_document.lambda_trust.json
  tags               = var.tags
}

data "aws_iam_policy_document" "logs" {
  for_each = local.functions
  statement {
    sid       = "OwnLogGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.function[each.key].arn}:*"]
  }
}

resource "aws_iam_role_policy" "logs" {
  for_each = local.functions
  name     = "logs"
  role     = aws_iam_role.function[each.key].id
  policy   = data.aws_iam_policy_document.logs[each.key].json
}

# apply and renew-all issue: they read and write the whole layout, except requests/, which
# edges create and they only read and delete.
data "aws_iam_policy_document" "issuer" {
  statement {
    sid     = "ReadWriteState"
    actions = ["s3:GetObject", "s3:PutObject"]
    resources = [
      "${local.objects}v1/accounts/*",
      "${local.objects}v1/certs/*",
      "${local.objects}v1/renewals/*",
      "${local.objects}v1/locks/*",
      "${local.objects}v1/manifest.json",
    ]
  }
  statement {
    sid       = "PublishChallenges"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${local.objects}v1/challenges/*"]
  }
  statement {
    sid       = "ServeRequests"
    actions   = ["s3:GetObject", "s3:DeleteObject"]
    resources = ["${local.objects}v1/requests/*"]
  }
  statement {
    sid       = "ListState"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.key_prefix}v1/*"]
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
  dynamic "statement" {
    for_each = var.secret_arn == null ? [] : [var.secret_arn]
    content {
      sid       = "ReadConfigSecret"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_policy" "issuer" {
  name        = "${var.name}-issuer"
  description = "certbucket issuer (apply, renew-all) - the state objects it owns."
  policy      = data.aws_iam_policy_document.issuer.json
  tags        = var.tags
}

resource "aws_iam_role_policy_attachment" "issuer" {
  for_each   = toset(["apply", "renew-all"])
  role       = aws_iam_role.function[each.key].name
  policy_arn = aws_iam_policy.issuer.arn
}

# PATCH /acme starts renew-all in the background (InvocationType Event).
data "aws_iam_policy_document" "start_renew_all" {
  statement {
    sid       = "StartRenewAll"
    actions   = ["lambda:InvokeFunction"]
    resources = [aws_lambda_function.renew_all.arn]
  }
}

resource "aws_iam_role_policy" "start_renew_all" {
  name   = "start-renew-all"
  role   = aws_iam_role.function["apply"].id
  policy = data.aws_iam_policy_document.start_renew_all.json
}

# list reads certificates, nothing else: no accounts, no secrets, no writes.
data "aws_iam_policy_document" "list" {
  statement {
    sid       = "ReadCerts"
    actions   = ["s3:GetObject"]
    resources = ["${local.objects}v1/certs/*"]
  }
  statement {
    sid       = "ListCerts"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.key_prefix}v1/certs/*"]
    }
  }
  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "UseBucketKey"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "list" {
  name   = "read-certs"
  role   = aws_iam_role.function["list"].id
  policy = data.aws_iam_policy_document.list.json
}

resource "aws_lambda_function" "apply" {
  #checkov:skip=CKV_AWS_116:No DLQ: a failed issuance is recorded per host in renewals/ with its backoff, and renew-all serves pending requests/ on its next run.
  #checkov:skip=CKV_AWS_117:Talks only to the ACME CA and S3 over the internet; a VPC would need a NAT gateway for nothing.
  #checkov:skip=CKV_AWS_115:No reserved concurrency: concurrent applies for one host are serialized by the store's lease, and reserving takes from the account's unreserved pool.
  #checkov:skip=CKV_AWS_173:The environment holds no secret: secret fields are {vault://...} references (variable validation).
  #checkov:skip=CKV_AWS_50:No X-Ray: the functions emit structured logs; tracing would need xray:PutTraceSegments on every role.
  #checkov:skip=CKV_AWS_272:No code signing: the zips are built by scripts/package-lambdas and deployed by the operator; signing needs an AWS Signer profile this module cannot assume.
  function_name    = "${var.name}-apply"
  description      = local.functions.apply.description
  role             = aws_iam_role.function["apply"].arn
  runtime          = "provided.al2023"
  architectures    = ["arm64"]
  handler          = "bootstrap"
  filename         = "${var.lambda_dist_dir}/apply.zip"
  source_code_hash = filebase64sha256("${var.lambda_dist_dir}/apply.zip")
  timeout          = local.functions.apply.timeout
  memory_size      = local.functions.apply.memory
  environment {
    variables = merge(local.common_env, {
      CERTBUCKET_CONFIG         = jsonencode(local.config)
      CERTBUCKET_RENEW_FUNCTION = aws_lambda_function.renew_all.function_name
    })
  }
  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.function["apply"].name
  }
  tags = var.tags
}

resource "aws_lambda_function" "list" {
  #checkov:skip=CKV_AWS_116:Synchronous only (HTTP API); a DLQ serves only asynchronous invocations.
  #checkov:skip=CKV_AWS_117:Talks only to S3; a VPC would need an endpoint or NAT gateway for nothing.
  #checkov:skip=CKV_AWS_115:Read-only and cheap; API Gateway throttling bounds it.
  #checkov:skip=CKV_AWS_173:The environment holds no secret (list's config carries no secret fields at all).
  #checkov:skip=CKV_AWS_50:No X-Ray: the functions emit structured logs; tracing would need xray:PutTraceSegments on every role.
  #checkov:skip=CKV_AWS_272:No code signing: the zips are built by scripts/package-lambdas and deployed by the operator; signing needs an AWS Signer profile this module cannot assume.
  function_name    = "${var.name}-list"
  description      = local.functions.list.description
  role             = aws_iam_role.function["list"].arn
  runtime          = "provided.al2023"
  architectures    = ["arm64"]
  handler          = "bootstrap"
  filename         = "${var.lambda_dist_dir}/list.zip"
  source_code_hash = filebase64sha256("${var.lambda_dist_dir}/list.zip")
  timeout          = local.functions.list.timeout
  memory_size      = local.functions.list.memory
  environment {
    variables = merge(local.common_env, {
      CERTBUCKET_CONFIG = jsonencode(local.list_config)
    })
  }
  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.function["list"].name
  }
  tags = var.tags
}

resource "aws_lambda_function" "renew_all" {
  #checkov:skip=CKV_AWS_116:No DLQ: each host's outcome is recorded in renewals/, and what a failed run left is done by the next scheduled run.
  #checkov:skip=CKV_AWS_117:Talks only to the ACME CA and S3 over the internet; a VPC would need a NAT gateway for nothing.
  #checkov:skip=CKV_AWS_115:No reserved concurrency: overlapping runs are safe (per-host leases), and a new account's concurrency limit of 10 leaves nothing to reserve.
  #checkov:skip=CKV_AWS_173:The environment holds no secret: secret fields are {vault://...} references (variable validation).
  #checkov:skip=CKV_AWS_50:No X-Ray: the functions emit structured logs; tracing would need xray:PutTraceSegments on every role.
  #checkov:skip=CKV_AWS_272:No code signing: the zips are built by scripts/package-lambdas and deployed by the operator; signing needs an AWS Signer profile this module cannot assume.
  function_name    = "${var.name}-renew-all"
  description      = local.functions["renew-all"].description
  role             = aws_iam_role.function["renew-all"].arn
  runtime          = "provided.al2023"
  architectures    = ["arm64"]
  handler          = "bootstrap"
  filename         = "${var.lambda_dist_dir}/renew-all.zip"
  source_code_hash = filebase64sha256("${var.lambda_dist_dir}/renew-all.zip")
  timeout          = local.functions["renew-all"].timeout
  memory_size      = local.functions["renew-all"].memory
  environment {
    variables = merge(local.common_env, {
      CERTBUCKET_CONFIG = jsonencode(local.config)
    })
  }
  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.function["renew-all"].name
  }
  tags = var.tags
}

resource "aws_lambda_function_event_invoke_config" "renew_all" {
  function_name                = aws_lambda_function.renew_all.function_name
  maximum_retry_attempts       = 0
  maximum_event_age_in_seconds = 3600
}

resource "aws_lambda_permission" "apply_from_s3" {
  statement_id   = "requests-created"
  action         = "lambda:InvokeFunction"
  function_name  = aws_lambda_function.apply.function_name
  principal      = "s3.amazonaws.com"
  source_arn     = aws_s3_bucket.state.arn
  source_account = data.aws_caller_identity.current.account_id
}

resource "aws_cloudwatch_event_rule" "renew_all" {
  name                = "${var.name}-renew-all"
  description         = "certbucket renew-all"
  schedule_expression = var.renew_schedule
  tags                = var.tags
}

resource "aws_cloudwatch_event_target" "renew_all" {
  rule = aws_cloudwatch_event_rule.renew_all.name
  arn  = aws_lambda_function.renew_all.arn
}

resource "aws_lambda_permission" "renew_all_from_schedule" {
  statement_id  = "schedule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.renew_all.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.renew_all.arn
}
