//! Leadership among gateways: one lock, held by renewing it, and a local deadline that ends
//! leadership before anyone else can take the lock.
//!
//! [`run_lease`] drives a [`LockBackend`] (a Nomad Variable lock in production, a fake in
//! tests): acquire; while holding, renew every [`LeaseConfig::renew_every`]; on shutdown,
//! release. It publishes a [`Term`] through a watch channel; [`Leadership`] reads it.
//!
//! Invariants:
//! - **Leadership ends before the lock can pass on.** A term is valid until the instant the
//!   last successful acquire or renew was *sent*, plus the TTL, minus [`LeaseConfig::margin`].
//!   The server processes that request after it was sent and keeps the lease at least a TTL
//!   after it (Nomad keeps it 2 x TTL, then the lock delay), so no other gateway can hold the
//!   lock before this deadline. [`Leadership::is_leader`] checks the deadline itself, so a
//!   stalled lease task (a renew that hangs, a paused process) still stops being leader on
//!   time; a renew that fails or answers "lost" ends the term at once.
//! - **Terms only grow.** Each acquisition starts a new term number, so a decision taken under
//!   an old term can be told from one taken under the current term.
//! - A gateway alone ([`Leadership::alone`]) is always leader, with no lock and no task.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Timing of the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The lock's TTL, as the server is told.
    pub ttl: Duration,
    /// How long the server keeps an expired lock before another may take it.
    pub lock_delay: Duration,
    /// Renew this often while holding (0.7 x TTL, as Nomad's Go helper does).
    pub renew_every: Duration,
    /// Taken off the TTL for the local deadline: clock-rate differences and scheduling.
    pub margin: Duration,
    /// How long a follower waits between attempts to acquire.
    pub retry: Duration,
}

impl LeaseConfig {
    /// Renewal and margin derived from `ttl` (renew at 0.7 x TTL, margin 0.2 x TTL).
    pub fn with_ttl(ttl: Duration, lock_delay: Duration) -> Self {
        Self {
            ttl,
            lock_delay,
            renew_every: ttl.mul_f64(0.7),
            margin: ttl.mul_f64(0.2),
            retry: ttl.mul_f64(0.25),
        }
    }

    /// The longest a dead leader keeps the lock on a Nomad server: its lease timer (2 x TTL
    /// from the last renew), then the lock delay.
    pub fn takeover_bound(&self) -> Duration {
        self.ttl * 2 + self.lock_delay
    }
}

impl Default for LeaseConfig {
    /// TTL 10 s (Nomad's minimum) and lock delay 10 s: a dead leader's lock is free at most
    /// 30 s after its last renew.
    fn default() -> Self {
        Self::with_ttl(Duration::from_secs(10), Duration::from_secs(10))
    }
}

/// What an attempt to acquire gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// The lock is ours; `id` proves it on renew and release.
    Won { id: String },
    /// Someone else holds it.
    Held,
}

/// What a renewal gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewed {
    Kept,
    /// The lease is gone (expired, released, or taken).
    Lost,
}

/// A lock service: acquire, renew and release one lock.
pub trait LockBackend: Send + Sync + 'static {
    type Error: std::fmt::Display + Send;
    fn acquire(&self) -> impl Future<Output = Result<Acquired, Self::Error>> + Send;
    fn renew(&self, id: &str) -> impl Future<Output = Result<Renewed, Self::Error>> + Send;
    fn release(&self, id: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// The current term as the lease task last published it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    /// Terms this gateway has held so far (the current one when `leader`).
    pub number: u64,
    /// Leader until this instant (`None`: no lease, leader for ever: a gateway alone).
    pub until: Option<Instant>,
    pub leader: bool,
}

/// A read handle on this gateway's leadership.
#[derive(Debug, Clone)]
pub struct Leadership {
    rx: watch::Receiver<Term>,
}

impl Leadership {
    /// A gateway alone: always leader.
    pub fn alone() -> Self {
        let (tx, rx) = watch::channel(Term {
            number: 1,
            until: None,
            leader: true,
        });
        // The sender may go: a closed channel keeps its last value.
        drop(tx);
        Self { rx }
    }

    /// A handle and the sender [`run_lease`] publishes through (a follower to start with).
    pub fn channel() -> (watch::Sender<Term>, Self) {
        let (tx, rx) = watch::channel(Term {
            number: 0,
            until: None,
            leader: false,
        });
        (tx, Self { rx })
    }

    /// The current term's number when this gateway leads now (its deadline not passed).
    pub fn term(&self) -> Option<u64> {
        let t = *self.rx.borrow();
        let valid = t.leader && t.until.is_none_or(|u| Instant::now() < u);
        valid.then_some(t.number)
    }

    /// Whether this gateway may make leader decisions now.
    pub fn is_leader(&self) -> bool {
        self.term().is_some()
    }
}

/// Holds the lock while it can, until `shutdown` resolves; then releases it. `number` is
/// the gateway's term counter, kept across runs so terms only grow.
pub async fn run_lease<B: LockBackend>(
    backend: &B,
    cfg: LeaseConfig,
    tx: &watch::Sender<Term>,
    number: &mut u64,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let number = &mut *number;
        // Acquire.
        let sent = Instant::now();
        let attempt = tokio::select! {
            r = backend.acquire() => r,
            () = &mut shutdown => return follower(tx, *number),
        };
        let id = match attempt {
            Ok(Acquired::Won { id }) => id,
            Ok(Acquired::Held) => {
                tokio::select! {
                    () = tokio::time::sleep(cfg.retry) => continue,
                    () = &mut shutdown => return follower(tx, *number),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster lock: acquire failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(cfg.retry) => continue,
                    () = &mut shutdown => return follower(tx, *number),
                }
            }
        };
        *number += 1;
        let number = *number;
        let mut until = sent + cfg.ttl.saturating_sub(cfg.margin);
        tracing::info!(term = number, "cluster lock acquired: this gateway leads");
        tx.send_replace(Term {
            number,
            until: Some(until),
            leader: true,
        });
        // Hold: renew until a renewal fails or the deadline passes.
        let mut next = sent + cfg.renew_every;
        let end = loop {
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = &mut shutdown => break Hold::Shutdown,
            }
            let sent = Instant::now();
            let renewed = tokio::select! {
                r = tokio::time::timeout_at(until, backend.renew(&id)) => r,
                () = &mut shutdown => break Hold::Shutdown,
            };
            match renewed {
                Ok(Ok(Renewed::Kept)) => {
                    until = sent + cfg.ttl.saturating_sub(cfg.margin);
                    next = sent + cfg.renew_every;
                    tx.send_replace(Term {
                        number,
                        until: Some(until),
                        leader: true,
                    });
                }
                Ok(Ok(Renewed::Lost)) => break Hold::Lost("the server says the lease is gone"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cluster lock: renew failed");
                    break Hold::Lost("renew failed");
                }
                Err(_) => break Hold::Lost("no renewal before the lease's deadline"),
            }
        };
        follower(tx, number);
        match end {
            Hold::Lost(why) => {
                tracing::warn!(
                    term = number,
                    why,
                    "cluster lock lost: this gateway follows"
                );
            }
            Hold::Shutdown => {
                if let Err(e) = backend.release(&id).await {
                    tracing::warn!(error = %e, "cluster lock: release failed");
                } else {
                    tracing::info!(term = number, "cluster lock released");
                }
                return;
            }
        }
    }
}

enum Hold {
    Lost(&'static str),
    Shutdown,
}

fn follower(tx: &watch::Sender<Term>, number: u64) {
    tx.send_replace(Term {
        number,
        until: None,
        leader: false,
    });
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A lock server in memory: one holder; a lease that lasts `2 x TTL` after its last
    /// renew and then `lock_delay` more, as Nomad's; renewals can be made to fail or hang.
    #[derive(Clone, Default)]
    struct Fake {
        state: Arc<Mutex<FakeState>>,
    }

    #[derive(Default)]
    struct FakeState {
        holder: Option<(String, Instant)>,
        next_id: u64,
        fail_renew: bool,
        hang_renew: bool,
        lease: Duration,
        released: Vec<String>,
    }

    impl Fake {
        fn new(cfg: &LeaseConfig) -> Self {
            let f = Self::default();
            f.state.lock().unwrap().lease = cfg.takeover_bound();
            f
        }
        fn holder(&self) -> Option<String> {
            let mut s = self.state.lock().unwrap();
            s.expire();
            s.holder.as_ref().map(|(id, _)| id.clone())
        }
    }

    impl FakeState {
        fn expire(&mut self) {
            if let Some((_, renewed)) = &self.holder {
                if Instant::now() >= *renewed + self.lease {
                    self.holder = None;
                }
            }
        }
    }

    /// One gateway's view of the shared fake.
    struct Client(Fake);

    impl LockBackend for Client {
        type Error = String;
        async fn acquire(&self) -> Result<Acquired, String> {
            let mut s = self.0.state.lock().unwrap();
            s.expire();
            if s.holder.is_some() {
                return Ok(Acquired::Held);
            }
            s.next_id += 1;
            let id = format!("lock-{}", s.next_id);
            s.holder = Some((id.clone(), Instant::now()));
            Ok(Acquired::Won { id })
        }
        async fn renew(&self, id: &str) -> Result<Renewed, String> {
            let hang = {
                let mut s = self.0.state.lock().unwrap();
                s.expire();
                if s.fail_renew {
                    return Err("connection refused".into());
                }
                s.hang_renew
            };
            if hang {
                std::future::pending::<()>().await;
            }
            let mut s = self.0.state.lock().unwrap();
            match &mut s.holder {
                Some((held, at)) if held == id => {
                    *at = Instant::now();
                    Ok(Renewed::Kept)
                }
                _ => Ok(Renewed::Lost),
            }
        }
        async fn release(&self, id: &str) -> Result<(), String> {
            let mut s = self.0.state.lock().unwrap();
            if s.holder.as_ref().is_some_and(|(h, _)| h == id) {
                s.holder = None;
            }
            s.released.push(id.to_string());
            Ok(())
        }
    }

    fn start(
        fake: &Fake,
        cfg: LeaseConfig,
    ) -> (
        Leadership,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, leadership) = Leadership::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let client = Client(fake.clone());
        let task = tokio::spawn(async move {
            let mut number = 0;
            run_lease(&client, cfg, &tx, &mut number, async move {
                let _ = stopped.await;
            })
            .await
        });
        (leadership, stop, task)
    }

    /// Advances the paused clock in small steps, letting tasks run, until `cond` holds.
    async fn until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        while !cond() {
            assert!(start.elapsed() <= limit, "{what}: not within {limit:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn one_leader_renews_and_a_follower_waits() {
        let cfg = LeaseConfig::default();
        let fake = Fake::new(&cfg);
        let (a, _stop_a, _ta) = start(&fake, cfg);
        until(Duration::from_secs(1), "a leads", || a.is_leader()).await;
        let (b, _stop_b, _tb) = start(&fake, cfg);
        // Over many TTLs the leader keeps its term and the follower never leads.
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(a.is_leader());
            assert!(!b.is_leader());
        }
        assert_eq!(a.term(), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_renewal_ends_the_term_at_once() {
        let cfg = LeaseConfig::default();
        let fake = Fake::new(&cfg);
        let (a, _stop, _t) = start(&fake, cfg);
        until(Duration::from_secs(1), "a leads", || a.is_leader()).await;
        fake.state.lock().unwrap().fail_renew = true;
        // The first renewal after the failure starts ends leadership (within renew_every).
        until(
            cfg.renew_every + Duration::from_millis(200),
            "a steps down",
            || !a.is_leader(),
        )
        .await;
    }

    /// A renewal that hangs (a partition) ends leadership at the local deadline, which comes
    /// before the server would let anyone else take the lock.
    #[tokio::test(start_paused = true)]
    async fn a_hanging_renewal_ends_the_term_before_another_can_acquire() {
        let cfg = LeaseConfig::default();
        let fake = Fake::new(&cfg);
        let (a, _stop_a, _ta) = start(&fake, cfg);
        until(Duration::from_secs(1), "a leads", || a.is_leader()).await;
        fake.state.lock().unwrap().hang_renew = true;
        let (b, _stop_b, _tb) = start(&fake, cfg);
        let mut a_stopped = None;
        let start = Instant::now();
        until(cfg.takeover_bound() + cfg.ttl * 2, "b leads", || {
            if a_stopped.is_none() && !a.is_leader() {
                a_stopped = Some(start.elapsed());
            }
            // Never two leaders at once.
            assert!(!(a.is_leader() && b.is_leader()), "two leaders");
            b.is_leader()
        })
        .await;
        let a_stopped = a_stopped.expect("a stopped before b led");
        // a stopped at its own deadline: TTL - margin after its last renewal was sent.
        assert!(a_stopped <= cfg.ttl, "a led {a_stopped:?} into the hang");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_leader_is_replaced_after_the_servers_lease() {
        let cfg = LeaseConfig::default();
        let fake = Fake::new(&cfg);
        let (a, _stop_a, ta) = start(&fake, cfg);
        until(Duration::from_secs(1), "a leads", || a.is_leader()).await;
        let (b, _stop_b, _tb) = start(&fake, cfg);
        tokio::time::sleep(Duration::from_secs(3)).await;
        // SIGKILL: the task stops without releasing.
        ta.abort();
        let took = until(
            cfg.takeover_bound() + cfg.retry + Duration::from_secs(1),
            "b leads",
            || b.is_leader(),
        )
        .await;
        assert!(took <= cfg.takeover_bound() + cfg.retry, "{took:?}");
        assert_eq!(b.term(), Some(1));
        assert!(fake.holder().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_clean_shutdown_releases_and_a_follower_takes_over_quickly() {
        let cfg = LeaseConfig::default();
        let fake = Fake::new(&cfg);
        let (a, stop_a, ta) = start(&fake, cfg);
        until(Duration::from_secs(1), "a leads", || a.is_leader()).await;
        let (b, _stop_b, _tb) = start(&fake, cfg);
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop_a.send(()).unwrap();
        ta.await.unwrap();
        assert!(!a.is_leader());
        assert_eq!(fake.state.lock().unwrap().released, ["lock-1"]);
        let took = until(cfg.retry * 2, "b leads", || b.is_leader()).await;
        assert!(took <= cfg.retry + Duration::from_millis(200), "{took:?}");
    }

    #[test]
    fn alone_is_always_leader() {
        let l = Leadership::alone();
        assert!(l.is_leader());
        assert_eq!(l.term(), Some(1));
    }

    #[test]
    fn defaults_free_a_dead_leaders_lock_within_30_s() {
        let cfg = LeaseConfig::default();
        assert_eq!(cfg.takeover_bound(), Duration::from_secs(30));
        assert!(cfg.renew_every + cfg.margin < cfg.ttl);
    }
}
