//! The scaler loop on tokio's paused clock: a scripted demand source, a provider double that
//! records (and can reject) scale calls. No sleeps beyond virtual time, no timing asserts.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;

use super::*;
use crate::control::provider::{LogQuery, LogStream};
use crate::dataplane::table::DemandSample;
use crate::model::types::{FunctionDeployment, FunctionStatus, ProviderInfo};

/// One function whose in-flight count the test sets; time is tokio's.
struct Scripted {
    start: tokio::time::Instant,
    state: Mutex<ScriptState>,
}

#[derive(Default)]
struct ScriptState {
    inflight: u64,
    desired: u64,
    busy_us: u64,
    last_us: u64,
    last_arrival_ms: u64,
    settings: ScaleSettings,
}

impl Scripted {
    fn new(desired: u64) -> Arc<Self> {
        Arc::new(Self {
            start: tokio::time::Instant::now(),
            state: Mutex::new(ScriptState {
                desired,
                ..Default::default()
            }),
        })
    }
    fn set_inflight(&self, n: u64) {
        self.advance();
        self.state.lock().unwrap().inflight = n;
    }
    fn advance(&self) -> u64 {
        let now = self.start.elapsed().as_micros() as u64 + 1;
        let mut s = self.state.lock().unwrap();
        s.busy_us += s.inflight * (now - s.last_us);
        s.last_us = now;
        now
    }
}

impl DemandSource for Scripted {
    fn observe(&self, out: &mut Vec<Observation>) {
        let now = self.advance();
        let mut s = self.state.lock().unwrap();
        if s.inflight > 0 {
            s.last_arrival_ms = now / 1000;
        }
        out.push(Observation {
            key: FunctionKey::new("f", "").unwrap(),
            settings: s.settings,
            desired: s.desired,
            ready: s.desired,
            demand: DemandSample {
                at_us: now,
                inflight: s.inflight,
                busy_us: s.busy_us & crate::dataplane::table::BUSY_MASK,
                arrivals: s.busy_us / 1000,
                last_arrival_ms: s.last_arrival_ms,
                ..Default::default()
            },
            complete: true,
        });
    }
}

/// Records scale calls and applies them to the script; rejects the first `fail` calls.
struct Recorder {
    script: Arc<Scripted>,
    calls: Mutex<Vec<(tokio::time::Duration, u64)>>,
    fail: AtomicU32,
    /// Scale-downs wait this long before taking effect (a Nomad drain).
    down_drain: Duration,
}

#[async_trait]
impl Provider for Recorder {
    async fn scale(&self, _key: &FunctionKey, replicas: u64) -> Result<(), ProviderError> {
        self.calls
            .lock()
            .unwrap()
            .push((self.script.start.elapsed(), replicas));
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(ProviderError::Upstream {
                status: 400,
                message: "deployment in progress".into(),
            });
        }
        let lower = replicas < self.script.state.lock().unwrap().desired;
        if lower && !self.down_drain.is_zero() {
            tokio::time::sleep(self.down_drain).await;
        }
        self.script.advance();
        self.script.state.lock().unwrap().desired = replicas;
        Ok(())
    }
    async fn deploy(&self, _: FunctionDeployment) -> Result<(), ProviderError> {
        unreachable!()
    }
    async fn update(&self, _: FunctionDeployment) -> Result<(), ProviderError> {
        unreachable!()
    }
    async fn delete(&self, _: &FunctionKey) -> Result<(), ProviderError> {
        unreachable!()
    }
    async fn list(&self, _: &str) -> Result<Vec<FunctionStatus>, ProviderError> {
        unreachable!()
    }
    async fn status(&self, _: &FunctionKey) -> Result<FunctionStatus, ProviderError> {
        unreachable!()
    }
    async fn namespaces(&self) -> Result<Vec<String>, ProviderError> {
        unreachable!()
    }
    async fn logs(&self, _: LogQuery) -> Result<LogStream, ProviderError> {
        unreachable!()
    }
    fn info(&self) -> ProviderInfo {
        unreachable!()
    }
    async fn shutdown(&self) {}
}

fn setup(desired: u64, fail: u32) -> (Arc<Scripted>, Arc<Recorder>, Arc<Scaling>) {
    let script = Scripted::new(desired);
    let rec = Arc::new(Recorder {
        script: script.clone(),
        calls: Mutex::new(Vec::new()),
        fail: AtomicU32::new(fail),
        down_drain: Duration::ZERO,
    });
    let scaling = Scaling::new(ScalerConfig::default());
    (script, rec, scaling)
}

fn calls(rec: &Recorder) -> Vec<(f64, u64)> {
    rec.calls
        .lock()
        .unwrap()
        .iter()
        .map(|(t, n)| (t.as_secs_f64(), *n))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_load_step_is_answered_within_a_second_in_one_call_and_quiet_ticks_call_nothing() {
    let (script, rec, scaling) = setup(1, 0);
    let task = spawn_scaler(scaling.clone(), script.clone(), rec.clone());
    script.set_inflight(40);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        calls(&rec).is_empty(),
        "steady load within target: {:?}",
        calls(&rec)
    );

    // x10 step: 400 in flight on one replica (capacity 45).
    script.set_inflight(400);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let c = calls(&rec);
    // The 6 s average reaches 2x capacity 0.83 s after the step, the partly filled stable
    // window may react first; then panic sizes for the latest tick: ceil(400 / 45) = 9.
    let after = c[0].0 - 30.0;
    assert!(
        after <= 1.0 + 0.2 + 1e-6,
        "first call {after:.3} s after the step: {c:?}"
    );
    assert!(c.len() <= 2, "at most two calls: {c:?}");
    assert!(c.last().unwrap().0 - 30.0 <= 3.0, "{c:?}");
    assert_eq!(c.last().unwrap().1, 9, "ceil(400 / 45): {c:?}");
    assert!(
        scaling
            .stats
            .decisions("f.openfaas-fn", Direction::Up, Reason::Panic)
            >= 1,
        "counted"
    );

    // Load gone: back to 1 in one call, once the stable window has passed the load and the
    // scale-down delay after it.
    script.set_inflight(0);
    let gone = 60.0;
    tokio::time::sleep(Duration::from_secs(600)).await;
    let c = calls(&rec);
    let downs: Vec<(f64, u64)> = c.iter().copied().skip_while(|(_, n)| *n != 9).collect();
    assert_eq!(downs.len(), 2, "{c:?}");
    assert_eq!(downs[1].1, 1, "{c:?}");
    let cfg = &scaling.config;
    let bound = (cfg.stable_window + cfg.scale_down_delay).as_secs_f64() + 1.0;
    assert!(downs[1].0 - gone <= bound, "{c:?}");
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_rejected_call_is_retried_with_backoff() {
    let (script, rec, scaling) = setup(1, 3);
    let task = spawn_scaler(scaling, script.clone(), rec.clone());
    script.set_inflight(200);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let c = calls(&rec);
    assert!(c.len() >= 4, "{c:?}");
    let gaps: Vec<f64> = c.windows(2).take(3).map(|w| w[1].0 - w[0].0).collect();
    assert!(
        gaps[0] >= 0.1 && gaps[1] >= 0.2 && gaps[2] >= 0.4,
        "backoff doubles: {gaps:?}"
    );
    assert_eq!(script.state.lock().unwrap().desired, c.last().unwrap().1);
    // Once accepted, no more calls while nothing changes.
    let n = calls(&rec).len();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(calls(&rec).len(), n, "{:?}", calls(&rec));
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn an_idle_function_goes_to_zero_at_zero_duration() {
    let (script, rec, scaling) = setup(2, 0);
    {
        let mut s = script.state.lock().unwrap();
        let m = [
            (
                crate::model::scale::labels::ZERO.to_string(),
                "true".to_string(),
            ),
            (
                crate::model::scale::labels::ZERO_DURATION.to_string(),
                "2m".to_string(),
            ),
        ]
        .into_iter()
        .collect();
        s.settings = ScaleSettings::from_maps(Some(&m), None);
    }
    let task = spawn_scaler(scaling, script.clone(), rec.clone());
    tokio::time::sleep(Duration::from_secs(300)).await;
    let c = calls(&rec);
    assert_eq!(c.last().unwrap().1, 0, "{c:?}");
    let at = c.last().unwrap().0;
    assert!(
        (at - 120.0).abs() <= 1.0,
        "to zero at {at:.3} s, zero-duration 120 s"
    );
    assert_eq!(script.state.lock().unwrap().desired, 0);
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_scale_up_is_not_kept_waiting_behind_a_draining_scale_down() {
    let script = Scripted::new(9);
    let rec = Arc::new(Recorder {
        script: script.clone(),
        calls: Mutex::new(Vec::new()),
        fail: AtomicU32::new(0),
        down_drain: Duration::from_secs(600),
    });
    let scaling = Scaling::new(ScalerConfig::default());
    let task = spawn_scaler(scaling, script.clone(), rec.clone());
    script.set_inflight(45);
    // Quiet enough to scale down: the call starts and then waits on its drain.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while calls(&rec).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no scale-down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (down_at, down_to) = calls(&rec)[0];
    assert!(down_to < 9, "{:?}", calls(&rec));
    // The load comes back at 600 in flight (14 replicas) while the drain goes on.
    script.set_inflight(600);
    let step = tokio::time::Instant::now();
    while calls(&rec).len() < 2 {
        assert!(
            step.elapsed() < Duration::from_secs(5),
            "no scale-up during the drain: {:?}",
            calls(&rec)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (up_at, up_to) = calls(&rec)[1];
    assert!(up_to >= 14, "{:?}", calls(&rec));
    assert!(up_at - down_at < 600.0, "made while the down call waits");
    task.abort();
}
