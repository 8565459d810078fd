//! The files an operator drops into E2B's own iac tree (`deploy/e2b/`), planned by the real
//! `terraform` CLI against a fixture of what they read there (`tests/fixtures/e2b-iac/`: E2B's
//! variables and data sources as e2b-dev/infra declares them), laid out as in E2B's tree:
//!
//! ```text
//! iac/modules/job-webhook-emitter/     this repository's terraform/
//! iac/provider-<cloud>/nomad/          E2B's module "nomad": the fixture + the drop-in file
//! ```
//!
//! Google's, AWS's and Nomad's objects are swapped for Terraform's built-in ones
//! (`support/terraform.rs`); each data source reads a stub this test sets per case (the
//! secrets' contents, the artifact's generation). Without `terraform` each test says so and
//! passes.

mod common;
mod support;

use hcl::Body;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Output;
use support::terraform::{stderr, stdout, terraform};

const POSTGRES: &str = "postgresql://postgres:PG-SECRET-9f1e@db.internal:5432/postgres";
const SIGNING_SECRET: &str = "SIGNING-SECRET-0123456789abcdef0123456789";
/// `WEBHOOK_SECRETS_KEY`: base64 of 32 bytes.
const SECRETS_KEY: &str = "S0VZLXNlYWxzLXRlYW1zLXNpZ25pbmctc2VjcmV0cy0=";
const SHA256: &str = "5e2bf57d3f40c4b6df69daf1936cb766f832374b4fc0259a7cbff06e2f70f269";
const TEAM: &str = "3f2b1c4e-8a9d-4e6f-b1a2-c3d4e5f60718";
/// E2B's root writes AUTH_PROVIDER_CONFIG into the api job's env with its quotes escaped for the
/// jobspec (`replace(jsonencode(…), "\"", "\\\"")` in iac/provider-gcp/main.tf).
const AUTH_ESCAPED: &str = r#"{\"jwt\":[{\"issuer\":{\"url\":\"https://auth.e2b.example.com\",\"audiences\":[\"e2b\"]}}]}"#;
const AUTH_JSON: &str =
    r#"{"jwt":[{"issuer":{"url":"https://auth.e2b.example.com","audiences":["e2b"]}}]}"#;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[derive(Clone, Copy)]
enum Cloud {
    Gcp,
    Aws,
}

impl Cloud {
    fn dir(self) -> &'static str {
        match self {
            Cloud::Gcp => "provider-gcp",
            Cloud::Aws => "provider-aws",
        }
    }

    /// The stubs of the data sources, from the case's variables.
    fn stubs(self) -> &'static str {
        match self {
            Cloud::Gcp => {
                r#"
variable "stub_config" { type = string }
variable "stub_secret" {
  type      = string
  sensitive = true
}
variable "stub_postgres" {
  type      = string
  sensitive = true
}
locals {
  stub__google_secret_manager_secret_version__webhook_emitter_config = { secret_data = sensitive(var.stub_config) }
  stub__google_secret_manager_secret_version__webhook_emitter_secret = { secret_data = var.stub_secret }
  stub__google_secret_manager_secret_version__postgres_connection_string = { secret_data = var.stub_postgres }
  stub__google_storage_bucket_object__webhook_emitter = [{ generation = "1733480000123456", metadata = { sha256 = "SHA256" } }]
}
"#
            }
            Cloud::Aws => {
                r#"
variable "stub_config" { type = string }
variable "stub_secret" {
  type      = string
  sensitive = true
}
locals {
  stub__aws_secretsmanager_secret_version__webhook_emitter_config = { secret_string = sensitive(var.stub_config) }
  stub__aws_secretsmanager_secret_version__webhook_emitter_secret = { secret_string = var.stub_secret }
  stub__aws_s3_object__webhook_emitter = [{ etag = "9b2cf535f27731c974343645a3985328", metadata = { sha256 = "SHA256" } }]
}
"#
            }
        }
    }

    /// E2B's values for the variables the fixture declares; `api_nodes` is the api pool's size.
    fn inputs(self, api_nodes: u32) -> Value {
        let orchestrator = json!({
            "REDIS_URL": "redis.service.consul:6379",
            "REDIS_CLUSTER_URL": "",
            "REDIS_TLS_CA_BASE64": "",
            "REDIS_TLS_ENABLED": "false",
            "ENVIRONMENT": "prod",
        });
        match self {
            Cloud::Gcp => json!({
                "api_env_vars": { "AUTH_PROVIDER_CONFIG": AUTH_ESCAPED, "ENVIRONMENT": "prod" },
                "prefix": "e2b-",
                "nomad_acl_token_secret": "NOMAD-TOKEN-SECRET-4d2a",
                "domain_name": "e2b.example.com",
                "api_machine_count": api_nodes,
                "api_node_pool": "api",
                "fc_env_pipeline_bucket_name": "acme-prod-fc-env-pipeline",
                "postgres_connection_string_secret_name": "e2b-postgres-connection-string",
                "orchestrator_env_vars": orchestrator,
                "stub_postgres": POSTGRES,
            }),
            Cloud::Aws => json!({
                "aws_region": "us-east-1",
                "api_node_pool": "api",
                "api_cluster_size": api_nodes,
                "fc_env_pipeline_bucket_name": "e2b-123456789012-fc-env-pipeline",
                "api_env_vars": {
                    "POSTGRES_CONNECTION_STRING": POSTGRES,
                    "AUTH_PROVIDER_CONFIG": AUTH_ESCAPED,
                    "ENVIRONMENT": "prod",
                },
                "orchestrator_env_vars": orchestrator,
            }),
        }
    }
}

/// E2B's tree, reduced to what the drop-in touches, with the drop-in in place.
struct Tree {
    dir: tempfile::TempDir,
    terraform: PathBuf,
    cloud: Cloud,
}

impl Tree {
    fn new(terraform: PathBuf, cloud: Cloud) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let iac = dir.path().join("iac");
        support::terraform::copy_swapped(
            &repo().join("terraform"),
            &iac.join("modules/job-webhook-emitter"),
        );
        // E2B's module "nomad": the fixture and the drop-in, swapped together so that the
        // drop-in's references to E2B's data sources read their stubs too.
        let staged = dir.path().join("staged");
        std::fs::create_dir_all(&staged).unwrap();
        for source in [
            repo().join(format!(
                "tests/fixtures/e2b-iac/{}/nomad/e2b.tf",
                cloud.dir()
            )),
            repo().join(format!(
                "deploy/e2b/{}/nomad/webhook-emitter.tf",
                cloud.dir()
            )),
        ] {
            std::fs::copy(&source, staged.join(source.file_name().unwrap())).unwrap();
        }
        let nomad = iac.join(cloud.dir()).join("nomad");
        support::terraform::copy_swapped(&staged, &nomad);
        std::fs::write(
            nomad.join("stubs.tf"),
            cloud.stubs().replace("SHA256", SHA256),
        )
        .unwrap();
        std::fs::write(dir.path().join("cli.tfrc"), "").unwrap();
        let tree = Self {
            dir,
            terraform,
            cloud,
        };
        let init = tree.run(&["init", "-input=false", "-backend=false"]);
        assert!(init.status.success(), "terraform init: {}", stderr(&init));
        let validate = tree.run(&["validate", "-no-color"]);
        assert!(
            validate.status.success(),
            "terraform validate: {}{}",
            stdout(&validate),
            stderr(&validate)
        );
        tree
    }

    fn nomad(&self) -> PathBuf {
        self.dir
            .path()
            .join("iac")
            .join(self.cloud.dir())
            .join("nomad")
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut command = support::terraform::command(
            &self.terraform,
            &self.nomad(),
            &self.dir.path().join("cli.tfrc"),
        );
        command.args(args);
        support::terraform::run_with_input(command, None)
    }

    /// `terraform plan` of E2B's module "nomad" with this environment's secrets, as JSON
    /// (`terraform show -json`), or the failed plan.
    fn plan(&self, api_nodes: u32, config: &str, secret: &str) -> Result<Value, Output> {
        let mut vars = self.cloud.inputs(api_nodes);
        vars["stub_config"] = config.into();
        vars["stub_secret"] = secret.into();
        self.plan_vars(&vars).map(|(plan, _)| plan)
    }

    /// `terraform plan` with `vars`: the plan as JSON and what `plan` printed, or the failed plan.
    fn plan_vars(&self, vars: &Value) -> Result<(Value, String), Output> {
        let file = self.dir.path().join("case.tfvars.json");
        std::fs::write(&file, vars.to_string()).unwrap();
        let plan_file = self.dir.path().join("case.tfplan");
        let plan = self.run(&[
            "plan",
            "-input=false",
            "-no-color",
            "-lock=false",
            &format!("-var-file={}", file.display()),
            &format!("-out={}", plan_file.display()),
        ]);
        if !plan.status.success() {
            return Err(plan);
        }
        let shown = self.run(&["show", "-json", plan_file.to_str().unwrap()]);
        assert!(shown.status.success(), "{}", stderr(&shown));
        Ok((
            serde_json::from_slice(&shown.stdout).unwrap(),
            stdout(&plan),
        ))
    }

    fn plan_fails(&self, config: &str, secret: &str, message: &str) {
        match self.plan(1, config, secret) {
            Ok(_) => panic!("the plan should fail with {message:?}"),
            Err(plan) => {
                let err = stderr(&plan);
                assert!(
                    support::terraform::flat(&err).contains(message),
                    "expected {message:?} in:\n{err}"
                );
            }
        }
    }
}

/// Addresses of what the plan creates.
fn created(plan: &Value) -> Vec<String> {
    plan["resource_changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["change"]["actions"] == json!(["create"]))
        .map(|c| c["address"].as_str().unwrap().to_owned())
        .collect()
}

/// The planned `input` of the swapped resource at `address`.
fn planned_input<'a>(plan: &'a Value, address: &str) -> &'a Value {
    let change = plan["resource_changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == address)
        .unwrap_or_else(|| panic!("{address} is not in the plan: {:?}", created(plan)));
    &change["change"]["after"]["input"]
}

const JOB: &str = "module.webhook_emitter[0].terraform_data.nomad_job__emitter";
const VARIABLE: &str = "module.webhook_emitter[0].terraform_data.nomad_variable__secrets";

fn attr(body: &Body, key: &str) -> String {
    support::terraform::attr(body, key).unwrap_or_default()
}

#[test]
fn dropped_into_a_new_environment_it_creates_its_secrets_and_deploys_nothing() {
    let Some(terraform) = terraform() else { return };
    for cloud in [Cloud::Gcp, Cloud::Aws] {
        let tree = Tree::new(terraform.clone(), cloud);
        // E2B's placeholder in both secrets, as in a fresh environment.
        let plan = tree
            .plan(1, " ", " ")
            .unwrap_or_else(|p| panic!("{}", stderr(&p)));
        let created = created(&plan);
        assert!(
            !created
                .iter()
                .any(|a| a.starts_with("module.webhook_emitter")),
            "{created:?}"
        );
        assert_eq!(
            created.len(),
            4,
            "two secrets and their placeholder versions: {created:?}"
        );
        // Turned off explicitly: the same.
        let plan = tree
            .plan(
                1,
                r#"{"enabled": false, "webhook_url": "https://x.example.com"}"#,
                " ",
            )
            .unwrap_or_else(|p| panic!("{}", stderr(&p)));
        assert!(!created_has_job(&plan), "enabled = false deploys nothing");
    }
}

fn created_has_job(plan: &Value) -> bool {
    created(plan).iter().any(|a| a == JOB)
}

#[test]
fn on_gcp_the_events_api_deploys_from_e2bs_own_values_on_a_one_node_pool() {
    let Some(terraform) = terraform() else { return };
    let tree = Tree::new(terraform, Cloud::Gcp);
    // The secret JSON holds the key that seals teams' signing secrets (and no signing secret).
    let secret = json!({ "webhook_secrets_key": format!(" {SECRETS_KEY}\n") }).to_string();
    let plan = tree
        .plan(1, "{}", &secret)
        .unwrap_or_else(|p| panic!("{}\n{}", stdout(&p), stderr(&p)));
    let job = planned_input(&plan, JOB);
    let jobspec = job["jobspec"].as_str().unwrap();
    let parsed = support::terraform::job_block(jobspec);
    assert_eq!(attr(parsed.body(), "node_pool"), "api");
    let group = support::terraform::block(parsed.body(), "group");
    assert_eq!(
        attr(group.body(), "count"),
        "1",
        "one api node: one instance"
    );
    let task = support::terraform::block(group.body(), "task");
    assert_eq!(attr(task.body(), "user"), "nobody");
    // The artifact from E2B's bucket, by generation, with the checksum uploaded beside it.
    let artifact = support::terraform::block(task.body(), "artifact");
    assert_eq!(
        attr(artifact.body(), "source"),
        "gcs::https://www.googleapis.com/storage/v1/acme-prod-fc-env-pipeline/e2b-webhook-emitter.tar.gz?version=1733480000123456"
    );
    let options = support::terraform::block(artifact.body(), "options");
    assert_eq!(attr(options.body(), "checksum"), format!("sha256:{SHA256}"));
    // Behind E2B's Traefik, beside E2B's API.
    let api = support::terraform::blocks(group.body(), "service")
        .find(|s| attr(s.body(), "name") == "e2b-webhook-emitter-api")
        .expect("the events API's service");
    let tags = attr(api.body(), "tags");
    assert!(
        tags.contains(
            "rule=HostRegexp(`api.{domain:.+}`) && (PathPrefix(`/events`) || PathPrefix(`/portal`))"
        ),
        "{tags}"
    );
    assert!(tags.contains("priority=600"), "{tags}");
    // Traefik's X-Forwarded-For is believed from the nodes' private ranges.
    let env = support::terraform::block(task.body(), "env");
    assert_eq!(
        attr(env.body(), "API_TRUSTED_PROXIES"),
        "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"
    );
    assert_eq!(attr(env.body(), "WEBHOOKS_PER_TEAM"), "10");
    // Registered webhooks only: no operator endpoint.
    assert!(!jobspec.contains("WEBHOOK_URL"));
    // The secrets reach the Nomad Variable, from E2B's Postgres secret and the orchestrator's
    // Redis settings; none reaches the jobspec.
    let items = &planned_input(&plan, VARIABLE)["items"];
    assert_eq!(items["postgres_connection_string"], POSTGRES);
    assert_eq!(items["redis_url"], "redis.service.consul:6379");
    assert_eq!(items["redis_tls_enabled"], "false");
    assert_eq!(
        items["auth_provider_config"], AUTH_JSON,
        "E2B's own, unescaped"
    );
    assert!(jobspec.contains("AUTH_PROVIDER_CONFIG={{"));
    assert!(items.get("redis_cluster_url").is_none(), "{items}");
    assert!(items.get("webhook_secret").is_none(), "{items}");
    assert_eq!(items["webhook_secrets_key"], SECRETS_KEY, "trimmed");
    assert!(jobspec.contains("WEBHOOK_SECRETS_KEY={{"));
    assert!(!jobspec.contains("PG-SECRET") && !jobspec.contains("NOMAD-TOKEN"));
    assert!(!jobspec.contains(SECRETS_KEY));
    // Nothing else of E2B's is touched: the module's two objects and the drop-in's own.
    let created = created(&plan);
    assert!(
        created
            .iter()
            .all(|a| a.starts_with("module.webhook_emitter[0].")
                || a.contains("webhook_emitter_config")
                || a.contains("webhook_emitter_secret")),
        "{created:?}"
    );
}

#[test]
fn on_gcp_the_operators_endpoint_and_managed_redis_follow_e2bs_secrets() {
    let Some(terraform) = terraform() else { return };
    let tree = Tree::new(terraform, Cloud::Gcp);
    let ca = "-----BEGIN CERTIFICATE-----\nMIIBpriv\n-----END CERTIFICATE-----\n";
    let config = json!({
        "events_api": false,
        "webhook_url": "https://hooks.example.com/e2b",
        "team_ids": [TEAM],
        "webhook_events": ["kill"],
        "webhook_ca_pem": ca,
    })
    .to_string();
    // Memorystore for Valkey as E2B wires it: cluster URL, TLS, the CA (E2B trims it).
    let mut vars = Cloud::Gcp.inputs(3);
    vars["orchestrator_env_vars"] = json!({
        "REDIS_URL": "",
        "REDIS_CLUSTER_URL": "10.20.0.5:6379",
        "REDIS_TLS_ENABLED": "true",
        "REDIS_TLS_CA_BASE64": "U0FNUExFLUNB",
    });
    vars["stub_config"] = config.into();
    vars["stub_secret"] = format!("{SIGNING_SECRET}\n").into();
    let (plan, text) = tree
        .plan_vars(&vars)
        .unwrap_or_else(|p| panic!("{}", stderr(&p)));
    assert!(!text.contains(SIGNING_SECRET) && !text.contains("U0FNUExFLUNB"));

    let jobspec = planned_input(&plan, JOB)["jobspec"]
        .as_str()
        .unwrap()
        .to_owned();
    let parsed = support::terraform::job_block(&jobspec);
    let group = support::terraform::block(parsed.body(), "group");
    assert_eq!(
        attr(group.body(), "count"),
        "2",
        "three api nodes: two instances"
    );
    assert_eq!(
        support::terraform::blocks(group.body(), "service").count(),
        1,
        "no events API"
    );
    let env = support::terraform::block(
        support::terraform::block(group.body(), "task").body(),
        "env",
    );
    assert_eq!(
        attr(env.body(), "WEBHOOK_URL"),
        "https://hooks.example.com/e2b"
    );
    assert_eq!(attr(env.body(), "E2B_TEAM_IDS"), TEAM);
    assert_eq!(attr(env.body(), "WEBHOOK_EVENTS"), "kill");
    assert_eq!(
        attr(env.body(), "WEBHOOK_CA_FILE"),
        "${NOMAD_SECRETS_DIR}/webhook-ca.pem"
    );
    let items = &planned_input(&plan, VARIABLE)["items"];
    assert_eq!(items["webhook_secret"], SIGNING_SECRET, "trimmed");
    assert_eq!(items["redis_cluster_url"], "10.20.0.5:6379");
    assert_eq!(items["redis_tls_enabled"], "true");
    assert_eq!(items["redis_tls_ca_base64"], "U0FNUExFLUNB");
    assert_eq!(items["webhook_ca_pem"], ca.trim());
    assert!(items.get("redis_url").is_none() && items.get("postgres_connection_string").is_none());
    assert!(items.get("webhook_secrets_key").is_none(), "{items}");

    // Both: the secret as JSON (the signing secret and the sealing key), a limit per team.
    let both = json!({
        "webhook_url": "https://hooks.example.com/e2b", "team_ids": [TEAM], "webhooks_per_team": 3,
        "team_delivery_concurrency": 5,
    });
    vars["stub_config"] = both.to_string().into();
    vars["stub_secret"] =
        json!({ "webhook_secret": SIGNING_SECRET, "webhook_secrets_key": SECRETS_KEY })
            .to_string()
            .into();
    let (plan, text) = tree
        .plan_vars(&vars)
        .unwrap_or_else(|p| panic!("{}", stderr(&p)));
    assert!(
        !text.contains(SIGNING_SECRET) && !text.contains(SECRETS_KEY),
        "{text}"
    );
    let items = &planned_input(&plan, VARIABLE)["items"];
    assert_eq!(items["webhook_secret"], SIGNING_SECRET);
    assert_eq!(items["webhook_secrets_key"], SECRETS_KEY);
    let jobspec = planned_input(&plan, JOB)["jobspec"].as_str().unwrap();
    let job = support::terraform::job_block(jobspec);
    let group = support::terraform::block(job.body(), "group");
    let env = support::terraform::block(
        support::terraform::block(group.body(), "task").body(),
        "env",
    );
    assert_eq!(attr(env.body(), "WEBHOOKS_PER_TEAM"), "3");
    assert_eq!(attr(env.body(), "TEAM_DELIVERY_CONCURRENCY"), "5");
    assert!(!jobspec.contains(SECRETS_KEY) && !jobspec.contains(SIGNING_SECRET));
}

#[test]
fn on_gcp_a_config_it_cannot_follow_fails_the_plan_naming_the_secret() {
    let Some(terraform) = terraform() else { return };
    let tree = Tree::new(terraform, Cloud::Gcp);
    tree.plan_fails(
        "events_api: true",
        " ",
        "The secret e2b-webhook-emitter-config must hold a JSON object (an empty one",
    );
    tree.plan_fails(
        r#"{"webhok_url": "https://hooks.example.com/e2b"}"#,
        " ",
        "has keys this file does not read: webhok_url",
    );
    // The endpoint without its signing secret (still E2B's placeholder).
    tree.plan_fails(
        r#"{"webhook_url": "https://hooks.example.com/e2b", "team_ids": ["3f2b1c4e-8a9d-4e6f-b1a2-c3d4e5f60718"]}"#,
        " ",
        "webhook_url is set but webhook_secret is empty",
    );
    tree.plan_fails(r#"{"events_api": false}"#, " ", "Nothing to deliver to");
    // The events API without the key that seals teams' signing secrets: the plan says how to
    // make one; a malformed key is refused without being shown.
    tree.plan_fails(
        "{}",
        " ",
        "seals the signing secrets teams register with webhook_secrets_key, which is empty: generate one with `openssl rand -base64 32`",
    );
    tree.plan_fails(
        "{}",
        r#"{"webhook_secrets_key": "c2hvcnQta2V5"}"#,
        "The webhook_secrets_key must be base64 of 32 random bytes",
    );
    tree.plan_fails(
        r#"{"webhook_url": "ftp://hooks.example.com"}"#,
        SIGNING_SECRET,
        "The webhook_url must be empty or an http:// or https:// URL",
    );
}

#[test]
fn on_aws_it_deploys_from_e2bs_bucket_and_the_apis_postgres() {
    let Some(terraform) = terraform() else { return };
    let tree = Tree::new(terraform, Cloud::Aws);
    let secret = json!({ "webhook_secrets_key": SECRETS_KEY }).to_string();
    let plan = tree
        .plan(2, "{}", &secret)
        .unwrap_or_else(|p| panic!("{}\n{}", stdout(&p), stderr(&p)));
    let jobspec = planned_input(&plan, JOB)["jobspec"]
        .as_str()
        .unwrap()
        .to_owned();
    let parsed = support::terraform::job_block(&jobspec);
    let group = support::terraform::block(parsed.body(), "group");
    assert_eq!(attr(group.body(), "count"), "2");
    let artifact = support::terraform::block(
        support::terraform::block(group.body(), "task").body(),
        "artifact",
    );
    assert_eq!(
        attr(artifact.body(), "source"),
        "s3::https://e2b-123456789012-fc-env-pipeline.s3.us-east-1.amazonaws.com/e2b-webhook-emitter.tar.gz?etag=9b2cf535f27731c974343645a3985328"
    );
    let items = &planned_input(&plan, VARIABLE)["items"];
    assert_eq!(items["postgres_connection_string"], POSTGRES);
    assert_eq!(items["auth_provider_config"], AUTH_JSON);
    assert_eq!(items["webhook_secrets_key"], SECRETS_KEY);
    // The secrets are named after the bucket's prefix, as E2B's AWS buckets are.
    let created = created(&plan);
    let names: Vec<String> = created
        .iter()
        .filter(|a| a.starts_with("terraform_data.aws_secretsmanager_secret__"))
        .map(|a| planned_input(&plan, a)["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "e2b-123456789012-webhook-emitter-config",
            "e2b-123456789012-webhook-emitter-secret"
        ]
    );
}
