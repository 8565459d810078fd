# e2b-webhook-emitter on Nomad: the job and the Nomad Variable that carries
# its secrets. No ACL policy: the job's workload identity reads its own
# variable (nomad/jobs/<job_name>) and the orchestrators' service
# registrations through Nomad's implicit workload policy, which is all the
# emitter needs (docs/operators-guide.md, "Requirements").
#
# No provider block: the caller's Nomad provider is used. Inside E2B's tree
# that is the one E2B's own jobs use (deploy/e2b/ in this repository has the
# call); applied on its own, Terraform configures the provider from
# NOMAD_ADDR and NOMAD_TOKEN in the environment.

locals {
  # Values that arrive from secret stores may carry the placeholder " " E2B
  # writes into an unset secret (e2b-dev/infra iac/provider-gcp/init/secrets.tf).
  redis_tls_ca_base64        = trimspace(var.redis_tls_ca_base64)
  postgres_connection_string = trimspace(var.postgres_connection_string)
  webhook_ca_pem             = trimspace(var.webhook_ca_pem)
  # Whether it is set is no secret, and the jobspec depends on it (a
  # sensitive value there would hide the whole jobspec from plans).
  events_api = nonsensitive(local.postgres_connection_string != "")

  # Two instances where two nodes exist, one on a one-node pool (E2B's
  # default API_CLUSTER_SIZE=1): with distinct_hosts a second instance could
  # never be placed, and the deployment Terraform waits for would never end.
  instance_count = var.node_pool_size == null ? var.instance_count : max(1, min(var.instance_count, var.node_pool_size))

  # Secrets travel in a Nomad Variable at the path the job's workload
  # identity may read by default (nomad/jobs/<job ID>); the task's template
  # blocks turn them into environment variables and files. Empty entries are
  # left out. redis_tls_enabled is not secret but travels with the Redis
  # settings it belongs to, so that one variable update changes them
  # together; the CA of the webhook endpoint is not secret either, but a
  # file in secrets/ is where a template can write it.
  secret_items = {
    for k, v in {
      webhook_secret             = trimspace(var.webhook_secret)
      redis_url                  = trimspace(var.redis_url)
      redis_cluster_url          = trimspace(var.redis_cluster_url)
      redis_password             = var.redis_password
      redis_tls_ca_base64        = local.redis_tls_ca_base64
      redis_tls_enabled          = var.redis_tls_enabled ? "true" : "false"
      admin_token                = var.admin_token
      postgres_connection_string = local.postgres_connection_string
      webhook_secrets_key        = trimspace(var.webhook_secrets_key)
      webhook_ca_pem             = local.webhook_ca_pem
      auth_provider_config       = trimspace(var.auth_provider_config)
    } : k => v if v != ""
  }
}

resource "nomad_variable" "secrets" {
  path      = "nomad/jobs/${var.job_name}"
  namespace = var.namespace
  # Note: Terraform keeps these values in its state; protect the state.
  items = local.secret_items

  lifecycle {
    precondition {
      condition     = trimspace(var.redis_url) != "" || trimspace(var.redis_cluster_url) != ""
      error_message = "Set redis_url or redis_cluster_url: the emitter reads the orchestrator's event stream from Redis."
    }
    # The orchestrator's own rules (packages/shared/pkg/factories/redis.go), so that a
    # combination it would refuse fails here, not at the emitter's startup.
    precondition {
      condition     = local.redis_tls_ca_base64 == "" || var.redis_tls_enabled
      error_message = "redis_tls_ca_base64 is set but redis_tls_enabled is not: set redis_tls_enabled = true, or remove the CA."
    }
    precondition {
      condition     = var.redis_password == "" || var.redis_tls_enabled
      error_message = "redis_password is set but redis_tls_enabled is not: the password is only sent over TLS; set redis_tls_enabled = true, or remove it."
    }
    precondition {
      condition     = !startswith(var.redis_url, "rediss://") || var.redis_tls_enabled
      error_message = "The redis_url is a rediss:// (TLS) URL: set redis_tls_enabled = true, or give the bare host:port as E2B does."
    }
    precondition {
      condition     = !startswith(var.redis_url, "redis://") || !var.redis_tls_enabled
      error_message = "The redis_url is a redis:// (plaintext) URL but redis_tls_enabled is true: give the bare host:port, or use rediss://."
    }
    # Where events go: the operator's endpoint, the teams' registered
    # webhooks (the events API), or both.
    precondition {
      condition     = var.webhook_url != "" || local.events_api
      error_message = "Nothing to deliver to: set webhook_url (one endpoint for every event), postgres_connection_string (teams register their webhooks through the events API), or both."
    }
    precondition {
      condition     = var.webhook_url == "" || trimspace(var.webhook_secret) != ""
      error_message = "webhook_url is set but webhook_secret is empty: every webhook is signed; generate one with `openssl rand -hex 32`."
    }
    precondition {
      condition     = var.webhook_url == "" || local.events_api || length(var.team_ids) > 0
      error_message = "The team_ids must name at least one E2B team UUID: the orchestrator publishes events only for teams the emitter serves (with postgres_connection_string, registered webhooks open their teams)."
    }
    precondition {
      condition     = local.webhook_ca_pem == "" || var.webhook_url != ""
      error_message = "webhook_ca_pem is set but webhook_url is not: the CA is trusted for webhook_url's certificate; set webhook_url, or remove the CA."
    }
    precondition {
      condition     = trimspace(var.auth_provider_config) == "" || local.events_api
      error_message = "auth_provider_config accepts users' tokens on the events API, which is off: set postgres_connection_string, or remove auth_provider_config."
    }
    precondition {
      condition     = length(var.api_trusted_proxies) == 0 || local.events_api
      error_message = "api_trusted_proxies is for the events API, which is off: set postgres_connection_string, or remove api_trusted_proxies."
    }
    precondition {
      condition     = !local.events_api || trimspace(var.webhook_secrets_key) != ""
      error_message = "The events API (postgres_connection_string) seals the signing secrets teams register with webhook_secrets_key, which is empty: generate one with `openssl rand -base64 32` and keep it (losing it loses every registered webhook's secret)."
    }
    precondition {
      condition     = var.webhooks_per_team == 10 || local.events_api
      error_message = "webhooks_per_team limits the events API, which is off: set postgres_connection_string, or remove webhooks_per_team."
    }
    precondition {
      condition     = var.ingress_host_rule == "" || local.events_api
      error_message = "ingress_host_rule routes the events API, which is off: set postgres_connection_string, or remove ingress_host_rule."
    }
  }
}

resource "nomad_job" "emitter" {
  jobspec = templatefile("${path.module}/jobs/e2b-webhook-emitter.hcl", {
    job_name             = var.job_name
    namespace            = var.namespace
    datacenters          = jsonencode(var.datacenters)
    node_pool            = var.node_pool
    instance_count       = local.instance_count
    task_user            = var.task_user
    artifact_url         = var.artifact_url
    artifact_checksum    = var.artifact_checksum
    webhook_url          = var.webhook_url
    webhook_format       = var.webhook_format
    signature_encoding   = var.webhook_signature_encoding
    webhook_id           = var.webhook_id
    webhook_events       = join(",", var.webhook_events)
    webhook_ca           = local.webhook_ca_pem != ""
    team_ids             = join(",", var.team_ids)
    redis_stream         = var.redis_stream
    task_nomad_addr      = var.task_nomad_address
    orchestrator_service = var.orchestrator_service
    otel_endpoint        = var.otel_collector_endpoint
    logs_collector       = var.logs_collector_address
    events_api           = local.events_api
    ingress_host_rule    = var.ingress_host_rule
    ingress_entrypoint   = var.ingress_entrypoint
    ingress_priority     = var.ingress_priority
    trusted_proxies      = join(",", var.api_trusted_proxies)
    webhooks_per_team    = var.webhooks_per_team
    team_concurrency     = var.team_delivery_concurrency
    cpu_mhz              = var.cpu_mhz
    worker_threads       = var.worker_threads
    memory_mb            = var.memory_mb
    disk_mb              = var.disk_mb
  })

  # Wait for the deployment, so that `terraform apply` fails (and the update
  # block rolls back) when the new version never becomes healthy.
  detach = false

  timeouts {
    # Matches the update block's progress_deadline.
    create = "10m"
    update = "10m"
  }

  # The task's template blocks until the variable exists.
  depends_on = [nomad_variable.secrets]
}
