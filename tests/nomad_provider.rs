//! `faasgate serve --provider nomad` end to end, against the Nomad/Consul API double
//! (`support/nomad_double.rs`), which runs `raw_exec` tasks as real processes: OpenFaaS deploy
//! -> rendered job -> `faasgate watchdog` started -> service in the catalog -> invocation
//! routed. Every wait is a bounded poll; everything listens on 127.0.0.1.

#[path = "support/nomad_double.rs"]
mod nomad_double;
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nomad_double::NomadDouble;
use serde_json::{json, Value};
use support::{Gateway, BIN};

const TOKEN: &str = "s3cr3t-nomad-token-0f9a";
const JOB: &str = "faasgate-echo.openfaas-fn";

fn gateway(double: &NomadDouble, extra: &[&str], env: &[(&str, &str)]) -> Gateway {
    let url = double.url();
    let mut args = vec![
        "--no-auth",
        "--provider",
        "nomad",
        "--nomad-watchdog-path",
        BIN,
    ];
    args.extend_from_slice(extra);
    let mut envs = vec![
        ("NOMAD_ADDR", url.as_str()),
        ("RUST_LOG", "info,faasgate=debug"),
    ];
    envs.extend_from_slice(env);
    Gateway::start_with(&args, &envs)
}

/// A function the double can run: the watchdog itself under `raw_exec`, running `cat`.
fn echo_fn(labels: Value) -> Value {
    json!({
        "service": "echo",
        "image": "",
        "envProcess": "cat",
        "envVars": {"greeting": "hi"},
        "labels": labels,
        "annotations": {"com.faasgate.driver": "raw_exec"}
    })
}

async fn eventually<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deploy_invoke_scale_update_logs_delete() {
    let double = NomadDouble::start_with(Some(TOKEN), None).await;
    let gw = gateway(&double, &[], &[("NOMAD_TOKEN", TOKEN)]);

    let r = gw
        .deploy(echo_fn(json!({"com.openfaas.scale.min": "1"})))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let job = double.job(JOB).expect("job registered under the prefix");
    assert_eq!(job["TaskGroups"][0]["Tasks"][0]["Driver"], "raw_exec");
    assert_eq!(job["TaskGroups"][0]["Count"], 1);

    let s = gw.wait_available("echo", 1).await;
    assert_eq!(s["replicas"], 1);
    assert_eq!(s["envVars"]["greeting"], "hi");
    assert_eq!(s["labels"]["faas_function"], "echo");
    let r = gw.req("POST", "/function/echo", "hello nomad").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "hello nomad");

    // A second deploy of the same function is an update (upsert), answered 202.
    let list = gw.get("/system/functions").await.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        gw.get("/system/namespaces").await.json(),
        json!(["openfaas-fn"])
    );

    // Scale: one POST /scale with Count and the group as target; replicas read back at once.
    let r = gw
        .post_json("/system/scale-function/echo", json!({"replicas": 3}))
        .await;
    assert!(
        r.status == 200 || r.status == 202,
        "{} {}",
        r.status,
        r.text()
    );
    assert_eq!(gw.status("echo").await["replicas"], 3);
    let scale = double
        .requests()
        .into_iter()
        .find(|w| w.path == format!("/v1/job/{JOB}/scale"))
        .expect("scale reached the double");
    assert_eq!(scale.method, "POST");
    assert_eq!(scale.body["Count"], 3);
    assert_eq!(scale.body["Target"]["Group"], "fn");
    assert!(scale.body["Message"].as_str().unwrap().contains("echo"));
    gw.wait_available("echo", 3).await;

    // Update: the count is kept (rendered with the current Count, PreserveCounts set).
    let mut updated = echo_fn(json!({"com.openfaas.scale.min": "1"}));
    updated["envVars"] = json!({"greeting": "hello"});
    let r = gw
        .req_h(
            "PUT",
            "/system/functions",
            &[("content-type", "application/json")],
            serde_json::to_vec(&updated).unwrap(),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let register = double
        .requests()
        .into_iter()
        .rfind(|w| w.path == "/v1/jobs")
        .unwrap();
    assert_eq!(register.body["PreserveCounts"], true);
    assert_eq!(register.body["Job"]["TaskGroups"][0]["Count"], 3);
    assert_eq!(double.job(JOB).unwrap()["TaskGroups"][0]["Count"], 3);
    let s = gw.status("echo").await;
    assert_eq!(s["replicas"], 3);
    assert_eq!(s["envVars"]["greeting"], "hello");
    gw.wait_available("echo", 3).await;
    let r = gw.req("POST", "/function/echo", "after update").await;
    assert_eq!(r.text(), "after update");

    // Scale to zero: still listed, and a request scales it back up and is served.
    let r = gw
        .post_json("/system/scale-function/echo", json!({"replicas": 0}))
        .await;
    assert!(r.status < 300, "{}", r.text());
    let list = gw.get("/system/functions").await.json();
    assert_eq!(list[0]["name"], "echo");
    assert_eq!(list[0]["replicas"], 0);
    gw.wait_available("echo", 0).await;
    let r = gw.req("POST", "/function/echo", "from zero").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "from zero");
    assert_eq!(gw.status("echo").await["replicas"], 1);

    // Logs: Nomad's client logs API as NDJSON, instance = allocation ID.
    let r = gw.get("/system/logs?name=echo&follow=false").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let lines: Vec<Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lines.is_empty(), "some log lines");
    let allocs = double.live_allocs(JOB);
    assert!(lines
        .iter()
        .all(|l| l["name"] == "echo"
            && allocs.contains(&l["instance"].as_str().unwrap().to_string())));

    // The token never shows: not in /system/info, not in the log.
    let info = gw.get("/system/info").await.text();
    assert!(!info.contains(TOKEN));
    assert!(info.contains("nomad"));

    // Delete: DELETE /v1/job/{id}?purge=true; then 404 and no process left.
    let r = gw
        .req_h(
            "DELETE",
            "/system/functions",
            &[("content-type", "application/json")],
            serde_json::to_vec(&json!({"functionName": "echo"})).unwrap(),
        )
        .await;
    assert!(r.status < 300, "{} {}", r.status, r.text());
    let del = double
        .requests()
        .into_iter()
        .find(|w| w.method == "DELETE")
        .expect("delete reached the double");
    assert_eq!(del.path, format!("/v1/job/{JOB}"));
    assert_eq!(del.query, "purge=true");
    assert!(double.job(JOB).is_none());
    assert_eq!(gw.get("/system/function/echo").await.status, 404);
    assert_eq!(gw.req("POST", "/function/echo", "x").await.status, 404);
    eventually(
        Duration::from_secs(30),
        "function processes stopped",
        || {
            let d = double.clone();
            async move { d.pids().is_empty() }
        },
    )
    .await;
    let log = gw.log.lock().unwrap().join("\n");
    assert!(!log.contains(TOKEN), "the token leaked into the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nomad_errors_reach_the_caller_with_their_message() {
    let double = NomadDouble::start_with(Some(TOKEN), None).await;
    let gw = gateway(&double, &[], &[("NOMAD_TOKEN", "wrong-token")]);
    let r = gw.deploy(echo_fn(json!({}))).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("Permission denied"), "{}", r.text());
    assert!(!r.text().contains("wrong-token"));
    let r = gw.get("/system/function/nope").await;
    assert_eq!(r.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replacing_allocations_under_load_costs_no_request() {
    let double = NomadDouble::start().await;
    let gw = Arc::new(gateway(&double, &[], &[]));
    let r = gw
        .deploy(echo_fn(json!({"com.openfaas.scale.min": "2"})))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    gw.wait_available("echo", 2).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (gw, stop, ok, failed) = (gw.clone(), stop.clone(), ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let body = format!("w{w}-{n}");
                let r = gw.req("POST", "/function/echo", body.clone()).await;
                if r.status == 200 && r.text() == body {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    eprintln!("request {body} failed: {} {}", r.status, r.text());
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
        }));
    }
    eventually(Duration::from_secs(30), "load running", || {
        let ok = ok.clone();
        async move { ok.load(Ordering::Relaxed) > 20 }
    })
    .await;

    // One allocation stopped (deregistered, then killed after the shutdown delay), one added.
    let before = double.live_allocs(JOB);
    assert_eq!(before.len(), 2);
    double.stop_alloc(&before[0]);
    eventually(
        Duration::from_secs(60),
        "replacement allocation routed",
        || {
            let (d, gw, before) = (double.clone(), gw.clone(), before.clone());
            async move {
                let now = d.live_allocs(JOB);
                let replaced = now.len() == 2 && !now.contains(&before[0]);
                replaced && gw.status("echo").await["availableReplicas"] == 2
            }
        },
    )
    .await;
    // The stopped one's process is gone (past its shutdown delay), under load.
    eventually(
        Duration::from_secs(30),
        "old allocation's process ended",
        || {
            let d = double.clone();
            async move { d.pids().len() == 2 }
        },
    )
    .await;
    let mark = ok.load(Ordering::Relaxed);
    eventually(
        Duration::from_secs(30),
        "load served by the new set",
        || {
            let ok = ok.clone();
            async move { ok.load(Ordering::Relaxed) > mark + 20 }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "requests failed");
    assert!(ok.load(Ordering::Relaxed) > 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nomad_going_away_keeps_traffic_flowing_and_discovery_recovers() {
    let double = NomadDouble::start().await;
    let gw = gateway(&double, &[], &[]);
    assert_eq!(gw.deploy(echo_fn(json!({}))).await.status, 202);
    gw.wait_available("echo", 1).await;

    double.stop_server().await;
    // Control calls fail with a clear upstream error; invocations keep working.
    let r = gw.get("/system/function/echo").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("unreachable"), "{}", r.text());
    for i in 0..20 {
        let r = gw.req("POST", "/function/echo", format!("down-{i}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), format!("down-{i}"));
    }

    double.start_server().await;
    // Discovery recovers: a scale made now is seen and routed.
    eventually(
        Duration::from_secs(60),
        "scale accepted once Nomad is back",
        || {
            let gw = &gw;
            async move {
                gw.post_json("/system/scale-function/echo", json!({"replicas": 2}))
                    .await
                    .status
                    < 300
            }
        },
    )
    .await;
    gw.wait_available("echo", 2).await;
    let r = gw.req("POST", "/function/echo", "back").await;
    assert_eq!(r.text(), "back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consul_discovery_routes_passing_instances() {
    let double = NomadDouble::start_with(None, Some("consul-acl")).await;
    let url = double.url();
    let gw = gateway(
        &double,
        &["--discovery", "consul"],
        &[
            ("CONSUL_HTTP_ADDR", url.as_str()),
            ("CONSUL_HTTP_TOKEN", "consul-acl"),
        ],
    );
    assert_eq!(gw.deploy(echo_fn(json!({}))).await.status, 202);
    let job = double.job(JOB).unwrap();
    assert_eq!(job["TaskGroups"][0]["Services"][0]["Provider"], "consul");
    gw.wait_available("echo", 1).await;
    let r = gw.req("POST", "/function/echo", "via consul").await;
    assert_eq!(r.text(), "via consul");
    let log = gw.log.lock().unwrap().join("\n");
    assert!(!log.contains("consul-acl"));
}
