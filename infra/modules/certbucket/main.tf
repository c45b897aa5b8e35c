locals {
  # The object layout (core/src/storage/keys.rs) under the namespace prefix.
  key_prefix = var.store_prefix == "" ? "" : "${var.store_prefix}/"
  bucket_arn = aws_s3_bucket.state.arn
  objects    = "${aws_s3_bucket.state.arn}/${local.key_prefix}"
  store_url  = var.store_prefix == "" ? "s3://${var.bucket_name}" : "s3://${var.bucket_name}/${var.store_prefix}"

  # The config document (Kong field names). Secret fields are {vault://...} references only.
  config = {
    account_email           = var.account_email
    api_uri                 = var.api_uri
    tos_accepted            = var.tos_accepted
    domains                 = var.domains
    allow_any_domain        = var.allow_any_domain
    cert_type               = var.cert_type
    rsa_key_size            = var.rsa_key_size
    renew_threshold_days    = var.renew_threshold_days
    fail_backoff_minutes    = var.fail_backoff_minutes
    enable_ipv4_common_name = var.enable_ipv4_common_name
    preferred_chain         = var.preferred_chain
    eab_kid                 = var.eab_kid
    eab_hmac_key            = var.eab_hmac_key
    account_key             = var.account_key
  }
  # list never issues: its config leaves out the secret fields, so it needs no secret.
  list_config = { for k, v in local.config : k => v if !contains(["preferred_chain", "eab_kid", "eab_hmac_key", "account_key"], k) }

  common_env = {
    CERTBUCKET_STORE = local.store_url
    RUST_LOG         = var.log_level
  }
}

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}
