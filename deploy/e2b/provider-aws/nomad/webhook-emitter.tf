# e2b-webhook-emitter inside E2B's own tree (e2b-dev/infra), on AWS: the GCP
# file (deploy/e2b/provider-gcp/nomad/webhook-emitter.tf) with AWS's stores.
#
# Where the files go (docs/operators-guide.md, "Deploy it with E2B's iac"):
#   this file            -> iac/provider-aws/nomad/webhook-emitter.tf
#   this repo's terraform/ -> iac/modules/job-webhook-emitter/
# Here, in E2B's module "nomad", `make plan` and `make plan-only-jobs` plan it,
# with the Nomad provider E2B's root configures (iac/provider-aws/main.tf),
# and nothing else in E2B's tree changes.
#
# Every input comes from what E2B's tree already has: the api node pool and
# its size, the Redis the orchestrator publishes to (the orchestrator job's
# own REDIS_* settings, which E2B rewrites when its Redis changes), E2B's
# Postgres secret, the fc-env-pipeline bucket. What differs per environment
# lives in that environment's Secrets Manager, the way E2B keeps its own
# optional settings: a secret holding " " until it is set. AWS's module
# "nomad" has no prefix variable; the bucket's name carries E2B's
# <prefix><account>- (iac/provider-aws/init/buckets.tf), so the secrets are
# named after it.
#
#   <bucket prefix>webhook-emitter-config   JSON (no secrets: it shows in plans).
#                                    " " deploys nothing. Keys, all optional:
#     enabled        true     false removes the job
#     events_api     true     teams register webhooks at api.<domain>/events
#                             (E2B's Postgres; Traefik routes /events, /portal)
#     webhook_url    ""       one endpoint for every event, signed with the
#                             secret below; team_ids then names its teams
#     team_ids       []       webhook_format, webhook_events: as the module's
#     webhook_ca_pem ""       PEM of a private CA for webhook_url
#     instance_count 2        capped by the api pool's size
#     webhooks_per_team 10    webhooks a team may register (events API)
#     team_delivery_concurrency 8  attempts in flight to one team's webhooks
#   <bucket prefix>webhook-emitter-secret   JSON (secrets), keys:
#     webhook_secrets_key     seals teams' signing secrets in Postgres; required
#                             with the events API: `openssl rand -base64 32`
#                             (rotation: "NEW,OLD", docs/operators-guide.md)
#     webhook_secret          webhook_url's signing secret (>= 32 chars)
#                             A bare string, as before, is webhook_secret alone.
#
# The artifact is the object e2b-webhook-emitter.tar.gz in the
# <bucket prefix>fc-env-pipeline bucket (scripts/upload-artifact.sh puts it
# there with its sha256 as metadata); its ETag is part of the URL, so a new
# upload redeploys at the next apply, as E2B's orchestrator does.

locals {
  webhook_emitter_object        = "e2b-webhook-emitter.tar.gz"
  webhook_emitter_secret_prefix = trimsuffix(var.fc_env_pipeline_bucket_name, "fc-env-pipeline")
  webhook_emitter_known_keys = [
    "enabled", "events_api", "webhook_url", "webhook_format", "webhook_events",
    "team_ids", "webhook_ca_pem", "instance_count", "webhooks_per_team",
    "team_delivery_concurrency",
  ]

  # The secret: a JSON object of secrets, or (as first documented) the signing secret alone.
  webhook_emitter_secret_text    = trimspace(data.aws_secretsmanager_secret_version.webhook_emitter_secret.secret_string)
  webhook_emitter_secret_json    = try(jsondecode(local.webhook_emitter_secret_text), null)
  webhook_emitter_secret_is_json = can(keys(local.webhook_emitter_secret_json))
  webhook_emitter_secrets = {
    webhook_secret      = local.webhook_emitter_secret_is_json ? try(local.webhook_emitter_secret_json.webhook_secret, "") : local.webhook_emitter_secret_text
    webhook_secrets_key = local.webhook_emitter_secret_is_json ? try(local.webhook_emitter_secret_json.webhook_secrets_key, "") : ""
  }

  # The config holds no secret, so it may show in plans and decide counts.
  webhook_emitter_config_text = nonsensitive(trimspace(data.aws_secretsmanager_secret_version.webhook_emitter_config.secret_string))
  webhook_emitter_config      = try(jsondecode(local.webhook_emitter_config_text == "" ? "{}" : local.webhook_emitter_config_text), null)
  webhook_emitter_enabled     = local.webhook_emitter_config_text != "" && try(local.webhook_emitter_config.enabled, true) == true
}

resource "aws_secretsmanager_secret" "webhook_emitter_config" {
  name = "${local.webhook_emitter_secret_prefix}webhook-emitter-config"
}

resource "aws_secretsmanager_secret_version" "webhook_emitter_config" {
  secret_id     = aws_secretsmanager_secret.webhook_emitter_config.id
  secret_string = " "

  lifecycle {
    ignore_changes = [secret_string]
  }
}

data "aws_secretsmanager_secret_version" "webhook_emitter_config" {
  secret_id     = aws_secretsmanager_secret.webhook_emitter_config.id
  version_stage = "AWSCURRENT"

  depends_on = [aws_secretsmanager_secret_version.webhook_emitter_config]
}

resource "aws_secretsmanager_secret" "webhook_emitter_secret" {
  name = "${local.webhook_emitter_secret_prefix}webhook-emitter-secret"
}

resource "aws_secretsmanager_secret_version" "webhook_emitter_secret" {
  secret_id     = aws_secretsmanager_secret.webhook_emitter_secret.id
  secret_string = " "

  lifecycle {
    ignore_changes = [secret_string]
  }
}

data "aws_secretsmanager_secret_version" "webhook_emitter_secret" {
  secret_id     = aws_secretsmanager_secret.webhook_emitter_secret.id
  version_stage = "AWSCURRENT"

  depends_on = [aws_secretsmanager_secret_version.webhook_emitter_secret]
}

# A config that is not what this file reads fails the plan here, naming the
# secret, instead of deploying something else than was meant.
resource "terraform_data" "webhook_emitter_config" {
  count = local.webhook_emitter_config_text == "" ? 0 : 1
  input = local.webhook_emitter_config_text

  lifecycle {
    precondition {
      condition     = can(keys(local.webhook_emitter_config))
      error_message = "The secret ${local.webhook_emitter_secret_prefix}webhook-emitter-config must hold a JSON object (an empty one, {}, deploys with every default), or a single space to deploy nothing."
    }
    precondition {
      condition     = length(setsubtract(try(keys(local.webhook_emitter_config), []), local.webhook_emitter_known_keys)) == 0
      error_message = "The secret ${local.webhook_emitter_secret_prefix}webhook-emitter-config has keys this file does not read: ${join(", ", setsubtract(try(keys(local.webhook_emitter_config), []), local.webhook_emitter_known_keys))}. Known: ${join(", ", local.webhook_emitter_known_keys)}."
    }
  }
}

data "aws_s3_object" "webhook_emitter" {
  count  = local.webhook_emitter_enabled ? 1 : 0
  bucket = var.fc_env_pipeline_bucket_name
  key    = local.webhook_emitter_object
}

module "webhook_emitter" {
  source = "../../modules/job-webhook-emitter"
  count  = local.webhook_emitter_enabled ? 1 : 0

  # The provider is E2B's (its root's Nomad, with its ACL token).
  node_pool      = var.api_node_pool
  node_pool_size = var.api_cluster_size
  instance_count = try(local.webhook_emitter_config.instance_count, 2)

  artifact_url      = "s3::https://${var.fc_env_pipeline_bucket_name}.s3.${var.aws_region}.amazonaws.com/${local.webhook_emitter_object}?etag=${data.aws_s3_object.webhook_emitter[0].etag}"
  artifact_checksum = try("sha256:${data.aws_s3_object.webhook_emitter[0].metadata.sha256}", "")

  # The orchestrator's own Redis settings: the stream is where it publishes.
  redis_url           = nonsensitive(lookup(var.orchestrator_env_vars, "REDIS_URL", ""))
  redis_cluster_url   = lookup(var.orchestrator_env_vars, "REDIS_CLUSTER_URL", "")
  redis_tls_enabled   = nonsensitive(lookup(var.orchestrator_env_vars, "REDIS_TLS_ENABLED", "false")) == "true"
  redis_tls_ca_base64 = lookup(var.orchestrator_env_vars, "REDIS_TLS_CA_BASE64", "")

  # E2B's root hands its Postgres to the API job only (iac/provider-aws/main.tf).
  postgres_connection_string = try(local.webhook_emitter_config.events_api, true) ? lookup(var.api_env_vars, "POSTGRES_CONNECTION_STRING", "") : ""
  # E2B's Traefik reaches the API from the nodes' private addresses; its X-Forwarded-For names
  # the client, so one client's refused keys do not throttle every team.
  api_trusted_proxies = try(local.webhook_emitter_config.events_api, true) ? ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"] : []
  # Users' tokens as E2B's API accepts them: its own AUTH_PROVIDER_CONFIG, which E2B's
  # root escapes for the api jobspec (iac/provider-gcp/main.tf, api_env_vars).
  auth_provider_config = try(local.webhook_emitter_config.events_api, true) ? nonsensitive(replace(lookup(var.api_env_vars, "AUTH_PROVIDER_CONFIG", ""), "\\\"", "\"")) : ""
  # E2B's API router on the same host (iac/modules/job-api/jobs/api.hcl).
  ingress_host_rule = try(local.webhook_emitter_config.events_api, true) ? "HostRegexp(`api.{domain:.+}`)" : ""

  webhook_url    = try(local.webhook_emitter_config.webhook_url, "")
  webhook_secret = local.webhook_emitter_secrets.webhook_secret
  webhook_format = try(local.webhook_emitter_config.webhook_format, "x-e2b-signature")
  webhook_events = try(local.webhook_emitter_config.webhook_events, ["create", "kill", "pause", "resume"])
  team_ids       = try(local.webhook_emitter_config.team_ids, [])
  webhook_ca_pem = try(local.webhook_emitter_config.webhook_ca_pem, "")

  webhook_secrets_key = local.webhook_emitter_secrets.webhook_secrets_key
  webhooks_per_team   = try(local.webhook_emitter_config.webhooks_per_team, 10)
  # A team's share of the registered webhooks' delivery concurrency.
  team_delivery_concurrency = try(local.webhook_emitter_config.team_delivery_concurrency, 8)

  depends_on = [terraform_data.webhook_emitter_config]
}
