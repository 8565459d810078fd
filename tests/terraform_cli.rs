//! The Terraform module and the job template, checked by the real `terraform` CLI when one is on
//! `PATH` (its registry is unreachable here, so no provider can be downloaded):
//!
//! - `terraform fmt -check`;
//! - the job rendered by Terraform's own `templatefile()` (`terraform console`), then parsed;
//! - `terraform plan` of the root module with its `nomad_*` resources swapped for the built-in
//!   `terraform_data`, so that variables, validations and preconditions run for real.
//!
//! Without `terraform` each test says so and passes; `tests/deploy_files.rs` checks the same
//! files with hcl-rs either way.

mod common;
mod support;

use hcl::Body;
use std::path::PathBuf;
use std::process::Output;
use support::terraform::{stderr, stdout, terraform};

const TEAM: &str = "3f2b1c4e-8a9d-4e6f-b1a2-c3d4e5f60718";
const SECRET: &str = "0123456789abcdef0123456789abcdef-terraform-secret";
/// `webhook_secrets_key`: base64 of 32 bytes, as `openssl rand -base64 32` prints one.
const SECRETS_KEY: &str = "dGVycmFmb3JtLXNlY3JldHMta2V5LTMyLWJ5dGVzLTA=";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch copy of the module with the Nomad provider's resources replaced by `terraform_data`
/// (`support/terraform.rs`), so no provider has to be downloaded.
struct Scratch {
    dir: tempfile::TempDir,
    terraform: PathBuf,
}

impl Scratch {
    fn new(terraform: PathBuf) -> Self {
        let dir = tempfile::tempdir().unwrap();
        support::terraform::copy_swapped(&repo().join("terraform"), &dir.path().join("terraform"));
        std::fs::write(dir.path().join("cli.tfrc"), "").unwrap();
        let scratch = Self { dir, terraform };
        let init = scratch.run(&["init", "-input=false", "-backend=false"], None);
        assert!(
            init.status.success(),
            "terraform init (no provider to download) failed: {}",
            stderr(&init)
        );
        scratch
    }

    fn module(&self) -> PathBuf {
        self.dir.path().join("terraform")
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = support::terraform::command(
            &self.terraform,
            &self.module(),
            &self.dir.path().join("cli.tfrc"),
        );
        command.args(args).env("TF_VAR_webhook_secret", SECRET);
        support::terraform::run_with_input(command, stdin)
    }

    /// Writes the variables as a `.tfvars.json` file and returns its path.
    fn vars(&self, name: &str, vars: serde_json::Value) -> String {
        let path = self.dir.path().join(format!("{name}.tfvars.json"));
        std::fs::write(&path, vars.to_string()).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// The jobspec Terraform's own `templatefile()` renders for `vars`.
    fn render(&self, vars: serde_json::Value) -> String {
        let file = self.vars("console", vars);
        let output = self.run(
            &["console", &format!("-var-file={file}")],
            Some("local.rendered_jobspec\n"),
        );
        assert!(
            output.status.success(),
            "terraform console: {}",
            stderr(&output)
        );
        support::terraform::console_string(&stdout(&output))
    }

    fn plan(&self, vars: serde_json::Value) -> Output {
        let file = self.vars("plan", vars);
        self.run(
            &[
                "plan",
                "-input=false",
                "-no-color",
                "-lock=false",
                &format!("-var-file={file}"),
            ],
            None,
        )
    }
}

/// Only what the module cannot know.
fn required_inputs() -> serde_json::Value {
    serde_json::json!({
        "webhook_url": "https://app.example.com/api/webhooks/e2b",
        "team_ids": [TEAM],
        "artifact_url": "https://artifacts.example.com/e2b-webhook-emitter/e2b-webhook-emitter-0.1.0-x86_64-unknown-linux-gnu.tar.gz"
    })
}

#[test]
fn terraform_fmt_finds_nothing_to_change() {
    let Some(terraform) = terraform() else { return };
    // The module, and the files an operator drops into E2B's tree.
    for dir in ["terraform", "deploy"] {
        let output = std::process::Command::new(&terraform)
            .args(["fmt", "-check", "-recursive", "-diff"])
            .current_dir(repo().join(dir))
            .env("CHECKPOINT_DISABLE", "1")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "terraform fmt -check in {dir}: {}{}",
            stdout(&output),
            stderr(&output)
        );
    }
}

#[test]
fn the_job_rendered_by_terraforms_templatefile_is_a_valid_jobspec_without_secrets() {
    let Some(terraform) = terraform() else { return };
    let scratch = Scratch::new(terraform);
    let mut vars = required_inputs();
    vars["redis_password"] = "redis-pass-SECRET".into();
    vars["redis_tls_enabled"] = true.into();
    vars["artifact_checksum"] = format!("sha256:{}", "ab".repeat(32)).into();
    let jobspec = scratch.render(vars);
    let job = support::terraform::job_block(&jobspec);
    assert_eq!(job.labels[0].as_str(), "e2b-webhook-emitter");
    let attr = |body: &Body, key: &str| support::terraform::attr(body, key).unwrap_or_default();
    assert_eq!(attr(job.body(), "node_pool"), "api");
    let group = support::terraform::block(job.body(), "group");
    let task = support::terraform::block(group.body(), "task");
    let env = support::terraform::block(task.body(), "env");
    assert_eq!(attr(env.body(), "NOMAD_NAMESPACE"), "default");
    assert_eq!(attr(env.body(), "ORCHESTRATOR_SERVICE"), "orchestrator");
    assert_eq!(attr(env.body(), "E2B_TEAM_IDS"), TEAM);
    assert_eq!(
        attr(env.body(), "OTEL_EXPORTER_OTLP_ENDPOINT"),
        "http://localhost:4317",
        "metrics go to E2B's node collector"
    );
    assert_eq!(
        attr(env.body(), "LOGS_COLLECTOR_ADDRESS"),
        "http://localhost:30006",
        "log lines go to E2B's node logs collector"
    );
    // Every env key is a setting the binary reads.
    let help = common::output(common::emitter().args(["run", "--help"])).1;
    for a in env.body().attributes() {
        assert!(
            help.contains(&format!("[env: {}", a.key())),
            "{} unknown to the binary",
            a.key()
        );
    }
    let artifact = support::terraform::block(task.body(), "artifact");
    support::terraform::block(artifact.body(), "options");
    // Not root; two instances on distinct nodes when nothing says the pool is smaller; no
    // events API, so no port or service for it.
    assert_eq!(attr(task.body(), "user"), "nobody");
    assert_eq!(attr(group.body(), "count"), "2");
    assert_eq!(
        support::terraform::blocks(group.body(), "service").count(),
        1
    );
    assert!(!jobspec.contains("API_LISTEN_ADDR") && !jobspec.contains("WEBHOOK_CA_FILE"));
    // Secrets stay in the Nomad Variable; the template reads each of them.
    assert!(!jobspec.contains(SECRET) && !jobspec.contains("redis-pass-SECRET"));
    for key in [
        "REDIS_PASSWORD",
        "REDIS_TLS_CA_BASE64",
        "REDIS_TLS_ENABLED",
        "WEBHOOK_SECRET",
    ] {
        assert!(
            jobspec.contains(&format!("{key}={{{{")),
            "{key} not templated:\n{jobspec}"
        );
    }
    assert!(jobspec.contains(r#"nomadVar "nomad/jobs/e2b-webhook-emitter""#));
    // Runtime interpolation reaches Nomad as a single dollar.
    assert!(jobspec.contains("${NOMAD_ALLOC_DIR}/data/emitter"));
}

#[test]
fn the_events_api_behind_e2bs_ingress_on_a_one_node_pool_renders_as_e2b_needs() {
    let Some(terraform) = terraform() else { return };
    let scratch = Scratch::new(terraform);
    let mut vars = required_inputs();
    vars["postgres_connection_string"] = "postgresql://e2b:PG-SECRET@db:5432/e2b ".into();
    vars["webhook_secrets_key"] = SECRETS_KEY.into();
    vars["webhooks_per_team"] = 25.into();
    vars["ingress_host_rule"] = "HostRegexp(`api.{domain:.+}`)".into();
    vars["node_pool_size"] = 1.into();
    vars["api_trusted_proxies"] = serde_json::json!(["10.0.0.0/8", "192.168.0.0/16"]);
    vars["webhook_ca_pem"] =
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into();
    let jobspec = scratch.render(vars.clone());
    let job = support::terraform::job_block(&jobspec);
    let attr = |body: &Body, key: &str| support::terraform::attr(body, key).unwrap_or_default();
    let group = support::terraform::block(job.body(), "group");
    // One node: one instance, so the deployment Terraform waits for can finish.
    assert_eq!(attr(group.body(), "count"), "1");
    assert!(
        support::terraform::blocks(group.body(), "constraint")
            .any(|c| attr(c.body(), "operator") == "distinct_hosts"),
        "distinct_hosts is kept for pools that grow"
    );
    // The events API on its own port, registered for E2B's Traefik above E2B's API router.
    let network = support::terraform::block(group.body(), "network");
    assert!(
        support::terraform::blocks(network.body(), "port").any(|p| p.labels[0].as_str() == "api")
    );
    let api = support::terraform::blocks(group.body(), "service")
        .find(|s| attr(s.body(), "name") == "e2b-webhook-emitter-api")
        .expect("the events API's service");
    assert_eq!(attr(api.body(), "provider"), "nomad");
    assert_eq!(attr(api.body(), "port"), "api");
    let tags = attr(api.body(), "tags");
    for tag in [
        "traefik.enable=true",
        "traefik.http.routers.e2b-webhook-emitter-api.entrypoints=web",
        "traefik.http.routers.e2b-webhook-emitter-api.rule=HostRegexp(`api.{domain:.+}`) && (PathPrefix(`/events`) || PathPrefix(`/portal`))",
        "traefik.http.routers.e2b-webhook-emitter-api.ruleSyntax=v2",
        "traefik.http.routers.e2b-webhook-emitter-api.priority=600",
    ] {
        assert!(tags.contains(tag), "{tag} missing from {tags}");
    }
    let check = support::terraform::block(api.body(), "check");
    assert_eq!(attr(check.body(), "path"), "/health");
    let task = support::terraform::block(group.body(), "task");
    assert_eq!(attr(task.body(), "user"), "nobody");
    let env = support::terraform::block(task.body(), "env");
    assert_eq!(attr(env.body(), "API_LISTEN_ADDR"), "${NOMAD_ADDR_api}");
    assert_eq!(
        attr(env.body(), "API_TRUSTED_PROXIES"),
        "10.0.0.0/8,192.168.0.0/16"
    );
    assert_eq!(
        attr(env.body(), "WEBHOOK_CA_FILE"),
        "${NOMAD_SECRETS_DIR}/webhook-ca.pem"
    );
    // The CA file is written by a template from the Nomad Variable, as the secrets are.
    let ca_template = support::terraform::blocks(task.body(), "template")
        .find(|t| attr(t.body(), "destination") == "secrets/webhook-ca.pem")
        .expect("a template writing the CA");
    assert!(attr(ca_template.body(), "data").contains(".webhook_ca_pem.Value"));
    assert!(jobspec.contains("POSTGRES_CONNECTION_STRING={{"));
    assert!(jobspec.contains("WEBHOOK_SECRETS_KEY={{ . | toJSON }}"));
    assert_eq!(attr(env.body(), "WEBHOOKS_PER_TEAM"), "25");
    assert!(!jobspec.contains("PG-SECRET") && !jobspec.contains("MIIB"));
    assert!(!jobspec.contains(SECRETS_KEY));
    // Every env key is a setting the binary reads.
    let help = common::output(common::emitter().args(["run", "--help"])).1;
    for a in env.body().attributes() {
        assert!(help.contains(&format!("[env: {}", a.key())), "{}", a.key());
    }

    // Without the operator's endpoint, only registered webhooks: no WEBHOOK_* in the job.
    let mut registered_only = vars;
    registered_only["webhook_url"] = "".into();
    registered_only["webhook_ca_pem"] = "".into();
    registered_only["team_ids"] = serde_json::json!([]);
    registered_only["node_pool_size"] = 3.into();
    let jobspec = scratch.render(registered_only);
    assert!(!jobspec.contains("WEBHOOK_URL") && !jobspec.contains("WEBHOOK_FORMAT"));
    let job = support::terraform::job_block(&jobspec);
    assert_eq!(
        attr(
            support::terraform::block(job.body(), "group").body(),
            "count"
        ),
        "2"
    );
}

#[test]
fn terraform_plan_with_only_the_required_inputs_succeeds_without_an_acl_policy() {
    let Some(terraform) = terraform() else { return };
    let scratch = Scratch::new(terraform);
    let plan = scratch.plan(required_inputs());
    let text = stdout(&plan);
    assert!(plan.status.success(), "{}\n{}", text, stderr(&plan));
    assert!(
        text.contains("terraform_data.nomad_variable__secrets will be created"),
        "{text}"
    );
    assert!(
        text.contains("terraform_data.nomad_job__emitter will be created"),
        "{text}"
    );
    assert!(
        text.contains("Plan: 2 to add"),
        "no ACL policy or anything else: {text}"
    );
    assert!(!text.contains(SECRET), "the secret is shown in the plan");
    // The module's sources mention no ACL policy at all.
    for dir in ["terraform", "terraform/jobs"] {
        for entry in std::fs::read_dir(repo().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let content = std::fs::read_to_string(&path).unwrap();
                assert!(!content.contains("nomad_acl_policy"), "{}", path.display());
            }
        }
    }
}

fn assert_plan_fails(scratch: &Scratch, vars: serde_json::Value, message: &str) {
    let plan = scratch.plan(vars);
    let err = stderr(&plan);
    assert!(
        !plan.status.success(),
        "the plan should fail with {message:?}"
    );
    assert!(
        support::terraform::flat(&err).contains(message),
        "expected {message:?} in:\n{err}"
    );
}

#[test]
fn terraform_plan_refuses_bad_inputs_with_a_clear_message() {
    let Some(terraform) = terraform() else { return };
    let scratch = Scratch::new(terraform);
    let with = |key: &str, value: serde_json::Value| {
        let mut vars = required_inputs();
        vars[key] = value;
        vars
    };
    assert_plan_fails(
        &scratch,
        with("team_ids", serde_json::json!([])),
        "The team_ids must name at least one E2B team UUID",
    );
    assert_plan_fails(
        &scratch,
        with("job_name", "-emitter".into()),
        "The job_name must be 1-59 letters, digits or dashes",
    );
    assert_plan_fails(
        &scratch,
        with("job_name", "e".repeat(60).into()),
        "The job_name must be 1-59 letters, digits or dashes",
    );
    assert_plan_fails(
        &scratch,
        with(
            "artifact_url",
            "https://artifacts.example.com/%{if true}x%{endif}.tar.gz".into(),
        ),
        "The artifact_url must be a URL",
    );
    assert_plan_fails(
        &scratch,
        with("redis_url", "rediss://redis.example.com:6380".into()),
        "set redis_tls_enabled = true",
    );
    assert_plan_fails(
        &scratch,
        with("redis_password", "a-password".into()),
        "redis_password is set but redis_tls_enabled is not",
    );
    assert_plan_fails(
        &scratch,
        with("orchestrator_service", "orchestrator-".into()),
        "The orchestrator_service must be a Nomad service name",
    );
    let mut missing = required_inputs();
    missing.as_object_mut().unwrap().remove("team_ids");
    assert_plan_fails(
        &scratch,
        missing,
        "The team_ids must name at least one E2B team UUID",
    );
    assert_plan_fails(
        &scratch,
        with("webhook_url", "".into()),
        "Nothing to deliver to: set webhook_url",
    );
    assert_plan_fails(
        &scratch,
        with("ingress_host_rule", "Host(`api.example.com`)".into()),
        "ingress_host_rule routes the events API, which is off",
    );
    assert_plan_fails(
        &scratch,
        with(
            "ingress_host_rule",
            "Host(`api.example.com`) || Path(`/`)".into(),
        ),
        "The ingress_host_rule must be empty or one Traefik Host",
    );
    assert_plan_fails(
        &scratch,
        with("ingress_entrypoint", "web secure".into()),
        "The ingress_entrypoint must be 1-64 letters",
    );
    assert_plan_fails(
        &scratch,
        with("ingress_priority", 0.5.into()),
        "The ingress_priority must be a whole number, at least 1",
    );
    assert_plan_fails(
        &scratch,
        with("auth_provider_config", "{\"jwt\":[]}".into()),
        "auth_provider_config accepts users' tokens on the events API, which is off",
    );
    assert_plan_fails(
        &scratch,
        with("auth_provider_config", "jwt".into()),
        "The auth_provider_config must be empty or E2B's AUTH_PROVIDER_CONFIG JSON",
    );
    assert_plan_fails(
        &scratch,
        with("api_trusted_proxies", serde_json::json!(["traefik"])),
        "Every entry of api_trusted_proxies must be a CIDR",
    );
    assert_plan_fails(
        &scratch,
        with("api_trusted_proxies", serde_json::json!(["10.0.0.0/8"])),
        "api_trusted_proxies is for the events API, which is off",
    );
    assert_plan_fails(
        &scratch,
        with("task_user", "root".into()),
        "The task_user must be a Unix user name",
    );
    assert_plan_fails(
        &scratch,
        with("node_pool_size", 0.into()),
        "The node_pool_size must be null or a whole number, at least 1",
    );
    assert_plan_fails(
        &scratch,
        with("postgres_connection_string", "mysql://db/e2b".into()),
        "The postgres_connection_string must be empty or a postgres://",
    );
    assert_plan_fails(
        &scratch,
        with("webhook_ca_pem", "not a pem".into()),
        "The webhook_ca_pem must be empty or PEM text",
    );
    // The events API seals teams' signing secrets: without the key, with a malformed one, with a
    // limit below one, or a limit without the API, the plan stops.
    let mut events_api = required_inputs();
    events_api["postgres_connection_string"] = "postgresql://db/e2b".into();
    assert_plan_fails(
        &scratch,
        events_api.clone(),
        "The events API (postgres_connection_string) seals the signing secrets teams register with webhook_secrets_key, which is empty: generate one with `openssl rand -base64 32`",
    );
    for bad in [
        "c2hvcnQta2V5",
        &format!("{SECRETS_KEY},x"),
        "not base64 at all, but 44 chars long.......=",
    ] {
        let mut vars = events_api.clone();
        vars["webhook_secrets_key"] = bad.into();
        let plan = scratch.plan(vars);
        let err = stderr(&plan);
        assert!(!plan.status.success());
        assert!(
            support::terraform::flat(&err)
                .contains("The webhook_secrets_key must be base64 of 32 random bytes"),
            "{err}"
        );
    }
    let mut rotating = events_api.clone();
    rotating["webhook_secrets_key"] = format!(
        "{SECRETS_KEY}, {}",
        "b2xkLWtleS1vZi10aGUtcm90YXRpb24tMzItYnl0ZXM="
    )
    .into();
    let plan = scratch.plan(rotating);
    assert!(
        plan.status.success(),
        "a rotation list plans: {}",
        stderr(&plan)
    );
    assert!(!stdout(&plan).contains(SECRETS_KEY));
    let mut zero = events_api.clone();
    zero["webhook_secrets_key"] = SECRETS_KEY.into();
    zero["webhooks_per_team"] = 0.into();
    assert_plan_fails(
        &scratch,
        zero,
        "The webhooks_per_team must be a whole number, at least 1",
    );
    assert_plan_fails(
        &scratch,
        with("webhooks_per_team", 20.into()),
        "webhooks_per_team limits the events API, which is off",
    );
    let mut ca_without_url = with("webhook_url", "".into());
    ca_without_url["postgres_connection_string"] = "postgresql://db/e2b".into();
    ca_without_url["webhook_ca_pem"] =
        "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n".into();
    assert_plan_fails(
        &scratch,
        ca_without_url,
        "webhook_ca_pem is set but webhook_url is not",
    );
    // The secret is read from TF_VAR_webhook_secret; an empty one with a URL is refused.
    let file = scratch.vars("no-secret", required_inputs());
    let mut command = support::terraform::command(
        &scratch.terraform,
        &scratch.module(),
        &scratch.dir.path().join("cli.tfrc"),
    );
    command
        .args(["plan", "-input=false", "-no-color", "-lock=false"])
        .arg(format!("-var-file={file}"))
        .env("TF_VAR_webhook_secret", " ");
    let plan = support::terraform::run_with_input(command, None);
    assert!(!plan.status.success());
    assert!(
        support::terraform::flat(&stderr(&plan))
            .contains("webhook_url is set but webhook_secret is empty"),
        "{}",
        stderr(&plan)
    );
}

#[test]
fn the_example_tfvars_plans_as_is() {
    let Some(terraform) = terraform() else { return };
    let scratch = Scratch::new(terraform);
    let example = repo().join("terraform/terraform.tfvars.example");
    let target = scratch.module().join("example.tfvars");
    std::fs::copy(&example, &target).unwrap();
    let plan = scratch.run(
        &[
            "plan",
            "-input=false",
            "-no-color",
            "-lock=false",
            "-var-file=example.tfvars",
        ],
        None,
    );
    assert!(
        plan.status.success(),
        "{}\n{}",
        stdout(&plan),
        stderr(&plan)
    );
}
