//! Checks the deployment files: the Nomad job template in `nomad/` and the
//! Terraform module in `terraform/`.
//!
//! Neither Nomad nor Terraform can run here, so the files are parsed with
//! hcl-rs and the parts that Terraform would evaluate are evaluated with
//! hcl-rs too: the job template is rendered the way `templatefile()` renders
//! it (same template language: `${var}`, `%{ if }`, `$${` escapes), using the
//! very arguments that `terraform/main.tf` passes, evaluated against sample
//! variable values. The rendered jobspec is then parsed and inspected.
//!
//! Two tests run the real binary: the job may only set environment variables
//! that `e2b-webhook-emitter run --help` lists, and the binary must accept the
//! job's environment as a valid configuration.

use hcl::eval::{Context, Evaluate, FuncArgs, FuncDef, ParamType};
use hcl::expr::{Expression, ObjectKey, Operation, TraversalOperator};
use hcl::template::{Directive, Element, Template};
use hcl::{Block, Body, Map, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

const JOB_TEMPLATE: &str = "terraform/jobs/e2b-webhook-emitter.hcl";

// Distinctive sample secrets: if any of them shows up in the rendered
// jobspec, a secret has leaked into it.
const SAMPLE_WEBHOOK_SECRET: &str = "SAMPLE-webhook-secret-4c1f9a7e2b8d6f0a3e5c7b9d1f2a4c6e";
const SAMPLE_REDIS_PASSWORD: &str = "SAMPLE-redis-password-7d3b";
const SAMPLE_CLUSTER_PASSWORD: &str = "SAMPLE-cluster-password-91ae";
const SAMPLE_ADMIN_TOKEN: &str = "SAMPLE-admin-token-5a6b7c8d9e0f";
const SAMPLE_NOMAD_TOKEN: &str = "SAMPLE-nomad-token-0b1c2d3e-4f5a-6b7c-8d9e-0f1a2b3c4d5e";
const SAMPLE_POSTGRES: &str = "postgresql://e2b:SAMPLE-postgres-password-3e7f@db:5432/e2b";
/// Base64 of 32 bytes, as `openssl rand -base64 32` prints one.
const SAMPLE_SECRETS_KEY: &str = "U0FNUExFLXNlY3JldHMta2V5LTMyLWJ5dGVzLTAwMDA=";

const SAMPLE_TEAM: &str = "3f2b1c4e-8a9d-4e6f-b1a2-c3d4e5f60718";
const SAMPLE_CHECKSUM: &str =
    "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const SAMPLE_NAMESPACE: &str = "webhooks";
const SAMPLE_REDIS_TLS_CA: &str = "U0FNUExFLWNh";
const SAMPLE_JOB_NAME: &str = "sample-emitter";

/// Terraform variables that hold secrets.
const SECRET_VARIABLES: [&str; 8] = [
    "webhook_secret",
    "webhook_secrets_key",
    "redis_url",
    "redis_cluster_url",
    "redis_password",
    "redis_tls_ca_base64",
    "postgres_connection_string",
    "admin_token",
];

// ---------------------------------------------------------------------------
// Files and HCL helpers

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn parse(rel: &str) -> Body {
    hcl::parse(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not valid HCL: {e}"))
}

fn blocks<'a>(body: &'a Body, ident: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
    body.blocks().filter(move |b| b.identifier() == ident)
}

/// The only block `ident` in `body`.
fn one_block<'a>(body: &'a Body, ident: &'a str) -> &'a Block {
    let found: Vec<_> = blocks(body, ident).collect();
    assert_eq!(found.len(), 1, "expected exactly one `{ident}` block");
    found[0]
}

/// The block `ident "labels"...` in `body`.
fn labeled_block<'a>(body: &'a Body, ident: &'a str, labels: &[&str]) -> &'a Block {
    blocks(body, ident)
        .find(|b| {
            b.labels()
                .iter()
                .map(|l| l.as_str())
                .eq(labels.iter().copied())
        })
        .unwrap_or_else(|| panic!("no block `{ident} {labels:?}`"))
}

fn attr<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes().find(|a| a.key() == key).map(|a| a.expr())
}

fn required_attr<'a>(body: &'a Body, key: &str) -> &'a Expression {
    attr(body, key).unwrap_or_else(|| panic!("attribute `{key}` is missing"))
}

/// The value of a literal expression. A string with interpolations (for
/// Nomad's runtime, e.g. `${NOMAD_ALLOC_DIR}`) is returned as its raw text.
fn literal(expr: &Expression) -> Value {
    match expr {
        Expression::Null => Value::Null,
        Expression::Bool(b) => Value::Bool(*b),
        Expression::Number(n) => Value::Number(*n),
        Expression::String(s) => Value::String(s.clone()),
        Expression::TemplateExpr(t) => Value::String(t.to_string()),
        Expression::Array(items) => Value::Array(items.iter().map(literal).collect()),
        Expression::Object(object) => Value::Object(
            object
                .iter()
                .map(|(k, v)| (object_key(k), literal(v)))
                .collect(),
        ),
        other => panic!("expected a literal, found `{}`", fmt_expr(other)),
    }
}

fn object_key(key: &ObjectKey) -> String {
    match key {
        ObjectKey::Identifier(id) => id.to_string(),
        ObjectKey::Expression(e) => match literal(e) {
            Value::String(s) => s,
            other => other.to_string(),
        },
        _ => panic!("unsupported object key"),
    }
}

fn str_attr(body: &Body, key: &str) -> String {
    match literal(required_attr(body, key)) {
        Value::String(s) => s,
        other => panic!("`{key}` should be a string, is {other}"),
    }
}

fn bool_attr(body: &Body, key: &str) -> bool {
    match literal(required_attr(body, key)) {
        Value::Bool(b) => b,
        other => panic!("`{key}` should be a bool, is {other}"),
    }
}

fn int_attr(body: &Body, key: &str) -> i64 {
    match literal(required_attr(body, key)) {
        Value::Number(n) => n
            .as_i64()
            .unwrap_or_else(|| panic!("`{key}` is not an integer")),
        other => panic!("`{key}` should be a number, is {other}"),
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("expected a list, found {value}"))
        .iter()
        .map(|v| {
            v.as_str()
                .unwrap_or_else(|| panic!("expected a string, found {v}"))
                .to_owned()
        })
        .collect()
}

fn fmt_expr(expr: &Expression) -> String {
    hcl::format::to_string(expr).unwrap_or_else(|_| format!("{expr:?}"))
}

/// Nomad duration string ("45s", "5m") in seconds.
fn duration_secs(text: &str) -> u64 {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(0));
    let number: u64 = number
        .parse()
        .unwrap_or_else(|_| panic!("bad duration {text:?}"));
    match unit {
        "s" => number,
        "m" => number * 60,
        "h" => number * 3600,
        _ => panic!("unsupported duration {text:?}"),
    }
}

// ---------------------------------------------------------------------------
// Variable references (what an expression or template reads)

/// Collects the variables an expression reads: `name` for every root
/// variable and `name.attr` for every `name.attr...` traversal.
fn expr_refs(expr: &Expression, out: &mut BTreeSet<String>) {
    match expr {
        Expression::Variable(v) => {
            out.insert(v.as_str().to_owned());
        }
        Expression::Traversal(t) => {
            if let (Expression::Variable(v), Some(TraversalOperator::GetAttr(a))) =
                (&t.expr, t.operators.first())
            {
                out.insert(format!("{}.{a}", v.as_str()));
            }
            expr_refs(&t.expr, out);
            for op in &t.operators {
                if let TraversalOperator::Index(i) = op {
                    expr_refs(i, out);
                }
            }
        }
        Expression::FuncCall(f) => f.args.iter().for_each(|a| expr_refs(a, out)),
        Expression::Parenthesis(e) => expr_refs(e, out),
        Expression::Conditional(c) => {
            expr_refs(&c.cond_expr, out);
            expr_refs(&c.true_expr, out);
            expr_refs(&c.false_expr, out);
        }
        Expression::Operation(op) => match &**op {
            Operation::Unary(u) => expr_refs(&u.expr, out),
            Operation::Binary(b) => {
                expr_refs(&b.lhs_expr, out);
                expr_refs(&b.rhs_expr, out);
            }
        },
        Expression::ForExpr(f) => {
            let mut inner = BTreeSet::new();
            if let Some(k) = &f.key_expr {
                expr_refs(k, &mut inner);
            }
            expr_refs(&f.value_expr, &mut inner);
            if let Some(c) = &f.cond_expr {
                expr_refs(c, &mut inner);
            }
            let loop_vars: Vec<String> = f
                .key_var
                .iter()
                .chain(Some(&f.value_var))
                .map(|v| v.to_string())
                .collect();
            inner.retain(|r| {
                !loop_vars
                    .iter()
                    .any(|v| r == v || r.starts_with(&format!("{v}.")))
            });
            out.extend(inner);
            expr_refs(&f.collection_expr, out);
        }
        Expression::Array(items) => items.iter().for_each(|e| expr_refs(e, out)),
        Expression::Object(object) => {
            for (k, v) in object {
                if let ObjectKey::Expression(k) = k {
                    expr_refs(k, out);
                }
                expr_refs(v, out);
            }
        }
        Expression::TemplateExpr(t) => {
            let template = Template::from_expr(t).expect("invalid template expression");
            template_refs(&template, out);
        }
        _ => {}
    }
}

fn template_refs(template: &Template, out: &mut BTreeSet<String>) {
    for element in template.elements() {
        match element {
            Element::Literal(_) => {}
            Element::Interpolation(i) => expr_refs(&i.expr, out),
            Element::Directive(d) => match &**d {
                Directive::If(d) => {
                    expr_refs(&d.cond_expr, out);
                    template_refs(&d.true_template, out);
                    if let Some(f) = &d.false_template {
                        template_refs(f, out);
                    }
                }
                Directive::For(d) => {
                    let mut inner = BTreeSet::new();
                    template_refs(&d.template, &mut inner);
                    let loop_vars: Vec<String> = d
                        .key_var
                        .iter()
                        .chain(Some(&d.value_var))
                        .map(|v| v.to_string())
                        .collect();
                    inner.retain(|r| !loop_vars.iter().any(|v| r == v));
                    out.extend(inner);
                    expr_refs(&d.collection_expr, out);
                }
            },
        }
    }
}

// ---------------------------------------------------------------------------
// A small Terraform evaluator: sample variables and the few functions used

fn func_regex(args: FuncArgs) -> Result<Value, String> {
    let pattern = regex::Regex::new(args[0].as_str().unwrap_or_default())
        .map_err(|e| format!("invalid regex: {e}"))?;
    Ok(pattern
        .find(args[1].as_str().unwrap_or_default())
        .map_or(Value::Null, |m| Value::from(m.as_str())))
}

fn func_identity(args: FuncArgs) -> Result<Value, String> {
    Ok(args[0].clone())
}

fn numbers(args: &FuncArgs) -> Vec<f64> {
    args.iter()
        .filter_map(|v| v.as_number().and_then(|n| n.as_f64()))
        .collect()
}

/// A whole number in integer form, so that it compares equal to integer literals.
fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n >= 0.0 {
        Value::from(n as u64)
    } else {
        Value::from(n)
    }
}

fn func_min(args: FuncArgs) -> Result<Value, String> {
    Ok(number(
        numbers(&args).into_iter().fold(f64::INFINITY, f64::min),
    ))
}

fn func_max(args: FuncArgs) -> Result<Value, String> {
    Ok(number(
        numbers(&args).into_iter().fold(f64::NEG_INFINITY, f64::max),
    ))
}

fn func_strcontains(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(
        args[0]
            .as_str()
            .unwrap_or_default()
            .contains(args[1].as_str().unwrap_or_default()),
    ))
}

fn func_can(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(!args[0].is_null()))
}

fn func_jsonencode(args: FuncArgs) -> Result<Value, String> {
    serde_json::to_string(&args[0])
        .map(Value::String)
        .map_err(|e| e.to_string())
}

fn func_join(args: FuncArgs) -> Result<Value, String> {
    let sep = args[0].as_str().unwrap_or_default();
    let items: Vec<&str> = args[1]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v.as_str().unwrap_or_default())
        .collect();
    Ok(Value::String(items.join(sep)))
}

fn func_split(args: FuncArgs) -> Result<Value, String> {
    let sep = args[0].as_str().unwrap_or_default();
    let text = args[1].as_str().unwrap_or_default();
    Ok(Value::Array(text.split(sep).map(Value::from).collect()))
}

fn func_trimspace(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::from(args[0].as_str().unwrap_or_default().trim()))
}

fn func_length(args: FuncArgs) -> Result<Value, String> {
    let len = match &args[0] {
        Value::String(s) => s.chars().count(),
        Value::Array(a) => a.len(),
        Value::Object(o) => o.len(),
        other => return Err(format!("length of {other}")),
    };
    Ok(Value::from(len as u64))
}

fn func_alltrue(args: FuncArgs) -> Result<Value, String> {
    let all = args[0]
        .as_array()
        .into_iter()
        .flatten()
        .all(|v| v.as_bool() == Some(true));
    Ok(Value::Bool(all))
}

fn func_contains(args: FuncArgs) -> Result<Value, String> {
    let list = args[0].as_array().ok_or("contains needs a list")?;
    Ok(Value::Bool(list.contains(&args[1])))
}

fn func_startswith(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(
        args[0]
            .as_str()
            .unwrap()
            .starts_with(args[1].as_str().unwrap()),
    ))
}

fn func_floor(args: FuncArgs) -> Result<Value, String> {
    let n = args[0]
        .as_number()
        .and_then(|n| n.as_f64())
        .ok_or("floor needs a number")?
        .floor();
    // Whole numbers compare equal to integers only in integer form.
    Ok(if n >= 0.0 {
        Value::from(n as u64)
    } else {
        Value::from(n as i64)
    })
}

/// Evaluation context with `var`, `local` and `path.module` as Terraform
/// would see them, and Terraform's semantics for the functions used here.
/// `regex()` answers null instead of failing when nothing matches, and `can()`
/// turns that into false, which is all the validations here need.
fn tf_context(vars: &Map<String, Value>, locals: &Map<String, Value>) -> Context<'static> {
    let mut ctx = Context::new();
    ctx.declare_var("var", Value::Object(vars.clone()));
    ctx.declare_var("local", Value::Object(locals.clone()));
    let mut path = Map::new();
    path.insert(
        "module".to_owned(),
        Value::from(repo_root().join("terraform").display().to_string()),
    );
    ctx.declare_var("path", Value::Object(path));

    let any = || ParamType::Any;
    let string = || ParamType::String;
    let number_list = || {
        FuncDef::builder()
            .variadic_param(ParamType::Number)
            .build(func_min)
    };
    let funcs: [(&str, FuncDef); 15] = [
        // Sensitivity is Terraform's plan-time marking; the values are the same.
        ("nonsensitive", FuncDef::new(func_identity, [any()])),
        ("min", number_list()),
        (
            "max",
            FuncDef::builder()
                .variadic_param(ParamType::Number)
                .build(func_max),
        ),
        (
            "strcontains",
            FuncDef::new(func_strcontains, [string(), string()]),
        ),
        ("regex", FuncDef::new(func_regex, [string(), string()])),
        ("can", FuncDef::new(func_can, [any()])),
        ("jsonencode", FuncDef::new(func_jsonencode, [any()])),
        (
            "join",
            FuncDef::new(func_join, [string(), ParamType::array_of(string())]),
        ),
        ("split", FuncDef::new(func_split, [string(), string()])),
        ("trimspace", FuncDef::new(func_trimspace, [string()])),
        ("length", FuncDef::new(func_length, [any()])),
        (
            "alltrue",
            FuncDef::new(func_alltrue, [ParamType::array_of(ParamType::Bool)]),
        ),
        (
            "contains",
            FuncDef::new(func_contains, [ParamType::array_of(any()), any()]),
        ),
        ("floor", FuncDef::new(func_floor, [ParamType::Number])),
        (
            "startswith",
            FuncDef::new(func_startswith, [string(), string()]),
        ),
    ];
    for (name, def) in funcs {
        ctx.declare_func(name, def);
    }
    ctx
}

fn eval(expr: &Expression, ctx: &Context) -> Value {
    expr.evaluate(ctx)
        .unwrap_or_else(|e| panic!("cannot evaluate `{}`: {e}", fmt_expr(expr)))
}

struct TfVariable {
    default: Option<Value>,
    block: Block,
}

fn tf_variables() -> Map<String, TfVariable> {
    blocks(&parse("terraform/variables.tf"), "variable")
        .map(|b| {
            let name = b.labels()[0].as_str().to_owned();
            let default = attr(b.body(), "default").map(|e| eval(e, &Context::new()));
            (
                name,
                TfVariable {
                    default,
                    block: b.clone(),
                },
            )
        })
        .collect()
}

/// The variable values of a sample deployment: every default, plus values
/// for the required variables and distinctive secrets.
fn sample_tfvars() -> Map<String, Value> {
    let samples: [(&str, Value); 15] = [
        (
            "webhook_url",
            "https://app.example.com/api/webhooks/e2b".into(),
        ),
        ("webhook_secret", SAMPLE_WEBHOOK_SECRET.into()),
        (
            "redis_url",
            format!("redis://:{SAMPLE_REDIS_PASSWORD}@redis.service.consul:6379").into(),
        ),
        (
            "redis_cluster_url",
            format!("redis://:{SAMPLE_CLUSTER_PASSWORD}@redis-cluster:7000").into(),
        ),
        ("postgres_connection_string", SAMPLE_POSTGRES.into()),
        ("webhook_secrets_key", SAMPLE_SECRETS_KEY.into()),
        (
            "artifact_url",
            "https://artifacts.example.com/e2b-webhook-emitter.tar.gz".into(),
        ),
        ("artifact_checksum", SAMPLE_CHECKSUM.into()),
        ("team_ids", Value::Array(vec![SAMPLE_TEAM.into()])),
        ("namespace", SAMPLE_NAMESPACE.into()),
        ("redis_password", SAMPLE_REDIS_PASSWORD.into()),
        ("redis_tls_ca_base64", SAMPLE_REDIS_TLS_CA.into()),
        ("job_name", SAMPLE_JOB_NAME.into()),
        ("admin_token", SAMPLE_ADMIN_TOKEN.into()),
        (
            "auth_provider_config",
            r#"{"jwt":[{"issuer":{"url":"https://auth.example.com","audiences":["e2b"]}}]}"#.into(),
        ),
    ];
    let mut vars: Map<String, Value> = samples
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    vars.insert("instance_count".to_owned(), Value::from(2u64));
    for (name, variable) in tf_variables() {
        if !vars.contains_key(&name) {
            let default = variable.default.unwrap_or_else(|| {
                panic!("variable `{name}` is required: give it a sample value in this test")
            });
            vars.insert(name, default);
        }
    }
    vars
}

fn main_tf() -> Body {
    parse("terraform/main.tf")
}

fn resource<'a>(main: &'a Body, kind: &str) -> &'a Block {
    let found: Vec<_> = blocks(main, "resource")
        .filter(|b| b.labels()[0].as_str() == kind)
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one `{kind}` resource");
    found[0]
}

/// The `locals` of main.tf, evaluated with `vars`.
fn tf_locals(main: &Body, vars: &Map<String, Value>) -> Map<String, Value> {
    let mut locals = Map::new();
    for block in blocks(main, "locals") {
        for a in block.body().attributes() {
            let value = eval(a.expr(), &tf_context(vars, &locals));
            locals.insert(a.key().to_owned(), value);
        }
    }
    locals
}

/// The `templatefile(path, {...})` call of the nomad_job resource.
fn templatefile_call(main: &Body) -> (&Expression, &hcl::Object<ObjectKey, Expression>) {
    let jobspec = required_attr(resource(main, "nomad_job").body(), "jobspec");
    let Expression::FuncCall(call) = jobspec else {
        panic!("nomad_job.jobspec should be a templatefile() call");
    };
    assert_eq!(call.name.name.as_str(), "templatefile");
    assert_eq!(
        call.args.len(),
        2,
        "templatefile takes a path and an object"
    );
    let Expression::Object(args) = &call.args[1] else {
        panic!("the templatefile variables should be an object literal");
    };
    (&call.args[0], args)
}

/// Renders the job template the way `templatefile()` would, with exactly
/// the variables in `args`.
fn render_template(args: &Map<String, Value>) -> Result<String, String> {
    let template = Template::from_str(&read(JOB_TEMPLATE)).map_err(|e| e.to_string())?;
    let mut ctx = Context::new();
    for (k, v) in args {
        ctx.declare_var(k.as_str(), v.clone());
    }
    template.evaluate(&ctx).map_err(|e| e.to_string())
}

struct Deployment {
    /// The variables of main.tf's templatefile() call, evaluated.
    template_args: Map<String, Value>,
    /// The rendered jobspec.
    text: String,
    body: Body,
}

impl Deployment {
    fn job(&self) -> &Block {
        one_block(&self.body, "job")
    }

    fn group(&self) -> &Block {
        one_block(self.job().body(), "group")
    }

    fn task(&self) -> &Block {
        one_block(self.group().body(), "task")
    }

    fn env(&self) -> Map<String, String> {
        one_block(self.task().body(), "env")
            .body()
            .attributes()
            .map(|a| match literal(a.expr()) {
                Value::String(s) => (a.key().to_owned(), s),
                other => panic!("env {} should be a string, is {other}", a.key()),
            })
            .collect()
    }
}

/// Renders the jobspec Terraform would submit for `vars`.
fn deploy(vars: &Map<String, Value>) -> Deployment {
    let main = main_tf();
    let locals = tf_locals(&main, vars);
    let ctx = tf_context(vars, &locals);
    let (path_expr, args) = templatefile_call(&main);

    let path = eval(path_expr, &ctx);
    let path = Path::new(path.as_str().expect("templatefile path is a string"));
    assert_eq!(
        path.canonicalize().expect("the templatefile path exists"),
        repo_root().join(JOB_TEMPLATE).canonicalize().unwrap(),
        "main.tf must render {JOB_TEMPLATE}"
    );

    let template_args: Map<String, Value> = args
        .iter()
        .map(|(k, v)| (object_key(k), eval(v, &ctx)))
        .collect();
    let text = render_template(&template_args)
        .unwrap_or_else(|e| panic!("templatefile() would fail: {e}"));
    let body = hcl::parse(&text)
        .unwrap_or_else(|e| panic!("the rendered jobspec is not valid HCL: {e}\n{text}"));
    Deployment {
        template_args,
        text,
        body,
    }
}

fn sample_deployment() -> Deployment {
    deploy(&sample_tfvars())
}

/// Environment variable names the binary reads, from `run --help`
/// (clap prints `[env: NAME=]` for every flag that has one).
fn binary_env_names() -> BTreeSet<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_e2b-webhook-emitter"))
        .args(["run", "--help"])
        // clap prints the current value of each variable: start from an
        // empty environment so that nothing of ours is echoed.
        .env_clear()
        .output()
        .expect("running e2b-webhook-emitter run --help");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "`e2b-webhook-emitter run --help` failed: {}{}",
        help,
        String::from_utf8_lossy(&output.stderr)
    );
    // Help text is wrapped, possibly between `[env:` and the name.
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let names: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect();
    assert!(
        names.len() >= 5,
        "expected the run command to document its environment variables, found {names:?}"
    );
    names
}

// ---------------------------------------------------------------------------
// Tests: every file parses

#[test]
fn every_hcl_and_tf_file_parses() {
    let mut checked = Vec::new();
    for dir in [
        "terraform",
        "terraform/jobs",
        "deploy/e2b/provider-gcp/nomad",
        "deploy/e2b/provider-aws/nomad",
    ] {
        let mut entries: Vec<_> = std::fs::read_dir(repo_root().join(dir))
            .unwrap_or_else(|e| panic!("{dir}/: {e}"))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let rel = format!("{dir}/{name}");
            if name.ends_with(".hcl") && dir == "terraform/jobs" {
                // A templatefile() template: only its rendering is HCL.
                hcl::parse(&sample_deployment().text)
                    .unwrap_or_else(|e| panic!("{rel} rendered: {e}"));
            } else if name.ends_with(".tf")
                || name.ends_with(".hcl")
                || name.ends_with(".tfvars.example")
            {
                parse(&rel);
            } else {
                continue;
            }
            checked.push(rel);
        }
    }
    for expected in [
        JOB_TEMPLATE,
        "terraform/main.tf",
        "terraform/variables.tf",
        "terraform/versions.tf",
        "terraform/outputs.tf",
        "terraform/terraform.tfvars.example",
        "deploy/e2b/provider-gcp/nomad/webhook-emitter.tf",
        "deploy/e2b/provider-aws/nomad/webhook-emitter.tf",
    ] {
        assert!(
            checked.iter().any(|c| c == expected),
            "{expected} is missing"
        );
    }
}

// ---------------------------------------------------------------------------
// Tests: the rendered jobspec

#[test]
fn job_is_a_service_running_the_artifact_with_raw_exec() {
    let d = sample_deployment();
    let job = d.job();
    assert_eq!(job.labels()[0].as_str(), SAMPLE_JOB_NAME);
    assert_eq!(str_attr(job.body(), "type"), "service");
    assert_eq!(str_attr(job.body(), "namespace"), SAMPLE_NAMESPACE);
    // E2B runs its services on the api node pool.
    assert_eq!(str_attr(job.body(), "node_pool"), "api");
    assert_eq!(
        strings(&literal(required_attr(job.body(), "datacenters"))),
        ["*"]
    );

    assert_eq!(
        int_attr(d.group().body(), "count"),
        2,
        "count follows instance_count"
    );
    // The standby must survive the loss of the active instance's node.
    let distinct = blocks(d.group().body(), "constraint")
        .any(|c| str_attr(c.body(), "operator") == "distinct_hosts");
    assert!(distinct, "instances are placed on distinct nodes");

    let task = d.task().body();
    assert_eq!(str_attr(task, "driver"), "raw_exec");
    let config = one_block(task, "config").body();
    assert_eq!(str_attr(config, "command"), "local/e2b-webhook-emitter");
    assert_eq!(
        strings(&literal(required_attr(config, "args"))),
        ["run", "--log-format", "json"]
    );

    let artifact = one_block(task, "artifact").body();
    assert_eq!(
        str_attr(artifact, "source"),
        "https://artifacts.example.com/e2b-webhook-emitter.tar.gz"
    );
    assert_eq!(str_attr(artifact, "destination"), "local/");
    assert_eq!(
        str_attr(one_block(artifact, "options").body(), "checksum"),
        SAMPLE_CHECKSUM
    );

    // Graceful drain: SIGTERM, then long enough to finish in-flight
    // deliveries before Nomad sends SIGKILL.
    assert_eq!(str_attr(task, "kill_signal"), "SIGTERM");
    let kill_timeout = duration_secs(&str_attr(task, "kill_timeout"));
    assert!(
        (30..=120).contains(&kill_timeout),
        "kill_timeout {kill_timeout}s"
    );

    let resources = one_block(task, "resources").body();
    assert!((50..=1000).contains(&int_attr(resources, "cpu")));
    assert!((64..=1024).contains(&int_attr(resources, "memory")));
}

#[test]
fn outbox_disk_is_sticky_and_migrates() {
    let d = sample_deployment();
    let disk = one_block(d.group().body(), "ephemeral_disk").body();
    assert!(bool_attr(disk, "sticky"));
    assert!(bool_attr(disk, "migrate"));
    assert!(int_attr(disk, "size") >= 300);
    // The outbox must be on that disk: in alloc/data, in a folder of its own that the task's
    // unprivileged user creates (one an earlier version wrote as root stays aside).
    assert_eq!(d.env()["DATA_DIR"], "${NOMAD_ALLOC_DIR}/data/emitter");
}

#[test]
fn service_is_health_checked_on_readyz() {
    let d = sample_deployment();
    let group = d.group().body();
    let network = one_block(group, "network").body();
    labeled_block(network, "port", &["http"]);

    let service = blocks(group, "service")
        .find(|s| str_attr(s.body(), "port") == "http")
        .expect("the service on the http port")
        .body();
    assert_eq!(str_attr(service, "provider"), "nomad");
    assert_eq!(str_attr(service, "name"), SAMPLE_JOB_NAME);
    let check = one_block(service, "check").body();
    assert_eq!(str_attr(check, "type"), "http");
    assert_eq!(str_attr(check, "path"), "/readyz");
    assert!(duration_secs(&str_attr(check, "interval")) > 0);
    assert!(duration_secs(&str_attr(check, "timeout")) > 0);

    // The emitter serves health and metrics on the port Nomad allocated.
    let listen = &d.env()["LISTEN_ADDR"];
    assert!(
        listen == "${NOMAD_ADDR_http}" || listen == "0.0.0.0:${NOMAD_PORT_http}",
        "LISTEN_ADDR = {listen:?} is not the `http` port"
    );
}

#[test]
fn restarts_in_place_and_updates_one_instance_at_a_time() {
    let d = sample_deployment();
    let group = d.group().body();

    let update = one_block(group, "update").body();
    assert_eq!(int_attr(update, "max_parallel"), 1);
    assert_eq!(str_attr(update, "health_check"), "checks");
    assert!(bool_attr(update, "auto_revert"));
    // No canary: the old allocation must release the sticky disk first.
    assert!(attr(update, "canary").is_none_or(|c| literal(c) == Value::from(0u64)));
    let min_healthy = duration_secs(&str_attr(update, "min_healthy_time"));
    let healthy_deadline = duration_secs(&str_attr(update, "healthy_deadline"));
    let progress_deadline = duration_secs(&str_attr(update, "progress_deadline"));
    assert!(min_healthy < healthy_deadline && healthy_deadline < progress_deadline);

    let restart = one_block(group, "restart").body();
    assert_eq!(str_attr(restart, "mode"), "delay");
    assert!(int_attr(restart, "attempts") > 0);
}

#[test]
fn secrets_are_read_from_the_nomad_variable_by_a_template() {
    let d = sample_deployment();
    let task = d.task().body();

    let identity = one_block(task, "identity").body();
    assert!(
        bool_attr(identity, "env"),
        "the workload identity must reach the task as NOMAD_TOKEN"
    );

    let template = one_block(task, "template").body();
    assert_eq!(str_attr(template, "destination"), "secrets/env");
    assert!(bool_attr(template, "env"));
    // Only a restart re-reads an environment template (secret rotation).
    if let Some(mode) = attr(template, "change_mode") {
        assert_eq!(literal(mode), Value::from("restart"));
    }
    let data = str_attr(template, "data");
    let variable_path = format!("nomad/jobs/{SAMPLE_JOB_NAME}");
    assert!(
        data.contains(&format!("{{{{- with nomadVar \"{variable_path}\" }}}}")),
        "the template must read the Nomad Variable {variable_path}:\n{data}"
    );
    for (item, env) in [
        ("webhook_secret", "WEBHOOK_SECRET"),
        ("redis_url", "REDIS_URL"),
        ("redis_cluster_url", "REDIS_CLUSTER_URL"),
        ("redis_password", "REDIS_PASSWORD"),
        ("redis_tls_ca_base64", "REDIS_TLS_CA_BASE64"),
        ("redis_tls_enabled", "REDIS_TLS_ENABLED"),
        ("admin_token", "ADMIN_TOKEN"),
        ("webhook_secrets_key", "WEBHOOK_SECRETS_KEY"),
    ] {
        assert!(
            data.contains(&format!(".{item}.Value")) && data.contains(&format!("{env}=")),
            "the template must render {env} from the item {item}:\n{data}"
        );
    }

    // With the admin API on, the command line in the task asks the service, which then keeps its
    // outbox file to itself: the template gives it the address, beside the token.
    let admin = &data[data.find(".admin_token.Value").expect("the admin token")..];
    let admin = &admin[..admin
        .find("{{- end }}")
        .expect("the end of the admin block")];
    assert!(
        admin.contains("ADMIN_URL=") && admin.contains(r#"(env "NOMAD_ADDR_http")"#),
        "the template must set ADMIN_URL to the task's own port with the admin token:\n{data}"
    );
    assert!(
        admin.contains(r#"OUTBOX_EXCLUSIVE="true""#),
        "with the admin API the outbox must be held exclusively:\n{data}"
    );

    // The items the template reads are the ones Terraform writes.
    let main = main_tf();
    let vars = sample_tfvars();
    let ctx = tf_context(&vars, &tf_locals(&main, &vars));
    let variable = resource(&main, "nomad_variable").body();
    assert_eq!(
        eval(required_attr(variable, "path"), &ctx),
        Value::from(variable_path)
    );
    assert_eq!(
        eval(required_attr(variable, "namespace"), &ctx),
        Value::from(SAMPLE_NAMESPACE),
        "the variable must be in the job's namespace"
    );
    let items = eval(required_attr(variable, "items"), &ctx);
    let items = items.as_object().expect("items is a map");
    let expected_redis = format!("redis://:{SAMPLE_REDIS_PASSWORD}@redis.service.consul:6379");
    assert_eq!(
        items.get("webhook_secret").and_then(Value::as_str),
        Some(SAMPLE_WEBHOOK_SECRET)
    );
    assert_eq!(
        items.get("redis_url").and_then(Value::as_str),
        Some(expected_redis.as_str())
    );
    // Every `.<item>.Value` the template reads is an item Terraform writes.
    let referenced: BTreeSet<&str> = data
        .match_indices(".Value")
        .map(|(end, _)| {
            let start = data[..end]
                .rfind(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .map_or(0, |i| i + 1);
            &data[start..end]
        })
        .collect();
    assert!(referenced.contains("webhook_secret"), "{referenced:?}");
    for name in &referenced {
        assert!(
            items.contains_key(*name),
            "template reads an item Terraform does not write: {name}"
        );
    }

    // Unset secrets are left out of the variable rather than stored empty.
    let mut without_cluster = vars.clone();
    without_cluster.insert("redis_cluster_url".to_owned(), Value::from(""));
    let items = eval(
        required_attr(variable, "items"),
        &tf_context(&without_cluster, &tf_locals(&main, &without_cluster)),
    );
    let keys: Vec<&String> = items.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "webhook_secret",
            "redis_url",
            "redis_password",
            "redis_tls_ca_base64",
            "redis_tls_enabled",
            "admin_token",
            "postgres_connection_string",
            "webhook_secrets_key",
            "auth_provider_config"
        ]
    );
}

#[test]
fn no_secret_reaches_the_jobspec() {
    let d = sample_deployment();
    for secret in [
        SAMPLE_WEBHOOK_SECRET,
        SAMPLE_REDIS_PASSWORD,
        SAMPLE_CLUSTER_PASSWORD,
        SAMPLE_POSTGRES,
        SAMPLE_ADMIN_TOKEN,
        SAMPLE_SECRETS_KEY,
    ] {
        assert!(
            !d.text.contains(secret),
            "the rendered jobspec contains the secret {secret:?}"
        );
        assert!(
            !d.template_args
                .values()
                .any(|v| v.to_string().contains(secret)),
            "a templatefile() argument carries the secret {secret:?}"
        );
    }

    // Nor is a secret variable passed under another name.
    let main = main_tf();
    let (_, args) = templatefile_call(&main);
    for (key, value) in args.iter() {
        let mut refs = BTreeSet::new();
        expr_refs(value, &mut refs);
        for secret in SECRET_VARIABLES {
            assert!(
                !refs.contains(&format!("var.{secret}")),
                "templatefile() argument {} reads var.{secret}",
                object_key(key)
            );
        }
    }

    // And the environment block sets none of the secret variables.
    let env = d.env();
    for key in [
        "WEBHOOK_SECRET",
        "REDIS_URL",
        "REDIS_CLUSTER_URL",
        "NOMAD_TOKEN",
        "ADMIN_TOKEN",
    ] {
        assert!(
            !env.contains_key(key),
            "{key} must not be set in the jobspec"
        );
    }
}

#[test]
fn environment_carries_the_settings() {
    let d = sample_deployment();
    let env = d.env();
    assert_eq!(
        env["WEBHOOK_URL"],
        "https://app.example.com/api/webhooks/e2b"
    );
    assert_eq!(env["WEBHOOK_FORMAT"], "x-e2b-signature");
    assert_eq!(env["WEBHOOK_SIGNATURE_ENCODING"], "url-safe");
    assert!(
        !env.contains_key("WEBHOOK_ID"),
        "derived from the endpoint id"
    );
    assert_eq!(env["WEBHOOK_EVENTS"], "create,kill,pause,resume");
    assert_eq!(env["E2B_TEAM_IDS"], SAMPLE_TEAM);
    assert_eq!(env["REDIS_STREAM"], "sandbox.events.stream");
    // The orchestrators' service registrations are read in the job's own
    // namespace (what a workload identity may read), through the local Task
    // API socket by default.
    assert_eq!(env["NOMAD_NAMESPACE"], SAMPLE_NAMESPACE);
    assert_eq!(env["ORCHESTRATOR_SERVICE"], "orchestrator");
    assert_eq!(env["NOMAD_ADDR"], "unix://${NOMAD_SECRETS_DIR}/api.sock");
    // A consumer name that a replacement allocation inherits.
    assert_eq!(env["REDIS_CONSUMER"], "${NOMAD_ALLOC_NAME}");
}

#[test]
fn redis_tls_settings_reach_the_task_as_the_orchestrator_reads_them() {
    let d = sample_deployment();
    // Through the Nomad Variable (issue 12), never as plain env in the jobspec.
    assert!(!d.env().contains_key("REDIS_TLS_ENABLED"));
    assert!(!d.env().contains_key("REDIS_TLS_CA_BASE64"));

    // E2B on GCP: a cluster node as host:port, TLS, a private CA.
    let mut vars = sample_tfvars();
    vars.insert("redis_url".to_owned(), Value::from(""));
    vars.insert(
        "redis_cluster_url".to_owned(),
        Value::from("10.128.0.3:6379"),
    );
    vars.insert("redis_tls_enabled".to_owned(), Value::Bool(true));
    vars.insert(
        "redis_tls_ca_base64".to_owned(),
        Value::from("LS0tLS1CRUdJTg=="),
    );
    vars.insert(
        "redis_password".to_owned(),
        Value::from(SAMPLE_REDIS_PASSWORD),
    );
    let d = deploy(&vars);
    assert!(!d.env().contains_key("REDIS_TLS_ENABLED"));
    assert!(
        !d.text.contains(SAMPLE_REDIS_PASSWORD) && !d.text.contains("LS0tLS1CRUdJTg=="),
        "the password and the CA stay out of the jobspec"
    );
    let main = main_tf();
    let items = eval(
        required_attr(resource(&main, "nomad_variable").body(), "items"),
        &tf_context(&vars, &tf_locals(&main, &vars)),
    );
    let items = items.as_object().unwrap();
    assert_eq!(items["redis_tls_enabled"], Value::from("true"));
    assert_eq!(
        items["redis_tls_ca_base64"],
        Value::from("LS0tLS1CRUdJTg==")
    );
    assert_eq!(items["redis_cluster_url"], Value::from("10.128.0.3:6379"));

    // The orchestrator's rules hold before anything is deployed.
    let main = main_tf();
    let variable = resource(&main, "nomad_variable").body();
    let lifecycle = one_block(variable, "lifecycle").body();
    let preconditions_hold = |vars: &Map<String, Value>| {
        let ctx = tf_context(vars, &tf_locals(&main, vars));
        blocks(lifecycle, "precondition")
            .all(|p| eval(required_attr(p.body(), "condition"), &ctx) == Value::Bool(true))
    };
    assert!(preconditions_hold(&vars));
    let mut no_tls = vars.clone();
    no_tls.insert("redis_tls_enabled".to_owned(), Value::Bool(false));
    assert!(
        !preconditions_hold(&no_tls),
        "a CA or a password without TLS"
    );
    no_tls.insert("redis_tls_ca_base64".to_owned(), Value::from(""));
    no_tls.insert("redis_password".to_owned(), Value::from(""));
    assert!(preconditions_hold(&no_tls));
}

#[test]
fn optional_settings_are_omitted_when_empty() {
    let mut vars = sample_tfvars();
    vars.insert("artifact_checksum".to_owned(), Value::from(""));
    vars.insert("team_ids".to_owned(), Value::Array(Vec::new()));
    let d = deploy(&vars);
    let artifact = one_block(d.task().body(), "artifact").body();
    assert_eq!(blocks(artifact, "options").count(), 0);
    assert!(!d.env().contains_key("E2B_TEAM_IDS"));

    // An e2b-cloud endpoint with the webhook id of the receiver's choice.
    let mut vars = sample_tfvars();
    let webhook_id = "6f1c2d3e-4b5a-4c69-8d7e-0f1a2b3c4d5e";
    vars.insert("webhook_format".to_owned(), Value::from("e2b-cloud"));
    vars.insert("webhook_id".to_owned(), Value::from(webhook_id));
    vars.insert(
        "webhook_signature_encoding".to_owned(),
        Value::from("standard-padded"),
    );
    let env = deploy(&vars).env();
    assert_eq!(env["WEBHOOK_ID"], webhook_id);
    assert_eq!(env["WEBHOOK_SIGNATURE_ENCODING"], "standard-padded");

    // Several teams are passed comma-separated.
    let mut vars = sample_tfvars();
    let other_team = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    vars.insert(
        "team_ids".to_owned(),
        Value::Array(vec![SAMPLE_TEAM.into(), other_team.into()]),
    );
    assert_eq!(
        deploy(&vars).env()["E2B_TEAM_IDS"],
        format!("{SAMPLE_TEAM},{other_team}")
    );
}

#[test]
fn job_env_keys_are_accepted_by_the_binary() {
    let accepted = binary_env_names();
    let env = sample_deployment().env();
    let unknown: Vec<&String> = env.keys().filter(|k| !accepted.contains(*k)).collect();
    assert!(
        unknown.is_empty(),
        "the job sets {unknown:?}, which `e2b-webhook-emitter run --help` does not list \
         (it lists {accepted:?})"
    );
    // And the secrets the template provides are read by the binary too.
    for key in [
        "WEBHOOK_SECRET",
        "REDIS_URL",
        "REDIS_CLUSTER_URL",
        "NOMAD_TOKEN",
    ] {
        assert!(accepted.contains(key), "the binary does not read {key}");
    }
}

/// Replaces the Nomad runtime interpolations the job uses with what the
/// client would provide; any other `${...}` is an error.
fn nomad_runtime_interpolate(value: &str, runtime: &[(&str, String)]) -> String {
    let mut out = value.to_owned();
    for (name, replacement) in runtime {
        out = out.replace(&format!("${{{name}}}"), replacement);
    }
    assert!(
        !out.contains("${"),
        "{value:?} uses a Nomad runtime value this test does not know"
    );
    out
}

fn free_local_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}

#[test]
fn binary_accepts_the_job_environment() {
    let d = sample_deployment();
    let task = d.task().body();
    let config = one_block(task, "config").body();
    let command = str_attr(config, "command");
    let args = strings(&literal(required_attr(config, "args")));
    assert_eq!(command, "local/e2b-webhook-emitter");

    // What the Nomad client provides at runtime.
    let alloc = tempfile::tempdir().expect("temporary directory");
    let secrets_dir = alloc.path().join("emitter/secrets");
    std::fs::create_dir_all(alloc.path().join("alloc/data")).unwrap();
    std::fs::create_dir_all(&secrets_dir).unwrap();
    let runtime = [
        (
            "NOMAD_ALLOC_DIR",
            alloc.path().join("alloc").display().to_string(),
        ),
        ("NOMAD_SECRETS_DIR", secrets_dir.display().to_string()),
        (
            "NOMAD_ADDR_http",
            format!("127.0.0.1:{}", free_local_port()),
        ),
        ("NOMAD_ADDR_api", format!("127.0.0.1:{}", free_local_port())),
        ("NOMAD_ALLOC_NAME", format!("{SAMPLE_JOB_NAME}.emitter[0]")),
    ];
    let mut env: Map<String, String> = d
        .env()
        .into_iter()
        .map(|(k, v)| {
            let v = nomad_runtime_interpolate(&v, &runtime);
            (k, v)
        })
        .collect();
    // What the template and the workload identity add (Redis: a closed port).
    env.insert("WEBHOOK_SECRET".into(), SAMPLE_WEBHOOK_SECRET.into());
    env.insert("WEBHOOK_SECRETS_KEY".into(), SAMPLE_SECRETS_KEY.into());
    env.insert(
        "REDIS_URL".into(),
        format!(
            "redis://:{SAMPLE_REDIS_PASSWORD}@127.0.0.1:{}",
            free_local_port()
        ),
    );
    env.insert("NOMAD_TOKEN".into(), SAMPLE_NOMAD_TOKEN.into());
    env.insert(
        "POSTGRES_CONNECTION_STRING".into(),
        format!(
            "postgresql://e2b:SAMPLE-postgres-password-3e7f@127.0.0.1:{}/e2b",
            free_local_port()
        ),
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_e2b-webhook-emitter"))
        .args(&args)
        .env_clear()
        .envs(&env)
        .current_dir(alloc.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting e2b-webhook-emitter run");
    // A configuration error ends the process at once with exit code 2; a
    // valid configuration keeps it running (or failing later, on I/O).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the emitter") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            child.kill().expect("stopping the emitter");
            child.wait().expect("waiting for the emitter");
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let output = child.wait_with_output().expect("emitter output");
    let logs = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    assert_ne!(
        status.and_then(|s| s.code()),
        Some(2),
        "the binary rejects the job's configuration:\n{logs}"
    );
    for secret in [
        SAMPLE_WEBHOOK_SECRET,
        SAMPLE_REDIS_PASSWORD,
        SAMPLE_NOMAD_TOKEN,
        "SAMPLE-postgres-password-3e7f",
        SAMPLE_SECRETS_KEY,
    ] {
        assert!(
            !logs.contains(secret),
            "the emitter logged a secret:\n{logs}"
        );
    }
}

// ---------------------------------------------------------------------------
// Tests: the Terraform module

#[test]
fn templatefile_call_passes_exactly_the_template_variables() {
    let source = read(JOB_TEMPLATE);
    let template = Template::from_str(&source).expect("the job template parses as a template");
    let mut used = BTreeSet::new();
    template_refs(&template, &mut used);
    let used: BTreeSet<String> = used.into_iter().filter(|r| !r.contains('.')).collect();

    let main = main_tf();
    let (_, args) = templatefile_call(&main);
    let passed: BTreeSet<String> = args.iter().map(|(k, _)| object_key(k)).collect();

    let missing: Vec<_> = used.difference(&passed).collect();
    assert!(
        missing.is_empty(),
        "the template uses {missing:?}, which main.tf does not pass"
    );
    let unused: Vec<_> = passed.difference(&used).collect();
    assert!(
        unused.is_empty(),
        "main.tf passes {unused:?}, which the template does not use"
    );

    // The renderer really does reject a missing variable.
    let mut args = sample_deployment().template_args;
    args.shift_remove("job_name");
    assert!(render_template(&args).is_err());
}

#[test]
fn secret_variables_are_sensitive() {
    let variables = tf_variables();
    for name in SECRET_VARIABLES {
        let variable = variables
            .get(name)
            .unwrap_or_else(|| panic!("variable {name} is missing"));
        assert!(
            attr(variable.block.body(), "sensitive")
                .is_some_and(|e| literal(e) == Value::Bool(true)),
            "variable {name} must be sensitive = true"
        );
    }
    for (name, variable) in &variables {
        let body = variable.block.body();
        assert!(attr(body, "type").is_some(), "variable {name} has no type");
        assert!(
            attr(body, "description")
                .is_some_and(|d| literal(d).as_str().is_some_and(|s| s.len() > 10)),
            "variable {name} has no description"
        );
        // Only the secrets may be sensitive: anything else would hide
        // useful plan output for no reason.
        if !SECRET_VARIABLES.contains(&name.as_str()) {
            assert!(
                attr(body, "sensitive").is_none_or(|e| literal(e) == Value::Bool(false)),
                "variable {name} should not be sensitive"
            );
        }
    }
    for name in [
        "webhook_url",
        "webhook_secret",
        "webhook_format",
        "webhook_events",
        "team_ids",
        "redis_url",
        "postgres_connection_string",
        "ingress_host_rule",
        "task_user",
        "node_pool_size",
        "webhook_ca_pem",
        "artifact_url",
        "artifact_checksum",
        "datacenters",
        "node_pool",
        "namespace",
        "instance_count",
        "job_name",
    ] {
        assert!(variables.contains_key(name), "variable {name} is missing");
    }
}

/// The `validation` condition of `name`, with its error message.
fn validation(name: &str) -> (Expression, String) {
    let variables = tf_variables();
    let variable = variables
        .get(name)
        .unwrap_or_else(|| panic!("variable {name} is missing"));
    // Several validation blocks count as their conjunction.
    let validations: Vec<&Block> = blocks(variable.block.body(), "validation").collect();
    assert!(!validations.is_empty(), "variable {name} has no validation");
    let message = str_attr(validations[0].body(), "error_message");
    let condition = validations
        .iter()
        .map(|v| required_attr(v.body(), "condition").clone())
        .reduce(|a, b| {
            Expression::from(Operation::Binary(hcl::expr::BinaryOp::new(
                a,
                hcl::expr::BinaryOperator::And,
                b,
            )))
        })
        .unwrap();
    (condition, message)
}

/// Evaluates the validation of `name` for `value`, the only variable a
/// validation may read in Terraform 1.5.
fn validates(name: &str, value: Value) -> bool {
    let (condition, _) = validation(name);
    let mut vars = Map::new();
    vars.insert(name.to_owned(), value);
    match eval(&condition, &tf_context(&vars, &Map::new())) {
        Value::Bool(b) => b,
        other => panic!("validation of {name} gives {other}"),
    }
}

#[test]
fn webhook_url_is_validated_as_an_http_url() {
    let (condition, message) = validation("webhook_url");
    let text = fmt_expr(&condition);
    // Terraform's regex() cannot be evaluated here; check the expression.
    // Empty (no operator endpoint: registered webhooks only) or an http(s) URL.
    assert!(
        text.starts_with("var.webhook_url == \"\" || can(regex(\"^https?://"),
        "webhook_url must be validated by an anchored http(s) regex, found {text}"
    );
    assert!(text.contains("var.webhook_url"));
    assert!(
        text.trim_end().ends_with("$\", var.webhook_url))"),
        "{text}"
    );
    assert!(message.contains("http://") && message.contains("https://"));
}

#[test]
fn webhook_secret_must_be_long_enough() {
    let (_, message) = validation("webhook_secret");
    assert!(message.contains("32"));
    let long = "a".repeat(32);
    assert!(validates("webhook_secret", Value::from(long.as_str())));
    assert!(validates(
        "webhook_secret",
        Value::from("0123456789abcdef".repeat(4))
    ));
    assert!(!validates("webhook_secret", Value::from("a".repeat(31))));
    // Empty is valid here (no operator endpoint); main.tf requires it with webhook_url.
    assert!(validates("webhook_secret", Value::from("")));
    assert!(validates("webhook_secret", Value::from(" ")));
    // Rotation lists: every secret must be long enough.
    assert!(validates(
        "webhook_secret",
        Value::from(format!("{long} {}", "b".repeat(40)))
    ));
    assert!(!validates(
        "webhook_secret",
        Value::from(format!("{long} short"))
    ));
}

#[test]
fn other_inputs_are_validated() {
    for format in ["x-e2b-signature", "e2b-cloud", "standard-webhooks"] {
        assert!(validates("webhook_format", Value::from(format)));
    }
    for format in ["", "hmac", "X-E2B-Signature"] {
        assert!(!validates("webhook_format", Value::from(format)));
    }
    for encoding in ["url-safe", "standard", "standard-padded"] {
        assert!(validates(
            "webhook_signature_encoding",
            Value::from(encoding)
        ));
    }
    assert!(!validates("webhook_signature_encoding", Value::from("hex")));

    let events = |list: &[&str]| Value::Array(list.iter().map(|&e| e.into()).collect());
    assert!(validates("webhook_events", events(&["create", "kill"])));
    assert!(validates(
        "webhook_events",
        events(&["update", "checkpoint"])
    ));
    assert!(validates("webhook_events", events(&["*"])));
    assert!(!validates("webhook_events", events(&[])));
    assert!(!validates("webhook_events", events(&["create", "destroy"])));
    // E2B's type names, as its webhook registration takes them.
    assert!(validates(
        "webhook_events",
        events(&[
            "sandbox.lifecycle.created",
            "sandbox.lifecycle.checkpointed"
        ])
    ));
    assert!(!validates("webhook_events", events(&["lifecycle.created"])));

    assert!(validates("instance_count", Value::from(1u64)));
    assert!(validates("instance_count", Value::from(3u64)));
    assert!(!validates("instance_count", Value::from(0u64)));
    assert!(!validates("instance_count", Value::from(1.5)));

    let (team_ids, _) = validation("team_ids");
    let text = fmt_expr(&team_ids);
    assert!(
        text.contains("[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-") && text.contains("var.team_ids"),
        "team_ids must be validated as UUIDs, found {text}"
    );
    for good in [
        "redis.service.consul:6379",
        "redis://10.0.0.5:6379",
        "rediss://redis.example.com:6380",
        "",
    ] {
        assert!(validates("redis_url", Value::from(good)), "{good}");
    }
    assert!(!validates("redis_url", Value::from("http://redis:6379")));
    assert!(!validates("redis_url", Value::from("redis.service.consul")));

    let teams = |list: &[&str]| Value::Array(list.iter().map(|&e| e.into()).collect());
    assert!(validates("team_ids", teams(&[SAMPLE_TEAM])));
    // Empty is valid here (registered webhooks open their teams); main.tf requires a team
    // with webhook_url when the events API is off.
    assert!(validates("team_ids", teams(&[])));
    assert!(!validates("team_ids", teams(&["not-a-uuid"])));

    // At most 59: "<job_name>-api" must stay a valid service name.
    for good in ["e2b-webhook-emitter", "a", &"a".repeat(59)] {
        assert!(validates("job_name", Value::from(good)), "{good}");
    }
    for bad in ["-emitter", "emitter-", "e2b_emitter", "", &"a".repeat(60)] {
        assert!(!validates("job_name", Value::from(bad)), "{bad}");
    }
    assert!(!validates(
        "artifact_url",
        Value::from("https://artifacts.example.com/%{if true}x%{endif}.tar.gz")
    ));
    assert!(validates(
        "artifact_url",
        Value::from("gcs::https://www.googleapis.com/storage/v1/bucket/e2b%2Femitter.tar.gz")
    ));
    for url in ["10.128.0.3:6379", "rediss://redis.example.com:6380", ""] {
        assert!(validates("redis_cluster_url", Value::from(url)), "{url}");
    }
    assert!(!validates(
        "redis_cluster_url",
        Value::from("http://redis:6379")
    ));
    let (checksum, _) = validation("artifact_checksum");
    assert!(fmt_expr(&checksum).contains("^sha256:[0-9a-f]{64}$"));

    for good in [Value::Null, 1.into(), 3.into()] {
        assert!(validates("node_pool_size", good.clone()), "{good}");
    }
    for bad in [0.into(), Value::from(1.5)] {
        assert!(!validates("node_pool_size", bad.clone()), "{bad}");
    }
    for good in ["nobody", "e2b-emitter", "_svc"] {
        assert!(validates("task_user", Value::from(good)), "{good}");
    }
    for bad in ["root", "", "Nobody", "a b", "x\"y"] {
        assert!(!validates("task_user", Value::from(bad)), "{bad}");
    }
    for good in ["", "postgresql://u:p@db:5432/e2b", " postgres://db/e2b\n"] {
        assert!(
            validates("postgres_connection_string", Value::from(good)),
            "{good}"
        );
    }
    assert!(!validates(
        "postgres_connection_string",
        Value::from("mysql://db/e2b")
    ));
    for good in [
        "",
        "HostRegexp(`api.{domain:.+}`)",
        "Host(`api.example.com`)",
        "Host(`a.example.com`, `b.example.com`)",
    ] {
        assert!(validates("ingress_host_rule", Value::from(good)), "{good}");
    }
    for bad in [
        "Host(`a.example.com`) || PathPrefix(`/`)",
        "Host(`a\"b`)",
        "Host(`${x}`)",
        "PathPrefix(`/`)",
    ] {
        assert!(!validates("ingress_host_rule", Value::from(bad)), "{bad}");
    }
    assert!(validates("webhook_ca_pem", Value::from("")));
    assert!(validates(
        "webhook_ca_pem",
        Value::from("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n")
    ));
    assert!(!validates("webhook_ca_pem", Value::from("ca.pem")));
}

#[test]
fn no_acl_policy_is_needed() {
    // The workload identity's implicit policy reads the job's variable and the
    // orchestrators' service registrations; read-job would expose E2B's api job.
    let main = main_tf();
    assert!(
        blocks(&main, "resource").all(|r| r.labels()[0].as_str() != "nomad_acl_policy"),
        "the module must not create an ACL policy"
    );
}

#[test]
fn job_is_registered_after_its_secrets() {
    let main = main_tf();
    let job = resource(&main, "nomad_job").body();
    let depends_on = fmt_expr(required_attr(job, "depends_on"));
    assert!(
        depends_on.contains("nomad_variable."),
        "nomad_job must depend on the variable, found {depends_on}"
    );

    // No provider configuration of its own: the caller's Nomad provider is used, so the module
    // can be called with count (E2B's drop-in does) and inherits E2B's ACL token.
    for file in [
        "terraform/main.tf",
        "terraform/versions.tf",
        "terraform/outputs.tf",
    ] {
        assert_eq!(blocks(&parse(file), "provider").count(), 0, "{file}");
    }
}

#[test]
fn versions_pin_terraform_and_the_nomad_provider() {
    let versions = parse("terraform/versions.tf");
    let terraform = one_block(&versions, "terraform").body();
    let required = str_attr(terraform, "required_version");
    assert!(required.contains(">= 1.5"), "required_version = {required}");

    let providers = one_block(terraform, "required_providers").body();
    let nomad = literal(required_attr(providers, "nomad"));
    let nomad = nomad.as_object().expect("nomad = { source, version }");
    assert_eq!(nomad["source"], Value::from("hashicorp/nomad"));
    let version = nomad["version"].as_str().expect("a version constraint");
    assert!(
        version.starts_with("~> 2.")
            && version[5..].chars().all(|c| c.is_ascii_digit() || c == '.'),
        "the nomad provider should be pinned to 2.x, found {version:?}"
    );
}
