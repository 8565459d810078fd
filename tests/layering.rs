//! Issue 18: arrows only point down. Every `crate::…` path in `src/` is read, each file is mapped
//! to its layer as the README's "How the code is laid out" lists them, and the test fails naming
//! the file and the arrow when a module reaches up — or sideways into a sibling of its layer.
//! And one concern per file: a file over 400 lines of code fails unless it says why; and the
//! README's section names only files that are there.

use std::path::Path;

/// Layers from the bottom. A module may use its own top-level module and any module of a lower
/// layer; the application layer's modules (the wiring) may also use each other.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundation",
        &[
            "util",
            "event",
            "metrics",
            "health",
            "cluster",
            "team_scope",
        ],
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
const APP: usize = 6;

fn layer(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

/// Why `from` may not use `to`, if it may not.
fn forbidden(from: &str, to: &str) -> Option<String> {
    if from == to {
        return None;
    }
    let (Some(a), Some(b)) = (layer(from), layer(to)) else {
        return Some(format!(
            "{} is in no layer: add it to LAYERS here and to the README's \"How the code is laid out\"",
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

/// The files and folders the README's "How the code is laid out" names (in backticks): `a.rs`,
/// `folder/`, `source/{redis,nomad,file}`; patterns (`tests/*.rs`) and words (`run`) are left out.
fn layout_paths(readme: &str) -> Vec<String> {
    let start = readme
        .find("## How the code is laid out")
        .expect("the README has a section \"How the code is laid out\"");
    let section = &readme[start..];
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
fn every_file_the_readme_layout_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let paths = layout_paths(&readme);
    assert!(paths.len() > 20, "found only {paths:?}");
    let missing: Vec<&String> = paths.iter().filter(|p| !exists(root, &files, p)).collect();
    assert!(
        missing.is_empty(),
        "the README's \"How the code is laid out\" names what is not there (moved or renamed?): {missing:?}"
    );
    assert!(
        !exists(root, &files, "store/no_such_file.rs"),
        "the check finds everything"
    );
}
