//! The real `terraform` CLI on copies of Terraform files whose provider objects are swapped for
//! Terraform's built-in ones, so that no provider has to be downloaded (its registry is
//! unreachable here):
//!
//! - `provider` blocks and `required_providers` go;
//! - each `resource "<nomad_|google_|aws_>…" "x"` becomes `resource "terraform_data"
//!   "<type>__x"` whose `input` holds every attribute it had (expressions untouched, so they are
//!   evaluated as before), keeping its `count`, `lifecycle` preconditions and `depends_on`;
//!   references to an attribute it was given read `input`, any other its `id`;
//! - each `data "<nomad_|google_|aws_>…" "x"` block goes, and references to it read
//!   `local.stub__<type>__x`, which the test's fixture defines (a list where the data source has
//!   a `count`);
//! - a `jobspec` attribute is also exposed as `local.rendered_jobspec` for `terraform console`.
#![allow(dead_code)] // each test crate uses a different subset

use hcl::expr::{Expression, Object, ObjectKey};
use hcl::{Block, Body, Identifier, Structure};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PROVIDER_PREFIXES: [&str; 3] = ["nomad_", "google_", "aws_"];

/// The `terraform` executable on `PATH`, if any.
pub fn terraform() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join("terraform"))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        eprintln!(
            "terraform is not on PATH: skipping the Terraform CLI checks; \
             tests/deploy_files.rs checks the module with hcl-rs"
        );
    }
    found
}

/// A `terraform` command in `dir`: no update check, no user configuration, no colours.
pub fn command(terraform: &Path, dir: &Path, cli_config: &Path) -> Command {
    let mut command = Command::new(terraform);
    command
        .current_dir(dir)
        .env("CHECKPOINT_DISABLE", "1")
        .env("TF_IN_AUTOMATION", "1")
        .env("TF_CLI_CONFIG_FILE", cli_config)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    command
}

/// Runs `command`, writing `stdin` to it.
pub fn run_with_input(mut command: Command, stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = command.spawn().expect("terraform runs");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Both streams on one line each word apart, for messages Terraform wraps.
pub fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Copies every `.tf` file of `from` into `to` with its provider objects swapped (references
/// from one file of the module to another's included), and every other file (templates) as it
/// is, recursively.
pub fn copy_swapped(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let mut module = Swapped::default();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_swapped(&path, &target);
        } else if path.extension().is_some_and(|e| e == "tf") {
            let text = std::fs::read_to_string(&path).unwrap();
            files.push((target, module.swap(&text)));
        } else if !path.file_name().unwrap().to_string_lossy().starts_with('.') {
            std::fs::copy(&path, &target).unwrap();
        }
    }
    for (target, text) in files {
        std::fs::write(&target, module.rewrite_references(&text)).unwrap();
    }
}

fn is_provider_type(kind: &str) -> bool {
    PROVIDER_PREFIXES.iter().any(|p| kind.starts_with(p))
}

/// What the files of one module swapped, for the references between them.
#[derive(Default)]
struct Swapped {
    /// `<type>.<name>` of a resource → the attributes it was given.
    resources: BTreeMap<String, Vec<String>>,
    /// `<type>.<name>` of each data source.
    data: Vec<String>,
}

impl Swapped {
    /// The file with its provider objects swapped (the rewrite in this file's header);
    /// references are rewritten later, once every file of the module is known.
    fn swap(&mut self, text: &str) -> String {
        swap_blocks(text, &mut self.resources, &mut self.data)
    }

    fn rewrite_references(&self, text: &str) -> String {
        rewrite_references(text, &self.resources, &self.data)
    }
}

fn swap_blocks(
    text: &str,
    swapped: &mut BTreeMap<String, Vec<String>>,
    stubbed: &mut Vec<String>,
) -> String {
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
                if block.identifier() == "data" && is_provider_type(block.labels[0].as_str()) =>
            {
                stubbed.push(format!(
                    "{}.{}",
                    block.labels[0].as_str(),
                    block.labels[1].as_str()
                ));
            }
            Structure::Block(block)
                if block.identifier() == "resource"
                    && is_provider_type(block.labels[0].as_str()) =>
            {
                let kind = block.labels[0].as_str().to_owned();
                let name = block.labels[1].as_str().to_owned();
                let mut input = Object::<ObjectKey, Expression>::new();
                let mut kept = Vec::new();
                let mut given = Vec::new();
                for inner in block.body.into_iter() {
                    match inner {
                        Structure::Attribute(a)
                            if a.key() == "depends_on" || a.key() == "count" =>
                        {
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
                            given.push(a.key().to_owned());
                            input.insert(
                                ObjectKey::Identifier(Identifier::new(a.key()).unwrap()),
                                a.expr,
                            );
                        }
                        Structure::Block(b) if b.identifier() == "lifecycle" => {
                            // ignore_changes names the provider's attributes, unknown here.
                            let kept_lifecycle: Vec<Structure> = b
                                .body
                                .into_iter()
                                .filter(|s| !matches!(s, Structure::Attribute(a) if a.key() == "ignore_changes"))
                                .collect();
                            kept.push(Structure::Block(
                                Block::builder("lifecycle")
                                    .add_structures(kept_lifecycle)
                                    .build(),
                            ))
                        }
                        // Provider-specific blocks (timeouts, replication, …).
                        Structure::Block(_) => {}
                    }
                }
                out = out.add_block(
                    Block::builder("resource")
                        .add_label("terraform_data")
                        .add_label(format!("{kind}__{name}"))
                        .add_attribute(("input", Expression::Object(input)))
                        .add_structures(kept)
                        .build(),
                );
                swapped.insert(format!("{kind}.{name}"), given);
            }
            other => out = out.add_structures([other]),
        }
    }
    hcl::to_string(&out.build()).unwrap()
}

/// `data.<t>.<n>` → `local.stub__<t>__<n>`; `<t>.<n>[i].<attr>` → `terraform_data.<t>__<n>[i]`
/// then `.input.<attr>` for an attribute it was given, `.id` for any other.
fn rewrite_references(
    text: &str,
    swapped: &BTreeMap<String, Vec<String>>,
    stubbed: &[String],
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    while let Some(at) = rest.find(|c: char| c.is_ascii_alphabetic()) {
        // Only whole words: not the middle of another identifier.
        if at > 0 && rest[..at].ends_with(|c: char| is_word(c) || c == '.') {
            let end = at
                + rest[at..]
                    .find(|c: char| !is_word(c))
                    .unwrap_or(rest.len() - at);
            out.push_str(&rest[..end]);
            rest = &rest[end..];
            continue;
        }
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(is_word(c) || c == '.' || c == '[' || c == ']'))
            .unwrap_or(tail.len());
        let reference = &tail[..end];
        out.push_str(&rewrite_one(reference, swapped, stubbed));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn rewrite_one(
    reference: &str,
    swapped: &BTreeMap<String, Vec<String>>,
    stubbed: &[String],
) -> String {
    let parts: Vec<&str> = reference.split('.').collect();
    // A part may carry an index: `name[0]`.
    let bare = |p: &str| p.split('[').next().unwrap_or(p).to_owned();
    if parts.len() >= 3 && parts[0] == "data" {
        let key = format!("{}.{}", parts[1], bare(parts[2]));
        if stubbed.contains(&key) {
            let index = &parts[2][bare(parts[2]).len()..];
            let mut rewritten = format!("local.stub__{}__{}{index}", parts[1], bare(parts[2]));
            for p in &parts[3..] {
                rewritten.push('.');
                rewritten.push_str(p);
            }
            return rewritten;
        }
    }
    if parts.len() >= 2 {
        let key = format!("{}.{}", parts[0], bare(parts[1]));
        if let Some(given) = swapped.get(&key) {
            let index = &parts[1][bare(parts[1]).len()..];
            let base = format!("terraform_data.{}__{}{index}", parts[0], bare(parts[1]));
            return match parts.get(2) {
                None => base,
                Some(attr) if given.contains(&bare(attr)) => {
                    let mut rewritten = format!("{base}.input");
                    for p in &parts[2..] {
                        rewritten.push('.');
                        rewritten.push_str(p);
                    }
                    rewritten
                }
                Some(_) => format!("{base}.id"),
            };
        }
    }
    reference.to_owned()
}

/// The value `terraform console` printed for a multi-line string: a heredoc whose delimiter
/// avoids the content (`EOT`, or `EOT_` when the content holds `EOT`).
pub fn console_string(printed: &str) -> String {
    let (first, rest) = printed.trim().split_once('\n').unwrap();
    let delimiter = first
        .strip_prefix("<<")
        .unwrap_or_else(|| panic!("not a multi-line string: {printed}"));
    rest.strip_suffix(delimiter).unwrap().trim_end().to_owned()
}

/// The `job` block of a rendered jobspec, parsed as Nomad would (HCL).
pub fn job_block(jobspec: &str) -> Block {
    let body: Body = hcl::parse(jobspec).unwrap_or_else(|e| panic!("{e}\n{jobspec}"));
    body.into_blocks()
        .find(|b| b.identifier() == "job")
        .expect("a job block")
}

/// The first block `ident` of `body`.
pub fn block<'a>(body: &'a Body, ident: &'a str) -> &'a Block {
    blocks(body, ident)
        .next()
        .unwrap_or_else(|| panic!("no {ident} block"))
}

/// Every block `ident` of `body`.
pub fn blocks<'a>(body: &'a Body, ident: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
    body.blocks().filter(move |b| b.identifier() == ident)
}

/// The attribute `key` of `body` as text (a string's value, anything else as HCL).
pub fn attr(body: &Body, key: &str) -> Option<String> {
    body.attributes()
        .find(|a| a.key() == key)
        .map(|a| match &a.expr {
            Expression::String(s) => s.clone(),
            Expression::TemplateExpr(t) => t.to_string(),
            other => hcl::format::to_string(other).unwrap(),
        })
}
