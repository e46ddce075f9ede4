//! `faasgate serve --provider nomad` end to end, against the Nomad/Consul API double
//! (`support/nomad_double.rs`), which runs `raw_exec` tasks as real processes: OpenFaaS deploy
//! -> rendered job -> `faasgate watchdog` started -> service in the catalog -> invocation
//! routed. Every wait is a bounded poll; everything listens on 127.0.0.1.

use crate::nomad_double;
use crate::support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nomad_double::NomadDouble;
use serde_json::{json, Value};
use support::{Gateway, Resp, BIN};
use tokio::task::JoinHandle;

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
    // createdAt is the first deploy's, kept in the job's meta (SubmitTime moves with every
    // scale and update: checked below).
    let created = s["createdAt"].clone();
    assert!(created.as_str().is_some_and(|c| c.contains('T')), "{s}");
    assert_eq!(
        double.job(JOB).unwrap()["Meta"]["faasgate.created"],
        created
    );
    let submitted = double.job(JOB).unwrap()["SubmitTime"].clone();
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
    assert_ne!(double.job(JOB).unwrap()["SubmitTime"], submitted);
    assert_eq!(
        s["createdAt"], created,
        "createdAt moved with a scale or an update"
    );
    assert_eq!(
        double.job(JOB).unwrap()["Meta"]["faasgate.created"],
        created
    );
    gw.wait_available("echo", 3).await;
    let r = gw.req("POST", "/function/echo", "after update").await;
    assert_eq!(r.text(), "after update");
    // The update rolled out as a deployment; scale calls are applied directly once it ended.
    gw.wait_status("echo", "the update's rollout ended", |s| {
        s["update"].is_null()
    })
    .await;

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

/// A streaming-mode function that answers `<allocation ID> <body>`; a body starting with
/// `slow` is first noted in `$MARKS/started` and then takes 4 s.
const SLOW_ECHO: &str = r#"import os, sys, time
body = sys.stdin.read()
alloc = os.environ.get("NOMAD_ALLOC_ID", "?")
if body.startswith("slow"):
    with open(os.path.join(os.environ["MARKS"], "started"), "a") as f:
        f.write(alloc + "\n")
    time.sleep(4)
sys.stdout.write(alloc + " " + body)
"#;

/// Deploys [`SLOW_ECHO`] (written into `dir`) as `echo` and scales it to `replicas` ready.
async fn deploy_slow_echo(gw: &Gateway, dir: &std::path::Path, replicas: u64) {
    let script = dir.join("slow_echo.py");
    std::fs::write(&script, SLOW_ECHO).unwrap();
    let r = gw
        .deploy(json!({
            "service": "echo",
            "image": "",
            "envProcess": format!("python3 {}", script.display()),
            "envVars": {"MARKS": dir.to_string_lossy(), "write_timeout": "300ms"},
            "labels": {"com.openfaas.scale.min": "1"},
            "annotations": {"com.faasgate.driver": "raw_exec"}
        }))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let r = gw
        .post_json("/system/scale-function/echo", json!({"replicas": replicas}))
        .await;
    assert!(r.status < 300, "{} {}", r.status, r.text());
    gw.wait_available("echo", replicas).await;
}

/// Sends `n` slow requests to `echo` and waits until the function runs them all.
async fn start_slow(gw: &Arc<Gateway>, dir: &std::path::Path, n: usize) -> Vec<JoinHandle<Resp>> {
    let slow: Vec<_> = (0..n)
        .map(|i| {
            let gw = gw.clone();
            tokio::spawn(async move { gw.req("POST", "/function/echo", format!("slow-{i}")).await })
        })
        .collect();
    let started = dir.join("started");
    eventually(Duration::from_secs(30), "the slow requests running", || {
        let started = started.clone();
        async move { std::fs::read_to_string(&started).is_ok_and(|s| s.lines().count() == n) }
    })
    .await;
    slow
}

/// Asks for `echo` at `replicas` and returns the call once the gateway is draining for it.
async fn scale_down_until_draining(gw: &Arc<Gateway>, replicas: u64) -> JoinHandle<Resp> {
    let call = {
        let gw = gw.clone();
        tokio::spawn(async move {
            gw.post_json("/system/scale-function/echo", json!({"replicas": replicas}))
                .await
        })
    };
    eventually(Duration::from_secs(30), "the drain decision", || {
        let gw = gw.clone();
        async move {
            gw.log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("draining replicas before scale-down"))
        }
    })
    .await;
    call
}

/// Scale 3 -> 1 while slow requests run on every replica: the two allocations Nomad stops
/// (the highest name indexes) leave rotation, finish their requests, and only then is scale
/// called. Without the drain, those requests would be cut: the double stops an allocation
/// 2 s (its `ShutdownDelay`) after the scale, and the watchdog (`write_timeout` 300ms) cuts
/// what is still running at SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_down_drains_the_allocations_nomad_stops() {
    let dir = tempfile::tempdir().unwrap();
    let double = NomadDouble::start().await;
    let gw = Arc::new(gateway(&double, &[], &[]));
    deploy_slow_echo(&gw, dir.path(), 3).await;
    let slots = double.live_slots(JOB);
    assert_eq!(slots.len(), 3, "{slots:?}");
    // Nomad stops the highest name indexes: [2] and [1]; [0] stays.
    let leaving: Vec<String> = slots[..2].iter().map(|s| s.1.clone()).collect();
    let staying = slots[2].1.clone();
    assert_eq!(slots[2].0, 0);

    // Slow requests on every replica (p2c spreads 9 over 3), all started before the decision.
    let slow = start_slow(&gw, dir.path(), 9).await;

    // Fast requests all along: each notes when it was sent and who answered.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fast: Vec<_> = (0..2)
        .map(|w| {
            let (gw, stop) = (gw.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = format!("fast-{w}-{n}");
                    let sent = Instant::now();
                    let r = gw.req("POST", "/function/echo", body.clone()).await;
                    seen.push((sent, r.status, r.text(), body));
                    n += 1;
                }
                seen
            })
        })
        .collect();

    let scale = scale_down_until_draining(&gw, 1).await;
    let decided = Instant::now();
    let r = scale.await.unwrap();
    assert!(r.status < 300, "{} {}", r.status, r.text());
    // Nomad stopped exactly the drained allocations.
    assert_eq!(double.live_slots(JOB), vec![(0, staying.clone())]);
    let scale_calls: Vec<_> = double
        .requests()
        .into_iter()
        .filter(|w| w.path == format!("/v1/job/{JOB}/scale"))
        .collect();
    assert_eq!(scale_calls.last().unwrap().body["Count"], 1);
    gw.wait_available("echo", 1).await;
    let mark = Instant::now();
    eventually(
        Duration::from_secs(30),
        "fast requests after the scale",
        || {
            let gw = gw.clone();
            async move { gw.req("POST", "/function/echo", "after").await.status == 200 }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);

    // Every slow request completed with 200, the ones on the leaving replicas included.
    let mut served_slow = std::collections::BTreeSet::new();
    for (i, h) in slow.into_iter().enumerate() {
        let r = h.await.unwrap();
        assert_eq!(r.status, 200, "slow-{i}: {}", r.text());
        let text = r.text();
        let (alloc, body) = text.split_once(' ').unwrap();
        assert_eq!(body, format!("slow-{i}"));
        served_slow.insert(alloc.to_string());
    }
    for a in &leaving {
        assert!(
            served_slow.contains(a),
            "no slow request was in flight on {a}"
        );
    }
    // Every fast request completed with 200; none sent after the decision reached a
    // leaving replica.
    let mut after_decision = 0;
    for h in fast {
        for (sent, status, text, body) in h.await.unwrap() {
            assert_eq!(status, 200, "{body}: {text}");
            let (alloc, echoed) = text.split_once(' ').unwrap();
            assert_eq!(echoed, body);
            if sent > decided {
                after_decision += 1;
                assert!(
                    !leaving.iter().any(|a| a == alloc),
                    "{body}, sent after the drain decision, reached the leaving {alloc}"
                );
            }
        }
    }
    assert!(
        after_decision > 0,
        "no fast request was sent during the drain"
    );
    assert!(mark >= decided);
}

/// A scale-down Nomad refuses (400, as during an active deployment) reaches the caller with
/// Nomad's message, and the replicas drained for it go back in rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_scale_down_puts_drained_replicas_back() {
    let dir = tempfile::tempdir().unwrap();
    let double = NomadDouble::start().await;
    let gw = gateway(&double, &[], &[]);
    deploy_slow_echo(&gw, dir.path(), 2).await;
    let slots = double.live_slots(JOB);

    // (A refusal because of an active deployment is deferred instead: `nomad_updates`.)
    double.refuse_next_scale("group count was less than scaling policy minimum: 1 < 2");
    let r = gw
        .post_json("/system/scale-function/echo", json!({"replicas": 1}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("scaling policy minimum"), "{}", r.text());
    // The log is read by a thread of its own: the line may arrive after the answer.
    support::eventually(
        Duration::from_secs(10),
        "the drain before the scale-down logged",
        || {
            gw.log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("draining replicas before scale-down"))
        },
    )
    .await;
    let s = gw.status("echo").await;
    assert_eq!(
        (s["replicas"].as_u64(), s["availableReplicas"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(double.live_slots(JOB), slots, "nothing was stopped");
    // Both replicas serve again, the drained one ([1]) included.
    let mut served = std::collections::BTreeSet::new();
    for i in 0..40 {
        let r = gw.req("POST", "/function/echo", format!("again-{i}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        served.insert(r.text().split_once(' ').unwrap().0.to_string());
        if served.len() == 2 {
            break;
        }
    }
    let all: std::collections::BTreeSet<String> = slots.into_iter().map(|s| s.1).collect();
    assert_eq!(served, all);
}

/// A scale call made while an older scale-down drains ends that drain at once: the older
/// call fails with 409 and never reaches Nomad, the newer one is applied, and the requests
/// on the replicas that were draining complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn newer_scale_call_supersedes_a_draining_scale_down() {
    let dir = tempfile::tempdir().unwrap();
    let double = NomadDouble::start().await;
    let gw = Arc::new(gateway(&double, &[], &[]));
    deploy_slow_echo(&gw, dir.path(), 2).await;
    let slots = double.live_slots(JOB);
    let slow = start_slow(&gw, dir.path(), 6).await;
    let down = scale_down_until_draining(&gw, 1).await;
    let r = gw
        .post_json("/system/scale-function/echo", json!({"replicas": 3}))
        .await;
    assert!(r.status < 300, "{} {}", r.status, r.text());
    let r = down.await.unwrap();
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("superseded"), "{}", r.text());

    let counts: Vec<Value> = double
        .requests()
        .into_iter()
        .filter(|w| w.path == format!("/v1/job/{JOB}/scale"))
        .map(|w| w.body["Count"].clone())
        .collect();
    assert_eq!(
        counts,
        [json!(2), json!(3)],
        "the scale to 1 never reached Nomad"
    );
    gw.wait_available("echo", 3).await;
    let live: Vec<String> = double.live_slots(JOB).into_iter().map(|s| s.1).collect();
    for (_, id) in &slots {
        assert!(live.contains(id), "{id} was kept");
    }
    for (i, h) in slow.into_iter().enumerate() {
        let r = h.await.unwrap();
        assert_eq!(r.status, 200, "slow-{i}: {}", r.text());
    }
}

/// Namespaces on Nomad: one Variable each at `faasgate/namespaces/<name>` (items `labels`
/// and `annotations` as JSON text), so they survive a gateway restart; a deploy outside the
/// set registers no job; a namespace holding a job is not deleted; and a namespace whose
/// job predates namespace records (its Variable absent) is adopted at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespaces_are_nomad_variables_and_survive_a_restart() {
    use faasgate::client::nomad::VarPath;
    use faasgate::client::{NomadClient, NomadSettings, Secret};

    const TEAM_JOB: &str = "faasgate-echo.team";
    let double = NomadDouble::start_with(Some(TOKEN), None).await;
    let env = [("NOMAD_TOKEN", TOKEN)];
    let mut gw = gateway(&double, &[], &env);
    let mut f = echo_fn(json!({"com.openfaas.scale.min": "1"}));
    f["namespace"] = json!("team");

    let r = gw.deploy(f.clone()).await;
    assert_eq!((r.status, r.text().as_str()), (400, "namespace not valid"));
    assert!(double.job(TEAM_JOB).is_none(), "nothing registered");
    assert!(
        double
            .requests()
            .iter()
            .all(|w| w.method != "POST" || !w.path.starts_with("/v1/job")),
        "no job write for an unknown namespace"
    );

    let r = gw
        .post_json(
            "/system/namespace/",
            json!({"name": "team", "labels": {"openfaas": "1"}, "annotations": {"openfaas": "1", "owner": "t"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let var = double
        .variable("default", "faasgate/namespaces/team")
        .expect("the namespace is a variable in the gateway's Nomad namespace");
    assert_eq!(var["Items"]["labels"], r#"{"openfaas":"1"}"#);
    assert_eq!(
        var["Items"]["annotations"],
        r#"{"openfaas":"1","owner":"t"}"#
    );
    let r = gw
        .post_json(
            "/system/namespace/",
            json!({"name": "team", "labels": {"openfaas": "1"}}),
        )
        .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (409, "namespace team already exists")
    );
    let r = gw
        .post_json(
            "/system/namespace/",
            json!({"name": "spare", "labels": {"openfaas": "1", "tier": "2"}}),
        )
        .await;
    assert_eq!(r.status, 201);

    let r = gw.deploy(f.clone()).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(double.job(TEAM_JOB).is_some());
    gw.wait_available("echo.team", 1).await;
    let r = gw.req("POST", "/function/echo.team", "in team").await;
    assert_eq!((r.status, r.text().as_str()), (200, "in team"));
    let r = gw.req("DELETE", "/system/namespace/team", "").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            409,
            "namespace team is not empty: it still holds functions echo"
        )
    );
    assert!(double
        .variable("default", "faasgate/namespaces/team")
        .is_some());

    // Restart: the set and the records come back from Nomad.
    assert_eq!(gw.stop(), Some(0));
    let mut gw = gateway(&double, &[], &env);
    assert_eq!(
        gw.get("/system/namespaces").await.json(),
        json!(["openfaas-fn", "spare", "team"])
    );
    assert_eq!(
        gw.get("/system/namespace/spare").await.json(),
        json!({"name": "spare", "labels": {"openfaas": "1", "tier": "2"}, "annotations": {}})
    );
    let r = gw
        .req_h(
            "PUT",
            "/system/namespace/spare",
            &[("content-type", "application/json")],
            r#"{"name":"spare","labels":{"openfaas":"1"}}"#,
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(
        double
            .variable("default", "faasgate/namespaces/spare")
            .unwrap()["Items"]["labels"],
        r#"{"openfaas":"1"}"#
    );
    let r = gw.req("DELETE", "/system/namespace/spare", "").await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(double
        .variable("default", "faasgate/namespaces/spare")
        .is_none());
    assert_eq!(gw.stop(), Some(0));

    // Upgrade: the job is there, its namespace's variable is not (written by no earlier
    // gateway). The next start adopts it.
    let mut s = NomadSettings::for_addr(&double.url()).unwrap();
    s.token = Secret::new(TOKEN);
    let nomad = NomadClient::new(&s);
    nomad
        .var_delete(&VarPath::new("faasgate/namespaces/team").unwrap(), None)
        .await
        .unwrap();
    assert!(double
        .variable("default", "faasgate/namespaces/team")
        .is_none());
    let gw = gateway(&double, &[], &env);
    assert_eq!(
        gw.get("/system/namespaces").await.json(),
        json!(["openfaas-fn", "team"])
    );
    assert!(
        double
            .variable("default", "faasgate/namespaces/team")
            .is_some(),
        "the occupied namespace was stored at start"
    );
    let r = gw
        .req_h(
            "DELETE",
            "/system/functions",
            &[("content-type", "application/json")],
            r#"{"functionName":"echo","namespace":"team"}"#,
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(
        gw.get("/system/namespaces").await.json(),
        json!(["openfaas-fn", "team"]),
        "an emptied namespace stays"
    );
    let r = gw.req("DELETE", "/system/namespace/team", "").await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(double
        .variable("default", "faasgate/namespaces/team")
        .is_none());
    assert_eq!(
        gw.get("/system/namespaces").await.json(),
        json!(["openfaas-fn"])
    );
}
