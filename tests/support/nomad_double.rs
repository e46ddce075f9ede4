//! A Nomad + Consul HTTP API double for tests, on 127.0.0.1.
//!
//! It answers in the shapes of `../shared/fixtures/{nomad,consul}` (checked by
//! `tests/nomad_conformance.rs`) with the contract of `../shared/reference/nomad-consul-api.md`:
//! `X-Nomad-Index`/`X-Consul-Index` per table, real blocking (`index`/`wait`, held until the
//! table index passes `index` or the wait ends; 5-minute cap on Nomad, 10 on Consul; no jitter),
//! plain-text errors, 403 `Permission denied` on a wrong Nomad token, 404 `job not found`,
//! `[]` for empty lists, 200 with zero fields for deleting a missing job.
//!
//! Its scheduler really runs `raw_exec`/`exec` tasks as local processes: `Config.command` and
//! `Config.args` with the task `Env`, `${NOMAD_*}` interpolated, on a dynamic loopback port
//! (`NOMAD_PORT_http`, `NOMAD_ADDR_http`, ...). Group services are registered when an
//! allocation is placed (before the task listens, as Nomad does) in Nomad's catalog or, with
//! `Provider: "consul"`, in Consul's (check status from probing `/_/health`, so `?passing`
//! shows an instance once it answers). Stopping an allocation deregisters its services first,
//! waits the group's `ShutdownDelay`, then sends SIGTERM, then SIGKILL after `KillTimeout`.
//! Docker tasks are placed but stay `pending` (no Docker here).
//!
//! Test hooks are methods: [`NomadDouble::stop_server`] / [`NomadDouble::start_server`] (the
//! API goes away and comes back on the same port; allocations keep running),
//! [`NomadDouble::requests`] (every write received), [`NomadDouble::lower_index`],
//! [`NomadDouble::refuse_next_scale`], [`NomadDouble::live_slots`]. A scale down stops the
//! highest name indexes and a count-only change keeps allocations, as Nomad does.
//! [`NomadDouble::scale_calls`] lists every successful scale call with the token it carried
//! (start the double with ACLs off and give each gateway its own `NOMAD_TOKEN` to tell them
//! apart; every faasgate client sends the same `User-Agent`), its Raft index and its time.
//!
//! Nomad Variables and variable locks (`/v1/var/:path`, `/v1/vars`) follow
//! `../shared/reference/nomad-variables.md` (shapes checked against
//! `../shared/fixtures/nomad-variables`). Lock leases (2 x TTL, then LockDelay before the lock
//! is cleared) run on a lock clock that is real time by default; a test controls it with
//! [`NomadDouble::pause_lock_clock`] and [`NomadDouble::advance_lock_clock`] (deterministic:
//! no test waits 45 s) and may accept TTLs under Nomad's 10 s minimum with
//! [`NomadDouble::set_min_lock_ttl`] (for gateways that renew in real time). Untouched, both
//! behave as Nomad: real time, 10 s to 24 h.
#![allow(dead_code, clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

type Body = BoxBody<Bytes, std::io::Error>;

#[path = "nomad_deployments.rs"]
mod deployments;

const NODE_ID: &str = "7406e90b-de16-d118-80fe-60d0f2730cb3";
const NODE_NAME: &str = "double";
const DC: &str = "dc1";
const NOMAD_MAX_WAIT: Duration = Duration::from_secs(300);
const CONSUL_MAX_WAIT: Duration = Duration::from_secs(600);
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// One write the double received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Value,
}

pub struct NomadDouble {
    pub state: Arc<State>,
    addr: Mutex<SocketAddr>,
    server: Mutex<Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>>,
    /// Serve HTTPS with this acceptor (Nomad's `tls { http = true }`).
    tls: Option<tokio_rustls::TlsAcceptor>,
    _logs: tempfile::TempDir,
}

pub struct State {
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
    /// The ACL token Nomad requests must carry (none: ACLs disabled).
    pub nomad_token: Option<String>,
    pub consul_token: Option<String>,
    logs_dir: PathBuf,
    requests: Mutex<Vec<Recorded>>,
    /// The answer of the next scale call, when set ([`NomadDouble::refuse_next_scale`]).
    refuse_scale: Mutex<Option<String>>,
    /// What variable-lock leases run on.
    clock: Mutex<LockClock>,
    /// The shortest lock TTL accepted (Nomad: 10 s).
    min_lock_ttl: Mutex<Duration>,
    /// Successful scale calls, in the order applied ([`NomadDouble::scale_calls`]).
    scale_calls: Mutex<Vec<ScaleCall>>,
    /// When each allocation's stop was ordered ([`NomadDouble::stop_ordered_at`]).
    stop_ordered: Mutex<BTreeMap<String, std::time::Instant>>,
}

#[derive(Default)]
struct Inner {
    index: u64,
    jobs_idx: u64,
    summary_idx: u64,
    allocs_idx: u64,
    services_idx: u64,
    consul_idx: u64,
    /// The variables table index (moves on any variable write, deletes included).
    vars_idx: u64,
    jobs: BTreeMap<String, JobRec>,
    /// Variables by (namespace, path).
    vars: BTreeMap<(String, String), VarRec>,
    allocs: BTreeMap<String, AllocRec>,
    evals: u64,
    /// Deployments by ID (`deployments`), and their table index.
    deployments: BTreeMap<String, Value>,
    deploy_idx: u64,
}

struct JobRec {
    job: Value,
    events: BTreeMap<String, Vec<Value>>,
    /// Every version registered, oldest first (what `/revert` reads).
    versions: Vec<Value>,
}

struct AllocRec {
    id: String,
    job_id: String,
    namespace: String,
    group: String,
    task: String,
    slot: u64,
    job_version: u64,
    /// The group it was placed for, without `Count` (what a scale leaves unchanged).
    group_spec: Value,
    desired: String,
    client: String,
    task_state: String,
    failed: bool,
    started_at: Option<String>,
    finished_at: Option<String>,
    create_index: u64,
    modify_index: u64,
    create_time: i64,
    modify_time: i64,
    port: u16,
    pid: Option<u32>,
    services: Vec<ServiceRec>,
    check_passing: bool,
    stop: Option<watch::Sender<bool>>,
    /// The deployment it was placed by (a canary), with its health verdict.
    deployment: Option<String>,
    canary: bool,
    /// A canary whose deployment was promoted: it is one of the group's allocations now.
    promoted: bool,
    healthy: Option<bool>,
    health_time: i64,
    health_idx: u64,
}

impl AllocRec {
    /// Nomad's `TerminalStatus`: stopping or evicted, or done on the client.
    fn is_terminal(&self) -> bool {
        matches!(self.desired.as_str(), "stop" | "evict")
            || matches!(self.client.as_str(), "complete" | "failed" | "lost")
    }
}

#[derive(Clone)]
struct ServiceRec {
    id: String,
    name: String,
    tags: Vec<String>,
    /// The service's `Tags`: what a canary registered with `CanaryTags` switches to when
    /// promoted.
    promoted_tags: Vec<String>,
    meta: Map<String, Value>,
    provider: String,
    create_index: u64,
}

// === impl NomadDouble ===

impl NomadDouble {
    /// Starts the double with ACLs off.
    pub async fn start() -> Arc<Self> {
        Self::start_with(None, None).await
    }

    /// Starts the double; with a token, Nomad requests without it get 403.
    pub async fn start_with(nomad_token: Option<&str>, consul_token: Option<&str>) -> Arc<Self> {
        Self::start_inner(nomad_token, consul_token, None).await
    }

    /// Starts the double serving HTTPS only, with `tls` (which may require client certs).
    pub async fn start_tls(
        tls: Arc<tokio_rustls::rustls::ServerConfig>,
        nomad_token: Option<&str>,
    ) -> Arc<Self> {
        Self::start_inner(
            nomad_token,
            None,
            Some(tokio_rustls::TlsAcceptor::from(tls)),
        )
        .await
    }

    async fn start_inner(
        nomad_token: Option<&str>,
        consul_token: Option<&str>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Arc<Self> {
        let logs = tempfile::tempdir().expect("tempdir for task logs");
        let (changed, _) = watch::channel(0);
        let state = Arc::new(State {
            inner: Mutex::new(Inner {
                index: 10,
                jobs_idx: 1,
                summary_idx: 1,
                allocs_idx: 1,
                services_idx: 1,
                consul_idx: 1,
                vars_idx: 1,
                ..Default::default()
            }),
            changed,
            nomad_token: nomad_token.map(str::to_string),
            consul_token: consul_token.map(str::to_string),
            logs_dir: logs.path().to_path_buf(),
            requests: Mutex::new(Vec::new()),
            refuse_scale: Mutex::new(None),
            clock: Mutex::new(LockClock::new()),
            min_lock_ttl: Mutex::new(MIN_LOCK_TTL),
            scale_calls: Mutex::new(Vec::new()),
            stop_ordered: Mutex::new(BTreeMap::new()),
        });
        let d = Arc::new(NomadDouble {
            state,
            addr: Mutex::new(SocketAddr::from(([127, 0, 0, 1], 0))),
            server: Mutex::new(None),
            tls,
            _logs: logs,
        });
        d.start_server().await;
        d
    }

    pub fn addr(&self) -> SocketAddr {
        *self.addr.lock().unwrap()
    }

    /// `http(s)://127.0.0.1:<port>` (NOMAD_ADDR / CONSUL_HTTP_ADDR).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr())
    }

    /// (Re)starts serving on the same address.
    pub async fn start_server(&self) {
        let want = self.addr();
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(want).await {
                Ok(l) => break l,
                Err(e) => {
                    tries += 1;
                    assert!(tries < 100, "double cannot bind {want}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        *self.addr.lock().unwrap() = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(serve(listener, self.state.clone(), rx, self.tls.clone()));
        *self.server.lock().unwrap() = Some((tx, task));
    }

    /// Closes the listener and every open connection (held blocking queries included).
    /// Allocations keep running, as they would while Nomad's servers are down.
    pub async fn stop_server(&self) {
        let server = self.server.lock().unwrap().take();
        if let Some((tx, task)) = server {
            let _ = tx.send(true);
            let _ = task.await;
        }
    }

    /// Every write received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Lowers every index (a snapshot restore): clients must reset.
    pub fn lower_index(&self, to: u64) {
        let mut i = self.state.inner.lock().unwrap();
        i.index = to;
        i.jobs_idx = to;
        i.summary_idx = to;
        i.allocs_idx = to;
        i.services_idx = to;
        i.consul_idx = to;
        i.vars_idx = to;
        drop(i);
        self.state.changed.send_modify(|v| *v += 1);
    }

    /// Registers, in Nomad's service catalog, an instance of service `name` of job `job` at
    /// 127.0.0.1:`port` that no task of the double backs (a process the test runs itself,
    /// such as a gateway of a test cluster); returns its allocation ID.
    pub fn register_instance(&self, job: &str, name: &str, port: u16) -> String {
        self.register_instance_in("nomad", job, name, port)
    }

    /// [`Self::register_instance`] in the catalog `provider` names (`"nomad"` or `"consul"`;
    /// in Consul's its check passes until [`Self::set_instance_passing`] says otherwise).
    pub fn register_instance_in(&self, provider: &str, job: &str, name: &str, port: u16) -> String {
        let mut i = self.state.inner.lock().unwrap();
        let idx = i.bump();
        let id = uuid();
        let now = now_ns();
        i.allocs.insert(
            id.clone(),
            AllocRec {
                id: id.clone(),
                job_id: job.to_string(),
                namespace: "default".into(),
                group: job.to_string(),
                task: job.to_string(),
                slot: 0,
                job_version: 0,
                group_spec: json!({}),
                desired: "run".into(),
                client: "running".into(),
                task_state: "running".into(),
                failed: false,
                started_at: None,
                finished_at: None,
                create_index: idx,
                modify_index: idx,
                create_time: now,
                modify_time: now,
                port,
                pid: None,
                services: vec![ServiceRec {
                    id: format!("_nomad-task-{id}-group-{job}-{name}-http"),
                    name: name.to_string(),
                    tags: Vec::new(),
                    promoted_tags: Vec::new(),
                    meta: Map::new(),
                    provider: provider.into(),
                    create_index: idx,
                }],
                check_passing: true,
                stop: None,
                deployment: None,
                canary: false,
                promoted: false,
                healthy: None,
                health_time: 0,
                health_idx: 0,
            },
        );
        i.allocs_idx = idx;
        i.services_idx = idx;
        i.consul_idx = idx;
        drop(i);
        self.state.notify();
        id
    }

    /// Sets the Consul check of an instance registered with [`Self::register_instance_in`]
    /// (a task the double runs has its check set by probing it instead).
    pub fn set_instance_passing(&self, alloc_id: &str, passing: bool) {
        let mut i = self.state.inner.lock().unwrap();
        let idx = i.bump();
        if let Some(a) = i.allocs.get_mut(alloc_id) {
            a.check_passing = passing;
        }
        i.consul_idx = idx;
        drop(i);
        self.state.notify();
    }

    /// Takes an instance registered with [`Self::register_instance`] out of the catalog.
    pub fn deregister_instance(&self, alloc_id: &str) {
        let mut i = self.state.inner.lock().unwrap();
        let idx = i.bump();
        if let Some(a) = i.allocs.get_mut(alloc_id) {
            a.services.clear();
            a.desired = "stop".into();
            a.client = "complete".into();
        }
        i.allocs_idx = idx;
        i.services_idx = idx;
        i.consul_idx = idx;
        drop(i);
        self.state.notify();
    }

    /// Live allocation IDs of a job (desired `run`), oldest first.
    pub fn live_allocs(&self, job_id: &str) -> Vec<String> {
        self.live_versions(job_id)
            .into_iter()
            .map(|a| a.0)
            .collect()
    }

    /// Live allocations of a job (desired `run`) as `(ID, job version, canary)`, oldest first.
    pub fn live_versions(&self, job_id: &str) -> Vec<(String, u64, bool)> {
        let i = self.state.inner.lock().unwrap();
        let mut v: Vec<&AllocRec> = i
            .allocs
            .values()
            .filter(|a| a.job_id == job_id && a.desired == "run")
            .collect();
        v.sort_by_key(|a| a.create_index);
        v.iter()
            .map(|a| (a.id.clone(), a.job_version, a.canary && !a.promoted))
            .collect()
    }

    /// When the stop of allocation `id` was ordered (None: never).
    pub fn stop_ordered_at(&self, id: &str) -> Option<std::time::Instant> {
        self.state.stop_ordered.lock().unwrap().get(id).copied()
    }

    /// The status of the job's latest deployment (None: it never had one).
    pub fn latest_deployment_status(&self, job_id: &str) -> Option<String> {
        let i = self.state.inner.lock().unwrap();
        deployments::latest(&i, job_id).map(|d| d["Status"].as_str().unwrap_or("").to_string())
    }

    /// Live allocations of a job (not terminal) as `(name index, ID)`, highest index first:
    /// the order in which a scale-down stops them.
    pub fn live_slots(&self, job_id: &str) -> Vec<(u64, String)> {
        let i = self.state.inner.lock().unwrap();
        let mut v: Vec<(u64, String)> = i
            .allocs
            .values()
            .filter(|a| a.job_id == job_id && !a.is_terminal())
            .map(|a| (a.slot, a.id.clone()))
            .collect();
        v.sort_by(|a, b| b.cmp(a));
        v
    }

    /// The next scale call is answered 400 with `message` and changes nothing (as Nomad
    /// refuses a scale during an active deployment).
    pub fn refuse_next_scale(&self, message: &str) {
        *self.state.refuse_scale.lock().unwrap() = Some(message.to_string());
    }

    /// Pids of the processes the double runs now.
    pub fn pids(&self) -> Vec<u32> {
        let i = self.state.inner.lock().unwrap();
        i.allocs.values().filter_map(|a| a.pid).collect()
    }

    /// Stops an allocation as `POST /v1/allocation/:id/stop` does (it is replaced).
    pub fn stop_alloc(self: &Arc<Self>, id: &str) {
        let _ = stop_alloc(&self.state, id);
    }

    /// The job as stored, if any.
    pub fn job(&self, id: &str) -> Option<Value> {
        let i = self.state.inner.lock().unwrap();
        i.jobs.get(id).map(|j| j.job.clone())
    }
}

impl Drop for NomadDouble {
    fn drop(&mut self) {
        if let Some((tx, task)) = self.server.lock().unwrap().take() {
            let _ = tx.send(true);
            task.abort();
        }
        let pids = {
            let mut i = self.state.inner.lock().unwrap();
            for a in i.allocs.values_mut() {
                if let Some(s) = &a.stop {
                    let _ = s.send(true);
                }
            }
            i.allocs.values().filter_map(|a| a.pid).collect::<Vec<_>>()
        };
        for pid in pids {
            kill_group(pid, "KILL");
        }
    }
}

fn kill_group(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg("--")
        .arg(format!("-{pid}"))
        .stderr(std::process::Stdio::null())
        .status();
}

async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => {
                let Ok((stream, _)) = r else { continue };
                let state = state.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(state, req).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        // A failed handshake (no or untrusted client cert) just drops the
                        // connection, after rustls has sent its alert.
                        Some(tls) => {
                            if let Ok(s) = tls.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(s), svc).await;
                            }
                        }
                    }
                });
            }
            _ = stop.changed() => break,
        }
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

// === request handling ===

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    r
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    full(status, "text/plain; charset=utf-8", msg.to_string())
}

fn json_resp(v: &Value) -> Response<Body> {
    full(
        StatusCode::OK,
        "application/json",
        serde_json::to_vec(v).unwrap(),
    )
}

fn with_index(mut r: Response<Body>, header: &str, index: u64, consul: bool) -> Response<Body> {
    let h = r.headers_mut();
    h.insert(
        http::HeaderName::from_bytes(header.as_bytes()).unwrap(),
        index.to_string().parse().unwrap(),
    );
    if consul {
        h.insert("x-consul-knownleader", "true".parse().unwrap());
        h.insert("x-consul-lastcontact", "0".parse().unwrap());
        h.insert("x-consul-effective-consistency", "leader".parse().unwrap());
        h.insert("x-consul-default-acl-policy", "allow".parse().unwrap());
    } else {
        h.insert("x-nomad-knownleader", "true".parse().unwrap());
        h.insert("x-nomad-lastcontact", "0".parse().unwrap());
    }
    r
}

fn query_map(req: &Request<Incoming>) -> BTreeMap<String, String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(req.uri().query().unwrap_or(""))
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// `index` and `wait` of a blocking read, or the 400 to answer.
fn blocking_params(
    q: &BTreeMap<String, String>,
    cap: Duration,
) -> Result<(u64, Duration), &'static str> {
    let index = match q.get("index") {
        None => 0,
        Some(v) => v.parse::<u64>().map_err(|_| "Invalid index")?,
    };
    let wait = match q.get("wait") {
        None => cap,
        Some(v) if v.bytes().all(|b| b.is_ascii_digit()) => return Err("Invalid wait time"),
        Some(v) => faasgate::config::parse_duration("wait", v).map_err(|_| "Invalid wait time")?,
    };
    Ok((index, wait.min(cap)))
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let q = query_map(&req);
    let consul = path.starts_with("/v1/health/") || path.starts_with("/v1/catalog/");
    if consul {
        if let Some(want) = &state.consul_token {
            let got = req
                .headers()
                .get("x-consul-token")
                .and_then(|v| v.to_str().ok());
            match got {
                Some(t) if t.trim() == want => {}
                Some(_) => return text(StatusCode::FORBIDDEN, "ACL not found"),
                // Anonymous: reads are filtered, not rejected.
                None => {
                    let idx = state.inner.lock().unwrap().consul_idx.max(1);
                    return with_index(json_resp(&json!([])), "x-consul-index", idx, true);
                }
            }
        }
    } else if let Some(want) = &state.nomad_token {
        let got = req
            .headers()
            .get("x-nomad-token")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .map(str::to_string)
            .or_else(|| {
                req.headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(|v| v.trim().to_string())
            });
        if got.as_deref() != Some(want.as_str()) {
            return text(StatusCode::FORBIDDEN, "Permission denied");
        }
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
    };
    let caller = Caller {
        token: header("x-nomad-token").or_else(|| {
            header("authorization").and_then(|v| v.strip_prefix("Bearer ").map(str::to_string))
        }),
        user_agent: header("user-agent"),
    };
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::BAD_REQUEST, "bad body"),
    };
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let is_write = matches!(method, Method::POST | Method::PUT | Method::DELETE);
    if is_write {
        state.requests.lock().unwrap().push(Recorded {
            method: method.to_string(),
            path: path.clone(),
            query: q
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&"),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
    }
    let read_body = || -> Result<Value, Response<Body>> {
        if body.is_empty() {
            return Err(text(StatusCode::BAD_REQUEST, "Request body is empty"));
        }
        serde_json::from_slice(&body)
            .map_err(|e| text(StatusCode::BAD_REQUEST, &format!("json: {e}")))
    };
    if let Some(raw) = path.strip_prefix("/v1/var/") {
        return variable(&state, &method, raw, &q, &body).await;
    }
    match (segs.as_slice(), &method) {
        (["v1", "vars"], &Method::GET) => list_vars(&state, &q).await,
        (["v1", "vars"], _) => text(StatusCode::METHOD_NOT_ALLOWED, "Invalid method"),
        (["v1", "jobs"], m) if m == Method::POST || m == Method::PUT => match read_body() {
            Ok(b) => register(&state, b, &q, None),
            Err(r) => r,
        },
        (["v1", "jobs"], &Method::GET) => list_jobs(&state, &q).await,
        (["v1", "jobs"], _) => text(StatusCode::METHOD_NOT_ALLOWED, "Invalid method"),
        (["v1", "job", id], &Method::GET) => read_job(&state, id, &q).await,
        (["v1", "job", id], m) if m == Method::POST || m == Method::PUT => match read_body() {
            Ok(b) => register(&state, b, &q, Some(id)),
            Err(r) => r,
        },
        (["v1", "job", id], &Method::DELETE) => deregister(&state, id, &q),
        (["v1", "job", _], _) => text(StatusCode::METHOD_NOT_ALLOWED, "Invalid method"),
        (["v1", "job", id, "scale"], &Method::GET) => scale_status(&state, id, &q).await,
        (["v1", "job", id, "scale"], m) if m == Method::POST || m == Method::PUT => {
            match read_body() {
                Ok(b) => scale(&state, id, b, &caller),
                Err(r) => r,
            }
        }
        (["v1", "job", id, "summary"], &Method::GET) => summary(&state, id, &q).await,
        (["v1", "job", id, "deployment"], &Method::GET) => {
            deployments::job_deployments(&state, id, &q, false).await
        }
        (["v1", "job", id, "deployments"], &Method::GET) => {
            deployments::job_deployments(&state, id, &q, true).await
        }
        (["v1", "job", id, "revert"], m) if m == Method::POST || m == Method::PUT => {
            match read_body() {
                Ok(b) => deployments::revert(&state, id, &b),
                Err(r) => r,
            }
        }
        (["v1", "deployment", "promote", id], m) if m == Method::POST || m == Method::PUT => {
            match read_body() {
                Ok(b) => deployments::promote(&state, id, &b),
                Err(r) => r,
            }
        }
        (["v1", "deployment", "fail", id], m) if m == Method::POST || m == Method::PUT => {
            deployments::fail(&state, id)
        }
        (["v1", "deployment", "allocations", id], &Method::GET) => {
            deployments::allocations(&state, id, &q).await
        }
        (["v1", "deployment", id], &Method::GET) => deployments::read(&state, id, &q).await,
        (["v1", "job", id, "allocations"], &Method::GET) => job_allocs(&state, id, &q).await,
        (["v1", "job", id, "services"], &Method::GET) => job_services(&state, id, &q).await,
        (["v1", "allocation", id], &Method::GET) => read_alloc(&state, id),
        (["v1", "allocation", id, "stop"], m) if m == Method::POST || m == Method::PUT => {
            stop_alloc(&state, id)
        }
        (["v1", "services"], &Method::GET) => services_list(&state, &q).await,
        (["v1", "service", ""], &Method::GET) => {
            text(StatusCode::BAD_REQUEST, "missing service name")
        }
        (["v1", "service", name], &Method::GET) => service(&state, name, &q).await,
        (["v1", "client", "fs", "logs", alloc], &Method::GET) => logs(&state, alloc, &q),
        (["v1", "health", "service", name], &Method::GET) => health(&state, name, &q).await,
        (["v1", "catalog", "service", name], &Method::GET) => catalog(&state, name, &q).await,
        _ => full(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", ""),
    }
}

/// Holds a read until `table(inner) > index` or `wait` passes; returns the table index.
async fn block(
    state: &State,
    q: &BTreeMap<String, String>,
    cap: Duration,
    table: impl Fn(&Inner) -> u64,
) -> Result<u64, Response<Body>> {
    let (index, wait) = blocking_params(q, cap).map_err(|m| text(StatusCode::BAD_REQUEST, m))?;
    let mut rx = state.changed.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let cur = table(&state.inner.lock().unwrap());
        if index == 0 || cur > index {
            return Ok(cur);
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => continue,
            _ => return Ok(table(&state.inner.lock().unwrap())),
        }
    }
}

/// A Nomad read: held as [`block`] says on `table`, then `answer` (under the lock) with
/// `X-Nomad-Index`; `None` is Nomad's plain-text 404 `job not found`.
async fn nomad_read(
    state: &State,
    q: &BTreeMap<String, String>,
    table: impl Fn(&Inner) -> u64,
    answer: impl FnOnce(&Inner) -> Option<Value>,
) -> Response<Body> {
    let idx = match block(state, q, NOMAD_MAX_WAIT, table).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let body = answer(&state.inner.lock().unwrap());
    let r = match body {
        Some(v) => json_resp(&v),
        None => text(StatusCode::NOT_FOUND, "job not found"),
    };
    nomad_index(r, idx)
}

/// A Consul read: held as [`block`] says on `table`, then the list `answer` gives (under the
/// lock) with `X-Consul-Index` (at least 1) and Consul's headers.
async fn consul_read(
    state: &State,
    q: &BTreeMap<String, String>,
    table: impl Fn(&Inner) -> u64,
    answer: impl FnOnce(&Inner) -> Vec<Value>,
) -> Response<Body> {
    let idx = match block(state, q, CONSUL_MAX_WAIT, table).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let list = answer(&state.inner.lock().unwrap());
    with_index(
        json_resp(&Value::Array(list)),
        "x-consul-index",
        idx.max(1),
        true,
    )
}

/// `r` with Nomad's index headers.
fn nomad_index(r: Response<Body>, index: u64) -> Response<Body> {
    with_index(r, "x-nomad-index", index, false)
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

fn rfc3339_at(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ns as i128)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn uuid() -> String {
    let h = |n: usize| -> String {
        (0..n)
            .map(|_| format!("{:x}", fastrand::u8(..16)))
            .collect()
    };
    format!("{}-{}-{}-{}-{}", h(8), h(4), h(4), h(4), h(12))
}

// === impl Inner ===

impl Inner {
    fn bump(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    fn next_eval(&mut self) -> String {
        self.evals += 1;
        uuid()
    }
}

impl State {
    fn notify(&self) {
        self.changed.send_modify(|v| *v += 1);
    }
}

// === jobs ===

const SERVER_FIELDS: [&str; 11] = [
    "Status",
    "StatusDescription",
    "Stable",
    "Version",
    "SubmitTime",
    "CreateIndex",
    "ModifyIndex",
    "JobModifyIndex",
    "Stop",
    "NomadTokenID",
    "Dispatched",
];

fn valid_service_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn multierror(errs: &[String]) -> String {
    let mut s = format!(
        "{} error{} occurred:\n",
        errs.len(),
        if errs.len() == 1 { "" } else { "s" }
    );
    for e in errs {
        s.push_str(&format!("\t* {e}\n"));
    }
    s.push('\n');
    s
}

/// Server-side defaults of a submitted job (reference section 7).
fn canonicalize(job: &mut Value, namespace: &str) {
    let o = job.as_object_mut().unwrap();
    let id = o.get("ID").cloned().unwrap_or(Value::Null);
    o.entry("Name").or_insert(id.clone());
    if o.get("Name").is_some_and(Value::is_null) {
        o.insert("Name".into(), id);
    }
    o.insert("Namespace".into(), json!(namespace));
    if o.get("Region")
        .and_then(Value::as_str)
        .is_none_or(|r| r.is_empty())
    {
        o.insert("Region".into(), json!("global"));
    }
    if o.get("Type")
        .and_then(Value::as_str)
        .is_none_or(|t| t.is_empty())
    {
        o.insert("Type".into(), json!("service"));
    }
    if !o.get("Priority").is_some_and(Value::is_number) {
        o.insert("Priority".into(), json!(50));
    }
    if !o.get("Datacenters").is_some_and(Value::is_array) {
        o.insert("Datacenters".into(), json!(["*"]));
    }
    for k in [
        "Constraints",
        "Affinities",
        "Spreads",
        "Meta",
        "Multiregion",
        "Periodic",
        "ParameterizedJob",
        "Payload",
    ] {
        o.entry(k).or_insert(Value::Null);
    }
    o.entry("ParentID").or_insert(json!(""));
    o.entry("AllAtOnce").or_insert(json!(false));
    o.entry("NodePool").or_insert(json!("default"));
    o.entry("VaultNamespace").or_insert(json!(""));
    if let Some(u) = o.get_mut("Update") {
        defaults(
            u,
            json!({"AutoPromote": false, "AutoRevert": false, "Canary": 0, "HealthCheck": "",
                "HealthyDeadline": 0, "MaxParallel": 1, "MinHealthyTime": 0,
                "ProgressDeadline": 0, "Stagger": 30_000_000_000u64}),
        );
    }
    if let Some(groups) = o.get_mut("TaskGroups").and_then(Value::as_array_mut) {
        for g in groups {
            canonicalize_group(g);
            if let Some(g) = g.as_object_mut() {
                if !g.get("Count").is_some_and(Value::is_number) {
                    let min = g
                        .get("Scaling")
                        .and_then(|s| s.get("Min"))
                        .and_then(Value::as_u64);
                    g.insert("Count".into(), json!(min.unwrap_or(1)));
                }
            }
        }
    }
}

/// Inserts every key of `with` that `v` (an object) lacks.
fn defaults(v: &mut Value, with: Value) {
    if let (Some(o), Value::Object(d)) = (v.as_object_mut(), with) {
        for (k, dv) in d {
            o.entry(k).or_insert(dv);
        }
    }
}

fn canonicalize_group(g: &mut Value) {
    defaults(
        g,
        json!({"Affinities": null, "Constraints": null, "Meta": null, "Spreads": null,
            "Volumes": null, "Scaling": null, "ShutdownDelay": null, "Disconnect": null,
            "StopAfterClientDisconnect": null, "MaxClientDisconnect": null,
            "RestartPolicy": {"Attempts": 2, "Delay": 15_000_000_000u64,
                "Interval": 1_800_000_000_000u64, "Mode": "fail"},
            "EphemeralDisk": {"Migrate": false, "SizeMB": 300, "Sticky": false}}),
    );
    for (k, d) in [
        (
            "EphemeralDisk",
            json!({"Migrate": false, "SizeMB": 300, "Sticky": false}),
        ),
        (
            "ReschedulePolicy",
            json!({"Attempts": 0, "Interval": 0, "Delay": 30_000_000_000u64,
                "DelayFunction": "exponential", "MaxDelay": 3_600_000_000_000u64, "Unlimited": true}),
        ),
    ] {
        if let Some(v) = g.get_mut(k).filter(|v| v.is_object()) {
            defaults(v, d);
        }
    }
    for n in g["Networks"].as_array_mut().into_iter().flatten() {
        defaults(
            n,
            json!({"CIDR": "", "DNS": null, "Device": "", "IP": "", "MBits": 0, "Mode": "",
                "ReservedPorts": null, "DynamicPorts": null}),
        );
        for p in n["DynamicPorts"].as_array_mut().into_iter().flatten() {
            defaults(p, json!({"HostNetwork": "default", "Value": 0, "To": 0}));
        }
    }
    for s in g["Services"].as_array_mut().into_iter().flatten() {
        defaults(
            s,
            json!({"Address": "", "AddressMode": "auto", "CanaryMeta": null, "CanaryTags": null,
                "CheckRestart": null, "Checks": null, "Connect": null, "EnableTagOverride": false,
                "Meta": null, "OnUpdate": "require_healthy", "Provider": "consul", "Tags": null,
                "TaggedAddresses": null, "TaskName": ""}),
        );
    }
    for t in g["Tasks"].as_array_mut().into_iter().flatten() {
        defaults(
            t,
            json!({"Affinities": null, "Artifacts": null, "Constraints": null, "Env": null,
                "KillSignal": "", "KillTimeout": 5_000_000_000u64, "Leader": false,
                "Lifecycle": null, "Meta": null, "Services": null, "ShutdownDelay": 0,
                "Templates": null, "User": "", "Vault": null, "VolumeMounts": null,
                "LogConfig": {"Disabled": false, "MaxFileSizeMB": 10, "MaxFiles": 10}}),
        );
        if let Some(l) = t.get_mut("LogConfig").filter(|v| v.is_object()) {
            defaults(
                l,
                json!({"Disabled": false, "MaxFileSizeMB": 10, "MaxFiles": 10}),
            );
        }
    }
}

fn spec_part(job: &Value) -> Value {
    let mut j = job.clone();
    if let Some(o) = j.as_object_mut() {
        for k in SERVER_FIELDS {
            o.remove(k);
        }
    }
    j
}

fn register(
    state: &Arc<State>,
    body: Value,
    q: &BTreeMap<String, String>,
    url_id: Option<&str>,
) -> Response<Body> {
    if let Err((status, msg)) = crate::support::nomad_strict::check_register(&body, url_id) {
        return text(status, &msg);
    }
    let Some(mut job) = body.get("Job").cloned().filter(Value::is_object) else {
        return text(StatusCode::BAD_REQUEST, "Job must be specified");
    };
    let id = job
        .get("ID")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if id.is_empty() {
        return text(StatusCode::BAD_REQUEST, "Job ID hasn't been provided");
    }
    if url_id.is_some_and(|u| u != id) {
        return text(StatusCode::BAD_REQUEST, "Job ID does not match name");
    }
    let namespace = q
        .get("namespace")
        .cloned()
        .or_else(|| {
            job.get("Namespace")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_string());
    // Validation (500 with go-multierror text, as Nomad does).
    let mut errs = Vec::new();
    let groups = job
        .get("TaskGroups")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if groups.is_empty() {
        errs.push("Missing job task groups".to_string());
    }
    for g in &groups {
        for s in g
            .get("Services")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = s.get("Name").and_then(Value::as_str).unwrap_or("");
            if !valid_service_name(name) {
                errs.push(format!(
                    "Service name must be valid per RFC 1123 and can contain only alphanumeric characters or dashes: {name:?}"
                ));
            }
        }
        if !matches!(g.get("Tasks").and_then(Value::as_array), Some(t) if !t.is_empty()) {
            errs.push("Missing tasks for task group".to_string());
        }
    }
    if !errs.is_empty() {
        return text(StatusCode::INTERNAL_SERVER_ERROR, &multierror(&errs));
    }
    canonicalize(&mut job, &namespace);
    let enforce = body
        .get("EnforceIndex")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let check_index = body
        .get("JobModifyIndex")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let preserve = body
        .get("PreserveCounts")
        .and_then(Value::as_bool)
        .unwrap_or(false);

    let mut i = state.inner.lock().unwrap();
    let existing = i.jobs.get(&id).map(|j| j.job.clone());
    if enforce {
        let cur = existing.as_ref().and_then(|j| j["JobModifyIndex"].as_u64());
        let msg = match (check_index, cur) {
            (0, Some(_)) => Some("Enforcing job modify index 0: job already exists".to_string()),
            (n, None) if n > 0 => Some(format!(
                "Enforcing job modify index {n}: job does not exist"
            )),
            (n, Some(c)) if n > 0 && n != c => Some(format!(
                "Enforcing job modify index {n}: job exists with conflicting job modify index: {c}"
            )),
            _ => None,
        };
        if let Some(m) = msg {
            return text(StatusCode::INTERNAL_SERVER_ERROR, &m);
        }
    }
    if preserve {
        if let Some(old) = &existing {
            let counts: BTreeMap<String, Value> = old["TaskGroups"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|g| Some((g["Name"].as_str()?.to_string(), g["Count"].clone())))
                .collect();
            for g in job["TaskGroups"].as_array_mut().into_iter().flatten() {
                if let Some(c) = g["Name"].as_str().and_then(|n| counts.get(n)) {
                    g["Count"] = c.clone();
                }
            }
        }
    }
    let unchanged = existing.as_ref().is_some_and(|old| {
        !old["Stop"].as_bool().unwrap_or(false) && spec_part(old) == spec_part(&job)
    });
    let eval_id = i.next_eval();
    let job_modify_index;
    if unchanged {
        job_modify_index = existing.as_ref().unwrap()["JobModifyIndex"]
            .as_u64()
            .unwrap_or(0);
        i.bump();
    } else {
        let idx = i.bump();
        let (version, create_index) = match &existing {
            Some(old) => (
                old["Version"].as_u64().unwrap_or(0) + 1,
                old["CreateIndex"].as_u64().unwrap_or(idx),
            ),
            None => (0, idx),
        };
        let o = job.as_object_mut().unwrap();
        o.insert("Version".into(), json!(version));
        o.insert("CreateIndex".into(), json!(create_index));
        o.insert("ModifyIndex".into(), json!(idx));
        o.insert("JobModifyIndex".into(), json!(idx));
        o.insert("SubmitTime".into(), json!(now_ns()));
        o.insert("Stop".into(), json!(false));
        o.insert("Stable".into(), json!(false));
        o.insert("Status".into(), json!("pending"));
        o.insert("StatusDescription".into(), json!(""));
        o.insert("NomadTokenID".into(), json!(""));
        o.insert("Dispatched".into(), json!(false));
        let (events, mut versions) = i
            .jobs
            .get(&id)
            .filter(|j| j.job["CreateIndex"] == json!(create_index))
            .map(|j| (j.events.clone(), j.versions.clone()))
            .unwrap_or_default();
        versions.push(job.clone());
        // A new version ends the job's active deployment (a canary one starts in `schedule`).
        deployments::cancel_older(&mut i, &id, None, deployments::NEWER_JOB);
        i.jobs.insert(
            id.clone(),
            JobRec {
                job,
                events,
                versions,
            },
        );
        i.jobs_idx = idx;
        i.summary_idx = idx;
        job_modify_index = idx;
    }
    let index = i.index;
    drop(i);
    if !unchanged {
        schedule(state, &id);
    }
    state.notify();
    nomad_index(
        json_resp(&json!({
            "EvalID": eval_id, "EvalCreateIndex": index, "JobModifyIndex": job_modify_index,
            "Warnings": "", "Index": index, "LastContact": 0, "KnownLeader": false, "NextToken": ""
        })),
        index,
    )
}

fn summary_of(i: &Inner, id: &str, job: &Value) -> Value {
    let mut summary = Map::new();
    for g in job["TaskGroups"].as_array().into_iter().flatten() {
        let name = g["Name"].as_str().unwrap_or("");
        let (mut running, mut starting, mut complete, mut failed) = (0, 0, 0, 0);
        for a in i
            .allocs
            .values()
            .filter(|a| a.job_id == id && a.group == name)
        {
            match a.client.as_str() {
                "running" => running += 1,
                "pending" => starting += 1,
                "complete" => complete += 1,
                "failed" => failed += 1,
                _ => {}
            }
        }
        summary.insert(
            name.to_string(),
            json!({"Queued": 0, "Complete": complete, "Failed": failed, "Running": running,
                   "Starting": starting, "Lost": 0, "Unknown": 0}),
        );
    }
    json!({
        "JobID": id, "Namespace": job["Namespace"], "Summary": summary,
        "Children": {"Pending": 0, "Running": 0, "Dead": 0},
        "CreateIndex": job["CreateIndex"], "ModifyIndex": i.summary_idx
    })
}

fn job_status(i: &Inner, id: &str, job: &Value) -> &'static str {
    let live = i
        .allocs
        .values()
        .any(|a| a.job_id == id && a.desired == "run");
    if live {
        "running"
    } else if job["Stop"].as_bool().unwrap_or(false)
        || job["TaskGroups"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|g| g["Count"].as_u64() == Some(0))
    {
        "dead"
    } else {
        "pending"
    }
}

fn job_out(i: &Inner, id: &str, job: &Value) -> Value {
    let mut j = job.clone();
    j["Status"] = json!(job_status(i, id, job));
    j
}

async fn list_jobs(state: &Arc<State>, q: &BTreeMap<String, String>) -> Response<Body> {
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    let with_meta = q.get("meta").is_some_and(|v| v == "true");
    let ns = q
        .get("namespace")
        .cloned()
        .unwrap_or_else(|| "default".into());
    nomad_read(
        state,
        q,
        |i| i.jobs_idx.max(i.summary_idx),
        |i| {
            let list = i
            .jobs
            .iter()
            .filter(|(id, j)| {
                id.starts_with(&prefix) && (ns == "*" || j.job["Namespace"] == json!(ns))
            })
            .map(|(id, j)| {
                let job = &j.job;
                let mut stub = json!({
                    "ID": id, "ParentID": "", "Name": job["Name"], "Namespace": job["Namespace"],
                    "Datacenters": job["Datacenters"], "Multiregion": null, "Type": job["Type"],
                    "Priority": job["Priority"], "Periodic": false, "ParameterizedJob": false,
                    "Stop": job["Stop"], "Status": job_status(i, id, job), "StatusDescription": "",
                    "JobSummary": summary_of(i, id, job),
                    "CreateIndex": job["CreateIndex"], "ModifyIndex": job["ModifyIndex"],
                    "JobModifyIndex": job["JobModifyIndex"], "SubmitTime": job["SubmitTime"],
                });
                if with_meta {
                    stub["Meta"] = job["Meta"].clone();
                }
                stub
            })
            .collect();
            Some(Value::Array(list))
        },
    )
    .await
}

async fn read_job(state: &Arc<State>, id: &str, q: &BTreeMap<String, String>) -> Response<Body> {
    let table = |i: &Inner| {
        i.jobs
            .get(id)
            .map(|j| j.job["ModifyIndex"].as_u64().unwrap_or(0))
            .unwrap_or(i.jobs_idx)
    };
    nomad_read(state, q, table, |i| {
        i.jobs.get(id).map(|j| job_out(i, id, &j.job))
    })
    .await
}

fn deregister(state: &Arc<State>, id: &str, q: &BTreeMap<String, String>) -> Response<Body> {
    let purge = match q.get("purge").map(String::as_str) {
        None | Some("") | Some("false") => false,
        Some("true") | Some("1") => true,
        Some(v) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("Failed to parse value of \"purge\" ({v}) as a bool: invalid syntax"),
            )
        }
    };
    let mut i = state.inner.lock().unwrap();
    if !i.jobs.contains_key(id) {
        return json_resp(
            &json!({"EvalID": "", "EvalCreateIndex": 0, "JobModifyIndex": 0,
            "VolumeEvalID": "", "VolumeEvalIndex": 0, "Index": 0, "LastContact": 0,
            "KnownLeader": false, "NextToken": ""}),
        );
    }
    deployments::cancel_older(&mut i, id, None, deployments::STOPPED_JOB);
    let idx = i.bump();
    if purge {
        i.jobs.remove(id);
    } else if let Some(j) = i.jobs.get_mut(id) {
        j.job["Stop"] = json!(true);
        j.job["ModifyIndex"] = json!(idx);
        j.job["JobModifyIndex"] = json!(idx);
    }
    i.jobs_idx = idx;
    i.summary_idx = idx;
    let eval = i.next_eval();
    drop(i);
    stop_job_allocs(state, id);
    state.notify();
    nomad_index(
        json_resp(
            &json!({"EvalID": eval, "EvalCreateIndex": idx, "JobModifyIndex": idx,
            "VolumeEvalID": "", "VolumeEvalIndex": 0, "Index": idx, "LastContact": 0,
            "KnownLeader": false, "NextToken": ""}),
        ),
        idx,
    )
}

fn scale(state: &Arc<State>, id: &str, body: Value, caller: &Caller) -> Response<Body> {
    if let Err((status, msg)) = crate::support::nomad_strict::check_scale(&body) {
        return text(status, &msg);
    }
    if let Some(msg) = state.refuse_scale.lock().unwrap().take() {
        return text(StatusCode::BAD_REQUEST, &msg);
    }
    let group = body["Target"]["Group"].as_str().unwrap_or("").to_string();
    if group.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "missing task group name for scaling action",
        );
    }
    if body["Target"]["Job"].as_str().is_some_and(|j| j != id) {
        return text(
            StatusCode::BAD_REQUEST,
            "job ID in payload did not match URL",
        );
    }
    if !matches!(
        body.get("Error"),
        None | Some(Value::Bool(_)) | Some(Value::Null)
    ) {
        return text(
            StatusCode::BAD_REQUEST,
            "json: cannot unmarshal string into Go struct field ScalingRequest.Error of type bool",
        );
    }
    let count = body.get("Count").and_then(Value::as_i64);
    if count.is_some_and(|c| c < 0) {
        return text(
            StatusCode::BAD_REQUEST,
            "scaling action count can't be negative",
        );
    }
    let mut i = state.inner.lock().unwrap();
    let idx = i.index + 1;
    let blocked = i
        .jobs
        .get(id)
        .is_some_and(|r| deployments::blocks_scaling(&i, id, &r.job));
    let Some(rec) = i.jobs.get_mut(id) else {
        return text(StatusCode::NOT_FOUND, &format!("job \"{id}\" not found"));
    };
    let Some(g) = rec.job["TaskGroups"]
        .as_array_mut()
        .and_then(|gs| gs.iter_mut().find(|g| g["Name"] == json!(group)))
    else {
        return text(
            StatusCode::BAD_REQUEST,
            &format!("task group \"{group}\" specified for scaling does not exist in job"),
        );
    };
    let previous = g["Count"].as_i64().unwrap_or(0);
    if let Some(c) = count {
        if let Some(min) = g["Scaling"]["Min"].as_i64() {
            if c < min {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!("group count was less than scaling policy minimum: {c} < {min}"),
                );
            }
        }
        if let Some(max) = g["Scaling"]["Max"].as_i64() {
            if c > max {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!("group count was greater than scaling policy maximum: {c} > {max}"),
                );
            }
        }
        if blocked {
            return text(
                StatusCode::BAD_REQUEST,
                "job scaling blocked due to active deployment",
            );
        }
        g["Count"] = json!(c);
        let v = rec.job["Version"].as_u64().unwrap_or(0) + 1;
        rec.job["Version"] = json!(v);
        rec.job["ModifyIndex"] = json!(idx);
        rec.job["JobModifyIndex"] = json!(idx);
        // A scale is a new job version: Nomad sets its submit time as for a register.
        rec.job["SubmitTime"] = json!(now_ns());
    }
    let eval = uuid();
    rec.events.entry(group.clone()).or_default().insert(
        0,
        json!({"Time": now_ns(), "Count": count, "PreviousCount": previous,
               "Message": body["Message"], "Error": body["Error"].as_bool().unwrap_or(false),
               "Meta": body["Meta"], "EvalID": count.map(|_| eval.clone()), "CreateIndex": idx}),
    );
    let job_modify_index = rec.job["JobModifyIndex"].clone();
    i.index = idx;
    i.jobs_idx = idx;
    i.summary_idx = idx;
    // Recorded under the same lock that applied it: the record order is the apply order.
    state.scale_calls.lock().unwrap().push(ScaleCall {
        job: id.to_string(),
        group,
        count,
        token: caller.token.clone(),
        user_agent: caller.user_agent.clone(),
        at: std::time::Instant::now(),
        lock_clock: state.lock_now(),
        index: idx,
    });
    drop(i);
    if count.is_some() {
        schedule(state, id);
    }
    state.notify();
    nomad_index(
        json_resp(
            &json!({"EvalID": count.map(|_| eval), "EvalCreateIndex": idx,
            "JobModifyIndex": job_modify_index, "Warnings": "", "Index": idx,
            "LastContact": 0, "KnownLeader": false}),
        ),
        idx,
    )
}

async fn scale_status(
    state: &Arc<State>,
    id: &str,
    q: &BTreeMap<String, String>,
) -> Response<Body> {
    nomad_read(
        state,
        q,
        |i| i.jobs_idx.max(i.allocs_idx),
        |i| {
            let rec = i.jobs.get(id)?;
            let mut groups = Map::new();
            for g in rec.job["TaskGroups"].as_array().into_iter().flatten() {
                let name = g["Name"].as_str().unwrap_or("");
                let placed: Vec<&AllocRec> = i
                    .allocs
                    .values()
                    .filter(|a| a.job_id == id && a.group == name && a.desired == "run")
                    .collect();
                let running = placed.iter().filter(|a| a.client == "running").count();
                let events = rec
                    .events
                    .get(name)
                    .map(|e| Value::Array(e.iter().take(20).cloned().collect()))
                    .unwrap_or(Value::Null);
                groups.insert(
                    name.into(),
                    json!({"Desired": g["Count"], "Placed": placed.len(), "Running": running,
                "Healthy": running, "Unhealthy": 0, "Events": events}),
                );
            }
            Some(json!({"JobID": id, "Namespace": rec.job["Namespace"],
            "JobCreateIndex": rec.job["CreateIndex"], "JobModifyIndex": rec.job["ModifyIndex"],
            "JobStopped": rec.job["Stop"], "TaskGroups": groups}))
        },
    )
    .await
}

async fn summary(state: &Arc<State>, id: &str, q: &BTreeMap<String, String>) -> Response<Body> {
    nomad_read(
        state,
        q,
        |i| i.summary_idx,
        |i| i.jobs.get(id).map(|j| summary_of(i, id, &j.job)),
    )
    .await
}

// === allocations ===

/// Go's zero `time.Time`, as Nomad writes the unset times of a task state.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn alloc_stub(a: &AllocRec) -> Value {
    let event = |kind: &str, msg: &str| {
        json!({"Type": kind, "Time": a.create_time, "FailsTask": false, "RestartReason": "",
            "SetupError": "", "DriverError": "", "ExitCode": 0, "Signal": 0, "Message": "",
            "KillTimeout": 0, "KillError": "", "KillReason": "", "StartDelay": 0,
            "DownloadError": "", "ValidationError": "", "DiskLimit": 0, "FailedSibling": "",
            "VaultError": "", "TaskSignalReason": "", "TaskSignal": "", "DriverMessage": "",
            "DisplayMessage": msg, "Details": {}, "GenericSource": ""})
    };
    let mut events = vec![event("Received", "Task received by client")];
    if a.started_at.is_some() {
        events.push(event("Started", "Task started by client"));
    }
    json!({
        "ID": a.id, "EvalID": uuid(), "Name": format!("{}.{}[{}]", a.job_id, a.group, a.slot),
        "Namespace": a.namespace, "NodeID": NODE_ID, "NodeName": NODE_NAME, "JobID": a.job_id,
        "JobType": "service", "JobVersion": a.job_version, "TaskGroup": a.group,
        "DesiredStatus": a.desired, "DesiredDescription": "", "ClientStatus": a.client,
        "ClientDescription": "", "DesiredTransition": {"ForceReschedule": null, "Migrate": null, "Reschedule": null},
        "TaskStates": {a.task.clone(): {"State": a.task_state, "Failed": a.failed, "Restarts": 0,
            "LastRestart": ZERO_TIME, "StartedAt": a.started_at.as_deref().unwrap_or(ZERO_TIME),
            "FinishedAt": a.finished_at.as_deref().unwrap_or(ZERO_TIME),
            "TaskHandle": null, "Events": events}},
        "DeploymentStatus": a.deployment.as_ref().map(|_| json!({"Healthy": a.healthy,
            "Timestamp": if a.healthy.is_some() { rfc3339_at(a.health_time) } else { ZERO_TIME.to_string() },
            "Canary": a.canary, "ModifyIndex": a.health_idx})),
        "FollowupEvalID": "", "NextAllocation": "",
        "RescheduleTracker": null,
        "PreemptedAllocations": null, "PreemptedByAllocation": "",
        "CreateIndex": a.create_index, "ModifyIndex": a.modify_index,
        "CreateTime": a.create_time, "ModifyTime": a.modify_time,
    })
}

async fn job_allocs(state: &Arc<State>, id: &str, q: &BTreeMap<String, String>) -> Response<Body> {
    nomad_read(
        state,
        q,
        |i| i.allocs_idx,
        |i| {
            let list = i.allocs.values().filter(|a| a.job_id == id).map(alloc_stub);
            Some(Value::Array(list.collect()))
        },
    )
    .await
}

fn read_alloc(state: &Arc<State>, id: &str) -> Response<Body> {
    let i = state.inner.lock().unwrap();
    match i.allocs.get(id) {
        Some(a) => {
            let mut v = alloc_stub(a);
            v["AllocatedResources"] = json!({"Shared": {"DiskMB": 300, "Ports": [
                {"Label": "http", "Value": a.port, "HostIP": "127.0.0.1"}]}});
            nomad_index(json_resp(&v), i.allocs_idx)
        }
        None => text(StatusCode::NOT_FOUND, "alloc not found"),
    }
}

/// `POST /v1/allocation/:id/stop`: the scheduler replaces it.
fn stop_alloc(state: &Arc<State>, id: &str) -> Response<Body> {
    let job_id = {
        let i = state.inner.lock().unwrap();
        match i.allocs.get(id) {
            Some(a) => a.job_id.clone(),
            None => return text(StatusCode::NOT_FOUND, "alloc not found"),
        }
    };
    stop_allocs(state, &[id.to_string()]);
    schedule(state, &job_id);
    let idx = state.inner.lock().unwrap().index;
    nomad_index(json_resp(&json!({"EvalID": uuid(), "Index": idx})), idx)
}

/// Places or stops allocations so every group of `job_id` runs `Count` of them.
fn schedule(state: &Arc<State>, job_id: &str) {
    let mut to_start = Vec::new();
    let mut to_stop = Vec::new();
    {
        let mut i = state.inner.lock().unwrap();
        let Some(rec) = i.jobs.get(job_id) else {
            return;
        };
        let job = rec.job.clone();
        if job["Stop"].as_bool().unwrap_or(false) {
            drop(i);
            stop_job_allocs(state, job_id);
            return;
        }
        let version = job["Version"].as_u64().unwrap_or(0);
        for g in job["TaskGroups"].as_array().into_iter().flatten() {
            let group = g["Name"].as_str().unwrap_or("").to_string();
            let count = g["Count"].as_u64().unwrap_or(0) as usize;
            let spec = group_spec(g);
            // A new version that changes only counts (a scale) updates allocations in place,
            // as Nomad's reconciler does; any other change replaces them (no deployments:
            // all at once).
            for a in i.allocs.values_mut() {
                let same_group = a.job_id == job_id && a.group == group;
                if same_group && a.job_version != version && a.group_spec == spec {
                    a.job_version = version;
                }
            }
            let mut live: Vec<(u64, String, u64)> = i
                .allocs
                .values()
                .filter(|a| a.job_id == job_id && a.group == group && !a.is_terminal())
                .map(|a| (a.slot, a.id.clone(), a.job_version))
                .collect();
            live.sort();
            let (old, mut current): (Vec<_>, Vec<_>) =
                live.into_iter().partition(|a| a.2 != version);
            // Canaries of an earlier deployment never promoted: always stopped.
            let (stale, old): (Vec<_>, Vec<_>) = old
                .into_iter()
                .partition(|a| i.allocs.get(&a.1).is_some_and(|r| r.canary && !r.promoted));
            to_stop.extend(stale.into_iter().map(|a| a.1));
            // A canary strategy and a destructive change (or its deployment already there):
            // the old allocations keep running beside canaries until promotion.
            let strategy = deployments::canary_strategy(&job, g);
            let deployment = match strategy {
                Some(st) if !old.is_empty() || deployments::exists(&i, job_id, &job) => Some((
                    st,
                    deployments::ensure(&mut i, job_id, &job, &group, st, count as u64),
                )),
                _ => None,
            };
            let (target, placing) = match &deployment {
                // Failed: the canaries stop, the old ones keep serving, nothing is placed.
                Some((_, (_, _, true))) => {
                    to_stop.extend(current.drain(..).map(|a| a.1));
                    (0, None)
                }
                Some((st, (dep, false, false))) => (st.canary as usize, Some((dep.clone(), true))),
                Some((_, (dep, true, false))) => {
                    to_stop.extend(old.iter().map(|a| a.1.clone()));
                    (count, Some((dep.clone(), false)))
                }
                None => {
                    to_stop.extend(old.iter().map(|a| a.1.clone()));
                    (count, None)
                }
            };
            let stopped = highest_to_stop(&current, target);
            current.retain(|a| !stopped.contains(&a.1));
            to_stop.extend(stopped);
            let mut used: BTreeSet<u64> = current.iter().map(|a| a.0).collect();
            let mut slot = 0;
            for _ in current.len()..target {
                while used.contains(&slot) {
                    slot += 1;
                }
                used.insert(slot);
                let id = uuid();
                to_start.push(Placement {
                    id,
                    group_json: g.clone(),
                    slot,
                    group: group.clone(),
                    deployment: placing.clone(),
                });
                slot += 1;
            }
        }
        // Place: register the group's services before the task starts (as Nomad does).
        for Placement {
            id,
            group_json: g,
            slot,
            group,
            deployment,
        } in &to_start
        {
            let idx = i.bump();
            let canary = deployment.as_ref().is_some_and(|d| d.1);
            let port = dynamic_port(&i);
            let task = g["Tasks"][0]["Name"].as_str().unwrap_or("task").to_string();
            let services: Vec<ServiceRec> = g["Services"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    let name = s["Name"].as_str().unwrap_or("").to_string();
                    let label = s["PortLabel"].as_str().unwrap_or("http");
                    let list = |v: &Value| -> Vec<String> {
                        v.as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|t| t.as_str().map(str::to_string))
                            .collect()
                    };
                    let tags = list(&s["Tags"]);
                    ServiceRec {
                        id: format!("_nomad-task-{id}-group-{group}-{name}-{label}"),
                        name,
                        tags: if canary && s["CanaryTags"].is_array() {
                            list(&s["CanaryTags"])
                        } else {
                            tags.clone()
                        },
                        promoted_tags: tags,
                        meta: s["Meta"].as_object().cloned().unwrap_or_default(),
                        provider: s["Provider"]
                            .as_str()
                            .filter(|p| !p.is_empty())
                            .unwrap_or("consul")
                            .to_string(),
                        create_index: idx,
                    }
                })
                .collect();
            let now = now_ns();
            i.allocs.insert(
                id.clone(),
                AllocRec {
                    id: id.clone(),
                    job_id: job_id.to_string(),
                    namespace: job["Namespace"].as_str().unwrap_or("default").to_string(),
                    group: group.clone(),
                    task,
                    slot: *slot,
                    job_version: version,
                    group_spec: group_spec(g),
                    desired: "run".into(),
                    client: "pending".into(),
                    task_state: "pending".into(),
                    failed: false,
                    started_at: None,
                    finished_at: None,
                    create_index: idx,
                    modify_index: idx,
                    create_time: now,
                    modify_time: now,
                    port,
                    pid: None,
                    services,
                    check_passing: false,
                    stop: None,
                    deployment: deployment.as_ref().map(|d| d.0.clone()),
                    canary,
                    promoted: false,
                    healthy: None,
                    health_time: 0,
                    health_idx: 0,
                },
            );
            if let Some((dep, canary)) = deployment {
                deployments::placed(&mut i, dep, group, id, *canary);
            }
            i.allocs_idx = idx;
            i.summary_idx = idx;
            i.services_idx = idx;
            i.consul_idx = idx;
        }
    }
    stop_allocs(state, &to_stop);
    for p in to_start {
        tokio::spawn(run_alloc(state.clone(), p.id, p.group_json));
    }
    state.notify();
}

/// An allocation `schedule` places: its group, name index and (a deployment's placement)
/// the deployment and whether it is a canary.
struct Placement {
    id: String,
    group_json: Value,
    slot: u64,
    group: String,
    deployment: Option<(String, bool)>,
}

/// A task group without what changes in place (`Count`, `Update`, `Scaling`: Nomad's
/// `tasksUpdated` does not look at them).
fn group_spec(g: &Value) -> Value {
    let mut g = g.clone();
    if let Some(o) = g.as_object_mut() {
        for k in ["Count", "Update", "Scaling"] {
            o.remove(k);
        }
    }
    g
}

/// Which of a group's live allocations (`(slot, id, version)`, sorted) go when the count is
/// `count`, as Nomad's reconciler chooses (`computeStop`): the names of the highest slots in
/// use (`NameIndex.Highest`, gaps skipped), then, if duplicate names left too few, any others.
fn highest_to_stop(live: &[(u64, String, u64)], count: usize) -> Vec<String> {
    let mut remove = live.len().saturating_sub(count);
    let slots: BTreeSet<u64> = live.iter().map(|a| a.0).collect();
    let highest: BTreeSet<u64> = slots.into_iter().rev().take(remove).collect();
    let mut stop = Vec::new();
    for pass_matches_names in [true, false] {
        for a in live {
            if remove == 0 {
                return stop;
            }
            if (!pass_matches_names || highest.contains(&a.0)) && !stop.contains(&a.1) {
                stop.push(a.1.clone());
                remove -= 1;
            }
        }
    }
    stop
}

/// A port for a new allocation from Nomad's dynamic port range (20000-32000, outside
/// Linux's ephemeral range, so no outgoing connection or `bind(0)` elsewhere takes it), that
/// no allocation whose task may still run holds, and that is free now. Nomad never gives
/// one port to two live allocations of a node; picking from the ephemeral range with
/// `bind(0)` did, when a stopped task had not released it or a new one had not bound it yet.
fn dynamic_port(i: &Inner) -> u16 {
    let held: BTreeSet<u16> = i
        .allocs
        .values()
        .filter(|a| a.pid.is_some() || !a.is_terminal())
        .map(|a| a.port)
        .collect();
    loop {
        let port = fastrand::u16(20_000..32_000);
        if !held.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn stop_job_allocs(state: &Arc<State>, job_id: &str) {
    let ids: Vec<String> = {
        let i = state.inner.lock().unwrap();
        i.allocs
            .values()
            .filter(|a| a.job_id == job_id && a.desired == "run")
            .map(|a| a.id.clone())
            .collect()
    };
    stop_allocs(state, &ids);
}

/// Marks allocations stopped and deregisters their services now; their tasks are killed
/// after the group's shutdown delay by [`run_alloc`].
fn stop_allocs(state: &Arc<State>, ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    {
        let mut stops = state.stop_ordered.lock().unwrap();
        let now = std::time::Instant::now();
        for id in ids {
            stops.entry(id.clone()).or_insert(now);
        }
    }
    let mut i = state.inner.lock().unwrap();
    for id in ids {
        let idx = i.bump();
        if let Some(a) = i.allocs.get_mut(id) {
            a.desired = "stop".into();
            a.modify_index = idx;
            a.modify_time = now_ns();
            a.services.clear();
            if let Some(s) = &a.stop {
                let _ = s.send(true);
            } else if a.pid.is_none() {
                a.client = "complete".into();
            }
        }
        i.allocs_idx = idx;
        i.summary_idx = idx;
        i.services_idx = idx;
        i.consul_idx = idx;
    }
    drop(i);
    state.notify();
}

fn interpolate(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        match rest[start..].find('}') {
            Some(end) => {
                let name = &rest[start + 2..start + end];
                match vars.get(name) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&rest[start..start + end + 1]),
                }
                rest = &rest[start + end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn update_alloc(state: &State, id: &str, f: impl FnOnce(&mut AllocRec)) {
    let mut i = state.inner.lock().unwrap();
    let idx = i.bump();
    if let Some(a) = i.allocs.get_mut(id) {
        f(a);
        a.modify_index = idx;
        a.modify_time = now_ns();
    }
    i.allocs_idx = idx;
    i.summary_idx = idx;
    drop(i);
    state.notify();
}

/// Runs one allocation's task: start, health-check (for Consul), stop on request.
async fn run_alloc(state: Arc<State>, id: String, group: Value) {
    let task = group["Tasks"][0].clone();
    let driver = task["Driver"].as_str().unwrap_or("");
    let (job_id, port, slot, gname, namespace) = {
        let i = state.inner.lock().unwrap();
        let Some(a) = i.allocs.get(&id) else { return };
        (
            a.job_id.clone(),
            a.port,
            a.slot,
            a.group.clone(),
            a.namespace.clone(),
        )
    };
    let (stop_tx, mut stop_rx) = watch::channel(false);
    {
        let mut i = state.inner.lock().unwrap();
        match i.allocs.get_mut(&id) {
            Some(a) if a.desired == "run" => a.stop = Some(stop_tx),
            _ => return,
        }
    }
    if driver != "raw_exec" && driver != "exec" {
        // No Docker here: placed, never started.
        let _ = stop_rx.changed().await;
        update_alloc(&state, &id, |a| {
            a.client = "complete".into();
            a.task_state = "dead".into();
        });
        return;
    }
    let task_name = task["Name"].as_str().unwrap_or("task").to_string();
    let mut vars = BTreeMap::new();
    for (k, v) in [
        ("NOMAD_PORT_http", port.to_string()),
        ("NOMAD_HOST_PORT_http", port.to_string()),
        ("NOMAD_IP_http", "127.0.0.1".into()),
        ("NOMAD_HOST_IP_http", "127.0.0.1".into()),
        ("NOMAD_ADDR_http", format!("127.0.0.1:{port}")),
        ("NOMAD_HOST_ADDR_http", format!("127.0.0.1:{port}")),
        ("NOMAD_ALLOC_ID", id.clone()),
        ("NOMAD_ALLOC_NAME", format!("{job_id}.{gname}[{slot}]")),
        ("NOMAD_ALLOC_INDEX", slot.to_string()),
        ("NOMAD_JOB_ID", job_id.clone()),
        ("NOMAD_JOB_NAME", job_id.clone()),
        ("NOMAD_GROUP_NAME", gname.clone()),
        ("NOMAD_TASK_NAME", task_name.clone()),
        ("NOMAD_NAMESPACE", namespace.clone()),
        ("NOMAD_DC", DC.into()),
        ("NOMAD_REGION", "global".into()),
    ] {
        vars.insert(k.to_string(), v);
    }
    let command = interpolate(task["Config"]["command"].as_str().unwrap_or(""), &vars);
    let args: Vec<String> = task["Config"]["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(|s| interpolate(s, &vars)))
        .collect();
    let dir = state.logs_dir.join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::fs::File::create(dir.join(format!("{task_name}.stdout.0"))).unwrap();
    let err = std::fs::File::create(dir.join(format!("{task_name}.stderr.0"))).unwrap();
    let mut cmd = tokio::process::Command::new(&command);
    cmd.args(&args)
        .envs(&vars)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(true);
    for (k, v) in task["Env"].as_object().into_iter().flatten() {
        cmd.env(k, interpolate(v.as_str().unwrap_or(""), &vars));
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("[nomad double] cannot start {command:?}: {e}");
            update_alloc(&state, &id, |a| {
                a.client = "failed".into();
                a.task_state = "dead".into();
                a.failed = true;
                a.services.clear();
            });
            return;
        }
    };
    let pid = child.id();
    update_alloc(&state, &id, |a| {
        a.pid = pid;
        a.client = "running".into();
        a.task_state = "running".into();
        a.started_at = Some(rfc3339_now());
    });
    let shutdown_delay = Duration::from_nanos(group["ShutdownDelay"].as_u64().unwrap_or(0));
    let kill_timeout = Duration::from_nanos(task["KillTimeout"].as_u64().unwrap_or(5_000_000_000));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut exited = None;
    loop {
        tokio::select! {
            st = child.wait() => { exited = Some(st); break; }
            _ = stop_rx.changed() => break,
            _ = tokio::time::sleep(CHECK_EVERY) => {
                let ok = health_ok(addr).await;
                let changed = {
                    let mut i = state.inner.lock().unwrap();
                    let before = i.allocs.get(&id).map(|a| a.check_passing);
                    if before.is_some_and(|b| b != ok) {
                        if let Some(a) = i.allocs.get_mut(&id) { a.check_passing = ok; }
                        let idx = i.bump();
                        i.consul_idx = idx;
                        true
                    } else { false }
                };
                if changed { state.notify(); }
                if ok {
                    deployments::record_health(&state, &id, true);
                }
            }
        }
    }
    let failed = match exited {
        Some(st) => !st.map(|s| s.success()).unwrap_or(false),
        None => {
            // Stop: services are gone already; let the gateway see it, then signal.
            tokio::time::sleep(shutdown_delay).await;
            if let Some(pid) = pid {
                kill_group(pid, "TERM");
            }
            if tokio::time::timeout(kill_timeout, child.wait())
                .await
                .is_err()
            {
                if let Some(pid) = pid {
                    kill_group(pid, "KILL");
                }
                let _ = child.wait().await;
            }
            false
        }
    };
    let stopped = {
        let i = state.inner.lock().unwrap();
        i.allocs
            .get(&id)
            .map(|a| a.desired != "run")
            .unwrap_or(true)
    };
    update_alloc(&state, &id, |a| {
        a.pid = None;
        a.client = if failed && !stopped {
            "failed".into()
        } else {
            "complete".into()
        };
        a.failed = failed && !stopped;
        a.task_state = "dead".into();
        a.finished_at = Some(rfc3339_now());
        if !stopped {
            a.desired = "stop".into();
            a.services.clear();
        }
    });
    if !stopped {
        eprintln!(
            "[nomad double] allocation {id} (port {port}) exited on its own (failed: {failed})"
        );
        deployments::record_health(&state, &id, false);
        // Crashed: the scheduler replaces it.
        {
            let mut i = state.inner.lock().unwrap();
            let idx = i.bump();
            i.services_idx = idx;
            i.consul_idx = idx;
        }
        schedule(&state, &job_id);
    }
}

async fn health_ok(addr: SocketAddr) -> bool {
    let fut = async {
        let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake::<
            _,
            http_body_util::Empty<Bytes>,
        >(TokioIo::new(stream))
        .await
        .ok()?;
        let driver = tokio::spawn(conn);
        let req = Request::get("/_/health")
            .header("host", addr.to_string())
            .body(http_body_util::Empty::new())
            .ok()?;
        let st = sender.send_request(req).await.ok()?.status();
        driver.abort();
        Some(st == StatusCode::OK)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), fut).await,
        Ok(Some(true))
    )
}

// === services ===

fn registrations<'a>(i: &'a Inner, provider: &str) -> Vec<(&'a AllocRec, &'a ServiceRec)> {
    let mut v: Vec<(&AllocRec, &ServiceRec)> = i
        .allocs
        .values()
        .flat_map(|a| a.services.iter().map(move |s| (a, s)))
        .filter(|(_, s)| s.provider == provider)
        .collect();
    v.sort_by_key(|(a, _)| a.create_index);
    v
}

fn registration_json(a: &AllocRec, s: &ServiceRec) -> Value {
    json!({"ID": s.id, "ServiceName": s.name, "Namespace": a.namespace, "NodeID": NODE_ID,
        "Datacenter": DC, "JobID": a.job_id, "AllocID": a.id, "Tags": s.tags,
        "Address": "127.0.0.1", "Port": a.port, "CreateIndex": s.create_index,
        "ModifyIndex": s.create_index})
}

async fn service(state: &Arc<State>, name: &str, q: &BTreeMap<String, String>) -> Response<Body> {
    nomad_read(
        state,
        q,
        |i| i.services_idx.max(1),
        |i| {
            let list = registrations(i, "nomad")
                .into_iter()
                .filter(|(_, s)| s.name == name)
                .map(|(a, s)| registration_json(a, s));
            Some(Value::Array(list.collect()))
        },
    )
    .await
}

async fn job_services(
    state: &Arc<State>,
    id: &str,
    q: &BTreeMap<String, String>,
) -> Response<Body> {
    nomad_read(
        state,
        q,
        |i| i.services_idx.max(1),
        |i| {
            i.jobs.get(id)?;
            let list = registrations(i, "nomad")
                .into_iter()
                .filter(|(a, _)| a.job_id == id)
                .map(|(a, s)| registration_json(a, s));
            Some(Value::Array(list.collect()))
        },
    )
    .await
}

async fn services_list(state: &Arc<State>, q: &BTreeMap<String, String>) -> Response<Body> {
    nomad_read(
        state,
        q,
        |i| i.services_idx.max(1),
        |i| {
            let mut by_ns: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
            for (a, s) in registrations(i, "nomad") {
                by_ns
                    .entry(a.namespace.clone())
                    .or_default()
                    .entry(s.name.clone())
                    .or_default()
                    .extend(s.tags.iter().cloned());
            }
            let list = by_ns.into_iter().map(|(ns, svcs)| {
                json!({"Namespace": ns, "Services": svcs.into_iter()
                .map(|(n, t)| json!({"ServiceName": n, "Tags": t})).collect::<Vec<_>>()})
            });
            Some(Value::Array(list.collect()))
        },
    )
    .await
}

fn consul_checks(a: &AllocRec, s: &ServiceRec) -> Vec<Value> {
    vec![
        json!({"Node": NODE_NAME, "CheckID": format!("_nomad-check-{}", &a.id[..8]),
            "Name": "watchdog health", "Status": if a.check_passing { "passing" } else { "critical" },
            "Notes": "", "Output": "", "ServiceID": s.id, "ServiceName": s.name,
            "ServiceTags": s.tags, "Namespace": "default"}),
        json!({"Node": NODE_NAME, "CheckID": "serfHealth", "Name": "Serf Health Status",
            "Status": "passing", "Notes": "", "Output": "", "ServiceID": "", "ServiceName": "",
            "ServiceTags": [], "Namespace": "default"}),
    ]
}

async fn health(state: &Arc<State>, name: &str, q: &BTreeMap<String, String>) -> Response<Body> {
    let passing = match q.get("passing").map(String::as_str) {
        None => false,
        Some("") | Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(_) => return text(StatusCode::BAD_REQUEST, "Invalid value for ?passing"),
    };
    consul_read(state, q, |i| i.consul_idx.max(1), |i| {
        registrations(i, "consul")
            .into_iter()
            .filter(|(_, s)| s.name == name)
            .filter(|(a, _)| !passing || a.check_passing)
            .map(|(a, s)| {
                let mut meta = s.meta.clone();
                meta.insert("external-source".into(), json!("nomad"));
                json!({
                    "Node": {"ID": NODE_ID, "Node": NODE_NAME, "Address": "127.0.0.1", "Datacenter": DC,
                        "TaggedAddresses": {"lan": "127.0.0.1", "wan": "127.0.0.1"}, "Meta": {}},
                    "Service": {"ID": s.id, "Service": s.name, "Tags": s.tags, "Address": "127.0.0.1",
                        "TaggedAddresses": {"lan": {"address": "127.0.0.1", "port": a.port}},
                        "Meta": meta, "Port": a.port, "Weights": {"Passing": 1, "Warning": 1},
                        "Namespace": "default"},
                    "Checks": consul_checks(a, s),
                })
            })
            .collect()
    })
    .await
}

async fn catalog(state: &Arc<State>, name: &str, q: &BTreeMap<String, String>) -> Response<Body> {
    consul_read(state, q, |i| i.consul_idx.max(1), |i| {
        registrations(i, "consul")
            .into_iter()
            .filter(|(_, s)| s.name == name)
            .map(|(a, s)| {
                json!({"ID": NODE_ID, "Node": NODE_NAME, "Address": "127.0.0.1", "Datacenter": DC,
                    "TaggedAddresses": {"lan": "127.0.0.1", "wan": "127.0.0.1"}, "NodeMeta": {},
                    "CreateIndex": s.create_index, "ModifyIndex": s.create_index,
                    "ServiceAddress": "127.0.0.1", "ServiceEnableTagOverride": false,
                    "ServiceID": s.id, "ServiceName": s.name, "ServicePort": a.port,
                    "ServiceMeta": s.meta, "ServiceTaggedAddresses": {"lan": {"address": "127.0.0.1", "port": a.port}},
                    "ServiceTags": s.tags,
                    "ServiceProxy": {"DestinationServiceName": "", "DestinationServiceID": "",
                        "LocalServiceAddress": "", "LocalServicePort": 0, "Config": null, "Upstreams": null},
                    "ServiceConnect": {"Native": false, "Proxy": null}, "Namespace": "default"})
            })
            .collect()
    })
    .await
}

// === logs ===

/// `GET /v1/client/fs/logs/:alloc` with `plain=true` (raw bytes) and `follow`.
fn logs(state: &Arc<State>, alloc: &str, q: &BTreeMap<String, String>) -> Response<Body> {
    let task = q.get("task").cloned().unwrap_or_default();
    let kind = q.get("type").cloned().unwrap_or_default();
    if kind != "stdout" && kind != "stderr" {
        return text(StatusCode::BAD_REQUEST, "must provide logs type");
    }
    {
        let i = state.inner.lock().unwrap();
        match i.allocs.get(alloc) {
            None => return text(StatusCode::NOT_FOUND, "alloc not found"),
            Some(a) if a.task != task => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!("unknown task name {task:?}"),
                )
            }
            _ => {}
        }
    }
    let path = state.logs_dir.join(alloc).join(format!("{task}.{kind}.0"));
    let follow = q.get("follow").is_some_and(|v| v == "true");
    let offset: u64 = q.get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
    let from_end = q.get("origin").is_some_and(|v| v == "end");
    let state = state.clone();
    let alloc = alloc.to_string();
    let stream = futures_util::stream::unfold(None::<u64>, move |pos| {
        let (path, state, alloc) = (path.clone(), state.clone(), alloc.clone());
        async move {
            let mut pos = pos;
            loop {
                let data = std::fs::read(&path).unwrap_or_default();
                let len = data.len() as u64;
                let start = pos.unwrap_or(if from_end {
                    len.saturating_sub(offset)
                } else {
                    offset.min(len)
                });
                if start < len {
                    let chunk = Bytes::copy_from_slice(&data[start as usize..]);
                    return Some((Ok::<_, std::io::Error>(Frame::data(chunk)), Some(len)));
                }
                let running = state
                    .inner
                    .lock()
                    .unwrap()
                    .allocs
                    .get(&alloc)
                    .is_some_and(|a| a.pid.is_some());
                if !follow || !running {
                    return None;
                }
                pos = Some(start);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut()
        .insert("content-type", "text/plain".parse().unwrap());
    r
}

// === variables ===
//
// `/v1/var/:path` and `/v1/vars` as `../shared/reference/nomad-variables.md` (sections 2-9)
// describes Nomad 1.11: plain writes with `?cas=`, deletes (204), and the three lock
// operations selected by the presence of their query key. Lock leases run on the double's
// lock clock ([`LockClock`]): an acquire or a renew starts a lease of 2 x TTL; a renew after
// it ended is refused; the lock itself is cleared LockDelay after the lease ended, evaluated
// lazily when a variable request or a list comes in (a held blocking read does not wake at
// that moment, it wakes on the next variable write).

const DEFAULT_NAMESPACE: &str = "default";
const MIN_LOCK_TTL: Duration = Duration::from_secs(10);
const MAX_LOCK_TTL: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(15);
const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);
const MAX_VARIABLE_SIZE: usize = 65536;
const LOCK_OPS: [&str; 3] = ["lock-acquire", "lock-renew", "lock-release"];

/// The clock variable-lock leases run on: real time by default; tests may pause it and move
/// it forward ([`NomadDouble::pause_lock_clock`], [`NomadDouble::advance_lock_clock`]).
pub struct LockClock {
    /// The reading when `since` was taken (or the frozen reading while paused).
    base: Duration,
    since: std::time::Instant,
    paused: bool,
}

/// One successful `POST /v1/job/:id/scale`, and who sent it.
#[derive(Debug, Clone)]
pub struct ScaleCall {
    pub job: String,
    pub group: String,
    pub count: Option<i64>,
    /// The `X-Nomad-Token` (or `Authorization: Bearer`) the call carried: a test gives each
    /// gateway its own `NOMAD_TOKEN` (with the double's ACLs off) to tell them apart.
    pub token: Option<String>,
    pub user_agent: Option<String>,
    /// When the double applied it, in real time and on the lock clock.
    pub at: std::time::Instant,
    pub lock_clock: Duration,
    /// The Raft index the call was applied at (strictly increasing across calls).
    pub index: u64,
}

/// Who sent a request.
#[derive(Debug, Clone, Default)]
struct Caller {
    token: Option<String>,
    user_agent: Option<String>,
}

struct VarRec {
    items: BTreeMap<String, String>,
    lock: Option<LockRec>,
    create_index: u64,
    modify_index: u64,
    create_time: i64,
    modify_time: i64,
}

struct LockRec {
    id: String,
    ttl: Duration,
    delay: Duration,
    /// When the server's lease timer (2 x TTL from the last acquire or renew) fires, on the
    /// lock clock.
    lease_end: Duration,
}

/// The parts of a variable body the server reads.
#[derive(Default)]
struct VarBody {
    namespace: String,
    items: BTreeMap<String, String>,
    lock: Option<LockBody>,
}

#[derive(Default)]
struct LockBody {
    id: String,
    /// Nanoseconds, signed as Go's `time.Duration`.
    ttl: i128,
    delay: i128,
}

// === impl LockClock ===

impl LockClock {
    fn new() -> Self {
        Self {
            base: Duration::ZERO,
            since: std::time::Instant::now(),
            paused: false,
        }
    }

    fn now(&self) -> Duration {
        if self.paused {
            self.base
        } else {
            self.base + self.since.elapsed()
        }
    }
}

// === impl NomadDouble: variables ===

impl NomadDouble {
    /// Freezes the lock clock: leases and lock delays stop running until
    /// [`NomadDouble::advance_lock_clock`] or [`NomadDouble::resume_lock_clock`].
    pub fn pause_lock_clock(&self) {
        let mut c = self.state.clock.lock().unwrap();
        c.base = c.now();
        c.paused = true;
    }

    /// Lets the lock clock run in real time again, from where it stands.
    pub fn resume_lock_clock(&self) {
        let mut c = self.state.clock.lock().unwrap();
        c.base = c.now();
        c.since = std::time::Instant::now();
        c.paused = false;
    }

    /// Moves the lock clock forward by `by` (paused or not).
    pub fn advance_lock_clock(&self, by: Duration) {
        self.state.clock.lock().unwrap().base += by;
    }

    /// The lock clock's reading (zero at the double's start).
    pub fn lock_clock(&self) -> Duration {
        self.state.lock_now()
    }

    /// Accepts lock TTLs down to `min` instead of Nomad's 10 s, so gateways running in real
    /// time can use short leases in a test. The answer for a TTL out of range keeps Nomad's
    /// message. Default: 10 s, as Nomad.
    pub fn set_min_lock_ttl(&self, min: Duration) {
        *self.state.min_lock_ttl.lock().unwrap() = min;
    }

    /// Every successful scale call so far, in the order the double applied them.
    pub fn scale_calls(&self) -> Vec<ScaleCall> {
        self.state.scale_calls.lock().unwrap().clone()
    }

    /// The stored variable as a read answers it (lock included), if any.
    pub fn variable(&self, namespace: &str, path: &str) -> Option<Value> {
        expire_locks(&self.state);
        let i = self.state.inner.lock().unwrap();
        i.vars
            .get(&(namespace.to_string(), path.to_string()))
            .map(|v| v.full_json(namespace, path))
    }
}

impl State {
    fn lock_now(&self) -> Duration {
        self.clock.lock().unwrap().now()
    }
}

// === impl VarRec ===

impl VarRec {
    fn meta_json(&self, namespace: &str, path: &str) -> Value {
        let mut m = Map::new();
        m.insert("Namespace".into(), json!(namespace));
        m.insert("Path".into(), json!(path));
        if let Some(l) = &self.lock {
            m.insert(
                "Lock".into(),
                json!({"ID": l.id, "TTL": go_duration(l.ttl), "LockDelay": go_duration(l.delay)}),
            );
        }
        m.insert("CreateIndex".into(), json!(self.create_index));
        m.insert("CreateTime".into(), json!(self.create_time));
        m.insert("ModifyIndex".into(), json!(self.modify_index));
        m.insert("ModifyTime".into(), json!(self.modify_time));
        Value::Object(m)
    }

    fn full_json(&self, namespace: &str, path: &str) -> Value {
        let mut v = self.meta_json(namespace, path);
        if !self.items.is_empty() {
            v["Items"] = json!(self.items);
        }
        v
    }
}

/// The zero variable of a lock or CAS conflict: only `Namespace` and `Path` set.
fn zero_variable(namespace: &str, path: &str) -> Value {
    json!({"Namespace": namespace, "Path": path, "CreateIndex": 0, "CreateTime": 0,
           "ModifyIndex": 0, "ModifyTime": 0})
}

fn conflict(v: &Value, index: u64) -> Response<Body> {
    let mut r = json_resp(v);
    *r.status_mut() = StatusCode::CONFLICT;
    nomad_index(r, index)
}

/// Go's `time.Duration.String()`, `""` for zero (the lock's MarshalJSON).
fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    let frac = |v: u128, scale: u128| -> String {
        let (w, f) = (scale.ilog10() as usize, v % scale);
        if f == 0 {
            format!("{}", v / scale)
        } else {
            let digits = format!("{f:0w$}");
            format!("{}.{}", v / scale, digits.trim_end_matches('0'))
        }
    };
    match ns {
        0 => String::new(),
        1..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{}µs", frac(ns, 1_000)),
        1_000_000..1_000_000_000 => format!("{}ms", frac(ns, 1_000_000)),
        _ => {
            let secs = ns / 1_000_000_000;
            let (h, m) = (secs / 3600, secs / 60 % 60);
            let s = frac(ns % 60_000_000_000, 1_000_000_000);
            match (h, m) {
                (0, 0) => format!("{s}s"),
                (0, m) => format!("{m}m{s}s"),
                (h, m) => format!("{h}h{m}m{s}s"),
            }
        }
    }
}

/// Go's `time.ParseDuration`, in (signed) nanoseconds, with its error texts.
fn go_parse_duration(orig: &str) -> Result<i128, String> {
    let invalid = || format!("time: invalid duration {orig:?}");
    let (neg, mut rest) = match orig.as_bytes().first() {
        Some(b'-') => (true, &orig[1..]),
        Some(b'+') => (false, &orig[1..]),
        _ => (false, orig),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let digits_end = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let n = digits_end(rest);
        let int_part = &rest[..n];
        rest = &rest[n..];
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let n = digits_end(r);
            frac_part = &r[..n];
            rest = &r[n..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let n = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..n];
        rest = &rest[n..];
        let scale: i128 = match unit {
            "" => return Err(format!("time: missing unit in duration {orig:?}")),
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(format!("time: unknown unit {unit:?} in duration {orig:?}")),
        };
        let int: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| invalid())?
        };
        total += int.checked_mul(scale).ok_or_else(invalid)?;
        let frac_part = &frac_part[..frac_part.len().min(18)];
        if !frac_part.is_empty() {
            let f: i128 = frac_part.parse().map_err(|_| invalid())?;
            total += f * scale / 10i128.pow(frac_part.len() as u32);
        }
        if total > i64::MAX as i128 {
            return Err(invalid());
        }
    }
    Ok(if neg { -total } else { total })
}

/// A lock duration as the server's UnmarshalJSON reads it: a Go duration string or a
/// number of nanoseconds.
fn lock_duration(v: Option<&Value>, field: &str) -> Result<i128, String> {
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(Value::String(s)) if s.is_empty() => Ok(0),
        Some(Value::String(s)) => go_parse_duration(s),
        Some(Value::Number(n)) => n.as_i64().map(i128::from).ok_or_else(|| {
            format!("json: cannot unmarshal number {n} into Go value of type int64")
        }),
        Some(other) => Err(format!(
            "json: cannot unmarshal {} into Go struct field VariableLock.{field}",
            crate::support::nomad_strict::json_kind(other)
        )),
    }
}

/// A variable request body; `Err` is the 400 text.
fn var_body(body: &[u8]) -> Result<VarBody, String> {
    if body.is_empty() {
        return Err("EOF".into());
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let obj = v.as_object().ok_or_else(|| {
        format!(
            "json: cannot unmarshal {} into Go value of type structs.VariableDecrypted",
            crate::support::nomad_strict::json_kind(&v)
        )
    })?;
    let mut out = VarBody::default();
    match obj.get("Namespace") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => out.namespace = s.clone(),
        Some(o) => return Err(format!("json: cannot unmarshal {} into Go struct field VariableDecrypted.Namespace of type string", crate::support::nomad_strict::json_kind(o))),
    }
    match obj.get("Items") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let Some(s) = v.as_str() else {
                    return Err(format!("json: cannot unmarshal {} into Go struct field VariableDecrypted.Items of type string", crate::support::nomad_strict::json_kind(v)));
                };
                out.items.insert(k.clone(), s.to_string());
            }
        }
        Some(o) => return Err(format!("json: cannot unmarshal {} into Go struct field VariableDecrypted.Items of type structs.VariableItems", crate::support::nomad_strict::json_kind(o))),
    }
    match obj.get("Lock") {
        None | Some(Value::Null) => {}
        Some(Value::Object(l)) => {
            out.lock = Some(LockBody {
                id: l.get("ID").and_then(Value::as_str).unwrap_or("").to_string(),
                ttl: lock_duration(l.get("TTL"), "TTL")?,
                delay: lock_duration(l.get("LockDelay"), "LockDelay")?,
            })
        }
        Some(o) => return Err(format!("json: cannot unmarshal {} into Go struct field VariableMetadata.Lock of type structs.VariableLock", crate::support::nomad_strict::json_kind(o))),
    }
    Ok(out)
}

/// `%XX` escapes decoded (Go's `req.URL.Path`); `None` for a bad escape.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(s.get(i + 1..i + 3)?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Nomad's `validatePath`: the character rule and the reserved `nomad/` tree.
fn validate_var_path(path: &str) -> Result<(), String> {
    let ok_chars = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~' | b'/'));
    if path.is_empty() || path.len() > 128 || !ok_chars {
        return Err(format!("invalid path {path:?}"));
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts[0] != "nomad" {
        return Ok(());
    }
    match parts.as_slice() {
        [_] => Err("\"nomad\" is a reserved top-level directory path, but you may write variables to \"nomad/jobs\", \"nomad/job-templates\", or below".into()),
        [_, "jobs", ..] | [_, "sentinel", ..] | [_, "job-templates", _] => Ok(()),
        [_, "job-templates", ..] => Err("\"nomad/job-templates\" is a reserved directory path, but you may write variables at the level below it, for example, \"nomad/job-templates/template-name\"".into()),
        _ => Err("only paths at \"nomad/jobs\" or \"nomad/job-templates\" and below are valid paths under the top-level \"nomad\" directory".into()),
    }
}

fn query_namespace(q: &BTreeMap<String, String>) -> String {
    q.get("namespace")
        .filter(|n| !n.is_empty())
        .cloned()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
}

/// The namespace of a write, acquire or release: the body's, else the query's, else
/// `default` (Nomad's code; its docs say the query wins).
fn body_namespace(b: &VarBody, q: &BTreeMap<String, String>) -> String {
    if b.namespace.is_empty() {
        query_namespace(q)
    } else {
        b.namespace.clone()
    }
}

/// `?cas=`: absent, a number, or the 400 to answer.
fn cas_param(q: &BTreeMap<String, String>) -> Result<Option<u64>, Response<Body>> {
    match q.get("cas") {
        None => Ok(None),
        Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
            text(
                StatusCode::BAD_REQUEST,
                &format!("can not parse cas: strconv.ParseUint: parsing {v:?}: invalid syntax"),
            )
        }),
    }
}

/// Clears every lock whose lease ended at least its LockDelay ago (what Nomad's leader does
/// when the delay timer fires: a Raft write that bumps the variable's ModifyIndex).
fn expire_locks(state: &State) {
    let now = state.lock_now();
    let mut i = state.inner.lock().unwrap();
    let due: Vec<(String, String)> = i
        .vars
        .iter()
        .filter(|(_, v)| {
            v.lock
                .as_ref()
                .is_some_and(|l| now >= l.lease_end + l.delay)
        })
        .map(|(k, _)| k.clone())
        .collect();
    if due.is_empty() {
        return;
    }
    for k in due {
        let idx = i.bump();
        i.vars_idx = idx;
        if let Some(v) = i.vars.get_mut(&k) {
            v.lock = None;
            v.modify_index = idx;
            v.modify_time = now_ns();
        }
    }
    drop(i);
    state.notify();
}

/// `/v1/var/:path` (`raw` is the path as sent, still escaped).
async fn variable(
    state: &Arc<State>,
    method: &Method,
    raw: &str,
    q: &BTreeMap<String, String>,
    body: &[u8],
) -> Response<Body> {
    let Some(path) = percent_decode(raw) else {
        return text(StatusCode::BAD_REQUEST, "invalid URL escape");
    };
    if path.is_empty() {
        return text(StatusCode::BAD_REQUEST, "missing variable path");
    }
    expire_locks(state);
    match *method {
        Method::GET => var_read(state, &path, q).await,
        Method::PUT | Method::POST => var_put(state, &path, q, body),
        Method::DELETE => var_delete(state, &path, q),
        _ => text(StatusCode::BAD_REQUEST, "Invalid method"),
    }
}

async fn var_read(state: &Arc<State>, path: &str, q: &BTreeMap<String, String>) -> Response<Body> {
    let key = (query_namespace(q), path.to_string());
    let table = |i: &Inner| i.vars.get(&key).map_or(i.vars_idx, |v| v.modify_index);
    let idx = match block(state, q, NOMAD_MAX_WAIT, table).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    expire_locks(state);
    let i = state.inner.lock().unwrap();
    match i.vars.get(&key) {
        Some(v) => nomad_index(json_resp(&v.full_json(&key.0, path)), v.modify_index),
        None => nomad_index(text(StatusCode::NOT_FOUND, "variable not found"), idx),
    }
}

/// PUT/POST: a plain write, or the lock operation its query names.
fn var_put(
    state: &Arc<State>,
    path: &str,
    q: &BTreeMap<String, String>,
    body: &[u8],
) -> Response<Body> {
    let ops: Vec<&str> = LOCK_OPS
        .into_iter()
        .filter(|k| q.contains_key(*k))
        .collect();
    if ops.len() > 1 {
        return text(StatusCode::BAD_REQUEST, "multiple lock operations");
    }
    if !ops.is_empty() && q.contains_key("cas") {
        return text(
            StatusCode::BAD_REQUEST,
            "CAS can't be used with lock operations",
        );
    }
    let b = match var_body(body) {
        Ok(b) => b,
        Err(m) => return text(StatusCode::BAD_REQUEST, &m),
    };
    match ops.first().copied() {
        None => var_write(state, path, q, b),
        Some("lock-acquire") => lock_acquire(state, path, q, b),
        Some("lock-renew") => lock_renew(state, path, q, b),
        _ => lock_release(state, path, q, b),
    }
}

/// Checks shared by writes and acquires: namespace, path, size.
fn check_write(namespace: &str, path: &str, b: &VarBody) -> Result<(), Response<Body>> {
    let bad = |m: &str| Err(text(StatusCode::BAD_REQUEST, m));
    if namespace == "*" {
        return bad("can not target wildcard (\"*\")namespace");
    }
    if let Err(m) = validate_var_path(path) {
        return bad(&m);
    }
    let size: usize = b.items.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_VARIABLE_SIZE {
        return bad("variables are limited to 64KiB in total size");
    }
    Ok(())
}

fn var_write(
    state: &Arc<State>,
    path: &str,
    q: &BTreeMap<String, String>,
    b: VarBody,
) -> Response<Body> {
    if b.items.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "variable missing required Items object",
        );
    }
    if b.lock.as_ref().is_some_and(|l| l.ttl != 0 || l.delay != 0) {
        return text(
            StatusCode::BAD_REQUEST,
            "variable should not contain lock definition",
        );
    }
    let ns = body_namespace(&b, q);
    if let Err(r) = check_write(&ns, path, &b) {
        return r;
    }
    let cas = match cas_param(q) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let key = (ns, path.to_string());
    let lock_id = b.lock.as_ref().map_or("", |l| l.id.as_str());
    let mut i = state.inner.lock().unwrap();
    let vars_idx = i.vars_idx;
    if let Some(v) = i.vars.get(&key) {
        if v.lock.as_ref().is_some_and(|l| l.id != lock_id) {
            return conflict(&zero_variable(&key.0, path), vars_idx);
        }
    }
    match (cas, i.vars.get(&key)) {
        (None, _) | (Some(0), None) => {}
        (Some(n), Some(v)) if v.modify_index == n => {}
        (Some(_), Some(v)) => return conflict(&v.full_json(&key.0, path), v.modify_index),
        (Some(_), None) => return conflict(&zero_variable(&key.0, path), vars_idx),
    }
    let idx = i.bump();
    i.vars_idx = idx;
    let now = now_ns();
    let v = i.vars.entry(key.clone()).or_insert_with(|| VarRec {
        items: BTreeMap::new(),
        lock: None,
        create_index: idx,
        modify_index: idx,
        create_time: now,
        modify_time: now,
    });
    v.items = b.items;
    v.modify_index = idx;
    v.modify_time = now;
    let out = v.full_json(&key.0, path);
    drop(i);
    state.notify();
    nomad_index(json_resp(&out), idx)
}

fn lock_acquire(
    state: &Arc<State>,
    path: &str,
    q: &BTreeMap<String, String>,
    b: VarBody,
) -> Response<Body> {
    let ns = body_namespace(&b, q);
    if let Err(r) = check_write(&ns, path, &b) {
        return r;
    }
    let req = b.lock.unwrap_or_default();
    if req.ttl < 0 || req.delay < 0 {
        return text(
            StatusCode::BAD_REQUEST,
            "Lock delay and TTL must be positive",
        );
    }
    let or_default = |ns: i128, d: Duration| {
        if ns == 0 {
            d
        } else {
            Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
        }
    };
    let ttl = or_default(req.ttl, DEFAULT_LOCK_TTL);
    let delay = or_default(req.delay, DEFAULT_LOCK_DELAY);
    let min = *state.min_lock_ttl.lock().unwrap();
    if ttl < min || ttl > MAX_LOCK_TTL {
        return text(
            StatusCode::BAD_REQUEST,
            "TTL must be between 10 seconds and 24 hours",
        );
    }
    let id = if req.id.is_empty() { uuid() } else { req.id };
    let now = state.lock_now();
    let key = (ns, path.to_string());
    let mut i = state.inner.lock().unwrap();
    let vars_idx = i.vars_idx;
    if let Some(v) = i.vars.get(&key) {
        if v.lock.as_ref().is_some_and(|l| l.id != id) {
            return conflict(&zero_variable(&key.0, path), vars_idx);
        }
    }
    let idx = i.bump();
    i.vars_idx = idx;
    let wall = now_ns();
    let v = i.vars.entry(key.clone()).or_insert_with(|| VarRec {
        items: BTreeMap::new(),
        lock: None,
        create_index: idx,
        modify_index: idx,
        create_time: wall,
        modify_time: wall,
    });
    // Acquire overwrites the items, with nothing when the request carries none.
    v.items = b.items;
    v.lock = Some(LockRec {
        id,
        ttl,
        delay,
        lease_end: now + 2 * ttl,
    });
    v.modify_index = idx;
    v.modify_time = wall;
    let out = v.full_json(&key.0, path);
    drop(i);
    state.notify();
    nomad_index(json_resp(&out), idx)
}

/// Renew reads the namespace from the query only, and the lock ID from the body.
fn lock_renew(
    state: &Arc<State>,
    path: &str,
    q: &BTreeMap<String, String>,
    b: VarBody,
) -> Response<Body> {
    let id = b.lock.map(|l| l.id).unwrap_or_default();
    if id.is_empty() {
        return text(StatusCode::BAD_REQUEST, "missing lock information");
    }
    let key = (query_namespace(q), path.to_string());
    let now = state.lock_now();
    let mut i = state.inner.lock().unwrap();
    let Some(v) = i.vars.get_mut(&key) else {
        return text(StatusCode::NOT_FOUND, "variable doesn't exist");
    };
    let Some(l) = v.lock.as_mut() else {
        return text(StatusCode::CONFLICT, "variable doesn't hold a lock");
    };
    if l.id != id || now >= l.lease_end {
        return text(StatusCode::CONFLICT, "attempting to modify locked variable");
    }
    l.lease_end = now + 2 * l.ttl;
    let index = v.modify_index;
    nomad_index(json_resp(&v.meta_json(&key.0, path)), index)
}

fn lock_release(
    state: &Arc<State>,
    path: &str,
    q: &BTreeMap<String, String>,
    b: VarBody,
) -> Response<Body> {
    if !b.items.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "lock release operation doesn't take variable items",
        );
    }
    let id = b.lock.as_ref().map(|l| l.id.clone()).unwrap_or_default();
    if id.is_empty() {
        return text(StatusCode::BAD_REQUEST, "missing lock information");
    }
    let key = (body_namespace(&b, q), path.to_string());
    let mut i = state.inner.lock().unwrap();
    let (vars_idx, idx) = (i.vars_idx, i.index + 1);
    let Some(v) = i.vars.get_mut(&key) else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "variable doesn't exist");
    };
    match &v.lock {
        None => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "variable doesn't hold a lock",
            )
        }
        Some(l) if l.id != id => return conflict(&zero_variable(&key.0, path), vars_idx),
        Some(_) => {}
    }
    v.lock = None;
    v.modify_index = idx;
    v.modify_time = now_ns();
    let out = v.meta_json(&key.0, path);
    i.index = idx;
    i.vars_idx = idx;
    drop(i);
    state.notify();
    nomad_index(json_resp(&out), idx)
}

fn var_delete(state: &Arc<State>, path: &str, q: &BTreeMap<String, String>) -> Response<Body> {
    let cas = match cas_param(q) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let key = (query_namespace(q), path.to_string());
    let mut i = state.inner.lock().unwrap();
    let vars_idx = i.vars_idx;
    if let Some(v) = i.vars.get(&key) {
        if v.lock.is_some() {
            return conflict(&zero_variable(&key.0, path), vars_idx);
        }
    }
    match (cas, i.vars.get(&key)) {
        (None, _) => {}
        (Some(n), Some(v)) if v.modify_index == n => {}
        (Some(_), Some(v)) => return conflict(&v.full_json(&key.0, path), v.modify_index),
        (Some(_), None) => return conflict(&zero_variable(&key.0, path), vars_idx),
    }
    let idx = i.bump();
    if i.vars.remove(&key).is_some() {
        i.vars_idx = idx;
    }
    drop(i);
    state.notify();
    let mut r = Response::new(
        Full::new(Bytes::new())
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *r.status_mut() = StatusCode::NO_CONTENT;
    nomad_index(r, idx)
}

/// `GET /v1/vars?prefix=&namespace=` (`*`: every namespace): metadata, never `null`.
async fn list_vars(state: &Arc<State>, q: &BTreeMap<String, String>) -> Response<Body> {
    expire_locks(state);
    let ns = query_namespace(q);
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    let idx = match block(state, q, NOMAD_MAX_WAIT, |i| i.vars_idx).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    expire_locks(state);
    let i = state.inner.lock().unwrap();
    let list: Vec<Value> = i
        .vars
        .iter()
        .filter(|((n, p), _)| (ns == "*" || *n == ns) && p.starts_with(&prefix))
        .map(|((n, p), v)| v.meta_json(n, p))
        .collect();
    nomad_index(json_resp(&Value::Array(list)), idx)
}

// === raw answers, for wire-shape tests ===

/// A raw answer of the double, for tests that check wire shapes.
pub struct Raw {
    pub status: u16,
    pub content_type: String,
    pub index: Option<String>,
    pub body: Value,
    pub text: String,
}

/// Sends `body` (as JSON) to the double and returns the answer as it came.
pub async fn raw(double: &NomadDouble, method: &str, path: &str, body: Option<Value>) -> Raw {
    let b = body
        .map(|v| Bytes::from(serde_json::to_vec(&v).unwrap()))
        .unwrap_or_default();
    let r = crate::support::request(double.addr(), method, path, &[], b).await;
    let text = r.text();
    Raw {
        status: r.status,
        content_type: r.header("content-type").unwrap_or("").to_string(),
        index: r
            .header("x-nomad-index")
            .or(r.header("x-consul-index"))
            .map(str::to_string),
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

impl Raw {
    /// The blocking-query index header, as a number.
    pub fn index_u64(&self) -> Option<u64> {
        self.index.as_deref().and_then(|v| v.parse().ok())
    }
}
