//! Readiness that other parts decide on, as typed values on `watch` channels (metrics only
//! report; nothing reads them to decide).

/// Where the Redis source is with the stream. The reconciler synthesizes nothing unless the
/// source reads and has caught up: an event still in the stream could contradict what it sees.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StreamProgress {
    /// The source has not started.
    #[default]
    Starting,
    /// It cannot read now, and why.
    NotReady(String),
    /// It reads; `lag` is what the group has not been handed yet (unknown before Redis 7).
    Reading {
        /// Entries behind, when Redis reports it.
        lag: Option<u64>,
    },
}

impl StreamProgress {
    /// Why the stream may still hold news, if it may.
    pub fn behind(&self) -> Option<String> {
        match self {
            Self::Starting => Some("waiting for the Redis source to start".into()),
            Self::NotReady(detail) => Some(format!("the Redis source is not ready: {detail}")),
            Self::Reading { lag: Some(lag) } if *lag > 0 => {
                Some("the Redis source is catching up (lag above 0)".into())
            }
            Self::Reading { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_source_that_reads_without_lag_is_caught_up() {
        assert!(StreamProgress::Starting.behind().is_some());
        let down = StreamProgress::NotReady("connection refused".into()).behind();
        assert!(down.unwrap().contains("connection refused"));
        assert!(StreamProgress::Reading { lag: Some(7) }.behind().is_some());
        assert_eq!(StreamProgress::Reading { lag: Some(0) }.behind(), None);
        assert_eq!(StreamProgress::Reading { lag: None }.behind(), None);
    }
}
