//! Which teams the emitter serves: those the operator configures (`E2B_TEAM_IDS`, or the teams
//! its endpoints name), plus, at run time, every team with an enabled registered webhook. The
//! Redis source keeps a `wh:<team>` gate key alive for each, and the reconciler and source skip
//! other teams — unless nothing is configured, which keeps meaning "every team".

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use uuid::Uuid;

/// The served teams; cheap to clone, every clone sees the same set.
#[derive(Debug, Clone, Default)]
pub struct TeamScope {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    configured: Vec<Uuid>,
    /// Whether teams may register webhooks (the events API is on).
    registrations: bool,
    registered: RwLock<Vec<Uuid>>,
    /// Teams that lost their last webhook, whose gate keys are to be deleted.
    removed: RwLock<Vec<Uuid>>,
    /// Bumped whenever `registered` changes, so the gate keys are refreshed at once.
    generation: AtomicU64,
}

impl TeamScope {
    /// The operator's teams (empty: every team is served, and no gate key is kept for any but
    /// registered ones); `registrations` when teams may register webhooks.
    pub fn new(configured: Vec<Uuid>, registrations: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                configured,
                registrations,
                ..Inner::default()
            }),
        }
    }

    /// Whether teams may register webhooks, and so gain gate keys while running.
    pub fn accepts_registrations(&self) -> bool {
        self.inner.registrations
    }

    /// Teams that lost their last webhook since the last call (and are not configured).
    pub fn take_removed(&self) -> Vec<Uuid> {
        std::mem::take(
            &mut *self
                .inner
                .removed
                .write()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// The operator's teams.
    pub fn configured(&self) -> &[Uuid] {
        &self.inner.configured
    }

    /// Replaces the teams with an enabled registered webhook; true when the set changed.
    pub fn set_registered(&self, mut teams: Vec<Uuid>) -> bool {
        teams.sort_unstable();
        teams.dedup();
        let mut registered = self
            .inner
            .registered
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if *registered == teams {
            return false;
        }
        let gone = registered
            .iter()
            .filter(|t| !teams.contains(t) && !self.inner.configured.contains(t))
            .copied();
        let mut removed = self
            .inner
            .removed
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        removed.extend(gone);
        removed.retain(|t| !teams.contains(t));
        *registered = teams;
        self.inner.generation.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The teams with an enabled registered webhook.
    pub fn registered(&self) -> Vec<Uuid> {
        self.inner
            .registered
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes with every change of the registered teams.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Relaxed)
    }

    /// Every team whose gate key is kept alive: configured and registered.
    pub fn gate_teams(&self) -> Vec<Uuid> {
        let mut teams = self.inner.configured.clone();
        for team in self.registered() {
            if !teams.contains(&team) {
                teams.push(team);
            }
        }
        teams
    }

    /// Whether `team` (as events write it) is served.
    pub fn serves(&self, team: &str) -> bool {
        if self.inner.configured.is_empty() {
            return true;
        }
        Uuid::parse_str(team).is_ok_and(|team| {
            self.inner.configured.contains(&team) || self.registered().contains(&team)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_teams_join_the_configured_ones() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let scope = TeamScope::new(vec![a], true);
        assert!(scope.serves(&a.to_string()));
        assert!(!scope.serves(&b.to_string()));
        let before = scope.generation();
        assert!(scope.set_registered(vec![b, b]));
        assert!(!scope.set_registered(vec![b]), "the same set is no change");
        assert_ne!(scope.generation(), before);
        assert!(scope.serves(&b.to_string()));
        assert_eq!(scope.gate_teams(), vec![a, b]);
        assert!(scope.take_removed().is_empty());
        assert!(
            scope.set_registered(vec![a]),
            "a configured team may register too"
        );
        assert_eq!(scope.take_removed(), vec![b]);
        assert!(!scope.serves(&b.to_string()));
        assert!(scope.set_registered(vec![]));
        assert!(
            scope.take_removed().is_empty(),
            "a configured team keeps its key"
        );
    }

    #[test]
    fn nothing_configured_still_serves_every_team() {
        let scope = TeamScope::new(vec![], true);
        let b = Uuid::new_v4();
        scope.set_registered(vec![b]);
        assert!(scope.serves(&Uuid::new_v4().to_string()));
        assert_eq!(scope.gate_teams(), vec![b]);
    }
}
