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

use hcl::expr::{Expression, Object, ObjectKey};
use hcl::{Block, Body, Identifier, Structure};
use std::path::PathBuf;
use std::process::{Command, Output};

const TEAM: &str = "3f2b1c4e-8a9d-4e6f-b1a2-c3d4e5f60718";
const SECRET: &str = "0123456789abcdef0123456789abcdef-terraform-secret";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `terraform` executable on `PATH`, if any.
fn terraform() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join("terraform"))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        eprintln!(
            "terraform is not on PATH: skipping the Terraform CLI checks; \
             tests/deploy_files.rs checks the same files with hcl-rs"
        );
    }
    found
}

/// A scratch copy of the module: `nomad/` as is, `terraform/` with the Nomad provider's
/// resources replaced by `terraform_data`, so no provider has to be downloaded.
struct Scratch {
    dir: tempfile::TempDir,
    terraform: PathBuf,
}

impl Scratch {
    fn new(terraform: PathBuf) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("nomad")).unwrap();
        std::fs::create_dir_all(dir.path().join("terraform")).unwrap();
        for entry in std::fs::read_dir(repo().join("nomad")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(
                entry.path(),
                dir.path().join("nomad").join(entry.file_name()),
            )
            .unwrap();
        }
        for entry in std::fs::read_dir(repo().join("terraform")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "tf") {
                let text = std::fs::read_to_string(&path).unwrap();
                let swapped = swap_nomad_resources(&text);
                std::fs::write(
                    dir.path().join("terraform").join(path.file_name().unwrap()),
                    swapped,
                )
                .unwrap();
            }
        }
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
        use std::io::Write;
        let mut command = Command::new(&self.terraform);
        command
            .args(args)
            .current_dir(self.module())
            // No update check or telemetry call, no user configuration, no colours.
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_CLI_CONFIG_FILE", self.dir.path().join("cli.tfrc"))
            .env("NO_COLOR", "1")
            .env("TF_VAR_webhook_secret", SECRET)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().expect("terraform runs");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// Writes the variables as a `.tfvars.json` file and returns its path.
    fn vars(&self, name: &str, vars: serde_json::Value) -> String {
        let path = self.dir.path().join(format!("{name}.tfvars.json"));
        std::fs::write(&path, vars.to_string()).unwrap();
        path.to_str().unwrap().to_owned()
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

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Rewrites a `.tf` file for a plan without the Nomad provider: `provider "nomad"` and the
/// `required_providers` entry go; each `resource "nomad_*" "x"` becomes `resource
/// "terraform_data" "x"` whose `input` holds every attribute it had (expressions untouched, so
/// they are evaluated as before), keeping its `lifecycle` preconditions and `depends_on`. The
/// jobspec is also exposed as `local.rendered_jobspec` for `terraform console`.
fn swap_nomad_resources(text: &str) -> String {
    let body: Body = hcl::parse(text).unwrap();
    let mut out = Body::builder();
    for structure in body.into_iter() {
        match structure {
            Structure::Block(block) if block.identifier() == "provider" => {}
            Structure::Block(block) if block.identifier() == "terraform" => {
                let kept: Vec<Structure> = block
                    .body
                    .into_iter()
                    .filter(|s| !matches!(s, Structure::Block(b) if b.identifier() == "required_providers"))
                    .collect();
                out = out.add_block(Block::builder("terraform").add_structures(kept).build());
            }
            Structure::Block(block)
                if block.identifier() == "resource"
                    && block.labels[0].as_str().starts_with("nomad_") =>
            {
                let name = block.labels[1].as_str().to_owned();
                let mut input = Object::<ObjectKey, Expression>::new();
                let mut kept = Vec::new();
                for inner in block.body.into_iter() {
                    match inner {
                        Structure::Attribute(a) if a.key() == "depends_on" => {
                            kept.push(Structure::Attribute(a))
                        }
                        Structure::Attribute(a) => {
                            if a.key() == "jobspec" {
                                out = out.add_block(
                                    Block::builder("locals")
                                        .add_attribute(("rendered_jobspec", a.expr.clone()))
                                        .build(),
                                );
                            }
                            input.insert(
                                ObjectKey::Identifier(Identifier::new(a.key()).unwrap()),
                                a.expr,
                            );
                        }
                        Structure::Block(b) if b.identifier() == "lifecycle" => {
                            kept.push(Structure::Block(b))
                        }
                        // Provider-specific blocks (timeouts, job_acl, …).
                        Structure::Block(_) => {}
                    }
                }
                out = out.add_block(
                    Block::builder("resource")
                        .add_label("terraform_data")
                        .add_label(name)
                        .add_attribute(("input", Expression::Object(input)))
                        .add_structures(kept)
                        .build(),
                );
            }
            other => out = out.add_structures([other]),
        }
    }
    let rendered = hcl::to_string(&out.build()).unwrap();
    // References to the swapped resources: `id` stays, any other attribute is in `input`.
    let re = regex_lite_replace(&rendered);
    re.replace("nomad_variable.", "terraform_data.")
        .replace("nomad_job.", "terraform_data.")
}

/// `nomad_x.name.attr` → `nomad_x.name.input.attr` for every attribute but `id`.
fn regex_lite_replace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("nomad_") {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(tail.len());
        let reference = &tail[..end];
        let parts: Vec<&str> = reference.split('.').collect();
        if parts.len() == 3 && parts[2] != "id" && !parts[2].is_empty() {
            out.push_str(&format!("{}.{}.input.{}", parts[0], parts[1], parts[2]));
        } else {
            out.push_str(reference);
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[test]
fn terraform_fmt_finds_nothing_to_change() {
    let Some(terraform) = terraform() else { return };
    let output = Command::new(terraform)
        .args(["fmt", "-check", "-recursive", "-diff"])
        .current_dir(repo().join("terraform"))
        .env("CHECKPOINT_DISABLE", "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "terraform fmt -check: {}{}",
        stdout(&output),
        stderr(&output)
    );
}

#[test]
fn the_job_rendered_by_terraforms_templatefile_is_a_valid_jobspec_without_secrets() {
    let Some(terraform) = terraform() else { return };
    let scratch = Scratch::new(terraform);
    let mut vars = required_inputs();
    vars["redis_password"] = "redis-pass-SECRET".into();
    vars["redis_tls_enabled"] = true.into();
    vars["artifact_checksum"] = format!("sha256:{}", "ab".repeat(32)).into();
    let file = scratch.vars("console", vars);
    let output = scratch.run(
        &["console", &format!("-var-file={file}")],
        Some("local.rendered_jobspec\n"),
    );
    assert!(
        output.status.success(),
        "terraform console: {}",
        stderr(&output)
    );
    let printed = stdout(&output);
    // A multi-line string is printed as a heredoc whose delimiter avoids the content
    // (`EOT`, or `EOT_` when the content holds `EOT`).
    let (first, rest) = printed.trim().split_once('\n').unwrap();
    let delimiter = first
        .strip_prefix("<<")
        .unwrap_or_else(|| panic!("not a multi-line string: {printed}"));
    let jobspec = rest.strip_suffix(delimiter).unwrap().trim_end();
    let job: Body = hcl::parse(jobspec).unwrap_or_else(|e| panic!("{e}\n{jobspec}"));
    let job = job.blocks().find(|b| b.identifier() == "job").unwrap();
    assert_eq!(job.labels[0].as_str(), "e2b-webhook-emitter");
    let attr = |body: &Body, key: &str| -> String {
        let expr = body
            .attributes()
            .find(|a| a.key() == key)
            .map(|a| a.expr.clone());
        match expr {
            Some(Expression::String(s)) => s,
            Some(Expression::TemplateExpr(t)) => t.to_string(),
            other => format!("{other:?}"),
        }
    };
    assert_eq!(attr(job.body(), "node_pool"), "api");
    let group = job
        .body()
        .blocks()
        .find(|b| b.identifier() == "group")
        .unwrap();
    let task = group
        .body()
        .blocks()
        .find(|b| b.identifier() == "task")
        .unwrap();
    let env = task
        .body()
        .blocks()
        .find(|b| b.identifier() == "env")
        .unwrap();
    assert_eq!(attr(env.body(), "NOMAD_NAMESPACE"), "default");
    assert_eq!(attr(env.body(), "ORCHESTRATOR_SERVICE"), "orchestrator");
    assert_eq!(attr(env.body(), "E2B_TEAM_IDS"), TEAM);
    assert_eq!(
        attr(env.body(), "OTEL_EXPORTER_OTLP_ENDPOINT"),
        "http://localhost:4317",
        "metrics go to E2B's node collector"
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
    let artifact = task
        .body()
        .blocks()
        .find(|b| b.identifier() == "artifact")
        .unwrap();
    assert!(
        artifact
            .body()
            .blocks()
            .any(|b| b.identifier() == "options")
    );
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
    assert!(jobspec.contains("${NOMAD_ALLOC_DIR}/data"));
}

#[test]
fn terraform_plan_with_only_the_required_inputs_succeeds_without_an_acl_policy() {
    let Some(terraform) = terraform() else { return };
    let scratch = Scratch::new(terraform);
    let plan = scratch.plan(required_inputs());
    let text = stdout(&plan);
    assert!(plan.status.success(), "{}\n{}", text, stderr(&plan));
    assert!(
        text.contains("terraform_data.secrets will be created"),
        "{text}"
    );
    assert!(
        text.contains("terraform_data.emitter will be created"),
        "{text}"
    );
    assert!(
        text.contains("Plan: 2 to add"),
        "no ACL policy or anything else: {text}"
    );
    assert!(!text.contains(SECRET), "the secret is shown in the plan");
    // The module's sources mention no ACL policy at all.
    for entry in std::fs::read_dir(repo().join("terraform")).unwrap() {
        let path = entry.unwrap().path();
        let content = std::fs::read_to_string(&path).unwrap();
        assert!(!content.contains("nomad_acl_policy"), "{}", path.display());
    }
}

fn assert_plan_fails(scratch: &Scratch, vars: serde_json::Value, message: &str) {
    let plan = scratch.plan(vars);
    let err = stderr(&plan);
    assert!(
        !plan.status.success(),
        "the plan should fail with {message:?}"
    );
    let flat: String = err.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat.contains(message), "expected {message:?} in:\n{err}");
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
        "The job_name must be 1-63 letters, digits or dashes",
    );
    assert_plan_fails(
        &scratch,
        with("job_name", "e".repeat(64).into()),
        "The job_name must be 1-63 letters, digits or dashes",
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
    let plan = scratch.plan(missing);
    assert!(!plan.status.success());
    assert!(stderr(&plan).contains("team_ids"), "{}", stderr(&plan));
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
