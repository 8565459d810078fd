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
