//! Delivery concurrency shared fairly by the teams of registered webhooks: a team's attempts in
//! flight are capped at its share (all its webhooks together), and every team's attempts draw
//! from one total. Both semaphores hand out permits first come, first served, so a team with a
//! backlog or a receiver that hangs holds at most its share while the others keep theirs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// The shares of every team, and the total they draw from.
#[derive(Clone)]
pub struct DeliveryShares {
    total: Arc<Semaphore>,
    team_share: usize,
    /// Each team's semaphore lives while one of its dispatchers holds it.
    teams: Arc<Mutex<HashMap<Uuid, Weak<Semaphore>>>>,
}

/// One team's share: what a dispatcher of that team takes a permit from before each attempt.
#[derive(Clone)]
pub struct TeamShare {
    team: Arc<Semaphore>,
    total: Arc<Semaphore>,
}

/// The permits one attempt holds until it ends.
pub struct AttemptPermits {
    _team: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

impl DeliveryShares {
    /// At most `team_share` attempts in flight per team, `total` for all teams together.
    pub fn new(team_share: usize, total: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(total.max(1))),
            team_share: team_share.max(1),
            teams: Arc::default(),
        }
    }

    /// The share of `team`, the same for all its webhooks.
    pub fn of_team(&self, team: Uuid) -> TeamShare {
        let mut teams = self.teams.lock().unwrap_or_else(|e| e.into_inner());
        let semaphore = match teams.get(&team).and_then(Weak::upgrade) {
            Some(held) => held,
            None => {
                let fresh = Arc::new(Semaphore::new(self.team_share));
                teams.insert(team, Arc::downgrade(&fresh));
                // Forget teams no dispatcher holds any more, so the map follows the webhooks.
                teams.retain(|_, share| share.strong_count() > 0);
                fresh
            }
        };
        TeamShare {
            team: semaphore,
            total: self.total.clone(),
        }
    }
}

impl TeamShare {
    /// Permits for one attempt now, if the team's share and the total both have one.
    pub fn try_acquire(&self) -> Option<AttemptPermits> {
        let team = self.team.clone().try_acquire_owned().ok()?;
        let total = self.total.clone().try_acquire_owned().ok()?;
        Some(AttemptPermits {
            _team: team,
            _total: total,
        })
    }

    /// Permits for one attempt, waiting in line (first come, first served) for them.
    pub async fn acquire(self) -> AttemptPermits {
        let team = self.team.acquire_owned().await.expect("never closed");
        let total = self.total.acquire_owned().await.expect("never closed");
        AttemptPermits {
            _team: team,
            _total: total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_team_holds_at_most_its_share_and_all_teams_at_most_the_total() {
        let shares = DeliveryShares::new(2, 3);
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        // Two webhooks of team A share its two permits.
        let (a1, a2) = (shares.of_team(a), shares.of_team(a));
        let held: Vec<_> = [&a1, &a2, &a1]
            .iter()
            .filter_map(|s| s.try_acquire())
            .collect();
        assert_eq!(held.len(), 2, "team A is capped at its share");
        let b_permit = shares.of_team(b).try_acquire();
        assert!(b_permit.is_some(), "team B is not slowed by A");
        assert!(
            shares.of_team(c).try_acquire().is_none(),
            "the total is spent"
        );
        drop(held);
        assert!(shares.of_team(c).try_acquire().is_some());
    }

    #[tokio::test]
    async fn a_waiting_team_gets_the_next_free_permit() {
        let shares = DeliveryShares::new(1, 1);
        let first = shares.of_team(Uuid::new_v4()).try_acquire().unwrap();
        let waiting = tokio::spawn(shares.of_team(Uuid::new_v4()).acquire());
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken when the permit came back")
            .unwrap();
    }
}
