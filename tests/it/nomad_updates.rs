//! Function updates on Nomad (issue 16): the new version is rolled out as a Nomad canary
//! deployment beside the old one, traffic moves only once it is ready, the old allocations
//! stop only after they stopped receiving requests, a scale asked for mid-update is applied
//! after it, and a new version that never becomes ready is abandoned while the old one keeps
//! serving. Real binary, the API double (which models canary deployments), real processes.

use crate::nomad_double;
use crate::support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nomad_double::NomadDouble;
use serde_json::{json, Value};
use support::{Gateway, BIN};

pub(crate) const JOB: &str = "faasgate-ver.openfaas-fn";

/// A function answering `<VERSION> <allocation id>` (the watchdog under `raw_exec`).
pub(crate) fn ver_fn(dir: &std::path::Path, version: &str, min: u64, extra_env: Value) -> Value {
    // Written once, atomically: replicas run it while later versions are deployed.
    let script = dir.join("ver.sh");
    if !script.exists() {
        let tmp = dir.join("ver.sh.tmp");
        std::fs::write(
            &tmp,
            "#!/bin/sh\nprintf '%s %s' \"$VERSION\" \"$NOMAD_ALLOC_ID\"\n",
        )
        .unwrap();
        std::fs::rename(&tmp, &script).unwrap();
    }
    let mut env = json!({"VERSION": version});
    for (k, v) in extra_env.as_object().into_iter().flatten() {
        env[k] = v.clone();
    }
    json!({
        "service": "ver",
        "image": "",
        "envProcess": format!("sh {}", script.display()),
        "envVars": env,
        "labels": {"com.openfaas.scale.min": min.to_string(), "com.openfaas.scale.max": "10"},
        "annotations": {"com.faasgate.driver": "raw_exec"}
    })
}

/// Updates `ver` to a v2 that never becomes ready (the watchdog in http mode towards a port
/// nobody listens on never reports healthy) and waits until Nomad has placed its `n`
/// canaries.
pub(crate) async fn start_bad_update(
    gw: &Gateway,
    double: &NomadDouble,
    dir: &std::path::Path,
    n: u64,
) {
    // Port 1: privileged, never a replica's (the double's are 20000-32000), never listening.
    let upstream = "http://127.0.0.1:1";
    let bad = ver_fn(
        dir,
        "v2",
        n,
        json!({"mode": "http", "upstream_url": upstream}),
    );
    let r = gw.req("PUT", "/system/functions", bad.to_string()).await;
    assert_eq!(r.status, 202, "{}", r.text());
    support::eventually(Duration::from_secs(30), "canaries placed", || {
        double.live_versions(JOB).iter().filter(|a| a.2).count() as u64 == n
    })
    .await;
}

/// One answered request: when it was sent, how long it took, and who answered.
struct Served {
    sent: Instant,
    took: Duration,
    version: String,
    alloc: String,
}

struct Load {
    stop: Arc<AtomicBool>,
    served: Arc<Mutex<Vec<Served>>>,
    failed: Arc<Mutex<Vec<String>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

fn start_load(gw: &Arc<Gateway>, loops: usize) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let workers = (0..loops)
        .map(|_| {
            let (gw, stop, served, failed) =
                (gw.clone(), stop.clone(), served.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let r = gw.req("POST", "/function/ver", "x").await;
                    let took = sent.elapsed();
                    let text = r.text();
                    match (r.status, text.split_once(' ')) {
                        (200, Some((v, a))) if !a.is_empty() => {
                            served.lock().unwrap().push(Served {
                                sent,
                                took,
                                version: v.to_string(),
                                alloc: a.to_string(),
                            })
                        }
                        _ => failed.lock().unwrap().push(format!("{} {text}", r.status)),
                    }
                }
            })
        })
        .collect();
    Load {
        stop,
        served,
        failed,
        workers,
    }
}

impl Load {
    fn count(&self) -> usize {
        self.served.lock().unwrap().len()
    }

    async fn served_more(&self, n: usize, what: &str) {
        let target = self.count() + n;
        support::eventually(Duration::from_secs(60), what, || self.count() >= target).await;
    }

    /// Stops the loops and returns what was served; every request must have succeeded.
    async fn finish(self) -> Vec<Served> {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        let failed = std::mem::take(&mut *self.failed.lock().unwrap());
        assert!(
            failed.is_empty(),
            "{} requests failed: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
        std::mem::take(&mut *self.served.lock().unwrap())
    }
}

fn p99(took: &mut [Duration]) -> Duration {
    took.sort();
    took.get((took.len() * 99 / 100).min(took.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// A gateway on the double whose updates are abandoned after `deadline`.
pub(crate) fn gateway(double: &NomadDouble, deadline: &str) -> Arc<Gateway> {
    let url = double.url();
    Arc::new(Gateway::start_with(
        &[
            "--no-auth",
            "--provider",
            "nomad",
            "--nomad-watchdog-path",
            BIN,
            "--nomad-update-deadline",
            deadline,
        ],
        &[
            ("NOMAD_ADDR", url.as_str()),
            ("RUST_LOG", "info,faasgate=debug"),
        ],
    ))
}

async fn update_state(gw: &Gateway) -> Value {
    gw.status("ver").await["update"].clone()
}

/// Deploys `ver` at v1 with `n` replicas; returns their allocation IDs once all are routed.
pub(crate) async fn deploy_v1(
    gw: &Gateway,
    double: &NomadDouble,
    dir: &std::path::Path,
    n: u64,
) -> Vec<String> {
    let r = gw.deploy(ver_fn(dir, "v1", n, json!({}))).await;
    assert_eq!(r.status, 202, "{}", r.text());
    gw.wait_available("ver", n).await;
    let old = double.live_allocs(JOB);
    assert_eq!(old.len() as u64, n);
    old
}

/// Updates `ver` to a good `version` with `n` replicas.
async fn update_to(gw: &Gateway, dir: &std::path::Path, version: &str, n: u64) {
    let r = gw
        .req(
            "PUT",
            "/system/functions",
            ver_fn(dir, version, n, json!({})).to_string(),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
}

/// Waits until the gateway reports the update failed; returns its `update` state.
pub(crate) async fn wait_update_failed(gw: &Gateway) -> Value {
    gw.wait_status("ver", "the update reported failed", |s| {
        s["update"]["status"] == "failed"
    })
    .await["update"]
        .clone()
}

/// Waits until the job's live allocations are `n`, none a canary, and (`old_kept`) exactly
/// the `old` ones or (not) none of them.
async fn wait_serving_alone(
    double: &NomadDouble,
    old: &[String],
    n: usize,
    old_kept: bool,
    what: &str,
) {
    support::eventually(Duration::from_secs(60), what, || {
        let live = double.live_versions(JOB);
        live.len() == n && live.iter().all(|a| !a.2 && old.contains(&a.0) == old_kept)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_update_moves_traffic_only_once_the_new_version_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let double = NomadDouble::start().await;
    let gw = gateway(&double, "2m");
    let old = deploy_v1(&gw, &double, dir.path(), 3).await;

    let load = start_load(&gw, 4);
    load.served_more(200, "load before the update").await;
    let update_at = Instant::now();
    update_to(&gw, dir.path(), "v2", 3).await;
    assert_eq!(update_state(&gw).await["status"], "in-progress");
    // Canaries run beside the old allocations, which keep serving.
    support::eventually(Duration::from_secs(60), "3 canaries placed", || {
        double.live_versions(JOB).iter().filter(|a| a.2).count() == 3
    })
    .await;
    // Nomad refuses to scale during the deployment; the gateway keeps the count for after.
    let r = gw
        .post_json("/system/scale-function/ver", json!({"replicas": 5}))
        .await;
    assert!(r.status < 300, "{} {}", r.status, r.text());
    support::eventually(
        Duration::from_secs(90),
        "the update done and scaled to 5",
        || {
            let live = double.live_versions(JOB);
            live.len() == 5
                && live.iter().all(|a| !a.2 && !old.contains(&a.0))
                && double.latest_deployment_status(JOB).as_deref() == Some("successful")
        },
    )
    .await;
    gw.wait_available("ver", 5).await;
    load.served_more(200, "load after the update").await;
    let served = load.finish().await;
    assert!(
        update_state(&gw).await.is_null(),
        "{}",
        update_state(&gw).await
    );

    // No request reached an old allocation after its stop was ordered.
    for id in &old {
        let stop = double.stop_ordered_at(id).expect("old allocation stopped");
        let late = served
            .iter()
            .filter(|s| &s.alloc == id && s.sent > stop)
            .count();
        assert_eq!(late, 0, "requests sent to {id} after its stop was ordered");
    }
    // Only v1 before the switch and v2 at the end; never a mix after the first v2.
    let first_v2 = served
        .iter()
        .filter(|s| s.version == "v2")
        .map(|s| s.sent)
        .min()
        .unwrap();
    let v1_after = served
        .iter()
        .filter(|s| s.version == "v1" && s.sent > first_v2 + Duration::from_secs(1))
        .count();
    assert_eq!(v1_after, 0, "v1 still served a second after v2 took over");
    let mut before: Vec<Duration> = served
        .iter()
        .filter(|s| s.sent < update_at)
        .map(|s| s.took)
        .collect();
    let end_of_switch = served
        .iter()
        .filter(|s| s.version == "v1")
        .map(|s| s.sent)
        .max()
        .unwrap();
    let mut during: Vec<Duration> = served
        .iter()
        .filter(|s| s.sent >= update_at && s.sent <= end_of_switch)
        .map(|s| s.took)
        .collect();
    println!(
        "update under 4 load loops: {} requests, 0 failed; p99 before {:?} ({} requests), during {:?} ({} requests)",
        served.len(),
        p99(&mut before),
        before.len(),
        p99(&mut during),
        during.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_version_that_never_becomes_ready_is_abandoned_and_the_old_one_serves() {
    let dir = tempfile::tempdir().unwrap();
    let double = NomadDouble::start().await;
    let gw = gateway(&double, "4s");
    let old = deploy_v1(&gw, &double, dir.path(), 2).await;

    let load = start_load(&gw, 4);
    load.served_more(100, "load before the update").await;
    start_bad_update(&gw, &double, dir.path(), 2).await;
    // The double refuses a scale while the deployment is active, as Nomad does.
    let blocked = support::request(
        double.addr(),
        "POST",
        &format!("/v1/job/{JOB}/scale"),
        &[("content-type", "application/json")],
        json!({"Count": 3, "Target": {"Group": "fn"}})
            .to_string()
            .into(),
    )
    .await;
    assert_eq!(blocked.status, 400);
    assert_eq!(
        blocked.text(),
        "job scaling blocked due to active deployment"
    );

    let state = wait_update_failed(&gw).await;
    let message = state["message"].as_str().unwrap();
    assert!(message.contains("0 of 2 new replicas healthy"), "{message}");
    wait_serving_alone(
        &double,
        &old,
        2,
        true,
        "canaries stopped, old allocations kept",
    )
    .await;
    assert_eq!(
        double.latest_deployment_status(JOB).as_deref(),
        Some("failed")
    );
    load.served_more(100, "load after the failed update").await;
    let served = load.finish().await;
    assert!(
        served.iter().all(|s| s.version == "v1"),
        "the abandoned version served"
    );
    // The job was reverted: its spec is v1's again.
    let job = double.job(JOB).unwrap();
    assert_eq!(job["TaskGroups"][0]["Tasks"][0]["Env"]["VERSION"], "v1");
    println!(
        "failed update: {} requests served by v1, 0 failed; status: {message}",
        served.len()
    );

    // A later good update succeeds, and clears the failure.
    update_to(&gw, dir.path(), "v3", 2).await;
    wait_serving_alone(&double, &old, 2, false, "v3 serving alone").await;
    gw.wait_status("ver", "the failure cleared", |s| s["update"].is_null())
        .await;
    let r = gw.req("POST", "/function/ver", "x").await;
    assert!(r.text().starts_with("v3 "), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_started_during_an_update_follows_it_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let double = NomadDouble::start().await;
    let first = gateway(&double, "10m");
    let old = deploy_v1(&first, &double, dir.path(), 2).await;
    start_bad_update(&first, &double, dir.path(), 2).await;
    // The gateway that started the update goes away with the deployment open.
    drop(first);
    assert_eq!(
        double.latest_deployment_status(JOB).as_deref(),
        Some("running")
    );

    // A new one picks the update up and, the new version never becoming ready, abandons it.
    let second = gateway(&double, "3s");
    wait_update_failed(&second).await;
    wait_serving_alone(
        &double,
        &old,
        2,
        true,
        "reverted; the old allocations serve alone",
    )
    .await;
    assert_eq!(
        double.job(JOB).unwrap()["TaskGroups"][0]["Tasks"][0]["Env"]["VERSION"],
        "v1"
    );
    let r = second.req("POST", "/function/ver", "x").await;
    assert!(r.text().starts_with("v1 "), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_newer_update_supersedes_one_still_rolling_out() {
    let dir = tempfile::tempdir().unwrap();
    let double = NomadDouble::start().await;
    let gw = gateway(&double, "2m");
    let old = deploy_v1(&gw, &double, dir.path(), 2).await;
    let load = start_load(&gw, 4);
    load.served_more(100, "load before the updates").await;
    start_bad_update(&gw, &double, dir.path(), 2).await;
    // The fix comes while v2's canaries are still not ready.
    update_to(&gw, dir.path(), "v3", 2).await;
    wait_serving_alone(&double, &old, 2, false, "v3 serving alone").await;
    gw.wait_status("ver", "the rollout ended without a failure", |s| {
        s["update"].is_null()
    })
    .await;
    load.served_more(100, "load after the updates").await;
    let served = load.finish().await;
    assert!(
        served.iter().all(|s| s.version != "v2"),
        "the superseded version served"
    );
    assert!(served.iter().any(|s| s.version == "v3"));
    let r = gw.req("POST", "/function/ver", "x").await;
    assert!(r.text().starts_with("v3 "), "{}", r.text());
}
