//! Conformance of the Nomad/Consul client and of the API double with the official samples in
//! `../shared/fixtures/{nomad,consul,nomad-variables}` (bodies from the Nomad and Consul docs).
//!
//! - Every fixture file parses with the client's wire types (`faasgate::client::wire`), and a
//!   file without a known wire type fails the test (so a new fixture cannot be skipped).
//! - The double's answers have the fixtures' shapes: at every level, every key the double
//!   sends is one the fixtures know (or a documented addition of real servers), every key all
//!   fixtures agree on is present, and values have the fixtures' JSON types (`null` matches
//!   anything, as servers send `null` for unset nested values). Maps keyed by data (`Meta`,
//!   `Summary`, ...) compare their values.
//!
//! The fixture tests read `FAASGATE_FIXTURES_DIR` (`.ci/run` sets it to `../shared/fixtures`):
//! unset, they print that they were skipped and pass; set to a directory without the
//! fixtures, they fail. The client-vs-double checks below them need no fixtures.

use crate::nomad_double;
use crate::support;
use crate::support::nomad_strict::json_kind;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use faasgate::client::wire::consul as cw;
use faasgate::client::wire::nomad as nw;
use faasgate::client::wire::variables as vw;
use faasgate::client::{NomadClient, NomadSettings, QueryOptions};
use faasgate::control::nomad::render::{self, RenderOptions};
use faasgate::model::names::FunctionKey;
use faasgate::model::types::FunctionDeployment;
use nomad_double::{raw, NomadDouble};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

const FIXTURES_ENV: &str = "FAASGATE_FIXTURES_DIR";
/// The fixture folders; every `.json` file in them must map to a wire type below.
const FIXTURE_DIRS: [&str; 3] = ["nomad", "consul", "nomad-variables"];

/// Keys whose object values are maps keyed by data (names, IDs), not structs.
const DATA_MAPS: &[&str] = &[
    "Meta",
    "Config",
    "Env",
    "Summary",
    "TaskGroups",
    "TaskStates",
    "TaggedAddresses",
    "NodeMeta",
    "ServiceMeta",
    "ServiceTaggedAddresses",
    "Details",
    "QueuedAllocations",
    "FailedTGAllocs",
    "NodesAvailable",
    "Policy",
    "Items",
];

fn fixtures() -> Option<PathBuf> {
    let Some(dir) = std::env::var_os(FIXTURES_ENV) else {
        eprintln!(
            "SKIPPED: {FIXTURES_ENV} is not set; .ci/run sets it to ../shared/fixtures \
             to check the client and the double against the official samples"
        );
        return None;
    };
    let dir = PathBuf::from(dir);
    for sub in FIXTURE_DIRS {
        assert!(
            dir.join(sub).is_dir(),
            "{FIXTURES_ENV}={} does not contain {sub}/ (expected ../shared/fixtures)",
            dir.display()
        );
    }
    Some(dir)
}

fn load(dir: &std::path::Path, rel: &str) -> Value {
    let p = dir.join(rel);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn parse<T: DeserializeOwned>(name: &str, v: &Value) -> T {
    serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("fixture {name} does not parse with its wire type: {e}"))
}

#[test]
fn every_fixture_parses_with_the_client_wire_types() {
    let Some(dir) = fixtures() else { return };
    let mut seen = 0;
    for sub in FIXTURE_DIRS {
        let mut names: Vec<String> = std::fs::read_dir(dir.join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect();
        names.sort();
        for name in names {
            let v = load(&dir, &format!("{sub}/{name}"));
            let n = name.as_str();
            match (sub, n) {
                ("nomad", "allocation-checks.json") => {
                    let m: BTreeMap<String, nw::AllocCheckStatus> = parse(n, &v);
                    assert!(m.values().all(|c| c.status == "success"));
                }
                ("nomad", "allocation-services.json")
                | ("nomad", "job-services.json")
                | ("nomad", "service-registrations.json") => {
                    let l: Vec<nw::ServiceRegistration> = parse(n, &v);
                    assert!(l.iter().all(|r| r.port > 0 && !r.alloc_id.is_empty()));
                }
                ("nomad", "allocation-stop-response.json") => {
                    let r: nw::AllocStopResponse = parse(n, &v);
                    assert!(r.index > 0);
                }
                ("nomad", "allocation-with-shared-ports.json") => {
                    let a: nw::Allocation = parse(n, &v);
                    let ports = a.allocated_resources.unwrap().shared.unwrap().ports;
                    assert_eq!(ports[0].host_ip, "192.168.1.9");
                    assert_eq!(ports[0].value, 5678);
                }
                ("nomad", "allocation.json") => {
                    let a: nw::Allocation = parse(n, &v);
                    assert!(!a.id.is_empty());
                }
                ("nomad", "allocations-list.json") | ("nomad", "job-allocations.json") => {
                    let l: Vec<nw::Allocation> = parse(n, &v);
                    assert!(l.iter().all(|a| !a.task_states.is_empty()));
                    assert!(l.iter().any(|a| a.is_live()));
                }
                ("nomad", "deployment.json") => {
                    let d: nw::Deployment = parse(n, &v);
                    assert!(!d.task_groups.is_empty());
                }
                ("nomad", "job-deployment-latest.json") => {
                    let _: Option<nw::Deployment> = parse(n, &v);
                }
                ("nomad", "job-deployments.json") => {
                    let _: Vec<nw::Deployment> = parse(n, &v);
                }
                ("nomad", "evaluation.json") => {
                    let e: nw::Evaluation = parse(n, &v);
                    assert_eq!(e.status, "blocked");
                    assert!(!e.failed_tg_allocs.is_empty());
                }
                ("nomad", "job-evaluations.json") => {
                    let _: Vec<nw::Evaluation> = parse(n, &v);
                }
                ("nomad", "job-deregister-response.json") => {
                    let r: nw::JobDeregisterResponse = parse(n, &v);
                    assert!(!r.eval_id.is_empty());
                }
                ("nomad", "job-evaluate-response.json")
                | ("nomad", "job-register-response.json")
                | ("nomad", "job-scale-response.json")
                | ("nomad", "job-update-response.json") => {
                    let r: nw::JobRegisterResponse = parse(n, &v);
                    assert!(r.job_modify_index > 0);
                }
                ("nomad", "job-parse-response.json") | ("nomad", "job.json") => {
                    let j: nw::Job = parse(n, &v);
                    assert!(!j.id.is_empty());
                }
                ("nomad", "job-register-payload-full.json")
                | ("nomad", "job-register-payload.json") => {
                    let r: nw::JobRegisterRequest = parse(n, &v);
                    let j = faasgate::client::nomad::job_view(&r.job).unwrap();
                    assert!(!j.services().is_empty(), "{n}: the group service is read");
                }
                ("nomad", "job-scale-payload.json") => {
                    let r: nw::ScalingRequest = parse(n, &v);
                    assert_eq!((r.count, r.target.group.as_str()), (Some(5), "cache"));
                    // What faasgate sends reads back the same.
                    let again: nw::ScalingRequest =
                        serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
                    assert_eq!(again, r);
                }
                ("nomad", "job-scale-status.json") => {
                    let s: nw::JobScaleStatus = parse(n, &v);
                    assert_eq!(s.task_groups["cache"].desired, 1);
                }
                ("nomad", "job-summary.json") => {
                    let s: nw::JobSummary = parse(n, &v);
                    assert_eq!(s.summary["cache"].running, 1);
                }
                ("nomad", "job-versions-diffs.json") => {
                    let r: nw::JobVersions = parse(n, &v);
                    assert!(r.versions.iter().all(|j| !j.task_groups.is_empty()));
                }
                ("nomad", "jobs-list-full.json") | ("nomad", "jobs-list.json") => {
                    let l: Vec<nw::JobListStub> = parse(n, &v);
                    assert!(l
                        .iter()
                        .all(|s| s.job_summary.is_some() && s.job_modify_index > 0));
                }
                ("nomad", "scaling-policies.json") => {
                    let _: Vec<nw::ScalingPolicy> = parse(n, &v);
                }
                ("nomad", "scaling-policy.json") => {
                    let p: nw::ScalingPolicy = parse(n, &v);
                    assert_eq!(p.target["Group"], "cache");
                }
                ("nomad", "services-list.json") => {
                    let l: Vec<nw::ServiceRegistrationListStub> = parse(n, &v);
                    assert!(!l[0].services.is_empty());
                }
                ("consul", "agent-service-register-payload.json") => {
                    let _: cw::AgentServiceRegistration = parse(n, &v);
                }
                ("consul", "catalog-service.json") => {
                    let l: Vec<cw::CatalogService> = parse(n, &v);
                    assert_eq!(l[0].service_port, 5000);
                }
                ("consul", "catalog-services.json") => {
                    let _: cw::CatalogServices = parse(n, &v);
                }
                ("consul", "health-checks-service.json")
                | ("consul", "health-state-passing.json") => {
                    let _: Vec<cw::HealthCheck> = parse(n, &v);
                }
                ("consul", "health-service.json") => {
                    let l: Vec<cw::ServiceEntry> = parse(n, &v);
                    assert!(l[0].is_passing());
                    assert_eq!(l[0].address(), "10.1.10.12");
                }
                ("nomad-variables", "variables-list.json") => {
                    let l: Vec<vw::VariableMetadata> = parse(n, &v);
                    assert!(l.iter().all(|m| m.modify_index > 0 && m.lock.is_none()));
                }
                ("nomad-variables", "variable-read.json")
                | ("nomad-variables", "variable-put-payload.json")
                | ("nomad-variables", "variable-put-response.json")
                | ("nomad-variables", "variable-put-cas-conflict.json") => {
                    let var: vw::Variable = parse(n, &v);
                    assert_eq!(var.items["user"], "me", "{n}");
                    assert_eq!(var.meta.namespace, "prod");
                }
                ("nomad-variables", "variable-delete-cas-conflict.json")
                | ("nomad-variables", "variable-lock-release-response.json") => {
                    let var: vw::Variable = parse(n, &v);
                    assert!(var.items.is_empty() && var.meta.lock.is_none(), "{n}");
                    assert!(var.meta.modify_index > 0);
                }
                ("nomad-variables", "variable-lock-conflict.json") => {
                    // The zero variable; the docs print `null` Items and Lock.
                    let var: vw::Variable = parse(n, &v);
                    assert!(var.items.is_empty() && var.meta.lock.is_none());
                    assert_eq!(
                        (var.meta.path.as_str(), var.meta.modify_index),
                        ("example/first", 0)
                    );
                }
                ("nomad-variables", "variable-lock-acquire-payload.json") => {
                    let var: vw::Variable = parse(n, &v);
                    let lock = var.meta.lock.clone().unwrap();
                    assert_eq!((lock.ttl, lock.lock_delay), (secs(15), secs(60)));
                    assert_eq!(lock.id, "");
                    // What faasgate would send for it: Go's own duration strings.
                    let out = serde_json::to_value(&var).unwrap();
                    assert_eq!(
                        out["Lock"],
                        json!({"ID": "", "TTL": "15s", "LockDelay": "1m0s"})
                    );
                    assert_eq!(serde_json::from_value::<vw::Variable>(out).unwrap(), var);
                }
                ("nomad-variables", "variable-lock-acquire-response.json")
                | ("nomad-variables", "variable-lock-renew-response.json") => {
                    let var: vw::Variable = parse(n, &v);
                    let lock = var.meta.lock.unwrap();
                    assert_eq!((lock.ttl, lock.lock_delay), (secs(15), secs(15)), "{n}");
                    assert_eq!(lock.id, "670c7248-e2ef-f982-e4c5-f4437f75f1e4");
                }
                ("nomad-variables", "variable-lock-release-payload.json")
                | ("nomad-variables", "variable-lock-renew-payload.json") => {
                    let var: vw::Variable = parse(n, &v);
                    let lock = var.meta.lock.unwrap();
                    assert!(lock.ttl.is_zero() && !lock.id.is_empty(), "{n}");
                }
                _ => panic!("fixture {sub}/{name} has no wire type in this test; add one"),
            }
            seen += 1;
        }
    }
    assert!(seen >= 51, "only {seen} fixtures found");
}

// === shapes ===

/// Compares `actual` with `fixtures` (see the module doc); `extra` keys are allowed anywhere.
fn check_shape(
    path: &str,
    actual: &Value,
    fixtures: &[&Value],
    extra: &[&str],
    errs: &mut Vec<String>,
) {
    let fx: Vec<&Value> = fixtures.iter().copied().filter(|v| !v.is_null()).collect();
    if actual.is_null() || fx.is_empty() {
        return;
    }
    if !fx.iter().any(|f| json_kind(f) == json_kind(actual)) {
        errs.push(format!(
            "{path}: {} where the fixtures have {}",
            json_kind(actual),
            json_kind(fx[0])
        ));
        return;
    }
    let last = path.rsplit('.').next().unwrap_or("");
    match actual {
        Value::Object(a) if DATA_MAPS.contains(&last) => {
            let values: Vec<&Value> = fx
                .iter()
                .filter_map(|f| f.as_object())
                .flat_map(|m| m.values())
                .collect();
            for (k, v) in a {
                check_shape(&format!("{path}[{k}]"), v, &values, extra, errs);
            }
        }
        Value::Object(a) => {
            let objs: Vec<&serde_json::Map<String, Value>> =
                fx.iter().filter_map(|f| f.as_object()).collect();
            let union: BTreeSet<&String> = objs.iter().flat_map(|m| m.keys()).collect();
            let required: BTreeSet<&String> = union
                .iter()
                .copied()
                .filter(|k| objs.iter().all(|m| m.contains_key(*k)))
                .collect();
            for k in a.keys() {
                if !union.contains(k) && !extra.contains(&k.as_str()) {
                    errs.push(format!("{path}.{k}: not in the fixtures"));
                }
            }
            for k in required {
                if !a.contains_key(k) {
                    errs.push(format!("{path}.{k}: missing (every fixture has it)"));
                }
            }
            for (k, v) in a {
                let children: Vec<&Value> = objs.iter().filter_map(|m| m.get(k)).collect();
                check_shape(&format!("{path}.{k}"), v, &children, extra, errs);
            }
        }
        Value::Array(a) => {
            let elems: Vec<&Value> = fx.iter().filter_map(|f| f.as_array()).flatten().collect();
            for (i, v) in a.iter().enumerate() {
                check_shape(&format!("{path}[{i}]"), v, &elems, extra, errs);
            }
        }
        _ => {}
    }
}

fn function_job(name: &str, provider: &str) -> Value {
    let spec = FunctionDeployment {
        service: name.into(),
        env_process: "cat".into(),
        annotations: Some([("com.faasgate.driver".to_string(), "raw_exec".to_string())].into()),
        ..Default::default()
    };
    let opts = RenderOptions {
        watchdog_path: support::BIN.into(),
        ..Default::default()
    };
    let mut job = render::render_job(&spec, 1, &opts).unwrap();
    job["TaskGroups"][0]["Services"][0]["Provider"] = json!(provider);
    job
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_double_answers_in_the_fixture_shapes() {
    let Some(dir) = fixtures() else { return };
    let f = |rel: &str| load(&dir, rel);
    let double = NomadDouble::start().await;
    let mut errs = Vec::new();
    let mut check = |what: &str, actual: &Value, fx: Vec<Value>, extra: &[&str]| {
        let refs: Vec<&Value> = fx.iter().collect();
        check_shape(what, actual, &refs, extra, &mut errs);
    };

    let nomad_job = function_job("shape", "nomad");
    let id = nomad_job["ID"].as_str().unwrap().to_string();
    let r = raw(&double, "POST", "/v1/jobs", Some(json!({"Job": nomad_job}))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.index.is_some());
    check(
        "register",
        &r.body,
        vec![
            f("nomad/job-register-response.json"),
            f("nomad/job-update-response.json"),
        ],
        &["NextToken"],
    );
    let consul_job = function_job("shape-consul", "consul");
    let cid = consul_job["ID"].as_str().unwrap().to_string();
    assert_eq!(
        raw(
            &double,
            "POST",
            "/v1/jobs",
            Some(json!({"Job": consul_job}))
        )
        .await
        .status,
        200
    );
    let key = FunctionKey::new("shape-consul", "").unwrap();
    let consul_service = render::service_name(&key);
    let nomad_service = render::service_name(&FunctionKey::new("shape", "").unwrap());
    // Running, registered, and passing its check in Consul.
    let d = double.clone();
    let cs = consul_service.clone();
    let mut passing = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !passing {
        assert!(
            Instant::now() < deadline,
            "consul instance never passed its check"
        );
        let h = raw(&d, "GET", &format!("/v1/health/service/{cs}?passing"), None).await;
        passing = h.body.as_array().is_some_and(|a| !a.is_empty());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for("both allocations running", || double.pids().len() == 2).await;

    let r = raw(&double, "GET", "/v1/jobs?meta=true", None).await;
    check(
        "jobs",
        &r.body,
        vec![f("nomad/jobs-list.json"), f("nomad/jobs-list-full.json")],
        // `Meta` with ?meta=true (1.5+), `Unknown` in group summaries (1.x servers).
        &["Meta", "Unknown"],
    );
    let versions = f("nomad/job-versions-diffs.json");
    let r = raw(&double, "GET", &format!("/v1/job/{id}"), None).await;
    check(
        "job",
        &r.body,
        vec![
            versions["Versions"][0].clone(),
            f("nomad/job.json"),
            f("nomad/job-parse-response.json"),
            f("nomad/job-register-payload-full.json")["Job"].clone(),
        ],
        &[],
    );
    let r = raw(&double, "GET", &format!("/v1/job/{id}/summary"), None).await;
    check(
        "summary",
        &r.body,
        vec![f("nomad/job-summary.json")],
        &["Namespace", "Unknown"],
    );
    let r = raw(&double, "GET", &format!("/v1/job/{id}/allocations"), None).await;
    check(
        "allocations",
        &r.body,
        vec![
            f("nomad/job-allocations.json"),
            f("nomad/allocations-list.json"),
        ],
        &[],
    );
    let r = raw(
        &double,
        "GET",
        &format!("/v1/service/{nomad_service}"),
        None,
    )
    .await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(1), "{}", r.text);
    check(
        "service",
        &r.body,
        vec![f("nomad/service-registrations.json")],
        &[],
    );
    let r = raw(&double, "GET", &format!("/v1/job/{id}/services"), None).await;
    check(
        "job services",
        &r.body,
        vec![f("nomad/job-services.json")],
        &[],
    );
    let r = raw(&double, "GET", "/v1/services", None).await;
    check(
        "services",
        &r.body,
        vec![f("nomad/services-list.json")],
        &[],
    );
    let r = raw(
        &double,
        "GET",
        &format!("/v1/health/service/{consul_service}"),
        None,
    )
    .await;
    check(
        "health",
        &r.body,
        vec![f("consul/health-service.json")],
        &[],
    );
    let r = raw(
        &double,
        "GET",
        &format!("/v1/catalog/service/{consul_service}"),
        None,
    )
    .await;
    check(
        "catalog",
        &r.body,
        vec![f("consul/catalog-service.json")],
        &[],
    );

    let scale = json!({"Count": 2, "Target": {"Group": "fn"}, "Message": "shape test"});
    let r = raw(&double, "POST", &format!("/v1/job/{id}/scale"), Some(scale)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    check(
        "scale",
        &r.body,
        vec![f("nomad/job-scale-response.json")],
        &[],
    );
    let r = raw(&double, "GET", &format!("/v1/job/{id}/scale"), None).await;
    check(
        "scale status",
        &r.body,
        vec![f("nomad/job-scale-status.json")],
        &[],
    );
    let alloc = double.live_allocs(&id)[0].clone();
    let r = raw(
        &double,
        "POST",
        &format!("/v1/allocation/{alloc}/stop"),
        None,
    )
    .await;
    check(
        "alloc stop",
        &r.body,
        vec![f("nomad/allocation-stop-response.json")],
        &[],
    );
    let r = raw(
        &double,
        "DELETE",
        &format!("/v1/job/{cid}?purge=true"),
        None,
    )
    .await;
    check(
        "deregister",
        &r.body,
        vec![f("nomad/job-deregister-response.json")],
        &[
            "VolumeEvalID",
            "VolumeEvalIndex",
            "Index",
            "LastContact",
            "KnownLeader",
            "NextToken",
        ],
    );
    assert!(
        errs.is_empty(),
        "the double's shapes differ from the fixtures:\n{}",
        errs.join("\n")
    );
    let _ = raw(&double, "DELETE", &format!("/v1/job/{id}?purge=true"), None).await;
    wait_for("processes stopped", || double.pids().is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_double_answers_variables_in_the_fixture_shapes() {
    let Some(dir) = fixtures() else { return };
    let f = |name: &str| load(&dir, &format!("nomad-variables/{name}"));
    let double = NomadDouble::start().await;
    let mut errs = Vec::new();
    let mut check = |what: &str, actual: &Value, fx: Vec<Value>| {
        let refs: Vec<&Value> = fx.iter().collect();
        check_shape(what, actual, &refs, &[], &mut errs);
    };
    let var = "/v1/var/example/first?namespace=prod";

    // Create, read, a stale check-and-set, list: the docs' samples.
    let r = raw(&double, "PUT", var, Some(f("variable-put-payload.json"))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let created = r.body["ModifyIndex"].as_u64().unwrap();
    assert_eq!(r.index, Some(created.to_string()));
    check("put", &r.body, vec![f("variable-put-response.json")]);
    let r = raw(&double, "GET", var, None).await;
    assert_eq!(
        r.index,
        Some(created.to_string()),
        "X-Nomad-Index = ModifyIndex"
    );
    check("read", &r.body, vec![f("variable-read.json")]);
    let r = raw(
        &double,
        "PUT",
        &format!("{var}&cas={}", created + 1),
        Some(f("variable-put-payload.json")),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text);
    check(
        "put cas conflict",
        &r.body,
        vec![f("variable-put-cas-conflict.json")],
    );
    let r = raw(
        &double,
        "GET",
        "/v1/vars?prefix=example&namespace=prod",
        None,
    )
    .await;
    check("list", &r.body, vec![f("variables-list.json")]);

    // Lock, a second acquirer, renew, release.
    let acquire = format!("{var}&lock-acquire");
    let r = raw(
        &double,
        "PUT",
        &acquire,
        Some(f("variable-lock-acquire-payload.json")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    check(
        "lock acquire",
        &r.body,
        vec![f("variable-lock-acquire-response.json")],
    );
    assert_eq!(r.body["Lock"]["TTL"], "15s");
    assert_eq!(r.body["Lock"]["LockDelay"], "1m0s", "Go prints 1m as 1m0s");
    let id = r.body["Lock"]["ID"].as_str().unwrap().to_string();
    let locked_at = r.body["ModifyIndex"].clone();
    let r = raw(
        &double,
        "PUT",
        &acquire,
        Some(f("variable-lock-acquire-payload.json")),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text);
    check(
        "lock conflict",
        &r.body,
        vec![
            f("variable-lock-conflict.json"),
            f("variable-delete-cas-conflict.json"),
        ],
    );
    let mut renew = f("variable-lock-renew-payload.json");
    renew["Lock"]["ID"] = json!(id);
    let r = raw(&double, "PUT", &format!("{var}&lock-renew"), Some(renew)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    check(
        "lock renew",
        &r.body,
        vec![f("variable-lock-renew-response.json")],
    );
    assert_eq!(r.body["ModifyIndex"], locked_at, "a renew is not a write");
    let mut release = f("variable-lock-release-payload.json");
    release["Lock"]["ID"] = json!(id);
    let r = raw(
        &double,
        "PUT",
        &format!("{var}&lock-release"),
        Some(release),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    check(
        "lock release",
        &r.body,
        vec![f("variable-lock-release-response.json")],
    );

    // Delete: a stale cas is a 409 with the variable; success is 204 with no body.
    let r = raw(&double, "DELETE", &format!("{var}&cas=1"), None).await;
    assert_eq!(r.status, 409, "{}", r.text);
    // The current variable, as for a write's conflict: the docs' delete sample shows no
    // Items, which a server leaves out only for a token that may not read them.
    check(
        "delete cas conflict",
        &r.body,
        vec![
            f("variable-delete-cas-conflict.json"),
            f("variable-put-cas-conflict.json"),
        ],
    );
    let r = raw(&double, "DELETE", var, None).await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    assert!(
        errs.is_empty(),
        "the double's variable shapes differ from the fixtures:\n{}",
        errs.join("\n")
    );
}

// === client against the double (no fixtures needed) ===

fn client(double: &NomadDouble, token: Option<&str>) -> NomadClient {
    let mut settings = NomadSettings::for_addr(&double.url()).unwrap();
    if let Some(t) = token {
        settings.token = faasgate::client::Secret::new(t);
    }
    NomadClient::new(&settings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_plain_text_with_the_server_status() {
    let double = NomadDouble::start_with(Some("right"), None).await;
    let e = client(&double, Some("wrong")).job("x").await.unwrap_err();
    assert_eq!(e.status(), Some(403));
    assert!(e.to_string().contains("Permission denied"), "{e}");
    assert!(!format!("{e:?}").contains("wrong"));
    let c = client(&double, Some("right"));
    let e = c.job("missing").await.unwrap_err();
    assert!(e.is_not_found());
    assert!(e.to_string().ends_with("job not found"), "{e}");
    // Deleting a missing job is 200 with zero fields, not 404.
    let r = c.deregister("missing", true).await.unwrap();
    assert_eq!(r.eval_id, "");
    let r = raw(&double, "GET", "/v1/job/missing", None).await;
    assert_eq!(r.status, 403, "the raw request carries no token");
    let e = c
        .register(&nw::JobRegisterRequest {
            job: json!({"ID": "bad", "TaskGroups": []}),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(500));
    assert!(e.to_string().contains("Missing job task groups"), "{e}");
    // A bare number is not a Go duration.
    let double = NomadDouble::start().await;
    let r = raw(&double, "GET", "/v1/jobs?index=1&wait=10", None).await;
    assert_eq!((r.status, r.text.as_str()), (400, "Invalid wait time"));
    assert!(r.content_type.starts_with("text/plain"));
    let r = raw(&double, "GET", "/v1/nope", None).await;
    assert_eq!((r.status, r.text.as_str()), (404, ""));
    let r = raw(&double, "PATCH", "/v1/jobs", None).await;
    assert_eq!((r.status, r.text.as_str()), (405, "Invalid method"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_queries_wake_on_change_and_reset_when_the_index_goes_back() {
    let double = NomadDouble::start().await;
    let c = Arc::new(client(&double, None));
    let job = function_job("block", "nomad");
    let service = render::service_name(&FunctionKey::new("block", "").unwrap());
    let first = c.service(&service, QueryOptions::default()).await.unwrap();
    assert!(first.value.is_empty() && first.index >= 1);
    // A held query answers once a registration appears.
    let held = {
        let (c, s) = (c.clone(), service.clone());
        tokio::spawn(async move {
            c.service(
                &s,
                QueryOptions::blocking(first.index, Duration::from_secs(60)),
            )
            .await
        })
    };
    c.register(&nw::JobRegisterRequest {
        job,
        ..Default::default()
    })
    .await
    .unwrap();
    let woke = held.await.unwrap().unwrap();
    assert!(woke.index > first.index);
    assert_eq!(woke.value.len(), 1);
    // With nothing changing, a short wait answers with the same index (never 304).
    let same = c
        .service(
            &service,
            QueryOptions::blocking(woke.index + 1_000_000, Duration::from_millis(200)),
        )
        .await
        .unwrap();
    assert_eq!(same.value, woke.value);
    // Index goes backwards (snapshot restore): the tracker resets to a non-blocking read.
    let mut tracker = faasgate::discovery::watch::IndexTracker::default();
    tracker.observe(woke.index);
    double.lower_index(3);
    let after = c
        .service(
            &service,
            QueryOptions::blocking(woke.index, Duration::from_millis(200)),
        )
        .await
        .unwrap();
    assert!(
        tracker.observe(after.index),
        "index {} < {}",
        after.index,
        woke.index
    );
    assert_eq!(tracker.last, 0);
    c.deregister("faasgate-block.openfaas-fn", true)
        .await
        .unwrap();
    wait_for("processes stopped", || double.pids().is_empty()).await;
}

/// The official job bodies are jobs Nomad takes: the strict reading of the double
/// (`support::nomad_strict`) accepts each of them as a registration (the job read back from
/// `GET /v1/job/:id`, the versions of a job and the parse response are `api.Job`s too).
#[test]
fn the_strict_double_accepts_the_official_job_bodies() {
    use support::nomad_strict::check_register;
    let Some(dir) = fixtures() else { return };
    let mut bodies = vec![
        (
            "job-register-payload.json",
            load(&dir, "nomad/job-register-payload.json"),
        ),
        (
            "job-register-payload-full.json",
            load(&dir, "nomad/job-register-payload-full.json"),
        ),
        ("job.json", json!({ "Job": load(&dir, "nomad/job.json") })),
        (
            "job-parse-response.json",
            json!({ "Job": load(&dir, "nomad/job-parse-response.json") }),
        ),
    ];
    let versions = load(&dir, "nomad/job-versions-diffs.json");
    for v in versions["Versions"].as_array().expect("Versions") {
        bodies.push(("job-versions-diffs.json Versions[]", json!({ "Job": v })));
    }
    for (name, body) in &bodies {
        assert_eq!(check_register(body, None), Ok(()), "{name}");
    }
    let scale = load(&dir, "nomad/job-scale-payload.json");
    assert_eq!(
        support::nomad_strict::check_scale(&scale),
        Ok(()),
        "job-scale-payload.json"
    );
}

/// Through HTTP: the double answers what Nomad answers for a job it would refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_double_refuses_what_nomad_refuses() {
    let double = NomadDouble::start().await;
    let id = function_job("strict", "nomad")["ID"]
        .as_str()
        .unwrap()
        .to_string();
    let job = |f: &dyn Fn(&mut Value)| {
        let mut j = function_job("strict", "nomad");
        // No allocation is started: the double would run the task.
        j["TaskGroups"][0]["Count"] = json!(0);
        f(&mut j);
        json!({ "Job": j })
    };
    // A duration written as a string: Go's decoder refuses it (400).
    let r = raw(
        &double,
        "POST",
        "/v1/jobs",
        Some(job(&|j| {
            j["TaskGroups"][0]["Tasks"][0]["KillTimeout"] = json!("5s")
        })),
    )
    .await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (
            400,
            "json: cannot unmarshal string into Go struct field \
             Task.Job.TaskGroups.Tasks.KillTimeout of type time.Duration"
        )
    );
    assert!(r.content_type.starts_with("text/plain"));
    // An attribute Nomad 1.11.2+ does not resolve: a validation error (500).
    let r = raw(
        &double,
        "POST",
        &format!("/v1/job/{id}"),
        Some(job(
            &|j| {
                j["Constraints"] =
                    json!([{"LTarget": "${node.region}", "RTarget": "eu", "Operand": "="}])
            },
        )),
    )
    .await;
    assert_eq!(r.status, 500, "{}", r.text);
    assert!(
        r.text.contains("Constraint 1 validation failed")
            && r.text.contains("unsupported attribute \"${node.region}\""),
        "{}",
        r.text
    );
    // Counts Go's int cannot hold (400), negative (500), above job_max_count (500).
    let r = raw(
        &double,
        "POST",
        "/v1/jobs",
        Some(job(&|j| {
            j["TaskGroups"][0]["Count"] = json!(9_223_372_036_854_775_808u64)
        })),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r
        .text
        .contains("cannot unmarshal number 9223372036854775808"));
    let r = raw(
        &double,
        "POST",
        "/v1/jobs",
        Some(job(&|j| j["TaskGroups"][0]["Count"] = json!(-1))),
    )
    .await;
    assert_eq!(r.status, 500, "{}", r.text);
    assert!(r.text.contains("Task group count can't be negative"));
    let r = raw(
        &double,
        "POST",
        "/v1/jobs",
        Some(job(&|j| j["TaskGroups"][0]["Count"] = json!(50_001))),
    )
    .await;
    assert_eq!(r.status, 500, "{}", r.text);
    assert!(r.text.contains("job_max_count"), "{}", r.text);
    assert!(double.job(&id).is_none(), "nothing refused was stored");
    // The job as faasgate renders it is taken, and a scale past job_max_count is refused.
    let r = raw(&double, "POST", "/v1/jobs", Some(job(&|_| {}))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let scale = |count: Value| json!({"Count": count, "Target": {"Job": id, "Group": "fn"}});
    let path = format!("/v1/job/{id}/scale");
    let r = raw(&double, "POST", &path, Some(scale(json!(50_001)))).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("job_max_count"), "{}", r.text);
    let r = raw(&double, "POST", &path, Some(scale(json!("2")))).await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (
            400,
            "json: cannot unmarshal string into Go struct field ScalingRequest.Count of type int64"
        )
    );
    let r = raw(&double, "POST", &path, Some(scale(json!(0)))).await;
    assert_eq!(r.status, 200, "{}", r.text);
}
