//! The scaling decision for one function: a pure function of its demand, settings, replica
//! counts and the time, plus the little state the rules need between ticks.
//!
//! **What is sized for** (Little's law). The concurrency a function needs is its arrival rate
//! `lambda` times its service time `W`: `desired = ceil(lambda x W / (target x proportion))`.
//! `W` is measured from completed requests over the stable window (time in flight minus time
//! held, per request ended: [`super::window::DemandWindow::service_time`]), so waiting for
//! capacity is never taken for work, and a backlog that more replicas would drain is not sized
//! for as if it lasted. Requests still held add `held / drain_horizon` to the rate, sized at
//! the full `target` (the `1 - proportion` headroom drains a step's backlog; only a backlog
//! that headroom would not drain within the horizon buys replicas). For the `rps` type `W` is
//! 1 and the rate is the load. Both are estimates, so every rule uses a confidence bound
//! (Poisson for arrivals, `1/sqrt(n)` relative error for the mean of `n` service times):
//! - **Up** when the *lower* bound (`Z_TRIGGER`) over some trailing window of 1 tick up to the
//!   panic window, or over the stable window, needs more than the desired count: noise does not
//!   scale up, a real step does as soon as the ticks after it prove it (a x2 step in about
//!   0.4 s, a x100 one in one tick). The step goes at once to the *upper* bound (`Z_SIZE`) of
//!   the window that proved it: undersizing would cost a second call and a deployment, a
//!   standard error of oversizing costs next to nothing. That margin is at most
//!   `max(1, 10%)` of the sure need (the lower bound), and less than the step itself: a
//!   short window's upper bound is wide, the margin is to save a call, not to buy capacity,
//!   and a one-replica step gets none (its evidence is marginal: a load at the edge of a
//!   count, a slow ramp, or a rare run of noise on a steady load, which then costs one
//!   replica at most). If the newest tick is still
//!   significantly above the one before (the load changed inside it), the call waits one tick,
//!   so it is not sized on a partly loaded tick.
//! - **Panic** (after Knative's KPA): a scale-up decided on the short windows, or a recent
//!   demand at least `panic_threshold` (2) times the ready capacity, starts panic mode for a
//!   stable window: the count only goes up.
//! - **Down**, out of panic, when the *upper* bound over the stable window (and over the
//!   panic window) needs fewer than the desired count, in one call to the largest `want` of the last
//!   `scale_down_delay`, once that has held for the delay and `want` has not fallen within
//!   it. After a load drops, the stable window's average slides down for up to a window
//!   and `want` with it, one count after another; stepping at each would make a call per
//!   count. Waiting until `want` settles makes one call, a delay after the window has
//!   passed the drop (stable window + delay in all), to the count the remaining load
//!   needs. A load that keeps falling for longer than a stable window (a slow ramp down)
//!   steps anyway, every stable window + delay. Between the two bounds nothing changes,
//!   so steady load makes no calls.
//! - Until a function has a measured `W` (a new function), the in-flight averages are used as
//!   they are: up on the stable window, or in panic on a burst (the latest tick above the full
//!   capacity of the desired count, two ticks running) to `max(want_panic, want_stable,
//!   want_current)`.
//! - The desired count (replicas starting included) is what `want` is compared with, so
//!   replicas on the way are counted as capacity and never asked for twice.
//! - **Bounds**: `[max(1, min, alert floor), max]`. Below the bound the count is raised at once
//!   (reason `min`), above `max` lowered at once (reason `max`).
//! - **Zero**: with `com.openfaas.scale.zero=true`, once no request arrived for
//!   `zero-duration`, none is in flight or held, and the function is not panicking, the count
//!   goes to 0 in one step (reason `idle`). A function at 0 is left to the cold-start path,
//!   which scales it up once for all held requests.
//! - `min == max` disables all of this. A rejected scale call is retried with exponential
//!   backoff (`retry_base` doubling to `retry_max`), decided afresh each time.
//!
//! No clock is read: `Input::now_us` is the demand source's time. Tests drive it directly;
//! `tests/scaler_sim.rs` runs these rules against simulated loads and a simulated Nomad.

use std::collections::VecDeque;
use std::time::Duration;

use crate::control::scaler::window::{ArrivalRate, ServiceTime};
use crate::control::scaler::ScalerConfig;
use crate::model::scale::{ScaleKind, ScaleSettings};

/// Standard errors below the estimate a need must be to scale up (and above it to scale
/// down).
pub(crate) const Z_TRIGGER: f64 = 2.5;
/// Standard errors above the estimate a scale-up is sized for.
pub(crate) const Z_SIZE: f64 = 2.0;

/// What one decision looks at.
#[derive(Debug, Clone, Copy)]
pub struct Input {
    pub(crate) now_us: u64,
    pub settings: ScaleSettings,
    /// Desired replicas as the provider reports them (starting ones included).
    pub desired: u64,
    /// Replicas ready to serve.
    pub ready: u64,
    /// Average demand over the stable window (in the settings' unit), as measured.
    pub stable: f64,
    /// Average demand over the panic window.
    pub panic: f64,
    /// Average demand over the latest tick.
    pub current: f64,
    /// Arrivals over the stable window and the seconds it covers.
    pub(crate) stable_arrivals: u64,
    pub(crate) stable_secs: f64,
    /// Arrivals over the panic window and the seconds it covers.
    pub(crate) panic_arrivals: u64,
    pub(crate) panic_secs: f64,
    /// Arrival-rate bounds over trailing windows up to the panic window.
    pub recent: ArrivalRate,
    /// Service time of the requests completed over the stable window, if enough.
    pub service_time: Option<ServiceTime>,
    /// Requests in flight now, held ones included.
    pub inflight: u64,
    /// Requests held now (waiting for a replica).
    pub queued: u64,
    /// Time since the last arrival (or since the function was first seen).
    pub(crate) idle_for: Duration,
    /// Lower bound set by a firing Prometheus alert (0: none).
    pub(crate) alert_floor: u64,
    /// Every gateway's demand is in the figures; when not, no scale-down is made.
    pub(crate) complete: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Panic-window demand (scale up only).
    Panic,
    /// Stable-window demand.
    Stable,
    /// No arrival for zero-duration: to zero.
    Idle,
    /// Raised to the lower bound (min or an alert floor).
    Min,
    /// Lowered to max.
    Max,
    /// A firing alert (the alert handler's decisions).
    AlertFiring,
    /// A resolved alert.
    AlertResolved,
}

/// One scale call to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub from: u64,
    pub to: u64,
    pub direction: Direction,
    pub reason: Reason,
}

/// What the rules remember between ticks for one function.
#[derive(Debug, Clone)]
pub struct Decider {
    panic_until_us: u64,
    down: DownWatch,
    retry_at_us: u64,
    retry_delay: Duration,
    /// The count last set and until when to believe it over a provider that lags.
    last_set: Option<(u64, u64)>,
    /// Consecutive ticks whose demand exceeded the full capacity of the desired count
    /// (in-flight sizing, before a service time is known).
    over_ticks: u32,
    /// A scale-up waited one tick for the load to settle.
    deferred: bool,
    /// The latest sizing, for the decision log.
    sizing: Sizing,
    /// The latest tick wanted fewer replicas but a member's demand was unknown.
    held_down: bool,
}

/// A scale-down waiting for its delay: since when `want` has stayed below the count, and
/// the largest `want` over the last `scale_down_delay`.
///
/// `wants` is a monotonic queue: times rise and wants strictly fall from front to back, so
/// the front is the largest `want` within the delay and its length is at most the number of
/// distinct counts below the desired one.
#[derive(Debug, Clone, Default)]
struct DownWatch {
    since_us: Option<u64>,
    wants: VecDeque<(u64, u64)>,
}

/// Replica counts the demand asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sizing {
    /// Needed for sure (lower bounds): above the desired count, scale up.
    pub up: u64,
    /// What a scale-up goes to (upper bound of the window that proved it).
    pub to: u64,
    /// Needed at most (upper bounds): below the desired count, scale down.
    pub down: u64,
    /// The scale-up comes from the short windows (a panic) rather than the stable one.
    fast: bool,
    /// Recent demand at least `panic_threshold` x the ready capacity.
    panic: bool,
    /// The newest tick shows no change inside it.
    settled: bool,
}

/// How long a count just set is trusted over a provider reading that has not caught up.
const SET_TRUST: Duration = Duration::from_secs(5);

// === impl Direction / Reason ===

impl Direction {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::Panic => "panic",
            Reason::Stable => "stable",
            Reason::Idle => "idle",
            Reason::Min => "min",
            Reason::Max => "max",
            Reason::AlertFiring => "alert_firing",
            Reason::AlertResolved => "alert_resolved",
        }
    }
}

// === impl Decider ===

impl Default for Decider {
    fn default() -> Self {
        Self {
            panic_until_us: 0,
            down: DownWatch::default(),
            retry_at_us: 0,
            retry_delay: Duration::ZERO,
            last_set: None,
            over_ticks: 0,
            deferred: false,
            sizing: Sizing::default(),
            held_down: false,
        }
    }
}

impl Decider {
    /// True while in panic mode at `now_us`.
    pub fn panicking(&self, now_us: u64) -> bool {
        now_us < self.panic_until_us
    }

    /// The scale call to make now, if any. Call [`Decider::on_result`] with its outcome.
    pub fn decide(&mut self, cfg: &ScalerConfig, input: &Input) -> Option<Decision> {
        let now = input.now_us;
        let s = &input.settings;
        let desired = match self.last_set {
            Some((n, until)) if input.desired != n && now < until => n,
            _ => {
                self.last_set = None;
                input.desired
            }
        };
        if !s.autoscaled() || desired == 0 {
            self.down.reset();
            return None;
        }
        let sz = self.size(cfg, input, desired);
        self.sizing = sz;
        if sz.panic {
            self.panic_until_us = now + us(cfg.stable_window);
        }
        // While panicking only the short windows raise the count.
        let mut up = sz.up > desired && (sz.fast || !self.panicking(now));
        if up && !sz.settled && !self.deferred {
            // The load changed inside the newest tick: size it on the next one.
            self.deferred = true;
            up = false;
        } else {
            self.deferred = false;
        }
        if up && sz.fast {
            self.panic_until_us = now + us(cfg.stable_window);
        }
        let panicking = self.panicking(now);
        if now < self.retry_at_us {
            return None;
        }
        let idle = s.zero && input.inflight == 0 && input.idle_for >= s.zero_duration && !panicking;

        let (mut want, mut reason) = if idle {
            (0, Reason::Idle)
        } else if up {
            let reason = if sz.fast {
                Reason::Panic
            } else {
                Reason::Stable
            };
            (sz.to.max(sz.up), reason)
        } else if panicking {
            (desired, Reason::Panic)
        } else {
            (sz.down.min(desired), Reason::Stable)
        };
        if !idle {
            let floor = s.min.max(1).max(input.alert_floor).min(s.max);
            if want < floor {
                want = floor;
                if desired < floor {
                    reason = Reason::Min;
                }
            }
            if want > s.max {
                want = s.max;
                if desired > s.max {
                    reason = Reason::Max;
                }
            }
        }

        self.held_down = false;
        if want < desired && !input.complete {
            // A member's share of the demand is unknown: what is known is a lower bound, and
            // taking it for the whole would scale down (or to zero) a function another
            // gateway may be serving. The scale-down delay starts again once all is known.
            // (A count above a lowered `max` does not depend on demand: it still comes down,
            // to `max`.)
            if desired > s.max {
                want = s.max;
                reason = Reason::Max;
            } else {
                self.down.reset();
                self.held_down = true;
                return None;
            }
        }
        let to = match want.cmp(&desired) {
            std::cmp::Ordering::Equal => {
                self.down.reset();
                return None;
            }
            std::cmp::Ordering::Greater => {
                self.down.reset();
                want
            }
            std::cmp::Ordering::Less if reason == Reason::Idle => want,
            std::cmp::Ordering::Less if desired > s.max => {
                reason = Reason::Max;
                s.max
            }
            std::cmp::Ordering::Less => {
                let delay = us(cfg.scale_down_delay);
                let (below_for, largest) = self.down.push(now, want, delay);
                let settled = largest == want || below_for >= delay + us(cfg.stable_window);
                if below_for < delay || !settled {
                    return None;
                }
                largest
            }
        };
        if to == desired {
            return None;
        }
        Some(Decision {
            from: desired,
            to,
            direction: if to > desired {
                Direction::Up
            } else {
                Direction::Down
            },
            reason,
        })
    }

    /// The latest sizing (for the decision log).
    pub fn sizing(&self) -> Sizing {
        self.sizing
    }

    /// Whether the latest tick held a scale-down back because a member's demand was unknown.
    pub(crate) fn held_down(&self) -> bool {
        self.held_down
    }

    /// The replica counts the demand asks for (see the module doc).
    fn size(&mut self, cfg: &ScalerConfig, input: &Input, desired: u64) -> Sizing {
        let s = &input.settings;
        let per = s.per_replica();
        // Service time bounds (a rate is the load itself for the rps type).
        let w = match s.kind {
            ScaleKind::Rps => Some((1.0, 1.0)),
            ScaleKind::Capacity => input.service_time.map(|st| {
                let rel = 1.0 / (st.completions as f64).sqrt();
                (
                    st.mean * (1.0 - Z_TRIGGER * rel).max(0.0),
                    st.mean * (1.0 + Z_SIZE * rel),
                )
            }),
        };
        let Some((w_low, w_high)) = w else {
            return self.size_on_inflight(cfg, input, desired);
        };
        self.over_ticks = 0;
        if input.stable_secs <= 0.0 {
            return Sizing {
                up: 0,
                to: 0,
                down: desired,
                settled: true,
                ..Default::default()
            };
        }
        let r = &input.recent;
        let a = input.stable_arrivals as f64;
        let stable_low = (a - Z_TRIGGER * a.sqrt()).max(0.0) / input.stable_secs;
        let stable_high = (a + Z_TRIGGER * (a + 1.0).sqrt()) / input.stable_secs;
        // The recent rate a scale-down must also fit: the panic window's upper bound as a
        // whole. (`recent` is the window that best proves a rise: its upper bound is that of
        // whichever short window was busiest by chance, which would hold every scale-down
        // back on noise.)
        let p = input.panic_arrivals as f64;
        let panic_high = if input.panic_secs > 0.0 {
            (p + Z_TRIGGER * (p + 1.0).sqrt()) / input.panic_secs
        } else {
            0.0
        };
        let drain = input.queued as f64 / cfg.drain_horizon.as_secs_f64().max(1e-3);
        let fast =
            replicas_for(r.low * w_low, per).max(replicas_for((r.low + drain) * w_low, s.target));
        let slow = replicas_for(stable_low * w_low, per);
        let up = fast.max(slow);
        Sizing {
            up,
            to: up
                .max(replicas_for(r.high * w_high, per))
                .min(up + (up / 10).max(1).min(up.saturating_sub(desired + 1))),
            down: replicas_for(stable_high.max(panic_high) * w_high, per)
                .max(replicas_for((stable_high + drain) * w_high, s.target)),
            fast: fast > desired,
            panic: r.low > 0.0 && r.low * w_low >= cfg.panic_threshold * input.ready as f64 * per,
            settled: r.settled,
        }
    }

    /// Sizing on the in-flight averages as measured, before a service time is known: up on
    /// the stable window, or on a burst (the latest tick above the full `target` capacity of
    /// the desired count, two ticks running: one noisy tick never starts a call).
    fn size_on_inflight(&mut self, cfg: &ScalerConfig, input: &Input, desired: u64) -> Sizing {
        let s = &input.settings;
        let per = s.per_replica();
        if input.current > desired as f64 * s.target {
            self.over_ticks += 1;
        } else {
            self.over_ticks = 0;
        }
        let burst = self.over_ticks >= 2;
        let want_stable = replicas_for(input.stable, per);
        let up = if burst {
            want_stable
                .max(replicas_for(input.panic, per))
                .max(replicas_for(input.current, per))
        } else {
            want_stable
        };
        Sizing {
            up,
            to: up,
            down: want_stable,
            fast: burst,
            panic: burst
                || (input.panic > 0.0
                    && input.panic >= cfg.panic_threshold * input.ready as f64 * per),
            settled: true,
        }
    }

    /// Records the outcome of the call made for `decision` at `now_us`.
    pub fn on_result(&mut self, cfg: &ScalerConfig, decision: &Decision, ok: bool, now_us: u64) {
        if ok {
            self.retry_delay = Duration::ZERO;
            self.retry_at_us = 0;
            self.down.reset();
            self.last_set = Some((decision.to, now_us + us(SET_TRUST)));
        } else {
            self.retry_delay = if self.retry_delay.is_zero() {
                cfg.retry_base
            } else {
                (self.retry_delay * 2).min(cfg.retry_max)
            };
            self.retry_at_us = now_us + us(self.retry_delay);
        }
    }

    /// The delay before the next try after a failure (zero when the last call succeeded).
    pub(crate) fn retry_delay(&self) -> Duration {
        self.retry_delay
    }
}

// === impl DownWatch ===

impl DownWatch {
    fn reset(&mut self) {
        self.since_us = None;
        self.wants.clear();
    }

    /// Records `want` at `now_us`; returns how long `want` has stayed below the count and
    /// the largest `want` over the last `delay_us`.
    fn push(&mut self, now_us: u64, want: u64, delay_us: u64) -> (u64, u64) {
        let since = *self.since_us.get_or_insert(now_us);
        while self.wants.back().is_some_and(|&(_, w)| w <= want) {
            self.wants.pop_back();
        }
        self.wants.push_back((now_us, want));
        while self
            .wants
            .front()
            .is_some_and(|&(t, _)| t + delay_us < now_us)
        {
            self.wants.pop_front();
        }
        // The newest entry is never older than the delay, so the queue is not empty.
        let largest = self.wants.front().map_or(want, |&(_, w)| w);
        (now_us - since, largest)
    }
}

/// `ceil(demand / per_replica)`, ignoring float noise just above a whole number.
pub(crate) fn replicas_for(demand: f64, per_replica: f64) -> u64 {
    if demand <= 0.0 || per_replica <= 0.0 {
        return 0;
    }
    (demand / per_replica - 1e-9).ceil().max(0.0) as u64
}

fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::scaler::window::{ArrivalRate, ServiceTime};
    use crate::model::scale::labels;
    use proptest::prelude::*;

    const S: u64 = 1_000_000;

    fn cfg() -> ScalerConfig {
        ScalerConfig::default()
    }

    fn input(now_s: u64, desired: u64, ready: u64, stable: f64, panic: f64) -> Input {
        Input {
            now_us: now_s * S,
            settings: ScaleSettings::default(),
            desired,
            ready,
            stable,
            panic,
            current: panic,
            stable_arrivals: 0,
            stable_secs: 0.0,
            panic_arrivals: 0,
            panic_secs: 0.0,
            recent: ArrivalRate::default(),
            service_time: None,
            inflight: panic as u64,
            queued: 0,
            idle_for: Duration::ZERO,
            alert_floor: 0,
            complete: true,
        }
    }

    fn settings(pairs: &[(&str, &str)]) -> ScaleSettings {
        let m = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ScaleSettings::from_maps(Some(&m), None)
    }

    #[test]
    fn steady_demand_at_target_changes_nothing() {
        let mut d = Decider::default();
        // 2 replicas plan for 90 in flight: 80 needs 2.
        for t in 0..600 {
            assert_eq!(d.decide(&cfg(), &input(t, 2, 2, 80.0, 85.0)), None);
        }
    }

    #[test]
    fn panic_scales_up_at_once_to_the_panic_want_and_only_up() {
        let mut d = Decider::default();
        // 1 ready replica (capacity 45), panic demand 450 >= 2 x 45: panic at once, but a
        // single tick above capacity is not yet a burst (it may be noise or a partly loaded
        // tick); the second sizes it.
        assert_eq!(d.decide(&cfg(), &input(0, 1, 1, 20.0, 450.0)), None);
        assert!(d.panicking(0));
        let got = d.decide(&cfg(), &input(0, 1, 1, 20.0, 450.0)).unwrap();
        assert_eq!(
            got,
            Decision {
                from: 1,
                to: 10,
                direction: Direction::Up,
                reason: Reason::Panic
            }
        );
        d.on_result(&cfg(), &got, true, 0);
        // Replicas are starting (desired 10, ready 1): counted, not asked for again.
        assert_eq!(d.decide(&cfg(), &input(1, 10, 1, 30.0, 440.0)), None);
        // Demand falls while still panicking (within a stable window): no scale-down.
        assert_eq!(d.decide(&cfg(), &input(30, 10, 10, 5.0, 5.0)), None);
        assert!(d.panicking(30 * S));
        // Panic over after a stable window without the condition; then the delay applies.
        assert!(!d.panicking(61 * S));
        assert_eq!(d.decide(&cfg(), &input(61, 10, 10, 5.0, 5.0)), None);
        let down = d.decide(&cfg(), &input(91, 10, 10, 5.0, 5.0)).unwrap();
        assert_eq!(
            (down.to, down.direction, down.reason),
            (1, Direction::Down, Reason::Stable)
        );
    }

    /// Runs the decider every second over `wants(t)` (in-flight demand that needs exactly
    /// that many replicas), from `desired`, applying every call; returns the calls.
    fn run_down(desired: u64, secs: u64, wants: impl Fn(u64) -> u64) -> Vec<(u64, u64)> {
        let mut d = Decider::default();
        let mut desired = desired;
        let mut steps = Vec::new();
        for t in 0..secs {
            let demand = wants(t) as f64 * 45.0;
            if let Some(dec) = d.decide(&cfg(), &input(t, desired, desired, demand, demand)) {
                steps.push((t, dec.to));
                d.on_result(&cfg(), &dec, true, t * S);
                desired = dec.to;
            }
        }
        steps
    }

    #[test]
    fn scale_down_goes_in_one_call_after_the_delay() {
        assert_eq!(
            run_down(20, 600, |_| 0),
            [(30, 1)],
            "one call, a delay after the demand fell, to min 1"
        );
    }

    /// After a drop the stable average slides down one count after another for a window:
    /// the step waits until `want` settles, then goes there in one call.
    #[test]
    fn a_sliding_fall_is_stepped_once_a_delay_after_it_settles() {
        // 10 -> 1, one count every 6 s (the 60 s window passing a drop): last fall at 54 s.
        let steps = run_down(10, 300, |t| 10u64.saturating_sub(t / 6).max(1));
        assert_eq!(steps, [(54 + 30, 1)]);
    }

    #[test]
    fn a_want_that_rises_during_the_delay_is_what_is_stepped_to() {
        // Below the count from 0 s; needs 7 of 10 from 20 s on.
        let steps = run_down(10, 120, |t| if t < 20 { 1 } else { 7 });
        assert_eq!(steps, [(30, 7)]);
        // A blip to 7 within the delay of a lower want: the step waits until it is older
        // than the delay, then goes to what the demand still needs.
        let steps = run_down(10, 120, |t| if (10..15).contains(&t) { 7 } else { 3 });
        assert_eq!(steps, [(45, 3)]);
        // Back at or above the count: the delay restarts.
        let steps = run_down(10, 120, |t| if t == 20 { 10 } else { 1 });
        assert_eq!(steps, [(51, 1)]);
    }

    #[test]
    fn a_load_that_keeps_falling_still_steps_every_window_and_delay() {
        // One count less every 10 s from 20 (the default max) to 1: it settles only at 180 s.
        let want = |t: u64| 20 - (t / 10 + 1).min(19);
        let steps = run_down(20, 400, want);
        // Below from 0 s: a step at window + delay (90 s), to the largest want of the last
        // delay (at 60 s); the next period starts on the next tick; then a delay after the
        // fall settles.
        assert_eq!(steps, [(90, want(60)), (181, want(151)), (182 + 30, 1)]);
    }

    #[test]
    fn stable_scales_up_without_panic() {
        let mut d = Decider::default();
        // Capacity 4 x 45 = 180; stable 200 needs 5; panic 300 < 360: no panic.
        let dec = d.decide(&cfg(), &input(0, 4, 4, 200.0, 300.0)).unwrap();
        assert_eq!((dec.to, dec.reason), (5, Reason::Stable));
        assert!(!d.panicking(0));
    }

    #[test]
    fn bounds_and_disabled() {
        let mut d = Decider::default();
        let mut i = input(0, 3, 3, 10_000.0, 10_000.0);
        i.settings = settings(&[(labels::MIN, "2"), (labels::MAX, "5")]);
        assert_eq!(d.decide(&cfg(), &i), None, "one tick is not a burst");
        assert_eq!(d.decide(&cfg(), &i).unwrap().to, 5);
        // Below min (a manual scale): raised at once.
        let mut d = Decider::default();
        let mut i = input(0, 1, 1, 0.0, 0.0);
        i.settings = settings(&[(labels::MIN, "3")]);
        let dec = d.decide(&cfg(), &i).unwrap();
        assert_eq!((dec.to, dec.reason), (3, Reason::Min));
        // Above max: lowered at once, no halving.
        let mut d = Decider::default();
        let mut i = input(0, 30, 30, 0.0, 0.0);
        i.settings = settings(&[(labels::MAX, "4")]);
        let dec = d.decide(&cfg(), &i).unwrap();
        assert_eq!((dec.to, dec.reason), (4, Reason::Max));
        // min == max: nothing, whatever the demand.
        let mut d = Decider::default();
        let mut i = input(0, 1, 1, 1e6, 1e6);
        i.settings = settings(&[(labels::MIN, "2"), (labels::MAX, "2")]);
        assert_eq!(d.decide(&cfg(), &i), None);
        // An alert floor is a lower bound.
        let mut d = Decider::default();
        let mut i = input(0, 2, 2, 0.0, 0.0);
        i.alert_floor = 6;
        let dec = d.decide(&cfg(), &i).unwrap();
        assert_eq!((dec.to, dec.reason), (6, Reason::Min));
    }

    #[test]
    fn idle_goes_to_zero_only_when_allowed_and_nothing_is_in_flight() {
        let z = settings(&[(labels::ZERO, "true"), (labels::ZERO_DURATION, "10s")]);
        let mut i = input(100, 2, 2, 0.0, 0.0);
        i.settings = z;
        i.idle_for = Duration::from_secs(9);
        let mut d = Decider::default();
        // Not idle long enough: the ordinary scale-down (to min 1) after its delay.
        assert_eq!(d.decide(&cfg(), &i), None);
        i.idle_for = Duration::from_secs(10);
        i.inflight = 1;
        assert_eq!(d.decide(&cfg(), &i), None, "a request in flight or held");
        i.inflight = 0;
        let dec = d.decide(&cfg(), &i).unwrap();
        assert_eq!((dec.to, dec.reason), (0, Reason::Idle));
        // Without the label: never zero.
        let mut d = Decider::default();
        i.settings = ScaleSettings::default();
        i.idle_for = Duration::from_secs(3600);
        i.now_us = 1000 * S;
        let mut last = None;
        for t in 0..200 {
            i.now_us = (1000 + t) * S;
            if let Some(dec) = d.decide(&cfg(), &i) {
                last = Some(dec);
            }
        }
        assert_eq!(last.unwrap().to, 1);
        // At zero: left to the cold-start path.
        i.desired = 0;
        i.inflight = 100;
        assert_eq!(Decider::default().decide(&cfg(), &i), None);
    }

    #[test]
    fn failures_back_off_and_a_lagging_provider_is_not_asked_twice() {
        let c = cfg();
        let mut d = Decider::default();
        let i = input(0, 1, 1, 0.0, 450.0);
        assert_eq!(d.decide(&c, &i), None, "one tick is not a burst");
        let dec = d.decide(&c, &i).unwrap();
        d.on_result(&c, &dec, false, 0);
        assert_eq!(d.retry_delay(), c.retry_base);
        let mut at = |us: u64| {
            let mut j = i;
            j.now_us = us;
            d.decide(&c, &j)
        };
        assert_eq!(at(c.retry_base.as_micros() as u64 - 1), None);
        let again = at(c.retry_base.as_micros() as u64).unwrap();
        assert_eq!(again, dec, "the same call, decided afresh");
        d.on_result(&c, &again, false, 100_000);
        assert_eq!(d.retry_delay(), c.retry_base * 2);
        for _ in 0..20 {
            d.on_result(&c, &again, false, 100_000);
        }
        assert_eq!(d.retry_delay(), c.retry_max);
        d.on_result(&c, &again, true, 200_000);
        assert_eq!(d.retry_delay(), Duration::ZERO);
        // The provider still reports 1: the count just set (10) is believed for a while.
        let mut j = i;
        j.now_us = 300_000;
        assert_eq!(d.decide(&c, &j), None);
    }

    /// An input with a measured service time `w` (from 100k completions) and arrival rates
    /// in requests per second: the recent window's bounds and the stable window's rate.
    fn little(now_ms: u64, desired: u64, recent: (f64, f64), stable_rps: f64, w: f64) -> Input {
        let mut i = input(0, desired, desired, 0.0, 0.0);
        i.settings = settings(&[(labels::MAX, "100")]);
        i.now_us = now_ms * 1000;
        i.recent = ArrivalRate {
            low: recent.0,
            high: recent.1,
            settled: true,
        };
        i.stable_arrivals = (stable_rps * 60.0) as u64;
        i.stable_secs = 60.0;
        i.panic_arrivals = ((recent.0 + recent.1) / 2.0 * 6.0) as u64;
        i.panic_secs = 6.0;
        i.service_time = Some(ServiceTime {
            mean: w,
            completions: 100_000,
        });
        i.inflight = (stable_rps * w) as u64;
        i
    }

    #[test]
    fn little_law_sizes_a_step_once_at_its_upper_bound_and_noise_not_at_all() {
        let mut d = Decider::default();
        // 2000 rps x 0.1 s = 200 in flight: 5 replicas of 45. Bounds 1900..2100 stay on 5.
        for t in 0..3000 {
            let i = little(t * 200, 5, (1900.0, 2100.0), 2000.0, 0.1);
            assert_eq!(d.decide(&cfg(), &i), None, "tick {t}");
        }
        // A x15 step proven by the newest ticks: at once towards the upper bound (3170 in
        // flight: 71), at most 10% above the sure need (2827 in flight: 63 -> 69).
        let i = little(600_200, 5, (28_500.0, 31_500.0), 2500.0, 0.1);
        let dec = d.decide(&cfg(), &i).unwrap();
        assert_eq!((dec.to, dec.reason), (69, Reason::Panic));
        assert!(d.panicking(600_200_000));
        d.on_result(&cfg(), &dec, true, 600_200_000);
        // The count just set covers it: no second call.
        let i = little(600_400, 70, (29_500.0, 30_500.0), 3000.0, 0.1);
        assert_eq!(d.decide(&cfg(), &i), None);
    }

    #[test]
    fn a_step_inside_the_newest_tick_waits_one_tick() {
        let mut d = Decider::default();
        let mut i = little(1000, 1, (15_000.0, 16_000.0), 300.0, 0.1);
        i.recent.settled = false;
        assert_eq!(d.decide(&cfg(), &i), None, "partly loaded tick");
        i.now_us += 200_000;
        i.recent = ArrivalRate {
            low: 29_000.0,
            high: 31_000.0,
            settled: false,
        };
        let dec = d.decide(&cfg(), &i).unwrap();
        assert!(dec.to >= 67 && dec.to <= 73, "{dec:?}");
    }

    #[test]
    fn held_requests_drain_over_the_horizon_at_full_target() {
        let mut d = Decider::default();
        // 900 rps x 0.1 s = 90 in flight: 2 replicas; 1500 held drain at 50/s over 30 s:
        // (900 + 50) x 0.1 = 95 in flight fits 2 x 50.
        let mut i = little(1000, 2, (880.0, 920.0), 900.0, 0.1);
        i.queued = 1500;
        assert_eq!(d.decide(&cfg(), &i), None);
        // 6000 held: 200/s more, 110 in flight: 3 replicas.
        i.queued = 6000;
        let dec = d.decide(&cfg(), &i).unwrap();
        assert_eq!(dec.to, 3, "{dec:?}");
    }

    #[test]
    fn down_needs_the_upper_bound_below_the_count() {
        let mut d = Decider::default();
        // 10 replicas; demand 300 in flight needs 7 for sure at most: down after the delay.
        let mut last = None;
        for t in 0..=31 {
            last = d
                .decide(&cfg(), &little(t * 1000, 10, (2900.0, 3100.0), 3000.0, 0.1))
                .or(last);
        }
        let dec = last.unwrap();
        assert_eq!((dec.to, dec.reason), (7, Reason::Stable));
        // Demand whose upper bound still needs the count: nothing.
        let mut d = Decider::default();
        for t in 0..100 {
            let i = little(t * 1000, 7, (2900.0, 3100.0), 3000.0, 0.1);
            assert_eq!(d.decide(&cfg(), &i), None);
        }
    }

    /// With a member's demand unknown, no scale-down and no scale to zero however long the
    /// known demand stays low; once every member is known again the scale-down delay runs
    /// from then.
    #[test]
    fn unknown_demand_holds_scale_downs_back() {
        let s = settings(&[(labels::MIN, "0"), (labels::ZERO, "true")]);
        let mut d = Decider::default();
        let at = |t: u64, complete: bool| Input {
            settings: s,
            idle_for: Duration::from_secs(t + 3600),
            complete,
            ..input(t, 5, 5, 0.0, 0.0)
        };
        for t in 0..300 {
            assert_eq!(d.decide(&cfg(), &at(t, false)), None, "t={t}");
            assert!(d.held_down());
        }
        // Known again: idle for long enough, so to zero at once.
        let dec = d
            .decide(&cfg(), &at(300, true))
            .expect("scales down once known");
        assert_eq!((dec.to, dec.reason), (0, Reason::Idle));
        assert!(!d.held_down());
        // Without scale to zero: a stable-demand step down waits its delay from then.
        let s = settings(&[(labels::MIN, "1")]);
        let mut d = Decider::default();
        let at = |t: u64, complete: bool| Input {
            settings: s,
            complete,
            ..input(t, 8, 8, 0.0, 0.0)
        };
        for t in 0..100 {
            assert_eq!(d.decide(&cfg(), &at(t, false)), None);
        }
        let delay = cfg().scale_down_delay.as_secs();
        for t in 100..100 + delay {
            assert_eq!(d.decide(&cfg(), &at(t, true)), None, "t={t}");
        }
        let dec = d
            .decide(&cfg(), &at(100 + delay, true))
            .expect("down after the delay");
        assert_eq!(dec.direction, Direction::Down);
    }

    proptest! {
        /// Whatever the inputs: the result is within the bounds (or 0 only when idle to zero
        /// is allowed), a step down never goes below the need nor before the delay, nothing is decided when the
        /// count would not change, and with a member's demand unknown nothing goes down but a
        /// count above `max`.
        #[test]
        fn decisions_respect_bounds_and_the_delay(
            min in 0u64..10, extra in 0u64..30, desired in 1u64..60, ready in 0u64..60,
            stable in 0f64..5000.0, panic in 0f64..5000.0, zero in any::<bool>(),
            idle_s in 0u64..2000, inflight in 0u64..3, floor in 0u64..40,
            ticks in proptest::collection::vec(0u64..5, 1..20), complete in any::<bool>(),
        ) {
            let max = min.max(1) + extra;
            let z = if zero { "true" } else { "false" };
            let s = settings(&[
                (labels::MIN, &min.to_string()),
                (labels::MAX, &max.to_string()),
                (labels::ZERO, z),
            ]);
            let mut d = Decider::default();
            let mut now = 0;
            for step in ticks {
                now += step * S;
                let i = Input {
                    now_us: now, settings: s, desired, ready, stable, panic, current: panic,
                    stable_arrivals: 0, stable_secs: 0.0, panic_arrivals: 0, panic_secs: 0.0,
                    recent: ArrivalRate::default(),
                    service_time: None, inflight, queued: 0,
                    idle_for: Duration::from_secs(idle_s), alert_floor: floor, complete,
                };
                if let Some(dec) = d.decide(&cfg(), &i) {
                    prop_assert_ne!(dec.to, dec.from);
                    if !complete && dec.direction == Direction::Down {
                        prop_assert!(desired > s.max && dec.reason == Reason::Max, "{:?}", dec);
                    }
                    prop_assert_eq!(dec.from, desired);
                    if !s.autoscaled() { prop_assert!(false, "disabled but decided {:?}", dec); }
                    if dec.to == 0 {
                        prop_assert!(zero && inflight == 0 && idle_s >= 900);
                        prop_assert_eq!(dec.reason, Reason::Idle);
                    } else {
                        prop_assert!(dec.to <= s.max);
                        prop_assert!(dec.to >= s.min.max(1).min(s.max));
                        if dec.direction == Direction::Down && dec.reason == Reason::Stable {
                            // The demand never changes here: down to what it needs, never
                            // lower, and only once the delay has passed.
                            let want = replicas_for(stable.max(panic), s.per_replica());
                            prop_assert!(dec.to >= want, "{:?}", dec);
                            prop_assert!(now >= cfg().scale_down_delay.as_micros() as u64);
                        }
                        if dec.direction == Direction::Up && dec.reason != Reason::Min {
                            let want = replicas_for(stable.max(panic), s.per_replica());
                            prop_assert!(dec.to <= want.max(1), "{:?}", dec);
                        }
                    }
                    break;
                }
            }
        }
    }
}
