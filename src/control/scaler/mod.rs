//! The queue-depth autoscaler: a control-plane task that sizes every function to its demand.
//!
//! Every `tick` (default 200 ms) it asks a [`DemandSource`] for each function's cumulative
//! demand counters, folds them into a [`window::DemandWindow`] (stable 60 s and panic 6 s
//! averages of in-flight + held requests or of requests per second, arrival-rate bounds over
//! trailing windows, the service time of completed requests), and asks the pure
//! [`decide::Decider`] whether to call the provider: it sizes for arrival rate x service time
//! (Little's law) plus the held requests to drain. The rules are in [`decide`]; the
//! per-function settings come from `com.openfaas.scale.*` labels (`model::scale`) parsed when
//! the provider publishes.
//!
//! Invariants:
//! - Never on the request path: the data plane only bumps atomics, the task reads them.
//! - At most one provider call per function at a time, one per decision, none on a tick
//!   where nothing changes. A failed call is logged and retried with backoff. The one
//!   exception: a scale-up is made while a scale-down still waits (the Nomad provider drains
//!   the allocations it will stop first); the provider ends that drain and fails the older
//!   call, whose outcome the scaler no longer waits for.
//! - Each decision is logged with its inputs and counted in
//!   `faasgate_scale_decisions_total` ([`stats`]).
//! - A function at zero is left to the cold-start task (`control::cold_start`), so held
//!   requests share exactly one scale-up.
//!
//! Tests: `decide` and `window` are pure and tested with injected time (and properties of the
//! bounds and the delay); [`run_scaler`] is tested on tokio's paused clock with a scripted
//! source and a recording provider.

pub mod decide;
pub mod source;
pub mod stats;
pub mod window;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::control::alert::AlertBook;
use crate::control::{Provider, ProviderError};
use crate::dataplane::table::DemandSample;
use crate::model::names::FunctionKey;

use crate::control::cluster::Cluster;
use crate::model::scale::ScaleSettings;

pub use decide::{Decider, Decision};
pub use decide::{Direction, Input, Reason};
pub use source::DemandSource;
pub(crate) use source::LocalDemand;
pub use source::Observation;
pub use stats::ScaleStats;
pub use window::DemandWindow;

/// Settings of the scaler, common to every function.
#[derive(Debug, Clone)]
pub struct ScalerConfig {
    /// Whether the queue-depth scaler runs (`--no-autoscale` turns it off).
    pub enabled: bool,
    /// Period of the decisions.
    pub tick: Duration,
    pub stable_window: Duration,
    pub panic_window: Duration,
    /// Panic when panic-window demand >= this x ready capacity.
    pub panic_threshold: f64,
    /// How long demand must stay below the count before a step down.
    pub scale_down_delay: Duration,
    /// Requests held are sized to drain within this (see `decide`).
    pub drain_horizon: Duration,
    /// First delay before retrying a rejected scale call; doubles up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Alert deliveries of one alert closer than this are replays (see `control::alert`).
    pub alert_min_interval: Duration,
}

/// What the scaler, the alert handler and `/metrics` share.
pub struct Scaling {
    pub config: ScalerConfig,
    /// Whether this gateway makes scale decisions (always, for a gateway alone), and the
    /// members' demand when it has peers.
    pub cluster: Arc<Cluster>,
    pub alerts: AlertBook,
    pub stats: Arc<ScaleStats>,
    /// Recent decisions of every kind, shown by the UI.
    pub events: Arc<crate::control::events::ScaleEvents>,
}

/// Per-function state of the loop.
struct FunctionScaler {
    label: String,
    tracker: Tracker,
    call: Option<(Decision, JoinHandle<Result<(), ProviderError>>)>,
    /// A scale-down is being held back for unknown demand (logged on each change).
    held_down: bool,
}

/// The pure part of the loop for one function: its demand window, its decider, and how an
/// observation becomes a decision [`Input`]. The loop and the simulator
/// (`tests/scaler_sim.rs`) both drive this, so the simulator runs the real rules.
#[derive(Debug, Clone)]
pub struct Tracker {
    pub window: DemandWindow,
    pub decider: Decider,
    first_seen_us: u64,
}

impl Tracker {
    /// A function first seen at `first_seen_us` (idle time counts from then).
    pub fn new(cfg: &ScalerConfig, first_seen_us: u64) -> Self {
        Self {
            window: DemandWindow::new(cfg.stable_window.max(cfg.panic_window)),
            decider: Decider::default(),
            first_seen_us,
        }
    }

    /// Folds in a demand sample (call this every tick, even while a call is in progress).
    pub fn push(&mut self, demand: DemandSample) {
        self.window.push(demand);
    }

    /// The decision input after the latest [`Tracker::push`].
    pub fn input(&self, cfg: &ScalerConfig, obs: &Observed, alert_floor: u64) -> Input {
        let kind = obs.settings.kind;
        let at_us = obs.demand.at_us;
        let last_arrival_us = obs.demand.last_arrival_ms * 1000;
        let stable = self.window.totals(cfg.stable_window);
        let panic = self.window.totals(cfg.panic_window);
        Input {
            now_us: at_us,
            settings: obs.settings,
            desired: obs.desired,
            ready: obs.ready,
            stable: stable.average(kind),
            panic: panic.average(kind),
            current: self.window.latest(kind),
            stable_arrivals: stable.arrivals,
            stable_secs: stable.secs(),
            panic_arrivals: panic.arrivals,
            panic_secs: panic.secs(),
            recent: self
                .window
                .arrival_rate(cfg.panic_window, decide::Z_TRIGGER, decide::Z_SIZE),
            service_time: stable.service_time(),
            inflight: obs.demand.inflight,
            queued: obs.demand.queued,
            idle_for: Duration::from_micros(
                at_us.saturating_sub(last_arrival_us.max(self.first_seen_us)),
            ),
            alert_floor,
            complete: obs.complete,
        }
    }

    /// Decides on `input` (from [`Tracker::input`]).
    pub fn decide(&mut self, cfg: &ScalerConfig, input: &Input) -> Option<Decision> {
        self.decider.decide(cfg, input)
    }

    /// Records the outcome of a call, seen at `at_us`.
    pub fn on_result(&mut self, cfg: &ScalerConfig, decision: &Decision, ok: bool, at_us: u64) {
        self.decider.on_result(cfg, decision, ok, at_us);
    }
}

/// What [`Tracker::input`] needs of an observation (an [`Observation`] without its key).
#[derive(Debug, Clone, Copy)]
pub struct Observed {
    pub settings: ScaleSettings,
    pub desired: u64,
    pub ready: u64,
    pub demand: DemandSample,
    /// Every gateway's demand is counted (see [`Observation::complete`]).
    pub complete: bool,
}

// === impl ScalerConfig ===

impl Default for ScalerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            tick: Duration::from_millis(200),
            stable_window: Duration::from_secs(60),
            panic_window: Duration::from_secs(6),
            panic_threshold: 2.0,
            scale_down_delay: Duration::from_secs(30),
            drain_horizon: Duration::from_secs(30),
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
            alert_min_interval: crate::control::alert::DEFAULT_MIN_INTERVAL,
        }
    }
}

// === impl Scaling ===

impl Scaling {
    /// A gateway alone: it always leads.
    pub fn new(config: ScalerConfig) -> Arc<Self> {
        Self::with_cluster(config, Cluster::alone())
    }

    /// One of several gateways: it decides only while it leads.
    pub(crate) fn with_cluster(config: ScalerConfig, cluster: Arc<Cluster>) -> Arc<Self> {
        Arc::new(Self {
            cluster,
            alerts: AlertBook::new(
                config.alert_min_interval,
                crate::control::alert::DEFAULT_FLOOR_TTL,
            ),
            config,
            stats: Arc::new(ScaleStats::default()),
            events: Arc::new(crate::control::events::ScaleEvents::default()),
        })
    }
}

/// Starts the scaler task; it runs until aborted.
pub(crate) fn spawn_scaler(
    scaling: Arc<Scaling>,
    source: Arc<dyn DemandSource>,
    provider: Arc<dyn Provider>,
) -> JoinHandle<()> {
    tokio::spawn(run_scaler(scaling, source, provider))
}

/// The scaler loop (see the module doc).
pub async fn run_scaler(
    scaling: Arc<Scaling>,
    source: Arc<dyn DemandSource>,
    provider: Arc<dyn Provider>,
) {
    let cfg = &scaling.config;
    let mut functions: HashMap<FunctionKey, FunctionScaler> = HashMap::new();
    let mut observed = Vec::new();
    let mut interval = tokio::time::interval(cfg.tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        source.gather(cfg.tick).await;
        observed.clear();
        source.observe(&mut observed);
        let now = tokio::time::Instant::now();
        let mut seen = Vec::with_capacity(observed.len());
        for obs in observed.drain(..) {
            let at_us = obs.demand.at_us;
            let f = functions
                .entry(obs.key.clone())
                .or_insert_with(|| FunctionScaler {
                    label: obs.key.to_string(),
                    tracker: Tracker::new(cfg, at_us),
                    call: None,
                    held_down: false,
                });
            f.tracker.push(obs.demand);
            seen.push(obs.key.clone());

            // A call in progress: wait for it and record its outcome. A scale-down may wait
            // on draining replicas (Nomad); a need to go up is not kept waiting behind it.
            let mut draining = None;
            if let Some((decision, call)) = f.call.take() {
                if call.is_finished() {
                    f.call = Some((decision, call));
                } else if decision.direction == Direction::Down {
                    draining = Some((decision, call));
                } else {
                    f.call = Some((decision, call));
                    continue;
                }
            }
            if let Some((decision, call)) = f.call.take() {
                let result = call
                    .await
                    .unwrap_or_else(|e| Err(ProviderError::Backend(e.to_string())));
                let ok = match result {
                    Ok(()) => true,
                    Err(ProviderError::NotFound(_)) => true,
                    Err(e) => {
                        f.tracker.on_result(cfg, &decision, false, at_us);
                        tracing::warn!(function = %f.label, to = decision.to, error = %e,
                            retry_in = ?f.tracker.decider.retry_delay(), "scale call rejected; will retry");
                        false
                    }
                };
                if ok {
                    f.tracker.on_result(cfg, &decision, true, at_us);
                }
            }

            let observed = Observed {
                settings: obs.settings,
                desired: obs.desired,
                ready: obs.ready,
                demand: obs.demand,
                complete: obs.complete,
            };
            let input = f
                .tracker
                .input(cfg, &observed, scaling.alerts.floor(&obs.key, now));
            let (stable, panic) = (input.stable, input.panic);
            // A follower keeps its windows warm (it may lead next) but decides nothing.
            let Some(term) = scaling.cluster.leadership.term() else {
                continue;
            };
            let decision = f.tracker.decide(cfg, &input);
            let held = f.tracker.decider.held_down();
            if held != f.held_down {
                f.held_down = held;
                if held {
                    tracing::info!(function = %f.label, term, desired = obs.desired,
                        "scale-down held: a gateway's demand is unknown");
                } else {
                    tracing::info!(function = %f.label, term,
                        "every gateway's demand is known again");
                }
            }
            let sizing = f.tracker.decider.sizing();
            scaling
                .stats
                .observe(&f.label, stable, panic, f.tracker.decider.panicking(at_us));
            let decision = match (decision, draining) {
                (Some(d), Some((down, _call))) if d.direction == Direction::Up => {
                    // The new call supersedes the scale-down (the provider ends its drain and
                    // fails it); that call's outcome is not waited for.
                    tracing::info!(function = %f.label, down_to = down.to, up_to = d.to,
                        "scale-up supersedes a scale-down still draining");
                    d
                }
                (_, Some(pending)) => {
                    f.call = Some(pending);
                    continue;
                }
                (Some(d), None) => d,
                (None, None) => continue,
            };
            tracing::info!(
                function = %f.label,
                term,
                from = decision.from,
                to = decision.to,
                direction = decision.direction.as_str(),
                reason = decision.reason.as_str(),
                stable = format_args!("{stable:.2}"),
                panic = format_args!("{panic:.2}"),
                ready = obs.ready,
                inflight = obs.demand.inflight,
                queued = obs.demand.queued,
                service_ms = format_args!(
                    "{:.1}",
                    input.service_time.map_or(0.0, |w| w.mean * 1e3)
                ),
                rate_low = format_args!("{:.1}", input.recent.low),
                rate_high = format_args!("{:.1}", input.recent.high),
                need_up = sizing.up,
                need_down = sizing.down,
                idle_s = input.idle_for.as_secs(),
                alert_floor = input.alert_floor,
                "scale decision"
            );
            scaling
                .stats
                .decision(&f.label, decision.direction, decision.reason);
            scaling.events.record(
                &obs.key,
                decision.from,
                decision.to,
                decision.reason.as_str(),
            );
            let (provider, key) = (provider.clone(), obs.key.clone());
            // Leadership is checked again as the call leaves (a term may have ended while
            // this tick ran), and by the provider right before the call that sets the count:
            // a scale-down drains first, and a term that ends meanwhile must not make the
            // call after a newer leader's.
            if !scaling.cluster.leadership.is_leader() {
                continue;
            }
            let leadership = scaling.cluster.leadership.clone();
            let call = tokio::spawn(async move {
                let valid = move || leadership.term() == Some(term);
                provider.scale_if(&key, decision.to, &valid).await
            });
            f.call = Some((decision, call));
        }
        // Functions gone from the source: forget them.
        if seen.len() != functions.len() {
            let seen: std::collections::HashSet<_> = seen.into_iter().collect();
            functions.retain(|k, f| {
                let keep = seen.contains(k);
                if !keep {
                    scaling.stats.forget(&f.label);
                }
                keep
            });
        }
    }
}

#[cfg(test)]
mod tests;
