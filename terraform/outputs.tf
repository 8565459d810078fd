output "job_id" {
  description = "Nomad job ID of the emitter."
  value       = nomad_job.emitter.id
}

output "namespace" {
  description = "Nomad namespace of the emitter job and its variable."
  value       = nomad_job.emitter.namespace
}

output "service_name" {
  description = "Nomad service (provider nomad) that exposes /healthz, /readyz and /metrics; find instances with `nomad service info <name>`."
  value       = var.job_name
}

output "secrets_variable_path" {
  description = "Path of the Nomad Variable holding webhook_secret and the Redis URLs (the values themselves are not output)."
  value       = nomad_variable.secrets.path
}

output "acl_policy_name" {
  description = "ACL policy attached to the job's workload identity."
  value       = nomad_acl_policy.emitter.name
}
