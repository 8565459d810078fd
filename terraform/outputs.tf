output "job_id" {
  description = "Nomad job ID of the emitter."
  value       = nomad_job.emitter.id
}

output "namespace" {
  description = "Nomad namespace of the emitter job and its variable."
  value       = var.namespace
}

output "service_name" {
  description = "Nomad service (provider nomad) that exposes /healthz, /readyz and /metrics; find instances with `nomad service info <name>`."
  value       = var.job_name
}

output "secrets_variable_path" {
  description = "Path of the Nomad Variable holding webhook_secret and the Redis settings (the values themselves are not output)."
  value       = nomad_variable.secrets.path
}

output "api_service_name" {
  description = "Nomad service of the events API (its own port; null when postgres_connection_string is empty). With ingress_host_rule, E2B's Traefik routes /events and /portal of that host to it."
  value       = local.events_api ? "${var.job_name}-api" : null
}

output "instance_count" {
  description = "Instances the job runs: instance_count, capped by node_pool_size."
  value       = local.instance_count
}
