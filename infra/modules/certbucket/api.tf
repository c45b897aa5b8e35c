# The admin API: Kong's acme routes, every one behind IAM (SigV4) authorization.
resource "aws_apigatewayv2_api" "admin" {
  name          = "${var.name}-admin"
  description   = "certbucket admin API (Kong's acme routes), IAM (SigV4) auth on every route"
  protocol_type = "HTTP"
  tags          = var.tags
}

resource "aws_cloudwatch_log_group" "api_access" {
  #checkov:skip=CKV_AWS_158:Access logs carry caller ARNs and paths, no secrets; CloudWatch Logs encrypts at rest by default.
  #checkov:skip=CKV_AWS_338:Retention is var.log_retention_days (30 by default): operational logs, not an audit trail.
  name              = "/aws/apigateway/${var.name}-admin"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

resource "aws_apigatewayv2_stage" "default" {
  api_id      = aws_apigatewayv2_api.admin.id
  name        = "$default"
  auto_deploy = true
  default_route_settings {
    throttling_burst_limit = 20
    throttling_rate_limit  = 10
  }
  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api_access.arn
    format = jsonencode({
      requestId        = "$context.requestId"
      caller           = "$context.identity.userArn"
      ip               = "$context.identity.sourceIp"
      method           = "$context.httpMethod"
      path             = "$context.path"
      status           = "$context.status"
      integrationError = "$context.integrationErrorMessage"
      latency          = "$context.responseLatency"
    })
  }
  tags = var.tags
}

resource "aws_apigatewayv2_integration" "apply" {
  api_id                 = aws_apigatewayv2_api.admin.id
  integration_type       = "AWS_PROXY"
  integration_uri        = aws_lambda_function.apply.invoke_arn
  payload_format_version = "2.0"
}

resource "aws_apigatewayv2_integration" "list" {
  api_id                 = aws_apigatewayv2_api.admin.id
  integration_type       = "AWS_PROXY"
  integration_uri        = aws_lambda_function.list.invoke_arn
  payload_format_version = "2.0"
}

locals {
  routes = {
    "POST /acme"                    = "apply"
    "PATCH /acme"                   = "apply"
    "GET /acme/certificates"        = "list"
    "GET /acme/certificates/{host}" = "list"
  }
}

resource "aws_apigatewayv2_route" "admin" {
  for_each           = local.routes
  api_id             = aws_apigatewayv2_api.admin.id
  route_key          = each.key
  authorization_type = "AWS_IAM"
  target             = "integrations/${each.value == "apply" ? aws_apigatewayv2_integration.apply.id : aws_apigatewayv2_integration.list.id}"
}

resource "aws_lambda_permission" "apply_from_api" {
  statement_id  = "admin-api"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.apply.function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.admin.execution_arn}/*/*/acme"
}

resource "aws_lambda_permission" "list_from_api" {
  statement_id  = "admin-api"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.list.function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.admin.execution_arn}/*/GET/acme/certificates*"
}
