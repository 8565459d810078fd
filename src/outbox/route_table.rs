//! The routes, indexed by team: with thousands of registered webhooks (each scoped to its
//! team), an event is matched against the routes of its own team and the unscoped ones, not
//! against every route — at append, and when a delivery finishes and the event may be removed.

use super::Route;
use crate::event::SandboxEvent;
use std::collections::HashMap;
use uuid::Uuid;

/// Every route, and which of them each team's events can reach.
#[derive(Default, Clone)]
pub(super) struct RouteTable {
    all: Vec<Route>,
    /// Indexes into `all` of the routes without a team scope (they see every team).
    unscoped: Vec<usize>,
    /// Indexes into `all` of the routes scoped to each team.
    by_team: HashMap<Uuid, Vec<usize>>,
    /// Index into `all` of each endpoint's route.
    by_endpoint: HashMap<String, usize>,
}

impl RouteTable {
    pub(super) fn new(all: Vec<Route>) -> Self {
        let mut unscoped = Vec::new();
        let mut by_team: HashMap<Uuid, Vec<usize>> = HashMap::new();
        let mut by_endpoint = HashMap::with_capacity(all.len());
        for (i, route) in all.iter().enumerate() {
            by_endpoint.insert(route.endpoint.clone(), i);
            match route.filter.teams() {
                None => unscoped.push(i),
                Some(teams) => {
                    for team in teams {
                        by_team.entry(*team).or_default().push(i);
                    }
                }
            }
        }
        Self {
            all,
            unscoped,
            by_team,
            by_endpoint,
        }
    }

    /// Adds `route`, or replaces the route of its endpoint; adding costs only its own entries,
    /// so thousands of webhooks are started without rebuilding the index each time.
    pub(super) fn set(&mut self, route: Route) {
        if self.by_endpoint.contains_key(&route.endpoint) {
            let mut all = std::mem::take(&mut self.all);
            all.retain(|r| r.endpoint != route.endpoint);
            all.push(route);
            *self = Self::new(all);
            return;
        }
        let i = self.all.len();
        match route.filter.teams() {
            None => self.unscoped.push(i),
            Some(teams) => {
                for team in teams {
                    self.by_team.entry(*team).or_default().push(i);
                }
            }
        }
        self.by_endpoint.insert(route.endpoint.clone(), i);
        self.all.push(route);
    }

    /// Removes the route of `endpoint`, if any.
    pub(super) fn remove(&mut self, endpoint: &str) {
        if self.by_endpoint.contains_key(endpoint) {
            let mut all = std::mem::take(&mut self.all);
            all.retain(|r| r.endpoint != endpoint);
            *self = Self::new(all);
        }
    }

    /// Every route.
    #[cfg(test)]
    pub(super) fn all(&self) -> &[Route] {
        &self.all
    }

    /// The routes that may accept events of `team` (a superset: their kinds are not checked).
    pub(super) fn for_team<'a>(&'a self, team: &str) -> impl Iterator<Item = &'a Route> + 'a {
        let scoped = Uuid::parse_str(team)
            .ok()
            .and_then(|team| self.by_team.get(&team))
            .map(Vec::as_slice)
            .unwrap_or_default();
        self.unscoped.iter().chain(scoped).map(|&i| &self.all[i])
    }

    /// The routes that accept `event`.
    pub(super) fn accepting<'a>(
        &'a self,
        event: &'a SandboxEvent,
    ) -> impl Iterator<Item = &'a Route> + 'a {
        self.for_team(event.team_id())
            .filter(|route| route.filter.accepts(event))
    }

    /// The route of `endpoint`, if any.
    pub(super) fn get(&self, endpoint: &str) -> Option<&Route> {
        self.by_endpoint.get(endpoint).map(|&i| &self.all[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventFilter;

    fn route(endpoint: &str, teams: Option<Vec<Uuid>>) -> Route {
        let filter = EventFilter::parse("*").unwrap();
        Route {
            endpoint: endpoint.into(),
            filter: match teams {
                Some(teams) => filter.for_teams(teams),
                None => filter,
            },
        }
    }

    fn names<'a>(routes: impl Iterator<Item = &'a Route>) -> Vec<&'a str> {
        let mut names: Vec<&str> = routes.map(|r| r.endpoint.as_str()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_team_sees_its_own_routes_and_the_unscoped_ones_as_routes_come_and_go() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut table = RouteTable::new(vec![route("all", None), route("a1", Some(vec![a]))]);
        table.set(route("b1", Some(vec![b])));
        table.set(route("a2", Some(vec![a])));
        assert_eq!(names(table.for_team(&a.to_string())), ["a1", "a2", "all"]);
        assert_eq!(names(table.for_team(&b.to_string())), ["all", "b1"]);
        assert_eq!(names(table.for_team("not-a-team")), ["all"]);
        // Replacing a route re-indexes it; removing one drops it everywhere.
        table.set(route("a1", Some(vec![b])));
        table.remove("a2");
        assert_eq!(names(table.for_team(&a.to_string())), ["all"]);
        assert_eq!(names(table.for_team(&b.to_string())), ["a1", "all", "b1"]);
        assert_eq!(table.get("b1").map(|r| r.endpoint.as_str()), Some("b1"));
        assert!(table.get("a2").is_none());
        assert_eq!(table.all().len(), 3);
    }
}
