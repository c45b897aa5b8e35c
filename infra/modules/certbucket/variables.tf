# The config document's fields (Kong acme plugin names), then the store, then operations.
# template.yaml has the same parameters; scripts/check-infra checks both.

variable "account_email" {
  description = "account_email: the ACME account's contact."
  type        = string
  validation {
    condition     = can(regex("^[^@\"\\\\\\s]+@[^@\"\\\\\\s]+$", var.account_email))
    error_message = "account_email must be an e-mail address."
  }
}

variable "api_uri" {
  description = "api_uri: the CA's directory. Try Let's Encrypt staging first: https://acme-staging-v02.api.letsencrypt.org/directory"
  type        = string
  default     = "https://acme-v02.api.letsencrypt.org/directory"
  validation {
    condition     = startswith(var.api_uri, "https://")
    error_message = "api_uri must be an https:// URL."
  }
}

variable "tos_accepted" {
  description = "tos_accepted: nothing is ordered until it is true (you accept the CA's terms)."
  type        = bool
  default     = false
}

variable "domains" {
  description = "domains: exact names and *.example.com patterns that on-demand requests and renewals may issue for."
  type        = list(string)
  default     = []
}

variable "allow_any_domain" {
  description = "allow_any_domain"
  type        = bool
  default     = false
}

variable "cert_type" {
  description = "cert_type: rsa or ecc."
  type        = string
  default     = "rsa"
  validation {
    condition     = contains(["rsa", "ecc"], var.cert_type)
    error_message = "cert_type must be rsa or ecc."
  }
}

variable "rsa_key_size" {
  description = "rsa_key_size: 2048, 3072 or 4096."
  type        = number
  default     = 4096
  validation {
    condition     = contains([2048, 3072, 4096], var.rsa_key_size)
    error_message = "rsa_key_size must be 2048, 3072 or 4096."
  }
}

variable "renew_threshold_days" {
  description = "renew_threshold_days"
  type        = number
  default     = 14
}

variable "fail_backoff_minutes" {
  description = "fail_backoff_minutes"
  type        = number
  default     = 5
}

variable "preferred_chain" {
  description = "preferred_chain: the top issuer CN of the chain to prefer; null for the CA's default."
  type        = string
  default     = null
}

variable "enable_ipv4_common_name" {
  description = "enable_ipv4_common_name"
  type        = bool
  default     = true
}

variable "eab_kid" {
  description = "eab_kid, for CAs that need external account binding."
  type        = string
  default     = null
}

variable "eab_hmac_key" {
  description = "eab_hmac_key as a reference, never the key itself: {vault://aws/SECRET_ID/FIELD} (grant it with secret_arn) or {vault://env/NAME}."
  type        = string
  default     = null
  sensitive   = true
  validation {
    condition     = var.eab_hmac_key == null || can(regex("^\\{vault://(aws|env)/[^\"\\\\\\s]+\\}$", var.eab_hmac_key))
    error_message = "eab_hmac_key must be a {vault://...} reference, not a key."
  }
}

variable "account_key" {
  description = "account_key as a reference ({vault://aws/SECRET_ID/FIELD}); null to let certbucket create and store the account key."
  type        = string
  default     = null
  sensitive   = true
  validation {
    condition     = var.account_key == null || can(regex("^\\{vault://(aws|env)/[^\"\\\\\\s]+\\}$", var.account_key))
    error_message = "account_key must be a {vault://...} reference, not a key."
  }
}

variable "secret_arn" {
  description = "The Secrets Manager secret that {vault://aws/...} references read; apply and renew-all may read it, nothing else may."
  type        = string
  default     = null
}

variable "bucket_name" {
  description = "The state bucket's name (created by this module)."
  type        = string
}

variable "store_prefix" {
  description = "Namespace prefix inside the bucket, without leading or trailing slash; \"\" for none."
  type        = string
  default     = ""
  validation {
    condition     = var.store_prefix == "" || can(regex("^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$", var.store_prefix))
    error_message = "store_prefix must be slash-separated segments without leading or trailing slash."
  }
}

variable "kms_key_arn" {
  description = "A KMS key for bucket encryption (SSE-KMS with a bucket key); null for SSE-S3."
  type        = string
  default     = null
}

variable "challenge_expiry_days" {
  description = "Lifecycle expiry for challenges/ and requests/ (normally deleted after use; this sweeps what a crashed run left)."
  type        = number
  default     = 1
}

variable "noncurrent_version_expiry_days" {
  description = "How long overwritten or deleted object versions are kept."
  type        = number
  default     = 30
}

variable "renew_schedule" {
  description = "When renew-all runs (an EventBridge schedule expression)."
  type        = string
  default     = "rate(12 hours)"
}

variable "log_retention_days" {
  description = "CloudWatch Logs retention for the functions and the API's access log."
  type        = number
  default     = 30
}

variable "log_level" {
  description = "RUST_LOG for the functions."
  type        = string
  default     = "info"
}

# Terraform only.

variable "name" {
  description = "Prefix of every named resource (functions, roles, API, log groups)."
  type        = string
  default     = "certbucket"
}

variable "lambda_dist_dir" {
  description = "Where scripts/package-lambdas wrote apply.zip, list.zip and renew-all.zip (arm64)."
  type        = string
}

variable "create_edge_role" {
  description = "Also create an IAM role (and EC2 instance profile) for the edges, with the edge policy attached."
  type        = bool
  default     = true
}

variable "edge_trusted_services" {
  description = "Services that may assume the edge role (ec2.amazonaws.com for instances, ecs-tasks.amazonaws.com for ECS)."
  type        = list(string)
  default     = ["ec2.amazonaws.com"]
}

variable "tags" {
  description = "Tags for every resource that takes them."
  type        = map(string)
  default     = {}
}
