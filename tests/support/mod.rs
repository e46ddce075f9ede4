//! Test support: the real `faasgate` binary on port 0 with a temporary data dir, a small
//! HTTP/1.1 client over hyper, and bounded polling. Shared by the integration tests.
#![allow(dead_code)]

pub mod nomad_strict;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub const BIN: &str = env!("CARGO_BIN_EXE_faasgate");

/// A running `faasgate serve`.
pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub log: Arc<Mutex<Vec<String>>>,
    /// `Authorization` sent on every `/system/` request that names none
    /// ([`Gateway::with_password`]).
    auth: Option<String>,
    _tmp: Option<tempfile::TempDir>,
}

/// `Basic base64(user:password)`.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Gateway {
    /// Starts `faasgate serve --listen 127.0.0.1:0 --no-auth` on a new data dir.
    pub fn start() -> Self {
        Self::start_with(&["--no-auth"], &[])
    }

    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut g = Self::start_in(&dir, args, env);
        g._tmp = Some(tmp);
        g
    }

    /// Starts a gateway on an existing data dir (restart tests keep the TempDir themselves).
    pub fn start_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_in_cwd(dir, None, args, env)
    }

    /// As [`Gateway::start_in`], with the gateway's working directory `cwd` (else the test's).
    pub fn start_in_cwd(
        dir: &Path,
        cwd: Option<&Path>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut cmd = Command::new(BIN);
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        cmd.arg("serve");
        // Port 0 unless the test names the address (a cluster's peers must know it).
        if !args.contains(&"--listen") {
            cmd.arg("--listen").arg("127.0.0.1:0");
        }
        cmd.arg("--data-dir")
            .arg(dir)
            .args(args)
            .env_remove("FAASGATE_BASIC_AUTH_USER")
            .env_remove("FAASGATE_BASIC_AUTH_PASSWORD")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn faasgate");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find("faasgate is serving listen=") {
                    let addr = line[i + "faasgate is serving listen=".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                eprintln!("[gateway] {line}");
                log2.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a.parse().expect("listen address"),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "gateway did not start; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Gateway {
            child,
            addr,
            data_dir: dir.to_path_buf(),
            log,
            auth: None,
            _tmp: None,
        }
    }

    /// Sends `admin:password` on every `/system/` request that carries no `Authorization`
    /// of its own (start the gateway with `FAASGATE_BASIC_AUTH_PASSWORD` = `password`);
    /// invocations go as the test writes them.
    pub fn with_password(mut self, password: &str) -> Self {
        self.auth = Some(basic_auth("admin", password));
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn req(&self, method: &str, path: &str, body: impl Into<Bytes>) -> Resp {
        self.req_h(method, path, &[], body).await
    }

    pub async fn req_h(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        match &self.auth {
            Some(auth)
                if path.starts_with("/system/")
                    && !headers
                        .iter()
                        .any(|(k, _)| k.eq_ignore_ascii_case("authorization")) =>
            {
                let mut with: Vec<(&str, &str)> = headers.to_vec();
                with.push(("authorization", auth));
                request(self.addr, method, path, &with, body.into()).await
            }
            _ => request(self.addr, method, path, headers, body.into()).await,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.req("GET", path, Bytes::new()).await
    }

    pub async fn post_json(&self, path: &str, v: serde_json::Value) -> Resp {
        self.req_h(
            "POST",
            path,
            &[("content-type", "application/json")],
            serde_json::to_vec(&v).unwrap(),
        )
        .await
    }

    pub async fn deploy(&self, v: serde_json::Value) -> Resp {
        self.post_json("/system/functions", v).await
    }

    pub async fn status(&self, name: &str) -> serde_json::Value {
        let r = self.get(&format!("/system/function/{name}")).await;
        assert_eq!(r.status, 200, "status of {name}: {}", r.text());
        r.json()
    }

    /// Polls the function's status until `cond` holds (bounded).
    pub async fn wait_status(
        &self,
        name: &str,
        what: &str,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.get(&format!("/system/function/{name}")).await;
            if r.status == 200 {
                let v = r.json();
                if cond(&v) {
                    return v;
                }
                if Instant::now() > deadline {
                    panic!("timed out waiting for {name}: {what}; last status {v}");
                }
            } else if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {name}: {what}; last {} {}",
                    r.status,
                    r.text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_available(&self, name: &str, n: u64) -> serde_json::Value {
        self.wait_status(name, &format!("availableReplicas == {n}"), |v| {
            v["availableReplicas"].as_u64() == Some(n)
        })
        .await
    }

    /// Sends SIGTERM and waits (bounded) for the gateway to exit; returns its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("gateway did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            signal(self.child.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn signal(pid: u32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Pids of every live descendant of `pid` (from /proc).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
                // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
                if let Some(after) = stat.rsplit_once(')').map(|x| x.1) {
                    let f: Vec<&str> = after.split_whitespace().collect();
                    if f.len() > 1 && f[0] != "Z" {
                        if let Ok(pp) = f[1].parse() {
                            parents.push((p, pp));
                        }
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &parents {
            if pp == p && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|x| !x.1.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Polls `cond` every 20 ms for at most `limit`.
pub async fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One HTTP/1.1 request on a new connection.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Resp {
    let stream = TcpStream::connect(addr).await.expect("connect to gateway");
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut b = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(body)).expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(90), sender.send_request(req))
        .await
        .expect("response within 90 s")
        .expect("response");
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(90), body.collect())
        .await
        .expect("body within 90 s")
        .expect("body")
        .to_bytes();
    Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// The value of the first `/metrics` sample whose line starts with `prefix` (name and
/// labels, e.g. `gateway_service_count{function_name="f.openfaas-fn"}`).
pub fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A free loopback port (bound, then released: a small race, as with any such helper).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// One load worker: its successes and failures (status, body).
pub type LoadWorker = tokio::task::JoinHandle<(u32, Vec<(u16, String)>)>;

/// Runs `workers` concurrent request loops against `path` until `stop` is set; returns
/// the successes and every failure (status, body).
pub fn spawn_load(
    addr: SocketAddr,
    path: &'static str,
    workers: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<LoadWorker> {
    (0..workers)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = request(addr, "POST", path, &[], Bytes::from_static(b"x")).await;
                    if r.status == 200 {
                        ok += 1;
                    } else {
                        failed.push((r.status, r.text()));
                    }
                }
                (ok, failed)
            })
        })
        .collect()
}

/// Waits for load workers; returns total successes and all failures.
pub async fn join_load(workers: Vec<LoadWorker>) -> (u32, Vec<(u16, String)>) {
    let (mut ok, mut failed) = (0, Vec::new());
    for w in workers {
        let (o, f) = w.await.expect("load worker");
        ok += o;
        failed.extend(f);
    }
    (ok, failed)
}

/// What a client program run by [`run_bounded`] did.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs `cmd` with `stdin` as its input and waits at most `limit` for it to exit (then kills
/// it and panics, showing what it printed). For the real client programs (faas-cli, the
/// Airflow hook's Python) the tests drive; blocking, so call it from `spawn_blocking`.
pub fn run_bounded(cmd: &mut Command, stdin: &[u8], limit: Duration) -> Ran {
    use std::io::{Read, Write};
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
    let mut input = child.stdin.take().expect("stdin piped");
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = reader(Box::new(child.stdout.take().expect("stdout piped")));
    let err = reader(Box::new(child.stderr.take().expect("stderr piped")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = writer.join();
    let ran = Ran {
        code: status.and_then(|s| s.code()),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    if status.is_none() {
        panic!(
            "{:?} did not exit within {limit:?}; stdout:\n{}\nstderr:\n{}",
            cmd.get_program(),
            ran.stdout,
            ran.stderr
        );
    }
    ran
}
