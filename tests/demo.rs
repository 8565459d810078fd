//! Issue 16 item 6: `demo`, the README's first command, reads cleanly and its counters agree.

mod common;

/// The numbers in `text` after each of `words`, e.g. "16 delivered" → 16.
fn number_before(text: &str, word: &str) -> u64 {
    let at = text
        .find(&format!(" {word}"))
        .unwrap_or_else(|| panic!("no {word:?} in {text:?}"));
    text[..at]
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number before {word:?} in {text:?}"))
}

/// The value on the summary line that starts with `name`.
fn summary_value(stdout: &str, name: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(name))
        .unwrap_or_else(|| panic!("no summary line {name:?} in\n{stdout}"))
        .trim()
        .to_owned()
}

fn leading_number(value: &str) -> u64 {
    value
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no leading number in {value:?}"))
}

#[test]
fn demo_runs_as_the_readme_says_and_its_counters_agree() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let quickstart = &readme[readme.find("## Quickstart").unwrap()..];
    // The README's first command; `cargo run` runs this same binary with these arguments.
    assert!(quickstart.contains("cargo run --locked -- demo"));
    let (code, stdout, stderr) = common::output(common::emitter().arg("demo"));
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");

    // Nothing but the progress line on stderr: no log line breaks it.
    let progress: Vec<&str> = stderr
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert!(!progress.is_empty(), "no progress line");
    for line in &progress {
        assert!(
            line.starts_with("delivering:"),
            "stderr has something besides the progress line: {line:?}\n{stderr}"
        );
    }
    let last = progress.last().unwrap();

    let lines = summary_value(&stdout, "lines read");
    let total_lines = leading_number(&lines);
    let events = number_before(&lines, "events");
    let malformed = number_before(&lines, "malformed");
    let delivered = leading_number(&summary_value(&stdout, "delivered"));
    let dead = leading_number(&summary_value(&stdout, "dead-lettered"));

    assert_eq!(
        total_lines,
        include_str!("../demo/sample-events.ndjson").lines().count() as u64
    );
    assert_eq!(events + malformed, total_lines, "{stdout}");
    assert_eq!(delivered + dead, events, "{stdout}");
    assert!(
        dead >= 1 && malformed >= 1,
        "the sample shows both: {stdout}"
    );
    // The progress line ends on the summary's figures.
    assert_eq!(number_before(last, "delivered"), delivered, "{last}");
    assert_eq!(number_before(last, "dead-lettered"), dead, "{last}");
    assert_eq!(number_before(last, "pending"), 0, "{last}");
    assert!(last.contains(&format!("of {events} events")), "{last}");
    // Each dead letter is named, and the summary adds up.
    let named = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with('#'))
        .count() as u64;
    assert_eq!(named, dead, "{stdout}");
    assert_eq!(
        summary_value(&stdout, "accounted for"),
        format!("{delivered} delivered + {dead} dead-lettered = {events} of {events} events")
    );
    assert_eq!(summary_value(&stdout, "order per sandbox"), "kept");
    assert!(
        summary_value(&stdout, "delivered").contains("0 duplicates"),
        "{stdout}"
    );
}
