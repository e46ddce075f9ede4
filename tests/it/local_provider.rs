//! The local provider against the real watchdog (`faasgate watchdog` from this build):
//! deploy, scale, crash replacement, rolling update, delete, logs, restart from the data dir,
//! shutdown leaving no process behind, and (through `faasgate serve`) the clean environment
//! of every replica process. Every wait is a bounded poll on a condition.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use faasgate::control::local::{InstanceInfo, LocalOptions, LocalProvider};
use faasgate::control::{LogQuery, Provider, ProviderError};
use faasgate::dataplane::Routes;
use faasgate::model::names::FunctionKey;
use faasgate::model::types::FunctionDeployment;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);

struct Fixture {
    dir: tempfile::TempDir,
    routes: Arc<Routes>,
    provider: Arc<LocalProvider>,
}

fn options(dir: &std::path::Path) -> LocalOptions {
    LocalOptions {
        data_dir: dir.to_path_buf(),
        watchdog_command: vec![
            OsString::from(env!("CARGO_BIN_EXE_faasgate")),
            OsString::from("watchdog"),
        ],
        drain_timeout: Duration::from_secs(2),
        secrets_isolation: Default::default(),
    }
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let routes = Arc::new(Routes::new());
    let provider = LocalProvider::start(options(dir.path()), routes.clone())
        .await
        .expect("start provider");
    Fixture {
        dir,
        routes,
        provider,
    }
}

fn deployment(name: &str, env: &[(&str, &str)], labels: &[(&str, &str)]) -> FunctionDeployment {
    let map = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    FunctionDeployment {
        service: name.into(),
        image: "functions/alpine:latest".into(),
        env_process: "env".into(),
        env_vars: (!env.is_empty()).then(|| map(env)),
        labels: (!labels.is_empty()).then(|| map(labels)),
        ..Default::default()
    }
}

fn key(name: &str) -> FunctionKey {
    FunctionKey::new(name, "").expect("valid key")
}

/// Polls `cond` every 50 ms until it holds, failing the test after [`WAIT`].
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn available(p: &LocalProvider, k: &FunctionKey) -> u64 {
    p.status(k).await.map(|s| s.available_replicas).unwrap_or(0)
}

fn instances(p: &LocalProvider, k: &FunctionKey) -> Vec<InstanceInfo> {
    p.instances(k).unwrap_or_default()
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// POSTs `body` to the replica at `addr` and returns the response text.
async fn invoke(addr: std::net::SocketAddr, body: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "POST / HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("response in time")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

/// Responses of every replica in rotation.
async fn invoke_all(routes: &Routes, k: &FunctionKey) -> Vec<String> {
    let Some(h) = routes.get(k.as_ref()) else {
        return Vec::new();
    };
    let replicas = h.state_full().replicas.clone();
    let mut out = Vec::new();
    for r in replicas.iter() {
        out.push(invoke(r.addr(), "hi").await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_starts_min_replicas_and_they_become_available() {
    let fx = fixture().await;
    let p = &fx.provider;
    let k = key("echo");
    p.deploy(deployment(
        "echo",
        &[("GREETING", "hello")],
        &[("com.openfaas.scale.min", "2")],
    ))
    .await
    .expect("deploy");

    // The desired count is readable at once, before any replica is ready.
    let s = p.status(&k).await.expect("status");
    assert_eq!(s.replicas, 2);
    assert_eq!(s.namespace, "openfaas-fn");
    assert_eq!(
        s.labels.get("faas_function").map(String::as_str),
        Some("echo")
    );
    assert!(s.created_at.is_some());
    let h = fx.routes.get(k.as_ref()).expect("route published");
    assert_eq!(h.state().desired, 2);
    assert_eq!(h.state().cold_start_replicas, 2);

    eventually("2 available replicas", || async {
        available(p, &k).await == 2
    })
    .await;
    assert_eq!(h.state().replicas.len(), 2);
    assert_eq!(instances(p, &k).len(), 2);
    for out in invoke_all(&fx.routes, &k).await {
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains("GREETING=hello"), "{out}");
    }

    assert!(matches!(
        p.deploy(deployment("echo", &[], &[])).await,
        Err(ProviderError::AlreadyExists(_))
    ));
    let mut no_process = deployment("nope", &[], &[]);
    no_process.env_process.clear();
    assert!(matches!(
        p.deploy(no_process).await,
        Err(ProviderError::Invalid(m)) if m.contains("envProcess")
    ));
    assert!(matches!(
        p.deploy(deployment("bad", &[], &[("com.openfaas.scale.min", "x")])).await,
        Err(ProviderError::Invalid(m)) if m.contains("com.openfaas.scale.min")
    ));
    assert!(matches!(
        p.status(&key("bad")).await,
        Err(ProviderError::NotFound(_))
    ));

    // Logs: the replicas' stderr, including the address line, per instance.
    let ids: Vec<String> = instances(p, &k).into_iter().map(|i| i.id).collect();
    let lines: Vec<_> = p
        .logs(LogQuery {
            function: k.clone(),
            instance: Some(ids[0].clone()),
            tail: None,
            since: None,
            follow: false,
        })
        .await
        .expect("logs")
        .collect()
        .await;
    assert!(lines
        .iter()
        .all(|m| m.instance == ids[0] && m.name == "echo"));
    assert!(
        lines.iter().any(|m| m.text.contains("listening on")),
        "{lines:?}"
    );

    let pids: Vec<u32> = instances(p, &k).iter().map(|i| i.pid).collect();
    p.shutdown().await;
    for pid in pids {
        assert!(!alive(pid), "replica {pid} survived shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_up_down_and_to_zero() {
    let fx = fixture().await;
    let p = &fx.provider;
    let k = key("scaled");
    p.deploy(deployment("scaled", &[], &[]))
        .await
        .expect("deploy");
    eventually("1 available", || async { available(p, &k).await == 1 }).await;

    p.scale(&k, 3).await.expect("scale up");
    assert_eq!(p.status(&k).await.expect("status").replicas, 3);
    let h = fx.routes.get(k.as_ref()).expect("route");
    assert_eq!(h.state().desired, 3);
    eventually("3 available", || async { available(p, &k).await == 3 }).await;

    p.scale(&k, 1).await.expect("scale down");
    assert_eq!(p.status(&k).await.expect("status").replicas, 1);
    assert_eq!(h.state().desired, 1);
    eventually("1 available and 1 process", || async {
        available(p, &k).await == 1 && instances(p, &k).len() == 1
    })
    .await;

    let last = instances(p, &k)[0].pid;
    p.scale(&k, 0).await.expect("scale to zero");
    assert_eq!(p.status(&k).await.expect("status").replicas, 0);
    assert_eq!(h.state().desired, 0);
    eventually("no process", || async {
        available(p, &k).await == 0 && instances(p, &k).is_empty() && !alive(last)
    })
    .await;
    assert!(h.state().replicas.is_empty());

    assert!(matches!(
        p.scale(&key("missing"), 1).await,
        Err(ProviderError::NotFound(_))
    ));
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_is_replaced() {
    let fx = fixture().await;
    let p = &fx.provider;
    let k = key("crashy");
    p.deploy(deployment("crashy", &[], &[]))
        .await
        .expect("deploy");
    eventually("1 available", || async { available(p, &k).await == 1 }).await;
    let victim = instances(p, &k)[0].clone();

    let status = std::process::Command::new("kill")
        .args(["-9", &victim.pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());

    eventually("a replacement replica in rotation", || async {
        let now = instances(p, &k);
        available(p, &k).await == 1
            && now.len() == 1
            && now[0].id != victim.id
            && fx
                .routes
                .get(k.as_ref())
                .is_some_and(|h| h.state().replicas.iter().all(|r| r.id() != victim.id))
    })
    .await;
    assert!(!alive(victim.pid));
    for out in invoke_all(&fx.routes, &k).await {
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_rolls_replicas_onto_the_new_spec() {
    let fx = fixture().await;
    let p = &fx.provider;
    let k = key("rolled");
    p.deploy(deployment(
        "rolled",
        &[("VERSION", "one")],
        &[("com.openfaas.scale.min", "2")],
    ))
    .await
    .expect("deploy");
    eventually("2 available", || async { available(p, &k).await == 2 }).await;
    let old: Vec<u32> = instances(p, &k).iter().map(|i| i.pid).collect();
    for out in invoke_all(&fx.routes, &k).await {
        assert!(out.contains("VERSION=one"), "{out}");
    }
    p.scale(&k, 3).await.expect("scale");

    p.update(deployment("rolled", &[("VERSION", "two")], &[]))
        .await
        .expect("update");
    // The new spec shows at once, with the replica count kept.
    let s = p.status(&k).await.expect("status");
    assert_eq!(
        s.env_vars
            .as_ref()
            .and_then(|e| e.get("VERSION"))
            .map(String::as_str),
        Some("two")
    );
    assert_eq!(s.replicas, 3);

    eventually("3 replicas of the new spec, old ones gone", || async {
        if available(p, &k).await != 3 || instances(p, &k).len() != 3 {
            return false;
        }
        let outs = invoke_all(&fx.routes, &k).await;
        outs.len() == 3 && outs.iter().all(|o| o.contains("VERSION=two"))
    })
    .await;
    for pid in old {
        assert!(!alive(pid), "old replica {pid} still runs");
    }
    assert!(matches!(
        p.update(deployment("missing", &[], &[])).await,
        Err(ProviderError::NotFound(_))
    ));
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_stops_replicas_and_forgets_the_function() {
    let fx = fixture().await;
    let p = &fx.provider;
    let k = key("gone");
    p.deploy(deployment("gone", &[], &[]))
        .await
        .expect("deploy");
    eventually("1 available", || async { available(p, &k).await == 1 }).await;
    let pid = instances(p, &k)[0].pid;
    let file = fx.dir.path().join("functions/openfaas-fn/gone.json");
    assert!(file.is_file());

    p.delete(&k).await.expect("delete");
    assert!(!alive(pid));
    assert!(!file.exists());
    assert!(fx.routes.get(k.as_ref()).is_none());
    assert!(matches!(
        p.status(&k).await,
        Err(ProviderError::NotFound(_))
    ));
    assert!(matches!(
        p.delete(&k).await,
        Err(ProviderError::NotFound(_))
    ));
    assert!(p.list("openfaas-fn").await.expect("list").is_empty());
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_restores_functions_and_replica_counts() {
    let fx = fixture().await;
    let p = fx.provider.clone();
    let a = key("alpha");
    let b = FunctionKey::new("beta", "team").expect("key");
    p.deploy(deployment("alpha", &[], &[]))
        .await
        .expect("deploy a");
    let mut beta = deployment("beta", &[("X", "1")], &[]);
    beta.namespace = "team".into();
    p.deploy(beta).await.expect("deploy b");
    p.scale(&a, 2).await.expect("scale a");
    eventually("alpha 2 and beta 1 available", || async {
        available(&p, &a).await == 2 && available(&p, &b).await == 1
    })
    .await;
    assert_eq!(
        p.namespaces().await.expect("namespaces"),
        ["openfaas-fn", "team"]
    );
    let created = p.status(&a).await.expect("status").created_at;

    let pids: Vec<u32> = instances(&p, &a)
        .into_iter()
        .chain(instances(&p, &b))
        .map(|i| i.pid)
        .collect();
    assert_eq!(pids.len(), 3);
    p.shutdown().await;
    for pid in &pids {
        assert!(!alive(*pid), "replica {pid} survived shutdown");
    }
    drop(p);
    drop(fx.provider);

    let routes = Arc::new(Routes::new());
    let p = LocalProvider::start(options(fx.dir.path()), routes.clone())
        .await
        .expect("restart");
    let s = p.status(&a).await.expect("alpha restored");
    assert_eq!(s.replicas, 2);
    assert_eq!(s.created_at, created);
    let sb = p.status(&b).await.expect("beta restored");
    assert_eq!(sb.namespace, "team");
    assert_eq!(
        sb.env_vars
            .as_ref()
            .and_then(|e| e.get("X"))
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(
        p.list("team")
            .await
            .expect("list")
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["beta"]
    );
    assert!(p.list("empty").await.expect("list").is_empty());
    eventually("restored replicas available", || async {
        available(&p, &a).await == 2 && available(&p, &b).await == 1
    })
    .await;
    assert_eq!(
        routes
            .get(a.as_ref())
            .expect("route")
            .state()
            .replicas
            .len(),
        2
    );

    let pids: Vec<u32> = instances(&p, &a)
        .into_iter()
        .chain(instances(&p, &b))
        .map(|i| i.pid)
        .collect();
    p.shutdown().await;
    for pid in &pids {
        assert!(!alive(*pid), "replica {pid} survived shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_streams_new_log_lines() {
    let fx = fixture().await;
    let p = &fx.provider;
    let k = key("chatty");
    p.deploy(deployment("chatty", &[], &[]))
        .await
        .expect("deploy");
    eventually("1 available", || async { available(p, &k).await == 1 }).await;
    let mut follow = p
        .logs(LogQuery {
            function: k.clone(),
            instance: None,
            tail: Some(0),
            since: None,
            follow: true,
        })
        .await
        .expect("logs");
    invoke_all(&fx.routes, &k).await;
    let line = tokio::time::timeout(WAIT, follow.next())
        .await
        .expect("a log line in time")
        .expect("stream open");
    assert_eq!(line.name, "chatty");
    assert!(line.instance.starts_with("chatty-"));
    assert!(line.timestamp.ends_with('Z'));
    p.shutdown().await;
}

/// The PATH every replica gets, whatever the gateway's is.
const REPLICA_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An http-mode function that answers every request with its own environment, one
/// `NAME=value` per line: a long-lived fprocess child of the watchdog.
const ENV_SERVER: &str = r#"
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

class H(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = "".join(f"{k}={v}\n" for k, v in os.environ.items()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// 64 random bits (std's per-process random hasher keys), in hex.
fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// The environment of `pid` as (name, value) pairs, from `/proc/<pid>/environ`.
fn environ(pid: u32) -> Vec<(String, String)> {
    let raw = std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/environ: {e}"));
    raw.split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let e = String::from_utf8_lossy(e);
            let (k, v) = e.split_once('=').unwrap_or((&e, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Checks one replica environment (of a process, or printed by a function) against the
/// gateway's: no secret name or value, no other gateway variable, the function's envVars,
/// the fixed PATH and the gateway's HOME. Failure messages name variables, never values.
fn assert_clean(
    who: &str,
    env: &[(String, String)],
    secrets: &[(String, String)],
    gateway: &[(String, String)],
    function: &str,
    also_allowed: &[&str],
) {
    // Names only: on a failure the values would be the test runner's own (CI tokens).
    let dump = || {
        env.iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    for (name, value) in secrets {
        assert!(
            !env.iter()
                .any(|(k, v)| k == name || v.contains(value.as_str())),
            "{who} has the gateway's {name}; all its names: {}",
            dump()
        );
    }
    let get = |name: &str| env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v);
    assert_eq!(
        get("PATH").map(String::as_str),
        Some(REPLICA_PATH),
        "{who}:\n{}",
        dump()
    );
    let home = gateway.iter().find(|(k, _)| k == "HOME").map(|(_, v)| v);
    assert_eq!(
        get("HOME"),
        home,
        "{who}: HOME is the gateway's\n{}",
        dump()
    );
    assert_eq!(get("GREETING").map(String::as_str), Some("hello"), "{who}");
    assert_eq!(get("FUNC").map(String::as_str), Some(function), "{who}");
    // Names a replica may have: the two above, the envVars, the watchdog's settings, and the
    // CGI variables of a forked call. Nothing else of the gateway's.
    let allowed: BTreeSet<&str> = [
        "PATH",
        "HOME",
        "GREETING",
        "FUNC",
        "fprocess",
        "port",
        "bind_address",
        "mode",
        "PORT",
        "upstream_url",
    ]
    .into();
    for (k, _) in env {
        if allowed.contains(k.as_str())
            || also_allowed.contains(&k.as_str())
            || k.starts_with("Http_")
        {
            continue;
        }
        let from_gateway = gateway.iter().any(|(gk, _)| gk == k);
        panic!(
            "{who} has {k} ({}); all its names: {}",
            if from_gateway {
                "a gateway variable"
            } else {
                "not a replica variable"
            },
            dump()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_never_see_the_gateway_environment() {
    let tag = random_hex();
    let secrets: Vec<(String, String)> = vec![
        ("FAASGATE_BASIC_AUTH_PASSWORD".into(), format!("pw-{tag}")),
        ("NOMAD_TOKEN".into(), format!("nomad-{tag}")),
        ("CONSUL_HTTP_TOKEN".into(), format!("consul-{tag}")),
        (format!("FAASGATE_TEST_{tag}"), format!("other-{tag}")),
    ];
    let env: Vec<(&str, &str)> = secrets
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let gw = support::Gateway::start_with(&[], &env);
    let gateway_env = environ(gw.pid());
    for (name, value) in &secrets {
        assert!(
            gateway_env.iter().any(|(k, v)| k == name && v == value),
            "the gateway runs with {name}"
        );
    }
    let auth = support::basic_auth("admin", &format!("pw-{tag}"));
    let auth = [("authorization", auth.as_str())];

    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("env_server.py");
    std::fs::write(&script, ENV_SERVER).expect("write script");
    let functions = [
        serde_json::json!({
            "service": "envdump",
            "image": "x",
            "envProcess": "env",
            "envVars": {"GREETING": "hello", "FUNC": "envdump"},
            "labels": {"com.openfaas.scale.min": "2"},
        }),
        serde_json::json!({
            "service": "envserver",
            "image": "x",
            "envProcess": format!("python3 {}", script.display()),
            "envVars": {"GREETING": "hello", "FUNC": "envserver", "mode": "http"},
        }),
    ];
    for f in &functions {
        let r = gw
            .req_h(
                "POST",
                "/system/functions",
                &[auth[0], ("content-type", "application/json")],
                serde_json::to_vec(f).unwrap(),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text());
    }
    for (name, n) in [("envdump", 2), ("envserver", 1)] {
        let path = format!("/system/function/{name}");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let r = gw.req_h("GET", &path, &auth, "").await;
            if r.status == 200 && r.json()["availableReplicas"].as_u64() == Some(n) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {WAIT:?} waiting for {n} replicas of {name}: {} {}",
                r.status,
                r.text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Every process under the gateway: 3 watchdogs and the http function's server.
    let mut procs = Vec::new();
    support::eventually(WAIT, "4 replica processes under the gateway", || {
        procs = support::descendants(gw.pid());
        procs.len() == 4
    })
    .await;
    let mut seen = BTreeMap::<String, usize>::new();
    for pid in procs {
        let env = environ(pid);
        let function = env
            .iter()
            .find(|(k, _)| k == "FUNC")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let who = format!("replica process {pid} ({})", cmdline(pid));
        assert_clean(&who, &env, &secrets, &gateway_env, &function, &[]);
        *seen.entry(function).or_default() += 1;
    }
    // envdump: 2 watchdogs; envserver: its watchdog and the python server.
    assert_eq!(
        seen,
        BTreeMap::from([("envdump".to_string(), 2), ("envserver".to_string(), 2)])
    );

    // What the function itself prints: a forked `env`, and the long-lived server.
    for name in ["envdump", "envserver"] {
        let r = gw.req("POST", &format!("/function/{name}"), "ping").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let printed: Vec<(String, String)> = r
            .text()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // Python sets LC_CTYPE in its own environment when started in the C locale (PEP 538
        // locale coercion); its /proc environ, checked above, has none.
        let own = if name == "envserver" {
            &["LC_CTYPE"][..]
        } else {
            &[]
        };
        assert_clean(
            &format!("{name}'s response"),
            &printed,
            &secrets,
            &gateway_env,
            name,
            own,
        );
        assert!(
            !r.text().contains(&tag),
            "{name}'s response holds a secret value"
        );
    }
}
