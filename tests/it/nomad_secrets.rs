//! Secrets on the Nomad provider, end to end: `faasgate serve --provider nomad` against the
//! API double (`support/nomad_double.rs`, whose Variables behave as Nomad's do).
//!
//! What is shown: `/system/secrets` create/list/update/delete keep one Variable per secret at
//! `faasgate/secrets/<namespace>/<name>`; a deploy copies the function's secrets into its own
//! Variable (`render::secrets_var_path`) before the job is registered, and the job carries the
//! templates that render them; a missing secret is 400 and registers nothing; an update
//! rewrites the copy only when a value changed; delete removes the copy; no value appears in
//! the function's status, the registered job or the gateway's log.
//!
//! Not shown here: a task reading the rendered file. The double runs `raw_exec` tasks but does
//! not execute `Templates` (no consul-template), so that part needs a real Nomad agent.

use crate::nomad_double;
use crate::support;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use faasgate::control::nomad::render;
use faasgate::model::names::FunctionKey;
use nomad_double::NomadDouble;
use serde_json::{json, Value};
use support::{Gateway, BIN};

const JOB: &str = "faasgate-echo.openfaas-fn";
const NS: &str = "default";
const V1: &str = "v1-SeCrEt-7a1f";
const V2: &str = "v2-SeCrEt-93c0";

fn gateway(double: &NomadDouble) -> Gateway {
    let url = double.url();
    Gateway::start_with(
        &[
            "--no-auth",
            "--provider",
            "nomad",
            "--nomad-watchdog-path",
            BIN,
        ],
        &[
            ("NOMAD_ADDR", url.as_str()),
            ("RUST_LOG", "info,faasgate=debug"),
        ],
    )
}

fn echo_fn(secrets: &[&str]) -> Value {
    json!({
        "service": "echo",
        "image": "",
        "envProcess": "cat",
        "secrets": secrets,
        "annotations": {"com.faasgate.driver": "raw_exec"}
    })
}

async fn secret(gw: &Gateway, method: &str, body: Value) -> support::Resp {
    gw.req_h(
        method,
        "/system/secrets",
        &[("content-type", "application/json")],
        serde_json::to_vec(&body).unwrap(),
    )
    .await
}

fn items(v: &Value) -> &serde_json::Map<String, Value> {
    v["Items"].as_object().expect("items")
}

fn modify_index(v: &Value) -> u64 {
    v["ModifyIndex"].as_u64().expect("ModifyIndex")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_live_in_variables_and_reach_jobs_by_reference() {
    let double = NomadDouble::start().await;
    let gw = gateway(&double);
    let src = |name: &str| double.variable(NS, &format!("faasgate/secrets/openfaas-fn/{name}"));
    let copy_path = render::secrets_var_path(&FunctionKey::new("echo", "").unwrap());
    let copy = || double.variable(NS, &copy_path);

    // Create: one Variable per secret; text as is, bytes that are not UTF-8 as base64.
    let r = secret(&gw, "POST", json!({"name": "api-key", "value": V1})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = secret(&gw, "POST", json!({"name": "api-key", "value": "other"})).await;
    assert_eq!(r.status, 409, "{}", r.text());
    let r = secret(&gw, "POST", json!({"name": "db.blob", "rawValue": "AAH/"})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = src("api-key").expect("secret variable");
    assert_eq!(items(&v)["value"], V1);
    let v = src("db~blob").expect("a dot is kept as ~ in the path");
    assert_eq!(items(&v)["base64"], "AAH/");
    let list = gw.get("/system/secrets").await;
    assert_eq!(list.status, 200);
    assert_eq!(
        list.json(),
        json!([{"name": "api-key", "namespace": "openfaas-fn"},
               {"name": "db.blob", "namespace": "openfaas-fn"}])
    );
    let r = secret(&gw, "PUT", json!({"name": "nope", "value": "x"})).await;
    assert_eq!(r.status, 404, "{}", r.text());

    // A deploy naming a missing secret: 400 with faasd's message, no job, no copy.
    let r = gw.deploy(echo_fn(&["api-key", "missing"])).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("unable to find secret: missing"),
        "{}",
        r.text()
    );
    assert!(double.job(JOB).is_none());
    assert!(copy().is_none());
    assert!(!double
        .requests()
        .iter()
        .any(|w| w.method != "GET" && w.path == "/v1/jobs"));

    // Deploy: the copy holds each secret (base64), the job only references it.
    let r = gw.deploy(echo_fn(&["api-key", "db.blob"])).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let c = copy().expect("copy written at deploy");
    assert_eq!(items(&c)["api-key"], STANDARD.encode(V1));
    assert_eq!(items(&c)["db.blob"], "AAH/");
    let first = modify_index(&c);
    let job = double.job(JOB).expect("job registered");
    let task = &job["TaskGroups"][0]["Tasks"][0];
    let templates = task["Templates"].as_array().unwrap();
    assert_eq!(templates.len(), 2);
    assert_eq!(templates[0]["DestPath"], "secrets/openfaas/api-key");
    assert_eq!(
        templates[0]["EmbeddedTmpl"],
        format!("{{{{ with nomadVar \"{copy_path}\" }}}}{{{{ (index . \"api-key\").Value | base64Decode }}}}{{{{ end }}}}")
    );
    assert_eq!(templates[0]["ChangeMode"], "restart");
    assert_eq!(templates[1]["DestPath"], "secrets/openfaas/db.blob");
    assert_eq!(
        task["Env"]["secret_mount_path"],
        "${NOMAD_SECRETS_DIR}/openfaas"
    );
    // The copy was written before the job was registered.
    let reqs = double.requests();
    let put = reqs
        .iter()
        .position(|w| w.method == "PUT" && w.path == format!("/v1/var/{copy_path}"))
        .expect("copy written");
    let register = reqs
        .iter()
        .position(|w| w.method != "GET" && w.path == "/v1/jobs")
        .expect("job registered");
    assert!(put < register, "copy at {put}, register at {register}");

    // An update to the same value writes nothing (a write would restart the tasks).
    let r = secret(&gw, "PUT", json!({"name": "api-key", "value": V1})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(modify_index(&copy().unwrap()), first);
    // A new value: the copy is rewritten.
    let r = secret(&gw, "PUT", json!({"name": "api-key", "value": V2})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(items(&src("api-key").unwrap())["value"], V2);
    let c = copy().unwrap();
    assert_eq!(items(&c)["api-key"], STANDARD.encode(V2));
    assert!(modify_index(&c) > first);

    // No value in the status, the registered job or the log.
    let status = gw.get("/system/function/echo").await;
    assert_eq!(status.status, 200);
    assert_eq!(status.json()["secrets"], json!(["api-key", "db.blob"]));
    let job_text = double.job(JOB).unwrap().to_string();
    let log = gw.log.lock().unwrap().join("\n");
    for value in [V1, V2, &STANDARD.encode(V1), &STANDARD.encode(V2), "AAH/"] {
        assert!(!status.text().contains(value), "status shows {value}");
        assert!(!job_text.contains(value), "job holds {value}");
        assert!(!log.contains(value), "log shows {value}");
    }

    // An update naming a missing secret: 400, the job is not registered again.
    let registers = |d: &NomadDouble| {
        d.requests()
            .iter()
            .filter(|w| w.method != "GET" && w.path == "/v1/jobs")
            .count()
    };
    let before = registers(&double);
    let r = gw
        .req_h(
            "PUT",
            "/system/functions",
            &[("content-type", "application/json")],
            serde_json::to_vec(&echo_fn(&["api-key", "missing"])).unwrap(),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("unable to find secret: missing"),
        "{}",
        r.text()
    );
    assert_eq!(registers(&double), before);
    assert_eq!(items(&copy().unwrap()).len(), 2);

    // An update without secrets removes the copy; naming them again writes it again.
    let update = |secrets: &'static [&'static str]| {
        gw.req_h(
            "PUT",
            "/system/functions",
            &[("content-type", "application/json")],
            serde_json::to_vec(&echo_fn(secrets)).unwrap(),
        )
    };
    let r = update(&[]).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(copy().is_none());
    let r = update(&["api-key"]).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(items(&copy().unwrap()).len(), 1);

    // Delete the function: the copy goes with the job.
    let r = gw
        .req_h(
            "DELETE",
            "/system/functions",
            &[("content-type", "application/json")],
            serde_json::to_vec(&json!({"functionName": "echo"})).unwrap(),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(copy().is_none());

    // Delete the secrets: the Variables go; a second delete is 404.
    for name in ["api-key", "db.blob"] {
        let r = secret(&gw, "DELETE", json!({"name": name})).await;
        assert_eq!(r.status, 202, "{}", r.text());
    }
    assert!(src("api-key").is_none() && src("db~blob").is_none());
    let r = secret(&gw, "DELETE", json!({"name": "api-key"})).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(gw.get("/system/secrets").await.json(), json!([]));
}
