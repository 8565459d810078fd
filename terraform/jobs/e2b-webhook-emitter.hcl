# e2b-webhook-emitter: Nomad service job.
#
# This file is a Terraform templatefile() template (rendered by
# terraform/main.tf), in the style of E2B's own jobs in e2b-dev/infra: a
# dollar-brace sequence is a template variable that Terraform fills in; a
# doubled dollar sign escapes it, so that Nomad receives a single one and
# resolves the value at runtime on the client (NOMAD_ALLOC_DIR, ports, ...).
# Terraform renders comments too, so they must not contain either sequence
# by accident.
#
# No secret is a template variable. WEBHOOK_SECRET, the Redis settings (URL,
# password, TLS CA) and E2B's Postgres live in the Nomad Variable
# nomad/jobs/${job_name};
# the task's own workload identity may read that path without any extra ACL
# policy, and the template block below turns it into environment variables.
# So they appear neither in the jobspec nor in `nomad job inspect`.

job "${job_name}" {
  type        = "service"
  namespace   = "${namespace}"
  datacenters = ${datacenters}
  node_pool   = "${node_pool}"

  # The release artifact is a static x86_64 Linux binary.
  constraint {
    attribute = "$${attr.kernel.name}"
    value     = "linux"
  }

  constraint {
    attribute = "$${attr.cpu.arch}"
    value     = "amd64"
  }

  group "emitter" {
    # Two instances where the pool has two nodes: one holds the leader lease
    # in Redis and delivers, the other stands by (ready, so Nomad keeps it)
    # and takes over when the lease expires, first claiming every entry the
    # group still has pending. Undelivered work stays pending in Redis, so
    # losing a node loses nothing (see docs/operators-guide.md, "High
    # availability"). On a one-node pool, one instance (terraform/main.tf).
    count = ${instance_count}

    # On different nodes: one lost node must leave a deliverer.
    constraint {
      operator = "distinct_hosts"
      value    = "true"
    }

    # The local durable copy of what the active instance read (DATA_DIR): it
    # survives a Redis restart without persistence; Redis keeps the shared
    # record (the group's pending list) that survives the loss of this node.
    # sticky: an updated allocation is placed on the same node and inherits
    # alloc/data, so a rolling update keeps the backlog. migrate: Nomad also
    # tries to copy the data when the allocation has to move to another node
    # (best effort; see docs/operators-guide.md).
    ephemeral_disk {
      sticky  = true
      migrate = true
      size    = ${disk_mb}
    }

    network {
      port "http" {}
      %{~ if events_api }
      # The events API on a port of its own, so that what the ingress
      # exposes to teams is that API alone, not /metrics or the admin API.
      port "api" {}
      %{~ endif }
    }

    # Nomad-native service (no Consul needed), like E2B's orchestrator job.
    # The check uses the emitter's readiness endpoint, so a rolling update
    # only proceeds once the new instance reports ready.
    service {
      name     = "${job_name}"
      provider = "nomad"
      port     = "http"
      tags     = ["metrics"]

      check {
        name     = "ready"
        type     = "http"
        path     = "/readyz"
        interval = "10s"
        timeout  = "3s"
      }
    }
    %{~ if events_api }

    # The events API. E2B's Traefik reads Nomad services (providers.nomad,
    # exposedByDefault = false: e2b-dev/infra iac/modules/job-ingress/jobs/
    # traefik.toml); with a host rule the tags route /events and /portal of
    # that host here, above the router of E2B's API on the same host
    # (priority 500, ruleSyntax v2: iac/modules/job-api/jobs/api.hcl). Every
    # other path of the host stays E2B's.
    service {
      name     = "${job_name}-api"
      provider = "nomad"
      port     = "api"
      %{~ if ingress_host_rule != "" }
      tags = [
        "traefik.enable=true",
        "traefik.http.routers.${job_name}-api.entrypoints=${ingress_entrypoint}",
        "traefik.http.routers.${job_name}-api.rule=${ingress_host_rule} && (PathPrefix(`/events`) || PathPrefix(`/portal`))",
        "traefik.http.routers.${job_name}-api.ruleSyntax=v2",
        "traefik.http.routers.${job_name}-api.priority=${ingress_priority}",
        "traefik.http.routers.${job_name}-api.service=${job_name}-api",
      ]
      %{~ endif }

      check {
        name     = "api-health"
        type     = "http"
        path     = "/health"
        interval = "10s"
        timeout  = "3s"
      }
    }
    %{~ endif }

    # Prefer restarting in place: a restart keeps the allocation, and with it
    # the outbox. mode = "delay" keeps retrying instead of failing the
    # allocation and rescheduling it away from its data.
    restart {
      attempts = 5
      interval = "10m"
      delay    = "15s"
      mode     = "delay"
    }

    # One instance at a time, no canary: the old allocation stops (draining
    # gracefully) before its replacement starts on the same node with the
    # same alloc/data. A replacement that never turns healthy is rolled back.
    update {
      max_parallel      = 1
      health_check      = "checks"
      min_healthy_time  = "15s"
      healthy_deadline  = "5m"
      progress_deadline = "10m"
      auto_revert       = true
    }

    task "emitter" {
      driver = "raw_exec"

      # raw_exec starts a task as the Nomad client's user, root on E2B's
      # nodes, next to E2B's API whose environment holds its tokens. Nomad
      # makes the allocation directory (alloc/data included) writable by any
      # user and hands the Task API socket to this user.
      user = "${task_user}"

      # The release tarball holds the binary at its root; Nomad unpacks it
      # into local/. With a checksum, a tampered or truncated download is
      # refused instead of run.
      artifact {
        source      = "${artifact_url}"
        destination = "local/"
        %{~ if artifact_checksum != "" }
        options {
          checksum = "${artifact_checksum}"
        }
        %{~ endif }
      }

      config {
        command = "local/e2b-webhook-emitter"
        args    = ["run", "--log-format", "json"]
      }

      # Exposes the task's workload identity as NOMAD_TOKEN. Nomad's implicit
      # workload policy lets it read this job's variables and the service
      # registrations of its namespace, which is all the emitter needs: it
      # finds the orchestrators by their service registrations, as E2B's API
      # does. No ACL policy, no read-job (which on E2B would expose the api
      # job's management token).
      identity {
        env = true
      }

      # Non-secret settings only (see the header). Every key must be an
      # environment variable that `e2b-webhook-emitter run --help` lists.
      env {
        %{~ if webhook_url != "" }
        WEBHOOK_URL    = "${webhook_url}"
        WEBHOOK_FORMAT = "${webhook_format}"
        WEBHOOK_EVENTS = "${webhook_events}"
        WEBHOOK_SIGNATURE_ENCODING = "${signature_encoding}"
        %{~ if webhook_id != "" }
        WEBHOOK_ID     = "${webhook_id}"
        %{~ endif }
        %{~ if webhook_ca }
        WEBHOOK_CA_FILE = "$${NOMAD_SECRETS_DIR}/webhook-ca.pem"
        %{~ endif }
        %{~ endif }
        %{~ if team_ids != "" }
        E2B_TEAM_IDS   = "${team_ids}"
        %{~ endif }
        REDIS_STREAM   = "${redis_stream}"
        # The allocation name (job.group[index]) survives restarts and
        # rolling updates, so a replacement instance resumes the Redis
        # consumer that its predecessor left, pending entries included.
        REDIS_CONSUMER = "$${NOMAD_ALLOC_NAME}"

        # Where the orchestrators' service registrations are read from. By
        # default the local client's Task API socket, which accepts the
        # workload identity and needs neither the agent's address nor its TLS
        # settings. The orchestrators run in this job's namespace.
        NOMAD_ADDR           = "${task_nomad_addr}"
        NOMAD_NAMESPACE      = "${namespace}"
        ORCHESTRATOR_SERVICE = "${orchestrator_service}"

        # Metrics are also pushed over OTLP to the node's collector, as
        # E2B's own services do; /metrics stays.
        %{~ if otel_endpoint != "" }
        OTEL_EXPORTER_OTLP_ENDPOINT = "${otel_endpoint}"
        %{~ endif }

        # Log lines also go to the node's logs collector (E2B's Vector), as
        # E2B's services send theirs; stderr stays.
        %{~ if logs_collector != "" }
        LOGS_COLLECTOR_ADDRESS = "${logs_collector}"
        %{~ endif }

        # A directory of its own in the sticky alloc/data: one that an
        # earlier version wrote as root holds files this user cannot open,
        # and stays aside (its undelivered entries are pending in Redis).
        DATA_DIR    = "$${NOMAD_ALLOC_DIR}/data/emitter"
        LISTEN_ADDR = "$${NOMAD_ADDR_http}"
        # Not one per CPU of the node: the job reserves cpu_mhz of it.
        WORKER_THREADS = "${worker_threads}"
        %{~ if events_api }
        API_LISTEN_ADDR           = "$${NOMAD_ADDR_api}"
        WEBHOOKS_PER_TEAM         = "${webhooks_per_team}"
        TEAM_DELIVERY_CONCURRENCY = "${team_concurrency}"
        %{~ if trusted_proxies != "" }
        API_TRUSTED_PROXIES = "${trusted_proxies}"
        %{~ endif }
        %{~ endif }
      }

      # Secrets, rendered from the Nomad Variable into secrets/ (never
      # written to the jobspec). toJSON quotes each value so that any
      # character in it survives the env-file parser. When the variable
      # changes (secret rotation) the task is restarted with the new values.
      # With an admin token, ADMIN_URL lets `status`, `dead-letters` and
      # `deliveries` run through `nomad alloc exec` ask the service, so the
      # service keeps its outbox file to itself (OUTBOX_EXCLUSIVE: one fsync
      # per commit instead of two).
      template {
        destination = "secrets/env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/${job_name}" }}
          {{- with .webhook_secret.Value }}
          WEBHOOK_SECRET={{ . | toJSON }}
          {{- end }}
          {{- with .postgres_connection_string.Value }}
          POSTGRES_CONNECTION_STRING={{ . | toJSON }}
          {{- end }}
          {{- with .webhook_secrets_key.Value }}
          WEBHOOK_SECRETS_KEY={{ . | toJSON }}
          {{- end }}
          {{- with .auth_provider_config.Value }}
          AUTH_PROVIDER_CONFIG={{ . | toJSON }}
          {{- end }}
          {{- with .redis_url.Value }}
          REDIS_URL={{ . | toJSON }}
          {{- end }}
          {{- with .redis_cluster_url.Value }}
          REDIS_CLUSTER_URL={{ . | toJSON }}
          {{- end }}
          {{- with .redis_password.Value }}
          REDIS_PASSWORD={{ . | toJSON }}
          {{- end }}
          {{- with .redis_tls_ca_base64.Value }}
          REDIS_TLS_CA_BASE64={{ . | toJSON }}
          {{- end }}
          REDIS_TLS_ENABLED={{ .redis_tls_enabled.Value | toJSON }}
          {{- with .admin_token.Value }}
          ADMIN_TOKEN={{ . | toJSON }}
          ADMIN_URL={{ printf "http://%s" (env "NOMAD_ADDR_http") | toJSON }}
          OUTBOX_EXCLUSIVE="true"
          {{- end }}
          {{- end }}
        EOT
      }
      %{~ if webhook_ca }

      # The webhook endpoint's private CA, as a file WEBHOOK_CA_FILE names.
      template {
        destination = "secrets/webhook-ca.pem"
        perms       = "0644"
        change_mode = "restart"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/${job_name}" }}{{ .webhook_ca_pem.Value }}{{ end }}
        EOT
      }
      %{~ endif }

      # SIGTERM starts the emitter's graceful drain (in-flight deliveries are
      # finished). Nomad waits kill_timeout before SIGKILL, capped by the
      # client's max_kill_timeout (30s by default; E2B's API nodes allow 24h).
      kill_signal  = "SIGTERM"
      kill_timeout = "45s"

      resources {
        cpu    = ${cpu_mhz}
        memory = ${memory_mb}
      }
    }
  }
}
