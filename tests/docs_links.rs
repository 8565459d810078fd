//! Issue 33 item 7: every relative link and every `#anchor` in README.md, BENCHMARKS.md and
//! docs/*.md leads somewhere — the file exists, and the anchor is a heading of the target under
//! GitHub's rules. The markdown is read by pulldown-cmark, so code blocks and inline code are not
//! mistaken for links.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

/// The anchor GitHub gives a heading: lowercase; letters, digits, `-` and `_` kept; spaces to `-`;
/// everything else (punctuation, dashes, symbols) dropped.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a markdown text's headings, a repeated one as GitHub numbers it (`x`, `x-1`…).
fn anchors(markdown: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = Vec::new();
    let mut heading: Option<String> = None;
    for event in Parser::new_ext(markdown, Options::all()) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::Text(text) | Event::Code(text) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&text);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                let base = slug(&heading.take().unwrap_or_default());
                let n = seen.entry(base.clone()).or_insert(0);
                anchors.push(if *n == 0 { base } else { format!("{base}-{n}") });
                *n += 1;
            }
            _ => {}
        }
    }
    anchors
}

/// The destinations of a markdown text's links and images.
fn destinations(markdown: &str) -> Vec<String> {
    Parser::new_ext(markdown, Options::all())
        .filter_map(|event| match event {
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                Some(dest_url.to_string())
            }
            _ => None,
        })
        .collect()
}

/// `path` with `.` and `..` resolved without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// What is wrong with the links of `files` (paths under `root`): one line per broken link.
/// Links with a scheme (`https:`, `mailto:`) are not followed; nor are links that leave the
/// repository (the workplace beside it, e.g. `../shared/specs/`), which a checkout may not have.
fn broken_links(root: &Path, files: &[PathBuf]) -> Vec<String> {
    let mut broken = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        let shown = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        for dest in destinations(&text) {
            if dest.contains(':') {
                continue;
            }
            let (path, anchor) = dest.split_once('#').unwrap_or((&dest, ""));
            let target = if path.is_empty() {
                file.clone()
            } else {
                normalize(&file.parent().unwrap().join(path))
            };
            if !target.starts_with(root) {
                continue;
            }
            if !target.exists() {
                broken.push(format!("{shown}: {dest}: no such file"));
                continue;
            }
            if anchor.is_empty() {
                continue;
            }
            if target.extension().is_none_or(|e| e != "md") {
                broken.push(format!(
                    "{shown}: {dest}: an anchor into a file that is not markdown"
                ));
                continue;
            }
            let headings = anchors(&std::fs::read_to_string(&target).unwrap());
            if !headings.iter().any(|a| a == anchor) {
                broken.push(format!(
                    "{shown}: {dest}: no heading with the anchor #{anchor}"
                ));
            }
        }
    }
    broken
}

fn documents(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md"), root.join("BENCHMARKS.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

#[test]
fn every_relative_link_and_anchor_of_the_documents_resolves() {
    let root = normalize(Path::new(env!("CARGO_MANIFEST_DIR")));
    let files = documents(&root);
    assert!(files.len() > 10, "found only {files:?}");
    let links: usize = files
        .iter()
        .map(|f| destinations(&std::fs::read_to_string(f).unwrap()).len())
        .sum();
    assert!(links > 50, "found only {links} links");
    let broken = broken_links(&root, &files);
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_links_every_page_of_docs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let linked = destinations(&readme);
    for page in documents(root).iter().skip(2) {
        let name = format!("docs/{}", page.file_name().unwrap().to_string_lossy());
        assert!(
            linked
                .iter()
                .any(|d| d.split('#').next() == Some(name.as_str())),
            "the README does not link {name}: a reader could not find it"
        );
    }
}

#[test]
fn anchors_follow_githubs_rules() {
    let markdown = "# Issue 30: a log-structured outbox — today's (2026-12-06)\n\
                    ## `--webhook-url` and ×2\n\
                    ### The run\n\
                    #### The run\n\
                    ```bash\n# not a heading\n```\n\
                    Setext heading\n---\n";
    assert_eq!(
        anchors(markdown),
        [
            "issue-30-a-log-structured-outbox--todays-2026-12-06",
            "--webhook-url-and-2",
            "the-run",
            "the-run-1",
            "setext-heading",
        ]
    );
}

#[test]
fn a_broken_link_or_anchor_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = normalize(dir.path());
    std::fs::create_dir(root.join("docs")).unwrap();
    std::fs::write(root.join("docs/page.md"), "# A page\n## Its part\n").unwrap();
    std::fs::write(root.join("data.json"), "{}").unwrap();
    let readme = root.join("README.md");
    std::fs::write(
        &readme,
        "# Front\n\
         [fine](docs/page.md) [fine](docs/page.md#its-part) [fine](#front) [web](https://e2b.dev)\n\
         [outside the repository](../elsewhere.md) `[in code](missing.md)`\n\
         [missing file](docs/nope.md)\n\
         [missing anchor](docs/page.md#no-part)\n\
         [missing here](#back)\n\
         [anchor in json](data.json#key)\n\
         ![missing image](docs/none.png)\n",
    )
    .unwrap();
    assert_eq!(
        broken_links(&root, &[readme]),
        [
            "README.md: docs/nope.md: no such file",
            "README.md: docs/page.md#no-part: no heading with the anchor #no-part",
            "README.md: #back: no heading with the anchor #back",
            "README.md: data.json#key: an anchor into a file that is not markdown",
            "README.md: docs/none.png: no such file",
        ]
    );
}
