//! The view of sandboxes as the outbox keeps it in memory, small: the log holds no table to
//! look a sandbox up in, so every sandbox the stream says exists is here for as long as it does
//! (issue 30). A record of five strings in a `BTreeMap` took about 0.4 KiB; here a sandbox is
//! three shared strings (its id, which its pending events share, and its team's and template's,
//! each kept once), its execution id as 16 bytes when it is a UUID (E2B's are), its state and a
//! time, in a hash map, which unlike a `BTreeMap` is as full whatever order the ids come in
//! (BENCHMARKS.md, issue 30's eighth round).
//!
//! Records go to the log in pages ([`PAGE`]), so writing the view never copies all of it at once.

use super::journal::{JournalRecord, PAGE};
use super::live_keys::{SharedStrings, SmallId};
use super::{SandboxRecord, SandboxState};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Sandbox id → what the stream says of it. Its strings are kept in the live set's
/// [`SharedStrings`], passed in.
#[derive(Debug, Default, PartialEq)]
pub(super) struct KnownSandboxes {
    sandboxes: HashMap<Arc<str>, Sandbox>,
}

#[derive(Debug, PartialEq)]
struct Sandbox {
    state: SandboxState,
    team_id: Arc<str>,
    template_id: Option<Arc<str>>,
    execution_id: Option<SmallId>,
    updated_at_ms: i64,
}

/// What to write to change a view: sandboxes to set, ids to remove.
#[derive(Debug, Default, PartialEq)]
pub(super) struct ViewChanges {
    pub(super) set: Vec<SandboxRecord>,
    pub(super) removed: Vec<String>,
}

impl KnownSandboxes {
    pub(super) fn contains(&self, sandbox_id: &str) -> bool {
        self.sandboxes.contains_key(sandbox_id)
    }

    pub(super) fn len(&self) -> usize {
        self.sandboxes.len()
    }

    /// Sets `record`, in place of what was kept for its sandbox.
    pub(super) fn set(&mut self, record: SandboxRecord, strings: &mut SharedStrings) {
        let sandbox = Sandbox {
            state: record.state,
            team_id: strings.get(&record.team_id),
            template_id: record.template_id.map(|t| strings.get(&t)),
            execution_id: record.execution_id.as_deref().map(SmallId::of),
            updated_at_ms: record.updated_at_ms,
        };
        match self.sandboxes.get_mut(record.sandbox_id.as_str()) {
            Some(kept) => release(std::mem::replace(kept, sandbox), strings),
            None => {
                let id = strings.get(&record.sandbox_id);
                self.sandboxes.insert(id, sandbox);
            }
        }
    }

    pub(super) fn remove(&mut self, sandbox_id: &str, strings: &mut SharedStrings) {
        if let Some((id, before)) = self.sandboxes.remove_entry(sandbox_id) {
            strings.release(id);
            release(before, strings);
        }
    }

    pub(super) fn apply(&mut self, changes: ViewChanges, strings: &mut SharedStrings) {
        for id in changes.removed {
            self.remove(&id, strings);
        }
        for record in changes.set {
            self.set(record, strings);
        }
    }

    /// Every sandbox, by id.
    pub(super) fn records(&self) -> Vec<SandboxRecord> {
        let mut records: Vec<_> = self.sandboxes.iter().map(Sandbox::record).collect();
        records.sort_unstable_by(|a, b| a.sandbox_id.cmp(&b.sandbox_id));
        records
    }

    /// Page `number` (from 0) of `size` sandboxes, in an order that holds while the view does
    /// not change; empty past the last.
    pub(super) fn page(&self, number: usize, size: usize) -> Vec<SandboxRecord> {
        self.sandboxes
            .iter()
            .skip(number.saturating_mul(size))
            .take(size)
            .map(Sandbox::record)
            .collect()
    }

    /// Those of `records` this view does not hold exactly as they are.
    pub(super) fn differing(&self, records: &[SandboxRecord]) -> Vec<SandboxRecord> {
        records
            .iter()
            .filter(|r| {
                !self
                    .sandboxes
                    .get(r.sandbox_id.as_str())
                    .is_some_and(|s| s.holds(r))
            })
            .cloned()
            .collect()
    }

    /// The sandboxes of this view whose ids are not in `ids`.
    pub(super) fn absent_from(&self, ids: &HashSet<String>) -> Vec<String> {
        self.sandboxes
            .keys()
            .filter(|id| !ids.contains::<str>(id))
            .map(|id| id.to_string())
            .collect()
    }
}

impl Sandbox {
    fn record((sandbox_id, sandbox): (&Arc<str>, &Self)) -> SandboxRecord {
        SandboxRecord {
            sandbox_id: sandbox_id.to_string(),
            state: sandbox.state,
            team_id: sandbox.team_id.to_string(),
            template_id: sandbox.template_id.as_deref().map(str::to_owned),
            execution_id: sandbox.execution_id.as_ref().map(SmallId::to_string),
            updated_at_ms: sandbox.updated_at_ms,
        }
    }
}

impl Sandbox {
    /// Whether this is what `record` says of its sandbox.
    fn holds(&self, record: &SandboxRecord) -> bool {
        self.state == record.state
            && *self.team_id == *record.team_id
            && self.template_id.as_deref() == record.template_id.as_deref()
            && self.execution_id == record.execution_id.as_deref().map(SmallId::of)
            && self.updated_at_ms == record.updated_at_ms
    }
}

/// Gives back what `sandbox` held of the shared strings.
fn release(sandbox: Sandbox, strings: &mut SharedStrings) {
    strings.release(sandbox.team_id);
    if let Some(template) = sandbox.template_id {
        strings.release(template);
    }
}

impl From<ViewChanges> for JournalRecord {
    fn from(changes: ViewChanges) -> Self {
        let ViewChanges { set, removed } = changes;
        Self::ViewChanged { set, removed }
    }
}

impl ViewChanges {
    /// Sandboxes set and removed.
    pub(super) fn len(&self) -> usize {
        self.set.len() + self.removed.len()
    }

    /// The changes in pages of at most [`PAGE`] sandboxes, removals first.
    pub(super) fn into_pages(self) -> Vec<ViewChanges> {
        let mut pages: Vec<ViewChanges> = Vec::new();
        for id in self.removed {
            match pages.last_mut() {
                Some(page) if page.removed.len() < PAGE => page.removed.push(id),
                _ => pages.push(ViewChanges {
                    set: Vec::new(),
                    removed: vec![id],
                }),
            }
        }
        for record in self.set {
            match pages.last_mut() {
                Some(page) if page.removed.len() + page.set.len() < PAGE => {
                    page.set.push(record);
                }
                _ => pages.push(ViewChanges {
                    set: vec![record],
                    removed: Vec::new(),
                }),
            }
        }
        pages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, team: &str, execution: Option<&str>) -> SandboxRecord {
        SandboxRecord {
            sandbox_id: id.to_owned(),
            state: SandboxState::Running,
            team_id: team.to_owned(),
            template_id: Some("base".to_owned()),
            execution_id: execution.map(str::to_owned),
            updated_at_ms: 7,
        }
    }

    #[test]
    fn records_read_back_exactly_as_they_were_set() {
        let records = [
            record("sb-a", "0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d", None),
            record(
                "sb-b",
                "team-x",
                Some("0B8B8A4E-6F4E-4C4A-9A57-3A2F5D3B1C2D"),
            ),
            record(
                "sb-c",
                "0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d",
                Some("9c1e0f5a-2b7d-4e8f-a1b2-c3d4e5f60718"),
            ),
            SandboxRecord {
                template_id: None,
                state: SandboxState::Paused,
                ..record("sb-d", "", Some(""))
            },
        ];
        let (mut view, mut strings) = (KnownSandboxes::default(), SharedStrings::default());
        for record in records.iter().rev() {
            view.set(record.clone(), &mut strings);
        }
        assert_eq!(view.records(), records);
        assert!(view.contains("sb-c") && !view.contains("sb"));
    }

    #[test]
    fn shared_strings_go_with_the_last_sandbox_that_holds_them() {
        let (mut view, mut strings) = (KnownSandboxes::default(), SharedStrings::default());
        view.set(record("sb-a", "team-1", None), &mut strings);
        view.set(record("sb-b", "team-1", None), &mut strings);
        view.set(record("sb-b", "team-2", None), &mut strings);
        assert_eq!(
            strings.len(),
            5,
            "two sandboxes, team-1, team-2 and the template"
        );
        view.remove("sb-a", &mut strings);
        view.remove("sb-missing", &mut strings);
        assert_eq!(strings.len(), 3);
        view.remove("sb-b", &mut strings);
        assert_eq!(view, KnownSandboxes::default());
        assert_eq!(strings, SharedStrings::default());
    }

    #[test]
    fn the_pages_of_an_unchanged_view_hold_every_sandbox_once() {
        let (mut view, mut strings) = (KnownSandboxes::default(), SharedStrings::default());
        for n in 0..5 {
            view.set(record(&format!("sb-{n}"), "team", None), &mut strings);
        }
        let sizes: Vec<_> = (0..4).map(|n| view.page(n, 2).len()).collect();
        assert_eq!(sizes, [2, 2, 1, 0]);
        let mut ids: Vec<_> = (0..3)
            .flat_map(|n| view.page(n, 2))
            .map(|r| r.sandbox_id)
            .collect();
        ids.sort();
        assert_eq!(ids, ["sb-0", "sb-1", "sb-2", "sb-3", "sb-4"]);
    }

    #[test]
    fn what_differs_and_what_is_absent_make_this_view_another() {
        let (mut view, mut strings) = (KnownSandboxes::default(), SharedStrings::default());
        for id in ["sb-a", "sb-b", "sb-c"] {
            view.set(record(id, "team", None), &mut strings);
        }
        let wanted = vec![
            record("sb-a", "team", None),
            record("sb-c", "team", Some("exec")),
            record("sb-d", "team", None),
        ];
        let ids = wanted.iter().map(|r| r.sandbox_id.clone()).collect();
        let changes = ViewChanges {
            set: view.differing(&wanted),
            removed: view.absent_from(&ids),
        };
        assert_eq!(changes.removed, ["sb-b"]);
        let set: Vec<_> = changes.set.iter().map(|r| r.sandbox_id.as_str()).collect();
        assert_eq!(set, ["sb-c", "sb-d"]);
        for page in changes.into_pages() {
            view.apply(page, &mut strings);
        }
        assert_eq!(view.records(), wanted);
        assert!(view.differing(&wanted).is_empty());
        assert!(view.absent_from(&ids).is_empty());
    }

    #[test]
    fn changes_are_written_in_pages_of_at_most_a_page_of_sandboxes() {
        let changes = ViewChanges {
            removed: (0..PAGE + 1).map(|n| format!("gone-{n}")).collect(),
            set: (0..PAGE)
                .map(|n| record(&format!("sb-{n}"), "t", None))
                .collect(),
        };
        let pages = changes.into_pages();
        let sizes: Vec<_> = pages
            .iter()
            .map(|p| (p.removed.len(), p.set.len()))
            .collect();
        assert_eq!(sizes, [(PAGE, 0), (1, PAGE - 1), (0, 1)]);
    }
}
