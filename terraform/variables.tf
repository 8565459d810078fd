# Inputs of the e2b-webhook-emitter module.
#
# Values that end up in the Nomad jobspec are validated to contain no quote,
# backslash or "${" sequence: the jobspec template puts them inside HCL
# strings, and Nomad would otherwise misparse or interpolate them.

# --- Webhook ---------------------------------------------------------------

variable "webhook_url" {
  description = "URL that receives every event, signed with webhook_secret (http:// or https://), e.g. https://app.example.com/api/webhooks/e2b. Empty: no such endpoint, only the webhooks teams register through the events API (postgres_connection_string)."
  type        = string
  default     = ""

  validation {
    condition     = var.webhook_url == "" || can(regex("^https?://([A-Za-z0-9.-]+|\\[[0-9A-Fa-f:.]+\\])(:[0-9]{1,5})?([/?#][A-Za-z0-9._~:/?#@!&'()*+,;=%\\[\\]-]*)?$", var.webhook_url))
    error_message = "The webhook_url must be empty or an http:// or https:// URL with a host, without spaces, quotes, backslashes or '$'."
  }
}

variable "webhook_secret" {
  description = "Secret used to sign every webhook to webhook_url (e.g. the output of `openssl rand -hex 32`); required with webhook_url. During a rotation it may hold several secrets separated by spaces, newest first: standard-webhooks signs with each of them, the other formats with the first. Surrounding whitespace is ignored. Stored in a Nomad Variable, never in the jobspec."
  type        = string
  default     = ""
  sensitive   = true

  validation {
    condition     = trimspace(var.webhook_secret) == "" || alltrue([for s in split(" ", trimspace(var.webhook_secret)) : length(s) >= 32])
    error_message = "The webhook_secret must be at least 32 characters long (each one, when several are given separated by spaces)."
  }
}

variable "webhook_format" {
  description = "Wire format of the webhooks: \"x-e2b-signature\" (hex HMAC-SHA256 of the body in X-E2B-Signature), \"e2b-cloud\" (E2B Cloud's e2b-signature headers) or \"standard-webhooks\" (Standard Webhooks / Svix)."
  type        = string
  default     = "x-e2b-signature"

  validation {
    condition     = contains(["x-e2b-signature", "e2b-cloud", "standard-webhooks"], var.webhook_format)
    error_message = "The webhook_format must be one of x-e2b-signature, e2b-cloud, standard-webhooks."
  }
}

variable "webhook_signature_encoding" {
  description = "e2b-cloud only: how e2b-signature is written: \"url-safe\" (base64 without padding, as E2B's docs verify), \"standard\" or \"standard-padded\" (the standard alphabet live E2B Cloud was seen sending)."
  type        = string
  default     = "url-safe"

  validation {
    condition     = contains(["url-safe", "standard", "standard-padded"], var.webhook_signature_encoding)
    error_message = "The webhook_signature_encoding must be one of url-safe, standard, standard-padded."
  }
}

variable "webhook_id" {
  description = "e2b-cloud only: the e2b-webhook-id header, a UUID as E2B's webhook ids are. Empty: a stable UUID derived from the endpoint id."
  type        = string
  default     = ""

  validation {
    condition     = var.webhook_id == "" || can(regex("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", var.webhook_id))
    error_message = "The webhook_id must be empty or a UUID such as 6f1c2d3e-4b5a-4c69-8d7e-0f1a2b3c4d5e."
  }
}

variable "webhook_events" {
  description = "Lifecycle events to deliver, as labels (kill) or E2B's types (sandbox.lifecycle.killed); update and checkpoint are opt-in, [\"*\"] delivers all."
  type        = list(string)
  default     = ["create", "kill", "pause", "resume"]

  validation {
    condition = length(var.webhook_events) > 0 && alltrue([
      for e in var.webhook_events : contains(["create", "kill", "pause", "resume", "update", "checkpoint", "*"], e) || startswith(e, "sandbox.lifecycle.")
    ])
    error_message = "The webhook_events must be a non-empty list of: create, kill, pause, resume, update, checkpoint, E2B's types such as sandbox.lifecycle.killed (or \"*\" for all)."
  }
}

variable "team_ids" {
  description = "E2B team UUIDs whose sandbox events go to webhook_url (at least one when webhook_url is set without the events API). The emitter keeps the wh:<team> Redis keys for them alive; the orchestrator only publishes events of teams that have that key. With the events API, a team's registered webhook opens its key too."
  type        = list(string)
  default     = []

  validation {
    condition = alltrue([
      for id in var.team_ids : can(regex("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", id))
    ])
    error_message = "Every entry of team_ids must be a UUID such as 3f2b1c4e-8a9d-4e6f-b1a2-c3d4e5f60718."
  }
}

# --- Redis (the orchestrator's event stream) -------------------------------

variable "redis_url" {
  description = "The Redis that E2B's orchestrator publishes to, as its REDIS_URL: a bare host:port as E2B writes it (the default, Consul's name for E2B's Redis job), or redis://host:port / rediss://host:port. Kept in the Nomad Variable, not in the jobspec. Set it to \"\" when redis_cluster_url is used."
  type        = string
  default     = "redis.service.consul:6379"
  sensitive   = true

  validation {
    condition     = var.redis_url == "" || can(regex("^(rediss?://[^\\s]+|[A-Za-z0-9.-]+:[0-9]{1,5})$", var.redis_url))
    error_message = "The redis_url must be empty, a bare host:port (as E2B's REDIS_URL), or a redis:// or rediss:// URL."
  }
}

variable "redis_cluster_url" {
  description = "A Redis Cluster node, as the orchestrator's REDIS_CLUSTER_URL (E2B's managed Redis): host:port or a URL, used instead of redis_url. Kept in the Nomad Variable."
  type        = string
  default     = ""
  sensitive   = true

  validation {
    condition     = var.redis_cluster_url == "" || can(regex("^(rediss?://[^\\s]+|[^\\s/@]+:[0-9]+)$", var.redis_cluster_url))
    error_message = "The redis_cluster_url must be empty, host:port, or a redis:// or rediss:// URL."
  }
}

variable "redis_password" {
  description = "The orchestrator's REDIS_PASSWORD, when it is not part of the URL. Sent only over TLS (needs redis_tls_enabled), as the orchestrator does. Kept in the Nomad Variable."
  type        = string
  default     = ""
  sensitive   = true
}

variable "redis_tls_enabled" {
  description = "Connect to Redis with TLS, as the orchestrator's REDIS_TLS_ENABLED (E2B's managed Redis uses TLS). Travels in the Nomad Variable with the other Redis settings."
  type        = bool
  default     = false
}

variable "redis_tls_ca_base64" {
  description = "Base64-encoded PEM CA that signed the Redis TLS certificate, as the orchestrator's REDIS_TLS_CA_BASE64. Surrounding whitespace is ignored (E2B's secret holds \" \" until a CA is set). Kept in the Nomad Variable."
  type        = string
  default     = ""
  sensitive   = true

  validation {
    condition     = trimspace(var.redis_tls_ca_base64) == "" || can(base64decode(trimspace(var.redis_tls_ca_base64)))
    error_message = "The redis_tls_ca_base64 must be empty or base64 (e.g. the output of `base64 -w0 ca.pem`)."
  }
}

variable "redis_stream" {
  description = "Redis stream the orchestrator writes lifecycle events to."
  type        = string
  default     = "sandbox.events.stream"

  validation {
    condition     = can(regex("^[^\\s\"\\\\$]+$", var.redis_stream))
    error_message = "The redis_stream must not be empty or contain spaces, quotes, backslashes or '$'."
  }
}

# --- Nomad -----------------------------------------------------------------

variable "namespace" {
  description = "Nomad namespace of the emitter job and of its Nomad Variable. It must be the orchestrators' namespace (default in E2B): a workload identity reads the service registrations of its own namespace."
  type        = string
  default     = "default"

  validation {
    condition     = can(regex("^[a-zA-Z0-9-]{1,128}$", var.namespace))
    error_message = "The namespace must be 1-128 letters, digits or dashes."
  }
}

variable "orchestrator_service" {
  description = "Nomad service that every orchestrator registers on its gRPC port (provider = \"nomad\"; \"orchestrator\" in e2b-dev/infra's orchestrator.hcl). The emitter discovers orchestrators from its registrations."
  type        = string
  default     = "orchestrator"

  validation {
    condition     = can(regex("^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$", var.orchestrator_service))
    error_message = "The orchestrator_service must be a Nomad service name: 1-63 letters, digits or dashes, not starting or ending with a dash."
  }
}

variable "task_nomad_address" {
  description = "NOMAD_ADDR given to the emitter task. The default is the Task API socket of the local Nomad client, which authenticates the task's workload identity; use an http(s):// agent address only if that socket cannot be used."
  type        = string
  default     = "unix://$${NOMAD_SECRETS_DIR}/api.sock"

  validation {
    condition     = can(regex("^(unix|https?)://[^\\s\"\\\\]+$", var.task_nomad_address))
    error_message = "The task_nomad_address must start with unix://, http:// or https:// and contain no spaces, quotes or backslashes."
  }
}

variable "job_name" {
  description = "Nomad job ID of the emitter. Also names its Nomad Variable (nomad/jobs/<job_name>) and its Nomad services (<job_name>, and <job_name>-api for the events API), so it follows Nomad's rule for service names with room for the suffix."
  type        = string
  default     = "e2b-webhook-emitter"

  validation {
    condition     = can(regex("^[a-zA-Z0-9]([a-zA-Z0-9-]{0,57}[a-zA-Z0-9])?$", var.job_name))
    error_message = "The job_name must be 1-59 letters, digits or dashes, not starting or ending with a dash: it also names the job's Nomad services (<job_name>-api among them), and Nomad refuses service names over 63 characters."
  }
}

variable "datacenters" {
  description = "Nomad datacenters the job may run in."
  type        = list(string)
  default     = ["*"]

  validation {
    condition     = length(var.datacenters) > 0 && alltrue([for dc in var.datacenters : can(regex("^[a-zA-Z0-9*._-]+$", dc))])
    error_message = "The datacenters must be a non-empty list of datacenter names (letters, digits, '.', '_', '-', '*')."
  }
}

variable "node_pool" {
  description = "Nomad node pool to run in; E2B runs its services on the api pool, whose nodes enable raw_exec."
  type        = string
  default     = "api"

  validation {
    condition     = can(regex("^[a-zA-Z0-9._-]{1,128}$", var.node_pool))
    error_message = "The node_pool must be 1-128 letters, digits, '.', '_' or '-'."
  }
}

variable "instance_count" {
  description = "Number of emitter instances, each on its own node (distinct_hosts). One holds the leader lease and delivers; the others stand by and take over within seconds when its node is lost. Capped by node_pool_size when that is given."
  type        = number
  default     = 2

  validation {
    condition     = var.instance_count >= 1 && floor(var.instance_count) == var.instance_count
    error_message = "The instance_count must be a whole number, at least 1."
  }
}

variable "node_pool_size" {
  description = "Number of nodes in node_pool (E2B: its api_cluster_size). The job runs min(instance_count, node_pool_size) instances: on a one-node pool one instance, since a second could never be placed on a distinct node and the apply would wait for it until it times out. null: instance_count as given."
  type        = number
  default     = null

  validation {
    condition     = var.node_pool_size == null ? true : var.node_pool_size >= 1 && floor(var.node_pool_size) == var.node_pool_size
    error_message = "The node_pool_size must be null or a whole number, at least 1."
  }
}

variable "task_user" {
  description = "Unix user the task runs as (the raw_exec driver starts tasks as the Nomad client's user, root on E2B's nodes, unless one is set). It must exist on the nodes; \"nobody\" does on every Linux. Nomad makes the allocation's data directory writable by any user, so DATA_DIR needs nothing else. The client must not deny this user (raw_exec's denied_host_uids)."
  type        = string
  default     = "nobody"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.task_user)) && var.task_user != "root"
    error_message = "The task_user must be a Unix user name (lowercase letters, digits, '_' or '-', at most 32 characters), and not root."
  }
}

# --- Events API and ingress ---------------------------------------------------

variable "postgres_connection_string" {
  description = "E2B's Postgres (the POSTGRES_CONNECTION_STRING E2B's API reads; on GCP the secret <prefix>postgres-connection-string). Turns on the events API: teams register their own webhooks and read their sandboxes' events and deliveries with their E2B API keys. Empty: off. Surrounding whitespace is ignored. Kept in the Nomad Variable."
  type        = string
  default     = ""
  sensitive   = true

  validation {
    condition     = trimspace(var.postgres_connection_string) == "" || can(regex("^postgres(ql)?://", trimspace(var.postgres_connection_string)))
    error_message = "The postgres_connection_string must be empty or a postgres:// or postgresql:// URL."
  }
}

variable "webhook_secrets_key" {
  description = "WEBHOOK_SECRETS_KEY: seals the signing secrets teams register through the events API in Postgres (AES-256-GCM); required with postgres_connection_string. Base64 of 32 random bytes (`openssl rand -base64 32`). To rotate: \"NEW,OLD\" (the first seals, every one opens), then `e2b-webhook-emitter webhook-secrets reseal`, then NEW alone (docs/operators-guide.md, \"Serving many teams\"). Surrounding whitespace is ignored. Stored in the Nomad Variable, never in the jobspec."
  type        = string
  default     = ""
  sensitive   = true

  validation {
    # 32 bytes are 44 base64 characters ending in one "=" (base64decode() would refuse random
    # bytes, which are rarely UTF-8).
    condition     = trimspace(var.webhook_secrets_key) == "" || alltrue([for k in split(",", var.webhook_secrets_key) : can(regex("^[A-Za-z0-9+/]{43}=$", trimspace(k)))])
    error_message = "The webhook_secrets_key must be base64 of 32 random bytes (`openssl rand -base64 32`), or several such keys separated by commas, the current one first."
  }
}

variable "webhooks_per_team" {
  description = "Webhooks a team may register through the events API (WEBHOOKS_PER_TEAM); a request for one more is refused with 400 and a message saying so. E2B publishes no limit; 10 is a common one."
  type        = number
  default     = 10

  validation {
    condition     = var.webhooks_per_team >= 1 && floor(var.webhooks_per_team) == var.webhooks_per_team
    error_message = "The webhooks_per_team must be a whole number, at least 1."
  }
}

variable "auth_provider_config" {
  description = "AUTH_PROVIDER_CONFIG: the JSON E2B's API reads to accept users' bearer tokens ({\"jwt\":[{\"issuer\":{\"url\":…,\"audiences\":[…]}}]}), so that E2B's dashboard and users' tokens (Authorization: Bearer + X-Team-ID) reach the events API besides API keys. Empty: API keys only. Needs the events API. Travels in the Nomad Variable (it is JSON, which the jobspec would have to escape)."
  type        = string
  default     = ""

  validation {
    condition     = trimspace(var.auth_provider_config) == "" || can(jsondecode(var.auth_provider_config).jwt)
    error_message = "The auth_provider_config must be empty or E2B's AUTH_PROVIDER_CONFIG JSON, an object with a \"jwt\" list (e.g. {\"jwt\":[]})."
  }
}

variable "ingress_host_rule" {
  description = "Traefik host matcher under which the events API is routed (paths /events and /portal), e.g. \"HostRegexp(`api.{domain:.+}`)\" to sit beside E2B's API on api.<domain> (E2B's own rule, Traefik v2 syntax), or \"Host(`api.example.com`)\". Empty: no Traefik tags; reach the events API at the <job_name>-api service's address."
  type        = string
  default     = ""

  validation {
    condition     = var.ingress_host_rule == "" || can(regex("^(Host|HostRegexp)\\(`[^`\"\\\\$%]+`(, *`[^`\"\\\\$%]+`)*\\)$", var.ingress_host_rule))
    error_message = "The ingress_host_rule must be empty or one Traefik Host(`…`) or HostRegexp(`…`) matcher, without quotes, backslashes, '$' or '%'."
  }
}

variable "team_delivery_concurrency" {
  description = "A team's share of delivery concurrency (TEAM_DELIVERY_CONCURRENCY): attempts in flight at once to all of one team's registered webhooks, so a team whose receiver hangs or fails holds at most this many while the other teams keep theirs."
  type        = number
  default     = 8

  validation {
    condition     = var.team_delivery_concurrency >= 1 && floor(var.team_delivery_concurrency) == var.team_delivery_concurrency
    error_message = "team_delivery_concurrency must be a whole number of at least 1."
  }
}

variable "api_trusted_proxies" {
  description = "CIDRs of the proxies in front of the events API (E2B's Traefik: the cluster's private ranges) whose X-Forwarded-For names the client: the limit on refused API keys then counts each client, not the proxy every team shares. Empty: the peer address is the client."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.api_trusted_proxies : can(cidrhost(c, 0))])
    error_message = "Every entry of api_trusted_proxies must be a CIDR such as 10.0.0.0/8."
  }
}

variable "ingress_entrypoint" {
  description = "Traefik entrypoint of the events API's router: E2B's public one is \"web\"."
  type        = string
  default     = "web"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,64}$", var.ingress_entrypoint))
    error_message = "The ingress_entrypoint must be 1-64 letters, digits, '_' or '-'."
  }
}

variable "ingress_priority" {
  description = "Priority of the events API's Traefik router. It must be above the router that owns the rest of the host: E2B's API router on api.<domain> has 500."
  type        = number
  default     = 600

  validation {
    condition     = var.ingress_priority >= 1 && floor(var.ingress_priority) == var.ingress_priority
    error_message = "The ingress_priority must be a whole number, at least 1 (above 500 to win over E2B's API router)."
  }
}

# --- Webhook endpoint trust ----------------------------------------------------

variable "webhook_ca_pem" {
  description = "PEM of a private CA that signed webhook_url's certificate, trusted besides the public roots (WEBHOOK_CA_FILE). Written to a file in the task's secrets/ directory. Empty: public roots only."
  type        = string
  default     = ""

  validation {
    condition     = trimspace(var.webhook_ca_pem) == "" || strcontains(var.webhook_ca_pem, "-----BEGIN CERTIFICATE-----")
    error_message = "The webhook_ca_pem must be empty or PEM text with at least one -----BEGIN CERTIFICATE----- block (e.g. file(\"ca.pem\"))."
  }
}

# --- Artifact ----------------------------------------------------------------

variable "artifact_url" {
  description = "URL of the release tarball printed by scripts/release.sh (any source Nomad's artifact block accepts: https://..., gcs::https://..., s3::https://...)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]+(::[a-z0-9]+)?://[^\\s\"\\\\{}$]+$", var.artifact_url))
    error_message = "The artifact_url must be a URL such as https://host/path/file.tar.gz, without spaces, quotes, backslashes, '$' or braces ('$${', '%%{' would be interpolated by the jobspec template and Nomad)."
  }
}

variable "artifact_checksum" {
  description = "Checksum of the tarball, \"sha256:<hex>\" as printed by scripts/release.sh. Nomad refuses a download that does not match. Empty skips the check (not recommended)."
  type        = string
  default     = ""

  validation {
    condition     = var.artifact_checksum == "" || can(regex("^sha256:[0-9a-f]{64}$", var.artifact_checksum))
    error_message = "The artifact_checksum must be empty or \"sha256:\" followed by 64 lowercase hex digits."
  }
}

# --- Telemetry ---------------------------------------------------------------

variable "otel_collector_endpoint" {
  description = "OTLP/gRPC collector the emitter pushes its metrics to (OTEL_EXPORTER_OTLP_ENDPOINT); E2B runs one on every node at localhost:4317, where its own services push. \"\" turns the push off; Prometheus /metrics is served either way."
  type        = string
  default     = "http://localhost:4317"

  validation {
    condition     = var.otel_collector_endpoint == "" || can(regex("^https?://[^\\s\"\\\\{}$]+$", var.otel_collector_endpoint))
    error_message = "The otel_collector_endpoint must be empty or an http:// or https:// URL such as http://localhost:4317."
  }
}

variable "logs_collector_address" {
  description = "E2B's logs collector (Vector) the emitter also POSTs its JSON log lines to (LOGS_COLLECTOR_ADDRESS), as E2B's services do: every node runs it at http://localhost:30006. \"\" turns it off; stderr (nomad alloc logs) has the lines either way."
  type        = string
  default     = "http://localhost:30006"

  validation {
    condition     = var.logs_collector_address == "" || can(regex("^https?://[^\\s\"\\\\{}$]+$", var.logs_collector_address))
    error_message = "The logs_collector_address must be empty or an http:// or https:// URL such as http://localhost:30006."
  }
}

# --- Resources and logging -------------------------------------------------

variable "cpu_mhz" {
  description = "CPU reserved for each instance, in MHz."
  type        = number
  default     = 200

  validation {
    condition     = var.cpu_mhz >= 50
    error_message = "The cpu_mhz must be at least 50."
  }
}

variable "worker_threads" {
  description = "Threads running the service's tasks (WORKER_THREADS). One is the cheapest per event at a cluster's rates; raise it, with cpu_mhz, to drain large backlogs faster."
  type        = number
  default     = 1

  validation {
    condition     = var.worker_threads >= 1 && floor(var.worker_threads) == var.worker_threads
    error_message = "The worker_threads must be a whole number, at least 1."
  }
}

variable "memory_mb" {
  description = "Memory reserved for each instance, in MB. Events wait on disk, but the outbox keeps where each undelivered one is: about 30 MiB plus half a KiB per undelivered event, so the default rides out about 450 000 (a receiver down for over an hour at 100 events/s). Raise it for longer outages."
  type        = number
  default     = 256

  validation {
    condition     = var.memory_mb >= 64
    error_message = "The memory_mb must be at least 64."
  }
}

variable "disk_mb" {
  description = "Ephemeral disk for the outbox and dead letters, in MB (used by Nomad for placement). Size it for the longest receiver outage you want to ride out."
  type        = number
  default     = 2048

  validation {
    condition     = var.disk_mb >= 300
    error_message = "The disk_mb must be at least 300."
  }
}

variable "admin_token" {
  description = "ADMIN_TOKEN: turns on the emitter's admin API (/admin/v1/) and console (/) on its port; empty leaves them off (404). Kept in the Nomad Variable."
  type        = string
  default     = ""
  sensitive   = true

  validation {
    condition     = var.admin_token == "" || length(var.admin_token) >= 16
    error_message = "admin_token must be empty (admin API off) or at least 16 characters, e.g. openssl rand -hex 32."
  }
}
