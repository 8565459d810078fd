# e2b-webhook-emitter on Nomad: the job, the Nomad Variable that carries its
# secrets, and the ACL policy of its workload identity.

provider "nomad" {
  address   = var.nomad_address
  secret_id = var.nomad_token
}

locals {
  # Secrets travel in a Nomad Variable at the path the job's workload
  # identity may read by default (nomad/jobs/<job ID>); the task's template
  # block turns them into environment variables. Empty entries are left out.
  secret_items = {
    for k, v in {
      webhook_secret    = var.webhook_secret
      redis_url         = var.redis_url
      redis_cluster_url = var.redis_cluster_url
      redis_password    = var.redis_password
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
  }
}

# What the emitter may do with its workload identity beyond the implicit
# policy (which already lets it read nomad/jobs/<job_name>): read jobs and
# allocations in the orchestrators' namespace, to find the orchestrators and
# follow the allocation event stream. Nothing else.
resource "nomad_acl_policy" "emitter" {
  name        = "${var.job_name}-read-orchestrators"
  description = "e2b-webhook-emitter: read the orchestrator allocations"

  rules_hcl = <<-EOT
    namespace "${var.orchestrator_namespace}" {
      capabilities = ["read-job"]
    }
  EOT

  job_acl {
    namespace = var.namespace
    job_id    = var.job_name
  }
}

resource "nomad_job" "emitter" {
  jobspec = templatefile("${path.module}/../nomad/e2b-webhook-emitter.nomad.hcl", {
    job_name               = var.job_name
    namespace              = var.namespace
    datacenters            = jsonencode(var.datacenters)
    node_pool              = var.node_pool
    instance_count         = var.instance_count
    artifact_url           = var.artifact_url
    artifact_checksum      = var.artifact_checksum
    webhook_url            = var.webhook_url
    webhook_format         = var.webhook_format
    webhook_events         = join(",", var.webhook_events)
    team_ids               = join(",", var.team_ids)
    redis_stream           = var.redis_stream
    redis_tls_enabled      = var.redis_tls_enabled
    redis_tls_ca_base64    = var.redis_tls_ca_base64
    task_nomad_addr        = var.task_nomad_address
    orchestrator_namespace = var.orchestrator_namespace
    cpu_mhz                = var.cpu_mhz
    memory_mb              = var.memory_mb
    disk_mb                = var.disk_mb
  })

  # Wait for the deployment, so that `terraform apply` fails (and the update
  # block rolls back) when the new version never becomes healthy.
  detach = false

  timeouts {
    # Matches the update block's progress_deadline.
    create = "10m"
    update = "10m"
  }

  # The task's template blocks until the variable exists, and the task calls
  # the Nomad API as soon as it starts.
  depends_on = [nomad_variable.secrets, nomad_acl_policy.emitter]
}
