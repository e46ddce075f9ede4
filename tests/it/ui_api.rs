//! `/ui/` over plain HTTP: the files load without credentials, `/ui/api/*` needs basic auth
//! (401 without a `WWW-Authenticate` challenge), the sampler fills the time series, and the
//! scale API records its decisions where the UI reads them.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::Gateway;

const AUTH: (&str, &str) = ("authorization", "Basic YWRtaW46czNjcmV0LXBhc3M="); // admin:s3cret-pass

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_files_are_open_and_its_data_needs_auth() {
    let gw = Gateway::start_with(&[], &[("FAASGATE_BASIC_AUTH_PASSWORD", "s3cret-pass")]);
    for (path, ty) in [
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
        ("/ui/favicon.svg", "image/svg+xml"),
    ] {
        let r = gw.get(path).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-type").unwrap().starts_with(ty), "{path}");
        assert!(r.header("content-security-policy").is_some(), "{path}");
    }
    assert_eq!(gw.get("/ui").await.status, 307);
    assert_eq!(gw.get("/ui/missing.js").await.status, 404);
    assert_eq!(gw.req("POST", "/ui/", "").await.status, 405);
    for path in ["/ui/api/summary", "/ui/api/series?name=x"] {
        let r = gw.get(path).await;
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.header("www-authenticate"), None, "{path}");
    }
    let r = gw.req_h("GET", "/ui/api/summary", &[AUTH], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["functions"], json!({}));
    let r = gw
        .req_h("GET", "/ui/api/series?name=nope", &[AUTH], "")
        .await;
    assert_eq!(r.status, 404);
    let r = gw.req_h("GET", "/ui/api/series", &[AUTH], "").await;
    assert_eq!(r.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_and_scale_events() {
    let gw = Gateway::start();
    let r = gw
        .deploy(json!({"service": "cat", "image": "x", "envProcess": "cat"}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    gw.wait_available("cat", 1).await;
    for _ in 0..3 {
        assert_eq!(gw.req("POST", "/function/cat", "hi").await.status, 200);
    }
    let r = gw
        .post_json("/system/scale-function/cat", json!({"replicas": 2}))
        .await;
    assert_eq!(r.status, 202);

    // The sampler runs every second: poll (bounded) until it has seen the calls.
    let deadline = Instant::now() + Duration::from_secs(30);
    let series = loop {
        let v = gw.get("/ui/api/series?name=cat").await.json();
        let samples = v["samples"].as_array().unwrap();
        if samples
            .last()
            .is_some_and(|s| s["invocations"] == 3 && s["desired"] == 2)
        {
            break v;
        }
        assert!(Instant::now() < deadline, "no sample with 3 calls: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(series["function"], "cat.openfaas-fn");
    assert_eq!(series["interval"], 1000);
    let samples = series["samples"].as_array().unwrap();
    assert!(
        samples
            .iter()
            .any(|s| s["p50"].as_f64().is_some_and(|p| p > 0.0)),
        "a window with the calls has a p50: {samples:?}"
    );
    let events = series["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (&events[0]["from"], &events[0]["to"], &events[0]["reason"]),
        (&json!(1), &json!(2), &json!("api"))
    );
    assert_eq!(events[0]["function"], "cat.openfaas-fn");

    let summary = gw.get("/ui/api/summary").await.json();
    // A gateway alone leads; the UI shows cluster details only with several gateways.
    assert_eq!(summary["cluster"]["leader"], true, "{summary}");
    assert_eq!(summary["cluster"]["members"], 1);
    let cat = &summary["functions"]["cat"];
    assert_eq!(cat["invocations"], 3);
    assert!(cat["rate"].as_f64().unwrap() > 0.0, "{cat}");
    assert!(
        gw.get("/ui/api/summary?namespace=other").await.json()["functions"]
            .as_object()
            .unwrap()
            .is_empty()
    );
}

/// The UI's queue depth: a function whose async calls wait (one delivered at a time, each
/// taking seconds) shows them in `/ui/api/summary`'s `queues` and `/ui/api/series`'s `queue`,
/// and nothing once they are done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_and_series_show_a_functions_async_queue() {
    let gw = Gateway::start();
    let f = json!({"service": "slow", "image": "x", "envProcess": "sleep 2",
                   "labels": {"com.openfaas.queue.max-inflight": "1"}});
    assert_eq!(gw.deploy(f).await.status, 202);
    gw.wait_available("slow", 1).await;
    assert_eq!(
        gw.get("/ui/api/series?name=slow").await.json()["queue"],
        json!(null)
    );
    for _ in 0..3 {
        assert_eq!(
            gw.req("POST", "/async-function/slow", "x").await.status,
            202
        );
    }
    let summary = gw.get("/ui/api/summary").await.json();
    let q = &summary["queues"]["slow"];
    assert_eq!(q["queued"], 3, "{summary}");
    assert!(q["delivering"].as_u64().unwrap() <= 1, "{q}");
    assert!(q["oldestSeconds"].as_f64().unwrap() >= 0.0, "{q}");
    let series = gw.get("/ui/api/series?name=slow").await.json();
    assert!(series["queue"]["queued"].as_u64().unwrap() >= 1, "{series}");
    assert!(
        gw.get("/ui/api/summary?namespace=other").await.json()["queues"]
            .as_object()
            .unwrap()
            .is_empty()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while gw.get("/ui/api/summary").await.json()["queues"]
        .as_object()
        .is_some_and(|q| !q.is_empty())
    {
        assert!(Instant::now() < deadline, "the queue never drained");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
