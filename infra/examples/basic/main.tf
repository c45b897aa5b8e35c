# An example root module: certbucket against Let's Encrypt staging, edges on EC2.
#
#   scripts/package-lambdas                 # writes dist/lambda/{apply,list,renew-all}.zip (arm64)
#   cd infra/examples/basic
#   terraform init
#   terraform apply -var bucket_name=my-certbucket-state -var account_email=ops@example.com
#
# Switch api_uri to Let's Encrypt production once staging issues what you expect.

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 7"
    }
  }
}

provider "aws" {
  region = var.region
}

variable "region" {
  description = "Where to deploy."
  type        = string
  default     = "us-east-1"
}

variable "bucket_name" {
  description = "The state bucket's name (S3 names are global: pick your own)."
  type        = string
}

variable "account_email" {
  description = "The ACME account's contact."
  type        = string
}

module "certbucket" {
  source = "../../modules/certbucket"

  bucket_name     = var.bucket_name
  lambda_dist_dir = "${path.root}/../../../dist/lambda"

  account_email = var.account_email
  api_uri       = "https://acme-staging-v02.api.letsencrypt.org/directory"
  tos_accepted  = true
  domains       = ["*.example.com"]
  cert_type     = "ecc"

  create_edge_role      = true
  edge_trusted_services = ["ec2.amazonaws.com"]
}

output "api_url" {
  value = module.certbucket.api_url
}

output "store_url" {
  value = module.certbucket.store_url
}

output "edge_policy_arn" {
  value = module.certbucket.edge_policy_arn
}

output "edge_instance_profile_name" {
  value = module.certbucket.edge_instance_profile_name
}
