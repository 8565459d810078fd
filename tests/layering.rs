//! Issue 18: arrows only point down. Every `crate::…` path in `src/` is read, each file is mapped
//! to its layer as "How the code is laid out" in docs/architecture.md lists them, and the test
//! fails naming the file and the arrow when a module reaches up — or sideways into a sibling of
//! its layer. And one concern per file: a file over 400 lines of code fails unless it says why;
//! and docs/architecture.md names only files that are there.

use std::path::Path;

/// Layers from the bottom. A module may use its own top-level module and any module of a lower
/// layer; the application layer's modules (the wiring) may also use each other.
const LAYERS: &[(&str, &[&str])] = &[
    // What parts report and others decide on (readiness, the stream's progress); the metrics
    // observe it, so it sits below them.
    ("signals", &["health"]),
    (
        "foundation",
        &["util", "event", "metrics", "cluster", "team_scope"],
    ),
    ("store", &["outbox", "leadership"]),
    (
        "parts",
        &["source", "reconcile", "deliver", "postgres", "user_auth"],
    ),
    ("seams", &["dead_letters"]),
    ("operations", &["admin", "api"]),
    ("pages", &["portal"]),
    ("app", &["service", "server", "config", "demo", "receiver"]),
    ("binary", &["cli", "main", "lib"]),
];
const APP: usize = 7;

fn layer(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

/// Arrows that point down but cross a seam (issue 33): `config` produces settings types and
/// must not reach into the parts it configures for their helpers.
const SEAMS: &[(&str, &str, &str)] = &[
    (
        "config",
        "admin",
        "config produces settings; the admin token is util::admin_token",
    ),
    (
        "config",
        "service",
        "config produces settings; service builds the parts from them, never the reverse",
    ),
];

/// Why `from` may not use `to`, if it may not.
fn forbidden(from: &str, to: &str) -> Option<String> {
    if from == to {
        return None;
    }
    if let Some((_, _, why)) = SEAMS.iter().find(|(a, b, _)| *a == from && *b == to) {
        return Some(format!("{from} → {to}: {why}"));
    }
    let (Some(a), Some(b)) = (layer(from), layer(to)) else {
        return Some(format!(
            "{} is in no layer: add it to LAYERS here and to docs/architecture.md's \"How the code is laid out\"",
            if layer(from).is_none() { from } else { to }
        ));
    };
    let (name_a, name_b) = (LAYERS[a].0, LAYERS[b].0);
    if b > a {
        Some(format!("{from} ({name_a}) → {to} ({name_b}) points up"))
    } else if b == a && a != APP {
        Some(format!(
            "{from} → {to}: siblings in {name_a}; move what both need down a layer"
        ))
    } else {
        None
    }
}

/// The top-level modules a file's code names with `crate::`, comments left out.
fn crate_paths(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let before = rest[..at].chars().last();
            rest = &rest[at + "crate::".len()..];
            // `e2b_webhook_emitter::…` in doc examples and `$crate::` are other crates' paths.
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

/// The top-level module of a file under `src/`.
fn module_of(relative: &Path) -> String {
    let first = relative.components().next().expect("a path under src/");
    let name = first.as_os_str().to_string_lossy();
    name.strip_suffix(".rs").unwrap_or(&name).to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_arrow_in_src_points_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 50, "found only {} files", files.len());
    let mut wrong = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let from = module_of(relative);
        let text = std::fs::read_to_string(file).unwrap();
        let mut seen = Vec::new();
        for to in crate_paths(&text) {
            if let Some(why) = forbidden(&from, &to)
                && !seen.contains(&to)
            {
                wrong.push(format!("src/{}: {why}", relative.display()));
                seen.push(to);
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "arrows that do not point down:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_catches_the_arrows_issue_18_named() {
    // The arrows the code had before this rule: each must be refused.
    for (from, to) in [
        ("source", "service"),
        ("outbox", "config"),
        ("deliver", "config"),
        ("outbox", "server"),
        ("source", "deliver"),
        ("reconcile", "source"),
        ("admin", "config"),
        ("config", "admin"),
    ] {
        assert!(forbidden(from, to).is_some(), "{from} → {to} was allowed");
    }
    // Down, and within the wiring, is fine.
    for (from, to) in [
        ("config", "source"),
        ("service", "config"),
        ("deliver", "outbox"),
        ("outbox", "metrics"),
        ("cli", "service"),
    ] {
        assert_eq!(forbidden(from, to), None, "{from} → {to}");
    }
    assert!(
        forbidden("newthing", "util")
            .unwrap()
            .contains("in no layer")
    );
    let paths = crate_paths(
        "use crate::outbox::Outbox; // crate::config is only mentioned\nlet x = e2b_webhook_emitter::config::X; crate::event::parse(y)",
    );
    assert_eq!(paths, ["outbox", "event"]);
}

/// Issue 18: one concern per file, and about 400 lines of code is where a file is split.
const MAX_CODE_LINES: usize = 400;

/// Lines of code before the unit tests: blank lines and `//` comments (doc comments included)
/// are not counted, and everything from the first top-level `#[cfg(test)]` on is a test.
fn code_lines(source: &str) -> usize {
    source
        .lines()
        .take_while(|line| !line.starts_with("#[cfg(test)]"))
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("//"))
        .count()
}

/// Why the file's one concern needs its size, if its opening comment says so
/// (`//! Size: …`).
fn size_reason(source: &str) -> Option<&str> {
    source
        .lines()
        .take_while(|line| line.starts_with("//!"))
        .find_map(|line| line.strip_prefix("//! Size:"))
        .map(str::trim)
        .filter(|reason| !reason.is_empty())
}

#[test]
fn no_file_in_src_is_over_400_lines_of_code_without_saying_why() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut too_long = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap().to_string_lossy();
        let text = std::fs::read_to_string(file).unwrap();
        let lines = code_lines(&text);
        if lines > MAX_CODE_LINES && size_reason(&text).is_none() {
            too_long.push(format!("src/{relative}: {lines} lines of code"));
        }
    }
    too_long.sort();
    assert!(
        too_long.is_empty(),
        "over {MAX_CODE_LINES} lines of code (before #[cfg(test)], without blank and comment lines): \
         split each by concern, or say at its top why its one concern needs the size (`//! Size: …`):\n{}",
        too_long.join("\n")
    );
}

#[test]
fn the_size_rule_counts_code_before_the_tests_and_reads_the_reason() {
    let source = "//! A module.\n//! Size: one state machine, read top to bottom.\n\nuse a::b;\n\n/// Doc.\nfn f() {\n    // why\n    g();\n}\n#[cfg(test)]\nmod tests {\n    fn t() {}\n}\n";
    assert_eq!(code_lines(source), 4);
    assert_eq!(
        size_reason(source),
        Some("one state machine, read top to bottom.")
    );
    assert_eq!(size_reason("//! A module.\n\n//! Size: too late\n"), None);
    assert_eq!(size_reason("//! Size:\nfn f() {}\n"), None);
    let long = "fn f() {}\n".repeat(MAX_CODE_LINES + 1);
    assert!(code_lines(&long) > MAX_CODE_LINES);
    assert_eq!(code_lines(&format!("#[cfg(test)]\n{long}")), 0);
}

/// The files and folders "How the code is laid out" in docs/architecture.md names (in backticks):
/// `a.rs`, `folder/`, `source/{redis,nomad,file}`; patterns (`tests/*.rs`) and words (`run`) are
/// left out.
fn layout_paths(architecture: &str) -> Vec<String> {
    let start = architecture
        .find("## How the code is laid out")
        .expect("docs/architecture.md has a section \"How the code is laid out\"");
    let section = &architecture[start..];
    let section = &section[..section[3..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 3)];
    let mut paths = Vec::new();
    for quoted in section.split('`').skip(1).step_by(2) {
        if quoted.contains('*') || quoted.contains(' ') {
            continue;
        }
        let expanded: Vec<String> = match (quoted.find('{'), quoted.find('}')) {
            (Some(open), Some(close)) => quoted[open + 1..close]
                .split(',')
                .map(|alt| format!("{}{alt}{}", &quoted[..open], &quoted[close + 1..]))
                .collect(),
            _ => vec![quoted.to_owned()],
        };
        for path in expanded {
            if path.ends_with(".rs") || path.contains('/') {
                paths.push(path);
            }
        }
    }
    paths
}

/// Whether `name` is there: under `src/`, at the repository's root, or (a file named after its
/// folder, as in "`source/redis/mod.rs`, then `group.rs`") somewhere below `src/`; a bare name
/// may also be a folder's module file (`source/file` as `source/file.rs`).
fn exists(root: &Path, files: &[std::path::PathBuf], name: &str) -> bool {
    let bare = name.trim_end_matches('/');
    [root.join("src").join(bare), root.join(bare)]
        .iter()
        .any(|p| p.exists() || p.with_extension("rs").exists())
        || files
            .iter()
            .any(|f| f.ends_with(bare) || f.parent().is_some_and(|dir| dir.ends_with(bare)))
}

#[test]
fn every_file_the_architecture_page_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let architecture = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let paths = layout_paths(&architecture);
    assert!(paths.len() > 20, "found only {paths:?}");
    let missing: Vec<&String> = paths.iter().filter(|p| !exists(root, &files, p)).collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md's \"How the code is laid out\" names what is not there (moved or renamed?): {missing:?}"
    );
    assert!(
        !exists(root, &files, "store/no_such_file.rs"),
        "the check finds everything"
    );
}

/// What `config` may take from `deliver`: the settings types it produces for delivery (issue 33),
/// never a helper (durations are parsed by `util::duration`, for every layer).
const CONFIG_MAY_NAME_IN_DELIVER: &[&str] =
    &["endpoint", "format", "sign", "trust", "retry", "http"];

#[test]
fn config_takes_only_settings_types_from_deliver_and_parses_durations_with_util() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src.join("config"), &mut files);
    assert!(files.len() > 5, "found only {} files", files.len());
    let mut wrong = Vec::new();
    for file in &files {
        let text = code_only(&std::fs::read_to_string(file).unwrap());
        let relative = file.strip_prefix(&src).unwrap().display().to_string();
        for path in module_paths(&text, "crate::") {
            if path.first().map(String::as_str) == Some("deliver")
                && !path
                    .get(1)
                    .is_some_and(|m| CONFIG_MAY_NAME_IN_DELIVER.contains(&m.as_str()))
            {
                wrong.push(format!("src/{relative}: crate::{}", path.join("::")));
            }
        }
        if text.contains("parse_duration") && !text.contains("util::duration::parse_duration") {
            wrong.push(format!(
                "src/{relative}: parse_duration not from util::duration"
            ));
        }
    }
    let mut parsers = Vec::new();
    let mut all = Vec::new();
    rust_files(&src, &mut all);
    for file in &all {
        if std::fs::read_to_string(file)
            .unwrap()
            .contains("fn parse_duration(")
        {
            parsers.push(file.strip_prefix(&src).unwrap().display().to_string());
        }
    }
    assert_eq!(parsers, ["util/duration.rs"], "one duration parser");
    assert!(
        wrong.is_empty(),
        "config reaches past deliver's settings types:\n{}",
        wrong.join("\n")
    );
}

/// A file's text without `//` comments (doc comments included).
fn code_only(source: &str) -> String {
    source
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths named after `prefix` (`crate::` or `super::`), a `{…}` group expanded into
/// one path per item: `super::{store::Store, open}` gives `[store, Store]` and `[open]`.
fn module_paths(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| ident(c) || c == '$' || c == ':') {
            continue;
        }
        let head: String = rest
            .chars()
            .take_while(|c| ident(*c) || *c == ':')
            .collect();
        let segments: Vec<String> = head
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let after = &rest[head.len()..];
        if (head.is_empty() || head.ends_with("::")) && after.starts_with('{') {
            let mut depth = 0;
            let end = after
                .char_indices()
                .find(|(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(after.len(), |(i, _)| i);
            let mut depth = 0;
            let mut item = String::new();
            for c in after[1..end].chars().chain([',']) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let tail: Vec<String> = item
                            .trim()
                            .split("::")
                            .map(|s| s.trim().trim_start_matches('{').to_owned())
                            .take_while(|s| !s.is_empty() && s.chars().all(ident))
                            .collect();
                        if !tail.is_empty() && tail[0] != "self" {
                            found.push([segments.clone(), tail].concat());
                        }
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
        } else if !segments.is_empty() {
            found.push(segments);
        }
    }
    found
}

/// The module path of a file under `src/`: `a/b.rs` and `a/b/mod.rs` are `[a, b]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.strip_suffix(".rs").unwrap_or(&last).to_owned();
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem);
    }
    parts
}

/// The file of the deepest module along `path` that is a file of `src/`.
fn deepest_file(src: &Path, path: &[String]) -> Option<std::path::PathBuf> {
    let mut best = None;
    for depth in 1..=path.len() {
        let dir: std::path::PathBuf = path[..depth].iter().collect();
        let as_file = src.join(&dir).with_extension("rs");
        let as_folder = src.join(&dir).join("mod.rs");
        match (as_file.exists(), as_folder.exists()) {
            (true, _) => best = Some(as_file),
            (_, true) => best = Some(as_folder),
            _ => break,
        }
    }
    best
}

/// The files each file of `src/` imports, a module's own parents and children left out (they
/// are one unit: a folder's `mod.rs` and its files).
fn file_imports(src: &Path) -> Vec<(String, Vec<String>)> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut edges = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(src).unwrap();
        let module = module_path(relative);
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        let mut targets: Vec<String> = Vec::new();
        let parent = &module[..module.len().saturating_sub(1)];
        let named = module_paths(&code, "crate::").into_iter().chain(
            module_paths(&code, "super::")
                .into_iter()
                .map(|p| [parent.to_vec(), p].concat()),
        );
        for path in named {
            let Some(target) = deepest_file(src, &path) else {
                continue;
            };
            let target_module = module_path(target.strip_prefix(src).unwrap());
            let related = target_module.starts_with(&module) || module.starts_with(&target_module);
            let name = target.strip_prefix(src).unwrap().display().to_string();
            if !related && !targets.contains(&name) {
                targets.push(name);
            }
        }
        edges.push((relative.display().to_string(), targets));
    }
    edges
}

/// Pairs of files that import each other (each pair once).
fn mutual_imports(edges: &[(String, Vec<String>)]) -> Vec<String> {
    let mut pairs = Vec::new();
    for (a, targets) in edges {
        for b in targets {
            let back = edges.iter().any(|(from, to)| from == b && to.contains(a));
            if back && a < b {
                pairs.push(format!("src/{a} ⇄ src/{b}"));
            }
        }
    }
    pairs
}

#[test]
fn no_two_files_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = file_imports(&src);
    assert!(
        edges.iter().filter(|(_, to)| !to.is_empty()).count() > 50,
        "the import reader finds imports"
    );
    let pairs = mutual_imports(&edges);
    assert!(
        pairs.is_empty(),
        "files that import each other (move what both need to a third file):\n{}",
        pairs.join("\n")
    );
}

#[test]
fn the_cycle_check_reads_grouped_imports_and_finds_a_pair() {
    let paths = module_paths(
        "use super::{store::Store, open, DeadLetter};\nuse crate::deliver::format::{self, WireFormat};",
        "super::",
    );
    assert_eq!(
        paths,
        [vec!["store", "Store"], vec!["open"], vec!["DeadLetter"]]
    );
    let edges = vec![
        (
            "source/nomad/client.rs".to_owned(),
            vec!["source/nomad/stream.rs".to_owned()],
        ),
        (
            "source/nomad/stream.rs".to_owned(),
            vec!["source/nomad/client.rs".to_owned()],
        ),
        ("a.rs".to_owned(), vec!["b.rs".to_owned()]),
    ];
    assert_eq!(
        mutual_imports(&edges),
        ["src/source/nomad/client.rs ⇄ src/source/nomad/stream.rs"]
    );
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    assert_eq!(
        deepest_file(
            &src,
            &["source".into(), "nomad".into(), "NomadError".into()]
        ),
        Some(src.join("source/nomad/mod.rs"))
    );
}

/// The backticked files of docs/architecture.md's subsection `### {title}` that are not patterns.
fn recipe_files(architecture: &str, title: &str) -> Vec<String> {
    let heading = format!("### {title}\n");
    let start = architecture
        .find(&heading)
        .unwrap_or_else(|| panic!("docs/architecture.md has a subsection \"{title}\""));
    let section = &architecture[start + heading.len()..];
    let section = &section[..section.find("\n##").unwrap_or(section.len())];
    section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|q| q.ends_with(".rs") && !q.contains('*') && !q.contains(' '))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_architecture_page_names_the_files_to_touch_for_a_wire_format_and_a_source() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let architecture = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let exists = |name: &String| root.join("src").join(name).exists() || root.join(name).exists();
    for (title, must_name) in [
        (
            "To add a wire format",
            &["deliver/format.rs", "tests/wire_formats.rs"][..],
        ),
        ("To add a source", &["source/mod.rs", "service/mod.rs"][..]),
    ] {
        let files = recipe_files(&architecture, title);
        for name in must_name {
            assert!(
                files.iter().any(|f| f == name),
                "\"{title}\" names {name}: {files:?}"
            );
        }
        let missing: Vec<&String> = files.iter().filter(|f| !exists(f)).collect();
        assert!(
            missing.is_empty(),
            "\"{title}\" names what is not there: {missing:?}"
        );
    }
    // Each registered format is one file of deliver/format/, as the recipe says.
    let registry = std::fs::read_to_string(root.join("src/deliver/format.rs")).unwrap();
    let start = registry
        .find("wire_formats! {")
        .expect("the format registry");
    let lines: Vec<&str> = registry[start..]
        .lines()
        .take_while(|l| *l != "}")
        .filter_map(|l| l.split_once("=> ").map(|(_, path)| path))
        .collect();
    assert!(lines.len() >= 3, "found {lines:?}");
    for path in lines {
        let module = path.split("::").next().unwrap();
        assert!(
            root.join("src/deliver/format")
                .join(format!("{module}.rs"))
                .exists(),
            "{path}: no file deliver/format/{module}.rs"
        );
    }
}

#[test]
fn tests_pull_in_their_support_as_one_module_under_one_name() {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut by_path = Vec::new();
    for entry in std::fs::read_dir(&tests).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            if text.contains(concat!("#[path = \"support", "/")) {
                by_path.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    by_path.sort();
    assert!(
        by_path.is_empty(),
        "use `mod support;` and `support::redis::…` instead of #[path] under a local name: {by_path:?}"
    );
    assert!(tests.join("support/mod.rs").exists());
}

/// The files of `src/` with their path below it, and their code without comments and unit
/// tests (a test double may do what the code may not).
fn src_code() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    files
        .iter()
        .map(|f| {
            let relative = f.strip_prefix(&src).unwrap().display().to_string();
            let text = std::fs::read_to_string(f).unwrap();
            let code = text.split("\n#[cfg(test)]").next().unwrap_or_default();
            (relative, code_only(code))
        })
        .collect()
}

/// Issue 33: `service::run` reads as the list of parts started and stopped; building a part
/// from its settings is that part's own file.
const RUN_MAX_LINES: usize = 80;

/// Lines of the top-level function that starts with `signature`, up to its closing brace.
fn function_lines(source: &str, signature: &str) -> Option<usize> {
    let body = &source[source.find(signature)?..];
    let end = body.find("\n}\n")?;
    Some(body[..end].lines().count() + 1)
}

#[test]
fn service_run_is_a_list_of_parts() {
    assert_eq!(
        function_lines(
            "fn a() {\n    b();\n}\nfn run() {\n    x();\n    y();\n}\n",
            "fn run("
        ),
        Some(4)
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/service/mod.rs");
    let text = std::fs::read_to_string(path).unwrap();
    let lines = function_lines(&text, "pub async fn run(").expect("service::run is there");
    assert!(
        lines <= RUN_MAX_LINES,
        "service::run is {lines} lines (at most {RUN_MAX_LINES}): build a part from its settings in \
         a file of its own (service/sources.rs, reconciliation.rs, ops.rs…) and start it from run"
    );
}

/// Only the wiring sees the whole configuration; every part is handed its own settings.
#[test]
fn only_the_wiring_names_run_config() {
    let may = |file: &str| {
        file.starts_with("config/") || file.starts_with("cli/") || file == "service/mod.rs"
    };
    let naming: Vec<String> = src_code()
        .into_iter()
        .filter(|(_, code)| code.contains("RunConfig"))
        .map(|(file, _)| file)
        .collect();
    assert!(naming.iter().any(|f| f == "service/mod.rs"), "{naming:?}");
    let wrong: Vec<&String> = naming.iter().filter(|f| !may(f)).collect();
    assert!(
        wrong.is_empty(),
        "these take the whole RunConfig; hand them their own settings instead: {wrong:?}"
    );
    assert!(forbidden("config", "service").is_some());
}

/// A settings type has one name: the part that uses it defines it, `config` re-exports it
/// under that name (never `pub use … as …`).
#[test]
fn settings_types_have_one_name() {
    let renamed: Vec<String> = src_code()
        .into_iter()
        .filter(|(file, _)| file.starts_with("config/"))
        .flat_map(|(file, code)| {
            code.lines()
                .filter(|l| l.trim_start().starts_with("pub use") && l.contains(" as "))
                .map(|l| format!("src/{file}: {}", l.trim()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        renamed.is_empty(),
        "a type re-exported under a second name:\n{}",
        renamed.join("\n")
    );
}

/// Metrics are observed, never used to decide: readiness is read from `health::Readiness`.
#[test]
fn readiness_is_never_read_from_the_metrics() {
    let reading: Vec<String> = src_code()
        .into_iter()
        .filter(|(file, code)| {
            file != "metrics.rs"
                && (code.contains("metrics().components()")
                    || code.contains("metrics.components()"))
        })
        .map(|(file, _)| file)
        .collect();
    assert!(
        reading.is_empty(),
        "readiness read from the metrics (use the Readiness the parts report to): {reading:?}"
    );
    let server = src_code()
        .into_iter()
        .find(|(file, _)| file == "server/mod.rs")
        .expect("the ops server")
        .1;
    assert!(
        server.contains("readiness.components()"),
        "/readyz reads Readiness"
    );
}

/// Every source starts the same way: through the pipeline, which holds the "may read" gate
/// once; no spawn block waits for it by itself.
#[test]
fn sources_start_through_the_pipeline_and_its_gate() {
    let code = src_code();
    let gate: Vec<&String> = code
        .iter()
        .filter(|(_, c)| c.contains("sources_may_read") || c.contains("hold_sources_until"))
        .map(|(file, _)| file)
        .collect();
    assert_eq!(
        gate,
        ["service/events_api.rs", "service/pipeline.rs"],
        "the gate is set by the events API and held by the pipeline only"
    );
    let implementations: Vec<&String> = code
        .iter()
        .filter(|(_, c)| c.contains("Source for "))
        .map(|(file, _)| file)
        .collect();
    assert!(
        implementations.len() >= 2 && implementations.iter().all(|f| f.starts_with("source/")),
        "every source implements source::Source in source/: {implementations:?}"
    );
}
