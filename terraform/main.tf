# e2b-webhook-emitter on Nomad: the job and the Nomad Variable that carries
# its secrets. No ACL policy: the job's workload identity reads its own
# variable (nomad/jobs/<job_name>) and the orchestrators' service
# registrations through Nomad's implicit workload policy, which is all the
# emitter needs (docs/operators-guide.md, "Requirements").

provider "nomad" {
  address   = var.nomad_address
  secret_id = var.nomad_token
}

locals {
  # Secrets travel in a Nomad Variable at the path the job's workload
  # identity may read by default (nomad/jobs/<job ID>); the task's template
  # block turns them into environment variables. Empty entries are left out.
  # redis_tls_enabled is not secret but travels with the Redis settings it
  # belongs to, so that one variable update changes them together.
  secret_items = {
    for k, v in {
      webhook_secret      = var.webhook_secret
      redis_url           = var.redis_url
      redis_cluster_url   = var.redis_cluster_url
      redis_password      = var.redis_password
      redis_tls_ca_base64 = var.redis_tls_ca_base64
      redis_tls_enabled   = var.redis_tls_enabled ? "true" : "false"
      admin_token         = var.admin_token
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
      condition     = var.redis_url != "" || var.redis_cluster_url != ""
      error_message = "Set redis_url or redis_cluster_url: the emitter reads the orchestrator's event stream from Redis."
    }
    # The orchestrator's own rules (packages/shared/pkg/factories/redis.go), so that a
    # combination it would refuse fails here, not at the emitter's startup.
    precondition {
      condition     = var.redis_tls_ca_base64 == "" || var.redis_tls_enabled
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
  }
}

resource "nomad_job" "emitter" {
  jobspec = templatefile("${path.module}/../nomad/e2b-webhook-emitter.nomad.hcl", {
    job_name             = var.job_name
    namespace            = var.namespace
    datacenters          = jsonencode(var.datacenters)
    node_pool            = var.node_pool
    instance_count       = var.instance_count
    artifact_url         = var.artifact_url
    artifact_checksum    = var.artifact_checksum
    webhook_url          = var.webhook_url
    webhook_format       = var.webhook_format
    signature_encoding   = var.webhook_signature_encoding
    webhook_id           = var.webhook_id
    webhook_events       = join(",", var.webhook_events)
    team_ids             = join(",", var.team_ids)
    redis_stream         = var.redis_stream
    task_nomad_addr      = var.task_nomad_address
    orchestrator_service = var.orchestrator_service
    otel_endpoint        = var.otel_collector_endpoint
    cpu_mhz              = var.cpu_mhz
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
