output "api_url" {
  description = "The admin API (SigV4, service execute-api), e.g. POST {api_url}/acme host=..."
  value       = aws_apigatewayv2_api.admin.api_endpoint
}

output "bucket_name" {
  description = "The state bucket."
  value       = aws_s3_bucket.state.id
}

output "store_url" {
  description = "What edges take as --store / CERTBUCKET_STORE."
  value       = local.store_url
}

output "edge_policy_arn" {
  description = "The managed policy for the edges' role."
  value       = aws_iam_policy.edge.arn
}

output "edge_role_name" {
  description = "The edge role (null when create_edge_role is false)."
  value       = var.create_edge_role ? aws_iam_role.edge[0].name : null
}

output "edge_instance_profile_name" {
  description = "The edge instance profile for EC2 (null when not created)."
  value       = length(aws_iam_instance_profile.edge) > 0 ? aws_iam_instance_profile.edge[0].name : null
}

output "function_names" {
  description = "The functions' names."
  value = {
    apply     = aws_lambda_function.apply.function_name
    list      = aws_lambda_function.list.function_name
    renew-all = aws_lambda_function.renew_all.function_name
  }
}
