//! Integration tests of autoscaling with the real binary and the local provider: queue-depth
//! scaling up and down under load, scale-down without loss, scale to and from zero, the
//! 1,000-request cold burst, and `POST /system/alert`. Every wait is a bounded poll.

use crate::support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use support::{join_load, metric_value, spawn_load, Gateway};

fn function(name: &str, process: &str, labels: serde_json::Value) -> serde_json::Value {
    json!({"service": name, "image": "x", "envProcess": process, "labels": labels})
}

/// Fast windows so a test sees a whole up-and-down cycle in seconds.
pub(crate) const FAST: &[&str] = &[
    "--no-auth",
    "--scaler-tick",
    "100ms",
    "--scale-stable-window",
    "3s",
    "--scale-panic-window",
    "1s",
    "--scale-down-delay",
    "1s",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_load_raises_replicas_and_its_end_lowers_them_losing_nothing() {
    let gw = Gateway::start_with(FAST, &[]);
    let labels = json!({
        "com.openfaas.scale.target": "2",
        "com.openfaas.scale.target-proportion": "1.0",
        "com.openfaas.scale.max": "4",
    });
    let r = gw.deploy(function("slow", "sleep 0.3", labels)).await;
    assert_eq!(r.status, 202, "{}", r.text());
    gw.wait_available("slow", 1).await;

    // 8 in flight at target 2 per replica: 4 replicas.
    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_load(gw.addr, "/function/slow", 8, stop.clone());
    gw.wait_status("slow", "scaled up to 4 under load", |v| {
        v["replicas"] == 4 && v["availableReplicas"] == 4
    })
    .await;
    // Keep the load on the grown function for a while (more requests, no assertion on time).
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = join_load(load).await;
    assert!(
        failed.is_empty(),
        "requests failed while scaling up: {failed:?}"
    );
    assert!(ok > 8, "too little load: {ok}");

    // Quiet: back to min after the delay, each stopped replica drained first.
    gw.wait_status("slow", "back to 1 replica", |v| {
        v["replicas"] == 1 && v["availableReplicas"] == 1
    })
    .await;
    let m = gw.get("/metrics").await.text();
    let up = metric_value(
        &m,
        r#"faasgate_scale_decisions_total{direction="up",function_name="slow.openfaas-fn""#,
    );
    let down = metric_value(
        &m,
        r#"faasgate_scale_decisions_total{direction="down",function_name="slow.openfaas-fn""#,
    );
    assert!(up.is_some() && down.is_some(), "{m}");
    assert!(
        m.contains(r#"faasgate_function_demand{function_name="slow.openfaas-fn",window="stable"}"#),
        "{m}"
    );
    let log = gw.log.lock().unwrap().join("\n");
    assert!(
        log.lines().any(|l| l.contains("scale decision")
            && l.contains("function=slow.openfaas-fn")
            && l.contains("direction=\"up\"")
            && l.contains(" stable=")
            && l.contains(" panic=")
            && l.contains(" ready=")
            && l.contains(" inflight=")),
        "a decision is logged with its inputs:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_under_load_fails_no_request() {
    let gw = Gateway::start_with(&["--no-auth", "--no-autoscale"], &[]);
    let f = function("shrink", "env", json!({"com.openfaas.scale.min": "4"}));
    assert_eq!(gw.deploy(f).await.status, 202);
    gw.wait_available("shrink", 4).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_load(gw.addr, "/function/shrink", 6, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in [2, 1] {
        let r = gw
            .post_json("/system/scale-function/shrink", json!({"replicas": n}))
            .await;
        assert_eq!(r.status, 202, "{}", r.text());
        gw.wait_available("shrink", n).await;
        // Every process beyond n has stopped.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while support::descendants(gw.pid())
            .iter()
            .filter(|p| is_watchdog(**p))
            .count()
            > n as usize
        {
            assert!(
                std::time::Instant::now() < deadline,
                "replicas did not stop"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = join_load(load).await;
    assert!(failed.is_empty(), "failed while scaling down: {failed:?}");
    assert!(ok > 20, "too little load to prove anything: {ok}");
}

fn is_watchdog(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).any(|a| a == b"watchdog"))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_function_scales_to_zero_and_a_request_brings_it_back() {
    let gw = Gateway::start_with(FAST, &[]);
    let labels = json!({
        "com.openfaas.scale.zero": "true",
        "com.openfaas.scale.zero-duration": "2s",
    });
    assert_eq!(
        gw.deploy(function("napper", "env", labels)).await.status,
        202
    );
    gw.wait_available("napper", 1).await;
    assert_eq!(gw.req("GET", "/function/napper", "").await.status, 200);
    gw.wait_status("napper", "scaled to zero when idle", |v| {
        v["replicas"] == 0 && v["availableReplicas"] == 0
    })
    .await;
    let r = gw.req("GET", "/function/napper", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(gw.status("napper").await["replicas"], 1);
    // A function without the label never goes to zero (checked by the decider's tests);
    // here: the idle rule was what did it.
    let m = gw.get("/metrics").await.text();
    assert!(
        m.contains(r#"faasgate_scale_decisions_total{direction="down",function_name="napper.openfaas-fn",reason="idle"} 1"#),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_1000_concurrent_requests_at_a_cold_function_all_succeed() {
    let gw = Gateway::start();
    assert_eq!(
        gw.deploy(function("cold", "env", json!({}))).await.status,
        202
    );
    gw.wait_available("cold", 1).await;
    let r = gw
        .post_json("/system/scale-function/cold", json!({"replicas": 0}))
        .await;
    assert_eq!(r.status, 202);
    gw.wait_available("cold", 0).await;
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let addr = gw.addr;
            tokio::spawn(async move {
                let r =
                    support::request(addr, "GET", "/function/cold", &[], Default::default()).await;
                (r.status, r.text())
            })
        })
        .collect();
    let mut failed = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        if status != 200 {
            failed.push((status, body));
        }
    }
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    // Exactly one scale from zero served every held request.
    let log = gw.log.lock().unwrap().join("\n");
    assert_eq!(log.matches("scaled from zero").count(), 1, "{log}");
}

fn alert_payload(status: &str, function: &str, starts_at: &str) -> serde_json::Value {
    json!({
        "receiver": "scale-up",
        "status": status,
        "alerts": [{
            "status": status,
            "labels": {
                "alertname": "APIHighInvocationRate",
                "function_name": function,
                "service": "gateway",
                "severity": "major"
            },
            "annotations": {"description": "High invocation total on x", "summary": "x"},
            "startsAt": starts_at,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1/graph",
            "fingerprint": "0123456789abcdef"
        }],
        "groupLabels": {"alertname": "APIHighInvocationRate", "service": "gateway"},
        "commonLabels": {"alertname": "APIHighInvocationRate"},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "version": "4",
        "groupKey": "{}/{service=\"gateway\"}:{alertname=\"APIHighInvocationRate\"}",
        "truncatedAlerts": 0
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_webhook_steps_up_ignores_replays_and_resolves_to_min() {
    let gw = Gateway::start();
    let labels = json!({"com.openfaas.scale.max": "6", "com.openfaas.scale.factor": "50"});
    assert_eq!(gw.deploy(function("hot", "env", labels)).await.status, 202);
    gw.wait_available("hot", 1).await;

    let r = gw.req("POST", "/system/alert", "").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "A body is required for this endpoint")
    );
    let r = gw.req("POST", "/system/alert", "{nope").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "Unable to parse alert, bad format.")
    );
    assert_eq!(gw.get("/system/alert").await.status, 405);

    let t0 = "2024-05-01T10:00:00.000Z";
    let fire = alert_payload("firing", "hot", t0);
    let r = gw.post_json("/system/alert", fire.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // step = ceil(6 x 50 / 100) = 3: 1 -> 4.
    assert_eq!(gw.status("hot").await["replicas"], 4);
    // Alertmanager re-delivers the same alert (group interval): not a second step.
    let r = gw.post_json("/system/alert", fire.clone()).await;
    assert_eq!(r.status, 200);
    assert_eq!(gw.status("hot").await["replicas"], 4);
    // The queue-depth scaler does not undo a firing alert's count (the floor), though the
    // function is idle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(gw.status("hot").await["replicas"], 4);

    let r = gw
        .post_json("/system/alert", alert_payload("resolved", "hot", t0))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(gw.status("hot").await["replicas"], 1);

    // Unknown function: 500 naming the alert.
    let r = gw
        .post_json("/system/alert", alert_payload("firing", "nope", t0))
        .await;
    assert_eq!(r.status, 500);
    assert!(r.text().starts_with("[0] "), "{}", r.text());
    let m = gw.get("/metrics").await.text();
    assert!(
        m.contains(r#"faasgate_scale_decisions_total{direction="up",function_name="hot.openfaas-fn",reason="alert_firing"} 1"#),
        "{m}"
    );
    assert!(m.contains(r#"reason="alert_resolved"} 1"#), "{m}");
}
