//! Async invocations through the real binary and the local provider: `/async-function` is
//! accepted with 202 once stored and reaches the function with its method, sub-path, query,
//! body and call id; bad requests are refused with their statuses; a call answered with a
//! retried status is retried with backoff until it succeeds, or buried in the dead letters,
//! which can be replayed and dropped. Every wait is a bounded poll.

use crate::support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use support::Gateway;

/// A function whose process appends a line per call to `log` (`method path query call-id
/// body`) and exits with the status `fail` says for the call's number (1-based): `fail` is a
/// shell test on `$n`, e.g. `[ "$n" -le 2 ]` to fail the first two calls.
pub(crate) fn recorder(dir: &Path, name: &str, fail: &str) -> (Value, std::path::PathBuf) {
    let log = dir.join(format!("{name}.log"));
    let script = dir.join(format!("{name}.sh"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nbody=$(cat)\necho \"$Http_Method $Http_Path $Http_Query $Http_X_Call_Id $body\" >> {log}\n\
             n=$(wc -l < {log})\nif {fail}; then exit 1; fi\n",
            log = log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let f = json!({"service": name, "image": "x", "envProcess": script.display().to_string()});
    (f, log)
}

pub(crate) fn lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

pub(crate) async fn wait_lines(log: &Path, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    support::eventually(
        Duration::from_secs(30),
        &format!("{n} calls in {}", log.display()),
        || {
            got = lines(log);
            got.len() >= n
        },
    )
    .await;
    got
}

/// Retries that end within a second: 100 ms doubling to 200 ms, 3 attempts.
pub(crate) const QUICK_RETRIES: &[&str] = &[
    "--async-retry-wait",
    "100ms",
    "--async-retry-max-wait",
    "200ms",
    "--async-max-attempts",
    "3",
];

/// Polls the dead letters of `name` until there are `n`, and returns them.
pub(crate) async fn dead_letters(gw: &Gateway, name: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = gw
            .get(&format!("/system/async/dead-letters?name={name}"))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let list = r.json().as_array().cloned().unwrap_or_default();
        if list.len() == n {
            return list;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{n} dead letters expected: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The dead letter `id` of `name` (a function that always fails, after [`QUICK_RETRIES`]'s
/// three attempts, each a line in `log`) replayed: three more attempts (the count starts
/// again), buried again, then dropped (a second drop is a 404).
pub(crate) async fn replay_then_drop(gw: &Gateway, name: &str, id: u64, log: &Path) {
    let r = gw
        .req(
            "POST",
            &format!("/system/async/dead-letters/{id}/replay"),
            "",
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    wait_lines(log, 6).await;
    let list = dead_letters(gw, name, 1).await;
    assert_eq!(list[0]["attempts"], 3);
    // The store may give the buried call a new id.
    let id = list[0]["id"].as_u64().unwrap();
    let gauge = format!(r#"faasgate_async_dead_letters{{function_name="{name}.openfaas-fn"}}"#);
    let dead_now = || async { support::metric_value(&gw.get("/metrics").await.text(), &gauge) };
    // The gauge follows the list (the NATS store recounts once a second).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while dead_now().await != Some(1.0) {
        assert!(std::time::Instant::now() < deadline, "{gauge} never 1");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drop = format!("/system/async/dead-letters/{id}");
    let r = gw.req("DELETE", &drop, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while dead_now().await.is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "{gauge} stays after the drop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(gw.req("DELETE", &drop, "").await.status, 404);
    assert_eq!(gw.get("/system/async/dead-letters").await.json(), json!([]));
    assert_eq!(lines(log).len(), 6, "nothing more after burial");
}

/// Enqueues `calls` calls to `/async-function/{function}` with call ids `{prefix}{n}`, from
/// `clients` concurrent clients spread over `gateways` in turn; every one must be accepted.
pub(crate) async fn enqueue_many(
    gateways: &[std::net::SocketAddr],
    clients: usize,
    function: &str,
    prefix: &str,
    calls: usize,
) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (addr, next) = (gateways[c % gateways.len()], next.clone());
            let (path, prefix) = (format!("/async-function/{function}"), prefix.to_string());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= calls {
                        return;
                    }
                    let id = format!("{prefix}{n}");
                    let r =
                        support::request(addr, "POST", &path, &[("x-call-id", &id)], "x".into())
                            .await;
                    assert_eq!(r.status, 202, "{}", r.text());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// Waits (at most `limit`) until every call id `{prefix}0..{prefix}{calls}` is in `log` (a
/// [`recorder`]'s), and returns how many were delivered more than once.
pub(crate) async fn all_delivered(log: &Path, prefix: &str, calls: usize, limit: Duration) -> u32 {
    let mut seen = std::collections::HashMap::<String, u32>::new();
    let deadline = std::time::Instant::now() + limit;
    loop {
        seen.clear();
        for l in lines(log) {
            // `POST / <empty query> <call id> x`
            if let Some(id) = l.split_whitespace().nth(2) {
                *seen.entry(id.to_string()).or_default() += 1;
            }
        }
        if seen.len() >= calls {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {calls} call ids delivered",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!((0..calls).all(|n| seen.contains_key(&format!("{prefix}{n}"))));
    seen.values().map(|c| c - 1).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_call_reaches_the_function_whole_and_bad_ones_are_refused() {
    let gw = Gateway::start_with(&["--no-auth", "--max-async-body", "1000"], &[]);
    let dir = tempfile::tempdir().unwrap();
    let (f, log) = recorder(dir.path(), "rec", "false");
    assert_eq!(gw.deploy(f).await.status, 202);
    gw.wait_available("rec", 1).await;

    let r = gw
        .req_h(
            "POST",
            "/async-function/rec/sub/path?a=1&b=2",
            &[("x-call-id", "call-abc"), ("content-type", "text/plain")],
            "hello",
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.headers["x-call-id"], "call-abc", "the client's id");
    let r = gw.req("PUT", "/async-function/rec.openfaas-fn", "x").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let made = r.headers["x-call-id"].to_str().unwrap().to_string();
    assert!(!made.is_empty());
    let got = wait_lines(&log, 2).await;
    assert!(
        got.contains(&"POST /sub/path a=1&b=2 call-abc hello".to_string()),
        "{got:?}"
    );
    assert!(got.contains(&format!("PUT /  {made} x")), "{got:?}");

    // Refused, nothing queued.
    assert_eq!(gw.req("POST", "/async-function/nope", "").await.status, 404);
    for bad in ["bad!name", ""] {
        let r = gw.req("POST", &format!("/async-function/{bad}"), "").await;
        assert_eq!(r.status, 400, "{bad:?}: {}", r.text());
    }
    let big = vec![b'x'; 2000];
    assert_eq!(gw.req("POST", "/async-function/rec", big).await.status, 413);
    for url in ["ftp://host/x", "/relative", "not a url"] {
        let r = gw
            .req_h(
                "POST",
                "/async-function/rec",
                &[("x-callback-url", url)],
                "",
            )
            .await;
        assert_eq!(r.status, 400, "{url}: {}", r.text());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(lines(&log).len(), 2, "nothing refused was delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_calls_are_retried_then_buried_replayed_and_dropped() {
    let args: Vec<&str> = ["--no-auth"].iter().chain(QUICK_RETRIES).copied().collect();
    let gw = Gateway::start_with(&args, &[]);
    let dir = tempfile::tempdir().unwrap();
    // Fails (500, a retried status) twice, then succeeds: delivered on the third attempt.
    let (flaky, flaky_log) = recorder(dir.path(), "flaky", "[ \"$n\" -le 2 ]");
    // Always fails.
    let (broken, broken_log) = recorder(dir.path(), "broken", "true");
    for f in [flaky, broken] {
        assert_eq!(gw.deploy(f).await.status, 202);
    }
    gw.wait_available("flaky", 1).await;
    gw.wait_available("broken", 1).await;
    for name in ["flaky", "broken"] {
        let r = gw
            .req_h(
                "POST",
                &format!("/async-function/{name}"),
                &[("x-call-id", name)],
                "b",
            )
            .await;
        assert_eq!(r.status, 202);
    }
    let got = wait_lines(&flaky_log, 3).await;
    assert!(
        got.iter().all(|l| l == "POST /  flaky b"),
        "the same call id each time: {got:?}"
    );
    wait_lines(&broken_log, 3).await;

    let list = dead_letters(&gw, "broken", 1).await;
    let letter = &list[0];
    assert_eq!(letter["callId"], "broken");
    assert_eq!(letter["attempts"], 3);
    assert_eq!(letter["status"], 500);
    let id = letter["id"].as_u64().unwrap();
    let all = support::request(gw.addr, "GET", "/system/async/dead-letters", &[], "".into()).await;
    assert_eq!(all.json().as_array().unwrap().len(), 1, "flaky succeeded");
    assert_eq!(
        lines(&flaky_log).len(),
        3,
        "not delivered again after it succeeded"
    );
    // The function logs a call before it answers; the dispatcher counts it after: poll.
    let delivered =
        r#"faasgate_async_delivered_total{function_name="flaky.openfaas-fn",code="200"}"#;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = gw.get("/metrics").await.text();
        if support::metric_value(&m, delivered).is_some() {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{delivered} never counted:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let metric = |prefix: &str| support::metric_value(&m, prefix);
    assert_eq!(metric(delivered), Some(1.0), "{m}");
    assert_eq!(
        metric(r#"faasgate_async_retries_total{function_name="flaky.openfaas-fn"}"#),
        Some(2.0)
    );
    assert_eq!(
        metric(r#"faasgate_async_retries_total{function_name="broken.openfaas-fn"}"#),
        Some(2.0)
    );
    assert_eq!(
        metric(r#"faasgate_async_dead_letters_total{function_name="broken.openfaas-fn"}"#),
        Some(1.0)
    );
    assert_eq!(
        metric(r#"faasgate_async_queued{function_name="broken.openfaas-fn"}"#),
        None,
        "nothing queued"
    );

    replay_then_drop(&gw, "broken", id, &broken_log).await;
}

/// One callback as received: its headers and body.
pub(crate) type Received = Arc<Mutex<Vec<(http::HeaderMap, bytes::Bytes)>>>;

/// A callback receiver on loopback that answers 500 to its first `fail_first` requests.
pub(crate) async fn receiver(fail_first: usize) -> (std::net::SocketAddr, Received) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Received = Arc::default();
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let store = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (store, seen) = (store.clone(), seen.clone());
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (store, seen) = (store.clone(), seen.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let status = if n < fail_first { 500 } else { 200 };
                            if status == 200 {
                                store.lock().unwrap().push((parts.headers, body));
                            }
                            let mut resp =
                                http::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
                            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_carries_the_answer_and_openfaas_headers_and_is_retried() {
    let gw = Gateway::start_with(
        &[
            "--no-auth",
            "--callback-allow",
            "127.0.0.0/8",
            "--async-retry-wait",
            "100ms",
            "--async-max-attempts",
            "2",
        ],
        &[],
    );
    // `cat` answers with the request's body.
    let f = json!({"service": "echo", "image": "x", "envProcess": "cat"});
    assert_eq!(gw.deploy(f).await.status, 202);
    // Fails every time.
    let dir = tempfile::tempdir().unwrap();
    let (broken, _) = recorder(dir.path(), "broken", "true");
    assert_eq!(gw.deploy(broken).await.status, 202);
    gw.wait_available("echo", 1).await;
    gw.wait_available("broken", 1).await;
    // The receiver refuses the first callback: it is sent again.
    let (addr, got) = receiver(1).await;
    let url = format!("http://{addr}/done?x=1");
    let r = gw
        .req_h(
            "POST",
            "/async-function/echo",
            &[
                ("x-callback-url", &url),
                ("x-call-id", "cb-1"),
                ("authorization", "Basic c2VjcmV0"),
            ],
            "the body",
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let r = gw
        .req_h(
            "POST",
            "/async-function/broken",
            &[("x-callback-url", &url), ("x-call-id", "cb-2")],
            "b",
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let mut all = Vec::new();
    support::eventually(Duration::from_secs(30), "two callbacks", || {
        all = got.lock().unwrap().clone();
        all.len() >= 2
    })
    .await;
    let by_id = |id: &str| {
        all.iter()
            .find(|(h, _)| h.get("x-call-id").is_some_and(|v| v == id))
            .unwrap_or_else(|| panic!("no callback for {id}: {all:?}"))
            .clone()
    };
    let (h, body) = by_id("cb-1");
    assert_eq!(&body[..], b"the body");
    assert_eq!(h["x-function-status"], "200");
    assert_eq!(h["x-function-name"], "echo.openfaas-fn");
    let secs: f64 = h["x-duration-seconds"].to_str().unwrap().parse().unwrap();
    assert!(
        secs > 0.0
            && h["x-duration-seconds"]
                .to_str()
                .unwrap()
                .split('.')
                .nth(1)
                .unwrap()
                .len()
                == 6
    );
    assert!(
        h["x-start-time"].to_str().unwrap().parse::<u128>().unwrap() > 1_600_000_000_000_000_000
    );
    assert!(
        h.get("authorization").is_none(),
        "the caller's credentials never travel: {h:?}"
    );
    // The buried call's callback reports its last failure.
    let (h, _) = by_id("cb-2");
    assert_eq!(h["x-function-status"], "500");

    // Not admitted by --callback-allow: refused at enqueue.
    let r = gw
        .req_h(
            "POST",
            "/async-function/echo",
            &[("x-callback-url", "http://10.1.1.1/x")],
            "",
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
}

/// Issue 14's durability case for the embedded store: 10,000 calls accepted, the gateway
/// SIGKILLed while they drain, restarted on the same data dir: every call id reaches the
/// function at least once. Duplicates (calls running when the gateway died) are counted
/// and printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_call_survives_a_kill_9_of_the_gateway() {
    const CALLS: usize = 10_000;
    let data = tempfile::tempdir().unwrap();
    let args = ["--no-auth", "--async-max-inflight", "20"];
    let mut gw = Gateway::start_in(data.path(), &args, &[]);
    let dir = tempfile::tempdir().unwrap();
    let (f, log) = recorder(dir.path(), "sink", "false");
    assert_eq!(gw.deploy(f).await.status, 202);
    gw.wait_available("sink", 1).await;

    // Enqueue from 32 clients; every 202 is a promise.
    enqueue_many(&[gw.addr], 32, "sink", "k-", CALLS).await;
    // Kill it while it drains.
    support::eventually(Duration::from_secs(120), "deliveries under way", || {
        lines(&log).len() >= 500
    })
    .await;
    support::signal(gw.pid(), libc::SIGKILL);
    let killed_at = lines(&log).len();
    assert!(killed_at < CALLS, "drained before the kill ({killed_at})");
    let _ = gw.stop();

    let gw = Gateway::start_in(data.path(), &args, &[]);
    // Restored at whatever count the backlog had scaled it to.
    gw.wait_status("sink", "a replica ready", |v| {
        v["availableReplicas"].as_u64() >= Some(1)
    })
    .await;
    let duplicates = all_delivered(&log, "k-", CALLS, Duration::from_secs(300)).await;
    eprintln!(
        "async durability: {CALLS} accepted, gateway SIGKILLed after {killed_at} deliveries, \
         all {CALLS} delivered after the restart, {duplicates} delivered twice"
    );
}

/// Issue 14's scaling case: 2,000 calls queued for a function at zero (max 5) wake it, the
/// backlog (counted as held demand) takes it above one replica, every call is delivered, and
/// once the queue is empty it comes back down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_wakes_a_function_scales_it_up_drains_and_lets_it_come_down() {
    backlog_scales_a_function(&[]).await;
}

/// The backlog case with the gateway's own flags and `extra` ones (the NATS store's).
pub(crate) async fn backlog_scales_a_function(extra: &[&str]) {
    const CALLS: usize = 2_000;
    let args: Vec<&str> = crate::scaler::FAST.iter().chain(extra).copied().collect();
    let gw = Gateway::start_with(&args, &[]);
    let f = json!({"service": "work", "image": "x", "envProcess": "sleep 0.05",
        "labels": {"com.openfaas.scale.max": "5", "com.openfaas.scale.target": "4",
                   "com.openfaas.scale.zero": "true", "com.openfaas.scale.zero-duration": "3s"}});
    assert_eq!(gw.deploy(f).await.status, 202);
    gw.wait_available("work", 1).await;
    let r = gw
        .post_json("/system/scale-function/work", json!({"replicas": 0}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    gw.wait_status("work", "at zero", |v| {
        v["replicas"] == 0 && v["availableReplicas"] == 0
    })
    .await;

    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (addr, next) = (gw.addr, next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < CALLS {
                    let r = support::request(addr, "POST", "/async-function/work", &[], "x".into())
                        .await;
                    assert_eq!(r.status, 202, "{}", r.text());
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    let delivered = |m: &str| {
        support::metric_value(
            m,
            r#"faasgate_async_delivered_total{function_name="work.openfaas-fn",code="200"}"#,
        )
        .unwrap_or(0.0) as usize
    };
    let (mut most, mut done) = (0u64, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while done < CALLS {
        assert!(
            std::time::Instant::now() < deadline,
            "{done} of {CALLS} delivered; at most {most} replicas"
        );
        most = most.max(gw.status("work").await["replicas"].as_u64().unwrap_or(0));
        done = delivered(&gw.get("/metrics").await.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(most > 1, "the backlog never raised the count above 1");
    assert!(most <= 5, "above max: {most}");
    gw.wait_status("work", "back down once drained", |v| {
        v["replicas"].as_u64().is_some_and(|r| r < most)
    })
    .await;
    eprintln!("async scaling: {CALLS} calls queued at zero, up to {most} replicas, all delivered, back down");
}

/// `com.openfaas.queue.max-inflight` bounds a function's async calls at once: with `1` its
/// calls never overlap; without it (the same function, the gateway's default of 100 and a
/// replica planned for 45) they do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_functions_queue_max_inflight_bounds_its_concurrent_async_calls() {
    const CALLS: usize = 6;
    let gw = Gateway::start_with(&["--no-auth"], &[]);
    let dir = tempfile::tempdir().unwrap();
    let deploy = |name: &str, labels: Value| {
        let (lock, log) = (
            dir.path().join(format!("{name}.lock")),
            dir.path().join(format!("{name}.log")),
        );
        let script = dir.path().join(format!("{name}.sh"));
        // A call that finds another running records `overlap`.
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\ncat >/dev/null\nif mkdir {lock} 2>/dev/null; then sleep 0.3; rmdir {lock}; \
                 echo ok >> {log}; else echo overlap >> {log}; fi\n",
                lock = lock.display(),
                log = log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        (
            json!({"service": name, "image": "x", "envProcess": script.display().to_string(),
                   "labels": labels}),
            log,
        )
    };
    let (serial, serial_log) = deploy("serial", json!({"com.openfaas.queue.max-inflight": "1"}));
    let (open, open_log) = deploy("open", json!({}));
    for f in [serial, open] {
        assert_eq!(gw.deploy(f).await.status, 202);
    }
    let bad = gw
        .deploy(json!({"service": "bad", "image": "x", "envProcess": "cat",
                       "annotations": {"com.openfaas.queue.max-inflight": "0"}}))
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(
        bad.text().contains("com.openfaas.queue.max-inflight"),
        "{}",
        bad.text()
    );
    gw.wait_available("serial", 1).await;
    gw.wait_available("open", 1).await;
    for name in ["serial", "open"] {
        for _ in 0..CALLS {
            let r = gw
                .req("POST", &format!("/async-function/{name}"), "x")
                .await;
            assert_eq!(r.status, 202, "{}", r.text());
        }
    }
    let serial = wait_lines(&serial_log, CALLS).await;
    assert!(
        serial.iter().all(|l| l == "ok"),
        "overlapping calls: {serial:?}"
    );
    let open = wait_lines(&open_log, CALLS).await;
    assert!(
        open.iter().any(|l| l == "overlap"),
        "without the label the calls run together: {open:?}"
    );
}

/// A function's `com.openfaas.retry.*` annotations (OpenFaaS Pro's) override the gateway's
/// retries for its calls: `attempts` 2 with quick waits buries a failing call after two
/// deliveries (the gateway's own 10 attempts, 10 s apart, would not within the test), and
/// `codes` without 500 ends a call answered 500 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_functions_retry_annotations_override_the_gateways_retries() {
    let gw = Gateway::start_with(&["--no-auth"], &[]);
    let dir = tempfile::tempdir().unwrap();
    let (mut twice, twice_log) = recorder(dir.path(), "twice", "true");
    twice["annotations"] = json!({
        "com.openfaas.retry.attempts": "2",
        "com.openfaas.retry.min_wait": "100ms",
        "com.openfaas.retry.max_wait": "100ms"
    });
    let (mut once, once_log) = recorder(dir.path(), "once", "true");
    once["annotations"] = json!({"com.openfaas.retry.codes": "502,503"});
    for f in [twice, once] {
        assert_eq!(gw.deploy(f).await.status, 202);
    }
    let bad = gw
        .deploy(json!({"service": "bad", "image": "x", "envProcess": "cat",
                       "annotations": {"com.openfaas.retry.codes": "5xx"}}))
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(
        bad.text().contains("com.openfaas.retry.codes"),
        "{}",
        bad.text()
    );
    gw.wait_available("twice", 1).await;
    gw.wait_available("once", 1).await;
    for name in ["twice", "once"] {
        let r = gw
            .req("POST", &format!("/async-function/{name}"), "x")
            .await;
        assert_eq!(r.status, 202, "{}", r.text());
    }
    let list = dead_letters(&gw, "twice", 1).await;
    assert_eq!(list[0]["attempts"], 2);
    assert_eq!(lines(&twice_log).len(), 2);
    let metric = |m: &str| {
        support::metric_value(
            m,
            r#"faasgate_async_delivered_total{function_name="once.openfaas-fn",code="500"}"#,
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while metric(&gw.get("/metrics").await.text()).is_none() {
        assert!(std::time::Instant::now() < deadline, "once never delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(lines(&once_log).len(), 1, "a 500 is final for `once`");
    assert_eq!(dead_letters(&gw, "once", 0).await.len(), 0);
}
