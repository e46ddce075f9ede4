//! One function's replicas: start, health, restart, rolling replace, drain, stop.
//!
//! Owns the set of instances of one function. The provider writes the *target* (desired
//! count, replica spec and its generation, stop request) into [`Shared`] and wakes the
//! supervisor task; the task alone owns the instances and converges on the target:
//!
//! - it starts instances of the current generation until there are `desired` of them, and
//!   after a crash waits an exponential backoff (100 ms doubling to 10 s, back to 100 ms when
//!   the crashed replica had been healthy for 10 s) before replacing it;
//! - during a roll (new generation), old instances stay in rotation while
//!   `desired - ready new instances` is above their number, or until [`ROLL_TIMEOUT`];
//! - a stopped instance leaves rotation first (published), then is drained (its `pending()`
//!   reaches 0, bounded by the drain timeout), then terminated.
//!
//! Invariants: the data plane only sees healthy, non-draining replicas; every change of that
//! set or of the desired count is published as one [`FunctionState`], built under the
//! `Shared` lock so a desired count set by the provider and a ready set set by the task never
//! overwrite each other with stale values. No lock is held across `.await`. When the task
//! returns, every process it started has been reaped.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::instance::{Event, EventKind, InstanceContext, InstanceHandle, Pids};
use super::logs::LogBuffer;
use super::spec::ReplicaSpec;
use crate::dataplane::{FunctionHandle, FunctionState, Replica};
use crate::model::names::FunctionKey;
use crate::model::scale::ScaleSettings;

/// First delay before replacing a crashed replica.
pub(crate) const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest delay before replacing a crashed replica.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A replica healthy this long resets the backoff when it later exits.
pub(crate) const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How long old replicas keep serving while new ones fail to become healthy.
pub(crate) const ROLL_TIMEOUT: Duration = Duration::from_secs(60);
/// Most processes one function may run, whatever the desired count says.
pub(crate) const MAX_PROCESSES: u64 = 256;
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// Settings common to every function of the provider.
#[derive(Debug)]
pub(crate) struct SupervisorConfig {
    /// Program and arguments of the watchdog.
    pub watchdog_command: Arc<[OsString]>,
    /// Bound on waiting for a stopped replica's in-flight requests.
    pub drain_timeout: Duration,
    /// How replicas with secrets get them.
    pub secrets: Arc<super::replica_secrets::SecretsSetup>,
}

/// How the supervisor should stop everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopMode {
    /// Wait for in-flight requests (bounded) before terminating (delete).
    Drain,
    /// Terminate at once (gateway shutdown).
    Now,
}

/// What the provider and the supervisor task share about one function.
pub(super) struct Shared {
    pub key: FunctionKey,
    pub handle: Arc<FunctionHandle>,
    pub logs: Arc<LogBuffer>,
    pids: Pids,
    target: Mutex<Target>,
    wake: Notify,
}

struct Target {
    desired: u64,
    scale: ScaleSettings,
    spec: Arc<ReplicaSpec>,
    generation: u64,
    stop: Option<StopMode>,
    ready: Arc<[Arc<Replica>]>,
}

struct Supervisor {
    shared: Arc<Shared>,
    cfg: Arc<SupervisorConfig>,
    ctx: InstanceContext,
    events: mpsc::UnboundedReceiver<Event>,
    slots: BTreeMap<Arc<str>, Slot>,
    /// Stopping instances (drain then terminate) and exited instances being reaped.
    draining: JoinSet<()>,
    generation: u64,
    roll_deadline: Option<Instant>,
    backoff: Backoff,
    restart_at: Option<Instant>,
    published: Vec<Arc<str>>,
}

struct Slot {
    generation: u64,
    addr: Option<std::net::SocketAddr>,
    replica: Option<Arc<Replica>>,
    healthy_since: Option<Instant>,
    instance: InstanceHandle,
}

/// Delay before replacing a crashed replica: [`BACKOFF_BASE`] doubling to [`BACKOFF_MAX`],
/// back to the base when the crashed replica had been healthy for [`STABLE_AFTER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    next: Duration,
}

enum Wake {
    Target,
    Event(Event),
    Reaped,
    Timer,
}

// === impl Shared ===

impl Shared {
    /// Shared state for a function starting with `desired` replicas of `spec`; publishes the
    /// desired count at once.
    pub(super) fn new(
        key: FunctionKey,
        handle: Arc<FunctionHandle>,
        desired: u64,
        scale: ScaleSettings,
        spec: ReplicaSpec,
    ) -> Arc<Self> {
        let logs = Arc::new(LogBuffer::new(&key));
        let shared = Arc::new(Self {
            key,
            handle,
            logs,
            pids: Pids::default(),
            target: Mutex::new(Target {
                desired,
                scale,
                spec: Arc::new(spec),
                generation: 0,
                stop: None,
                ready: Arc::from(Vec::new()),
            }),
            wake: Notify::new(),
        });
        shared.update(|_| {});
        shared
    }

    /// Sets the desired count; the data plane reads it back at once.
    pub(crate) fn set_desired(&self, desired: u64) {
        self.update(|t| t.desired = desired);
    }

    /// Replaces the replica spec: the supervisor rolls every replica onto it.
    pub(crate) fn set_spec(&self, spec: ReplicaSpec, scale: ScaleSettings) {
        self.update(|t| {
            t.spec = Arc::new(spec);
            t.generation += 1;
            t.scale = scale;
        });
    }

    /// Asks the supervisor to stop every replica and end.
    pub(super) fn stop(&self, mode: StopMode) {
        self.update(|t| {
            // A gateway shutdown overrides a drain in progress, not the other way round.
            if t.stop != Some(StopMode::Now) {
                t.stop = Some(mode);
            }
        });
    }

    pub(super) fn desired(&self) -> u64 {
        self.lock().desired
    }

    /// Replicas in rotation now.
    pub(super) fn available(&self) -> u64 {
        self.lock().ready.len() as u64
    }

    /// Live processes (starting, serving or draining): instance id and pid.
    pub(super) fn pids(&self) -> Vec<(String, u32)> {
        self.pids
            .lock()
            .expect("pid registry mutex poisoned")
            .iter()
            .map(|(id, pid)| (id.to_string(), *pid))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Target> {
        self.target.lock().expect("function target mutex poisoned")
    }

    /// Changes the target, publishes the function state and wakes the supervisor.
    fn update(&self, change: impl FnOnce(&mut Target)) {
        {
            let mut t = self.lock();
            change(&mut t);
            self.publish_locked(&t);
        }
        self.wake.notify_one();
    }

    fn set_ready(&self, ready: Vec<Arc<Replica>>) {
        let mut t = self.lock();
        t.ready = Arc::from(ready);
        self.publish_locked(&t);
    }

    fn publish_locked(&self, t: &Target) {
        self.handle.publish(FunctionState {
            replicas: t.ready.clone(),
            desired: t.desired,
            cold_start_replicas: t.scale.cold_start_replicas(),
            scale: t.scale,
        });
    }
}

/// Starts the supervisor task of `shared`; it ends after [`Shared::stop`], with every process
/// reaped. Dropping its handle does not stop it.
pub(crate) fn spawn_supervisor(shared: Arc<Shared>, cfg: Arc<SupervisorConfig>) -> JoinHandle<()> {
    let (tx, events) = mpsc::unbounded_channel();
    let ctx = InstanceContext {
        command: cfg.watchdog_command.clone(),
        logs: shared.logs.clone(),
        events: tx,
        pids: shared.pids.clone(),
        secrets: cfg.secrets.clone(),
    };
    let sup = Supervisor {
        shared,
        cfg,
        ctx,
        events,
        slots: BTreeMap::new(),
        draining: JoinSet::new(),
        generation: 0,
        roll_deadline: None,
        backoff: Backoff::default(),
        restart_at: None,
        published: Vec::new(),
    };
    tokio::spawn(sup.run())
}

// === impl Backoff ===

impl Default for Backoff {
    fn default() -> Self {
        Self { next: BACKOFF_BASE }
    }
}

impl Backoff {
    /// The delay before replacing a replica that exited after being healthy for
    /// `healthy_for` (None: never healthy).
    pub(crate) fn on_exit(&mut self, healthy_for: Option<Duration>) -> Duration {
        if healthy_for.is_some_and(|d| d >= STABLE_AFTER) {
            self.next = BACKOFF_BASE;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }
}

// === impl Supervisor ===

impl Supervisor {
    async fn run(mut self) {
        loop {
            let (desired, generation, spec, stop) = {
                let t = self.shared.lock();
                (t.desired, t.generation, t.spec.clone(), t.stop)
            };
            if let Some(mode) = stop {
                let all: Vec<_> = self.slots.keys().cloned().collect();
                self.stop_slots(all, mode == StopMode::Drain);
                while self.draining.join_next().await.is_some() {}
                return;
            }
            if generation != self.generation {
                self.generation = generation;
                self.roll_deadline = Some(Instant::now() + ROLL_TIMEOUT);
            }
            self.reconcile(desired.min(MAX_PROCESSES) as usize, &spec);

            let timer = self.next_timer(desired.min(MAX_PROCESSES) as usize);
            let wake = tokio::select! {
                _ = self.shared.wake.notified() => Wake::Target,
                Some(ev) = self.events.recv() => Wake::Event(ev),
                Some(_) = self.draining.join_next(), if !self.draining.is_empty() => Wake::Reaped,
                _ = sleep_until(timer), if timer.is_some() => Wake::Timer,
            };
            match wake {
                Wake::Event(ev) => self.on_event(ev),
                Wake::Target | Wake::Reaped | Wake::Timer => {}
            }
        }
    }

    /// Starts and stops instances towards `desired` of the current generation.
    fn reconcile(&mut self, desired: usize, spec: &Arc<ReplicaSpec>) {
        let now = Instant::now();
        let mut to_stop = Vec::new();

        // Current generation: least useful first (not ready, then youngest).
        let mut current: Vec<(Arc<str>, Option<Instant>)> = self
            .slots
            .iter()
            .filter(|(_, s)| s.generation == self.generation)
            .map(|(id, s)| (id.clone(), s.healthy_since))
            .collect();
        current.sort_by_key(|(_, since)| {
            (
                since.is_some(),
                since.map(|t| now.saturating_duration_since(t)),
            )
        });
        if current.len() > desired {
            let excess = current.len() - desired;
            to_stop.extend(current.drain(..excess).map(|(id, _)| id));
        } else if current.len() < desired && self.restart_at.is_none_or(|t| now >= t) {
            self.restart_at = None;
            for _ in current.len()..desired {
                self.start(spec.clone());
            }
        }
        let ready_current = current.iter().filter(|(_, s)| s.is_some()).count();

        // Older generations: keep the ready ones while the new ones are not ready yet.
        let mut old: Vec<(Arc<str>, bool)> = self
            .slots
            .iter()
            .filter(|(_, s)| s.generation != self.generation)
            .map(|(id, s)| (id.clone(), s.healthy_since.is_some()))
            .collect();
        if old.is_empty() {
            self.roll_deadline = None;
        }
        let allowed_old = match self.roll_deadline {
            Some(deadline) if now < deadline => desired.saturating_sub(ready_current),
            _ => 0,
        };
        if old.len() > allowed_old {
            old.sort_by_key(|(_, ready)| !ready);
            to_stop.extend(old.drain(allowed_old..).map(|(id, _)| id));
        }
        self.stop_slots(to_stop, true);
    }

    fn next_timer(&self, desired: usize) -> Option<Instant> {
        let current = self
            .slots
            .values()
            .filter(|s| s.generation == self.generation)
            .count();
        let restart = self.restart_at.filter(|_| current < desired);
        let roll = self
            .roll_deadline
            .filter(|_| self.slots.values().any(|s| s.generation != self.generation));
        match (restart, roll) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn start(&mut self, spec: Arc<ReplicaSpec>) {
        let id: Arc<str> = Arc::from(instance_id(self.shared.key.name()));
        let instance = self.ctx.spawn_instance(id.clone(), spec);
        self.slots.insert(
            id,
            Slot {
                generation: self.generation,
                addr: None,
                replica: None,
                healthy_since: None,
                instance,
            },
        );
    }

    fn on_event(&mut self, ev: Event) {
        let now = Instant::now();
        match ev.kind {
            EventKind::Listening(addr) => {
                if let Some(slot) = self.slots.get_mut(&ev.id) {
                    slot.addr = Some(addr);
                }
            }
            EventKind::Healthy => {
                if let Some(slot) = self.slots.get_mut(&ev.id) {
                    if let Some(addr) = slot.addr {
                        slot.replica
                            .get_or_insert_with(|| Replica::new(&*ev.id, addr));
                        slot.healthy_since = Some(now);
                    }
                }
                self.publish();
            }
            EventKind::Unhealthy => {
                if let Some(slot) = self.slots.get_mut(&ev.id) {
                    slot.healthy_since = None;
                }
                self.publish();
            }
            EventKind::Exited(reason) => {
                let Some(slot) = self.slots.remove(&ev.id) else {
                    return;
                };
                let delay = self
                    .backoff
                    .on_exit(slot.healthy_since.map(|t| now.duration_since(t)));
                tracing::warn!(function = %self.shared.key, instance = %ev.id, %reason,
                    ?delay, "replica exited; replacing it");
                self.restart_at = Some(now + delay);
                let task = slot.instance.task;
                self.draining.spawn(async move {
                    let _ = task.await;
                });
                self.publish();
                if let Some(replica) = &slot.replica {
                    // Gone: requests holding an older snapshot pick again.
                    replica.drain();
                }
            }
        }
    }

    /// Takes `ids` out of rotation (published before anything else), then drains and
    /// terminates each in the background.
    fn stop_slots(&mut self, ids: Vec<Arc<str>>, drain: bool) {
        if ids.is_empty() {
            return;
        }
        let removed: Vec<Slot> = ids.iter().filter_map(|id| self.slots.remove(id)).collect();
        self.publish();
        let timeout = if drain {
            self.cfg.drain_timeout
        } else {
            Duration::ZERO
        };
        for slot in removed {
            self.draining.spawn(drain_and_stop(slot, timeout));
        }
    }

    /// Publishes the ready set if it changed.
    fn publish(&mut self) {
        let ready: Vec<(Arc<str>, Arc<Replica>)> = self
            .slots
            .iter()
            .filter(|(_, s)| s.healthy_since.is_some())
            .filter_map(|(id, s)| Some((id.clone(), s.replica.clone()?)))
            .collect();
        let ids: Vec<Arc<str>> = ready.iter().map(|(id, _)| id.clone()).collect();
        if ids == self.published {
            return;
        }
        self.published = ids;
        self.shared
            .set_ready(ready.into_iter().map(|(_, r)| r).collect());
    }
}

/// Waits (bounded) for the replica's in-flight requests, then stops its process.
async fn drain_and_stop(slot: Slot, timeout: Duration) {
    if let Some(replica) = &slot.replica {
        // The set without this replica is published already; from here on a request that
        // picked it from an older snapshot sees `draining` and picks again, and one that
        // did not see it is counted in `pending` (the handshake of `dataplane::replica`).
        replica.drain();
        let deadline = Instant::now() + timeout;
        while replica.pending() > 0 && Instant::now() < deadline {
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }
    let _ = slot.instance.stop.send(());
    let _ = slot.instance.task.await;
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `<name>-<5 random lowercase alphanumerics>`.
pub(crate) fn instance_id(name: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let suffix: String = (0..5)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect();
    format!("{name}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_after_a_stable_run() {
        let mut b = Backoff::default();
        let ms = |n| Duration::from_millis(n);
        let delays: Vec<_> = (0..9).map(|_| b.on_exit(None)).collect();
        assert_eq!(
            delays,
            [
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(3200),
                ms(6400),
                ms(10_000),
                ms(10_000)
            ]
        );
        // Healthy, but not long enough: keeps growing (capped).
        assert_eq!(b.on_exit(Some(Duration::from_secs(9))), ms(10_000));
        assert_eq!(b.on_exit(Some(STABLE_AFTER)), ms(100));
        assert_eq!(b.on_exit(None), ms(200));
    }

    #[test]
    fn instance_ids_name_the_function() {
        let id = instance_id("echo");
        assert!(id.starts_with("echo-"));
        assert_eq!(id.len(), "echo-".len() + 5);
        assert_ne!(instance_id("echo"), instance_id("echo"));
    }
}
