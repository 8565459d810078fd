//! Whether this instance is the active deliverer, as far as it can know locally.
//!
//! With two instances, one holds a lease in Redis and delivers; the other waits. The lease task
//! (in the Redis source) extends [`Leadership`] after every successful renewal, up to a deadline
//! measured on the monotonic clock from the moment the renewal was *sent*, so the local deadline
//! always falls before the lease expires in Redis. A process frozen past its lease (SIGSTOP, a
//! long GC-like pause, a VM migration) finds its deadline gone the moment it runs again, before
//! it sends anything: [`Leadership::is_active`] is checked before every read from the stream and
//! every webhook request. Without Redis (the file source, `demo`, `backfill` into a local outbox)
//! there is no lease and the instance is always active.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::time::Instant;

/// Who holds the lease, as last seen (for `/status` and the `leader` gauge).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LeaseView {
    /// This instance's name (its Redis consumer name).
    pub me: String,
    /// Whether this instance is the active deliverer.
    pub active: bool,
    /// The instance holding the lease, when known.
    pub holder: Option<String>,
    /// When the holder took the lease (RFC 3339), when known.
    pub since: Option<String>,
    /// The holder's fencing number: it grows with every new lease.
    pub fence: Option<u64>,
}

/// Shared, cheap to clone.
#[derive(Clone)]
pub struct Leadership {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("active", &self.is_active())
            .field("delivery_term", &self.delivery_term())
            .finish()
    }
}

struct Inner {
    /// The zero of `active_until_ms`.
    epoch: Instant,
    /// Active until this many ms after `epoch`; 0 means standby, `u64::MAX` always active.
    active_until_ms: AtomicU64,
    /// Counts the times this instance became active; one term is one stretch as leader.
    term: AtomicU64,
    /// The term whose takeover (claiming the group's pending entries) is complete: only then
    /// may the dispatchers deliver.
    delivering_term: AtomicU64,
    /// The lease value this instance holds, used to fence writes to Redis.
    token: Mutex<Option<String>>,
    view: Mutex<LeaseView>,
    /// Bumped whenever the instance becomes active, so waiters wake up.
    activations: watch::Sender<u64>,
}

impl Leadership {
    /// No lease: a single instance that is always active.
    pub fn always_active() -> Self {
        let this = Self::new(String::new());
        this.inner.active_until_ms.store(u64::MAX, Ordering::SeqCst);
        this.inner.term.store(1, Ordering::SeqCst);
        this.inner.delivering_term.store(1, Ordering::SeqCst);
        this.inner.view.lock().expect("lease view").active = true;
        this
    }

    /// Starts as a standby until the lease task wins the lease.
    pub fn standby(me: impl Into<String>) -> Self {
        Self::new(me.into())
    }

    fn new(me: String) -> Self {
        Self {
            inner: Arc::new(Inner {
                epoch: Instant::now(),
                active_until_ms: AtomicU64::new(0),
                term: AtomicU64::new(0),
                delivering_term: AtomicU64::new(0),
                token: Mutex::new(None),
                view: Mutex::new(LeaseView {
                    me,
                    ..LeaseView::default()
                }),
                activations: watch::channel(0).0,
            }),
        }
    }

    /// Whether this instance may deliver and read the stream right now.
    pub fn is_active(&self) -> bool {
        let until = self.inner.active_until_ms.load(Ordering::SeqCst);
        until == u64::MAX || (until > 0 && self.now_ms() < until)
    }

    /// The lease is (still) ours until `until`, with fencing value `token`.
    pub fn activate_until(&self, until: Instant, token: &str) {
        let was_active = self.is_active();
        let until_ms = until
            .saturating_duration_since(self.inner.epoch)
            .as_millis()
            .max(1) as u64;
        *self.inner.token.lock().expect("lease token") = Some(token.to_owned());
        self.inner.active_until_ms.store(until_ms, Ordering::SeqCst);
        self.inner.view.lock().expect("lease view").active = true;
        if !was_active {
            self.inner.term.fetch_add(1, Ordering::SeqCst);
            self.inner.activations.send_modify(|n| *n += 1);
        }
    }

    /// The current term while active: the stream may be read, but nothing is delivered
    /// before [`Self::takeover_done`] for this term.
    pub fn active_term(&self) -> Option<u64> {
        self.is_active()
            .then(|| self.inner.term.load(Ordering::SeqCst))
    }

    /// Every entry the group had pending is now in the outbox, in stream order: delivering may
    /// start for `term`.
    pub fn takeover_done(&self, term: u64) {
        self.inner.delivering_term.store(term, Ordering::SeqCst);
        self.inner.activations.send_modify(|n| *n += 1);
    }

    /// The term in which this instance may deliver right now, if any.
    pub fn delivery_term(&self) -> Option<u64> {
        let term = self.active_term()?;
        (self.inner.delivering_term.load(Ordering::SeqCst) == term).then_some(term)
    }

    /// Resolves once this instance may deliver.
    pub async fn until_delivering(&self) {
        let mut activations = self.inner.activations.subscribe();
        while self.delivery_term().is_none() {
            if activations.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// The lease is lost or given up: stop at once.
    pub fn step_down(&self) {
        self.inner.active_until_ms.store(0, Ordering::SeqCst);
        *self.inner.token.lock().expect("lease token") = None;
        self.inner.view.lock().expect("lease view").active = false;
    }

    /// Was active, and the local deadline passed without a renewal or a step-down.
    pub fn lapsed(&self) -> bool {
        self.inner.view.lock().expect("lease view").active && !self.is_active()
    }

    /// The fencing value of the lease this instance holds, if it is active.
    pub fn token(&self) -> Option<String> {
        if !self.is_active() {
            return None;
        }
        self.inner.token.lock().expect("lease token").clone()
    }

    /// Resolves once this instance is active.
    pub async fn until_active(&self) {
        let mut activations = self.inner.activations.subscribe();
        while !self.is_active() {
            if activations.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Records who holds the lease, as the lease task last saw it.
    pub fn observe_holder(
        &self,
        holder: Option<String>,
        since: Option<String>,
        fence: Option<u64>,
    ) {
        let active = self.is_active();
        let mut view = self.inner.view.lock().expect("lease view");
        view.holder = holder;
        view.since = since;
        view.fence = fence;
        view.active = active;
    }

    /// The lease as last seen.
    pub fn view(&self) -> LeaseView {
        let mut view = self.inner.view.lock().expect("lease view").clone();
        view.active = self.is_active();
        view
    }

    fn now_ms(&self) -> u64 {
        self.inner.epoch.elapsed().as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn always_active_never_lapses() {
        let l = Leadership::always_active();
        assert!(l.is_active());
        assert!(l.view().active);
    }

    #[tokio::test]
    async fn a_lease_lapses_at_its_local_deadline_without_any_call() {
        let l = Leadership::standby("a");
        assert!(!l.is_active());
        assert_eq!(l.token(), None);
        l.activate_until(Instant::now() + Duration::from_millis(80), "tok");
        assert!(l.is_active());
        assert_eq!(l.token().as_deref(), Some("tok"));
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(!l.is_active(), "a frozen or cut-off leader must not act");
        assert_eq!(l.token(), None);
    }

    #[tokio::test]
    async fn waiters_wake_when_the_lease_is_won_and_step_down_is_immediate() {
        let l = Leadership::standby("a");
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { l.until_active().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        l.activate_until(Instant::now() + Duration::from_secs(10), "t");
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken")
            .unwrap();
        l.step_down();
        assert!(!l.is_active());
    }

    #[test]
    fn delivering_needs_a_takeover_in_the_current_term() {
        let l = Leadership::standby("a");
        l.activate_until(Instant::now() + Duration::from_secs(10), "t");
        let term = l.active_term().unwrap();
        assert_eq!(
            l.delivery_term(),
            None,
            "not before the pending entries are claimed"
        );
        l.takeover_done(term);
        assert_eq!(l.delivery_term(), Some(term));
        // Renewals keep the term.
        l.activate_until(Instant::now() + Duration::from_secs(10), "t");
        assert_eq!(l.delivery_term(), Some(term));
        // Losing the lease and winning it again is a new term with a new takeover.
        l.step_down();
        l.activate_until(Instant::now() + Duration::from_secs(10), "t2");
        assert_eq!(l.delivery_term(), None);
        assert!(l.active_term().unwrap() > term);
        assert_eq!(Leadership::always_active().delivery_term(), Some(1));
    }
}
