//! `faasgate watchdog` end to end: the real binary on 127.0.0.1 with `port=0`, its address
//! read from the listening line on stderr, and HTTP spoken to it with a hyper client.
//! Needs `python3`, `env`, `cat`, `sha512sum`, `sleep` and `false` on PATH (http mode runs a
//! small python3 server written to a temp dir). Every wait is a bounded poll.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use faasgate::watchdog::LISTENING_PREFIX;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_faasgate");
const WAIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(20);

/// Variables the watchdog reads; cleared so the test's own environment cannot leak in.
const WATCHDOG_VARS: [&str; 13] = [
    "fprocess",
    "function_process",
    "mode",
    "upstream_url",
    "http_upstream_url",
    "port",
    "bind_address",
    "read_timeout",
    "write_timeout",
    "exec_timeout",
    "max_inflight",
    "content_type",
    "X_TEST_ONLY",
];

struct Watchdog {
    child: Child,
    addr: Option<SocketAddr>,
    lines: Arc<Mutex<Vec<String>>>,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Watchdog {
    /// Starts the binary and, unless it exits first, waits for its listening line.
    async fn start(vars: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.arg("watchdog");
        for v in WATCHDOG_VARS {
            cmd.env_remove(v);
        }
        cmd.env("port", "0")
            .env("bind_address", "127.0.0.1")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn faasgate watchdog");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                eprintln!("[watchdog] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        let mut wd = Watchdog {
            child,
            addr: None,
            lines,
        };
        let addr = wd
            .wait_for(|lines| {
                lines
                    .iter()
                    .find_map(|l| l.strip_prefix(LISTENING_PREFIX))
                    .map(|a| {
                        a.parse::<SocketAddr>()
                            .expect("listening line has an address")
                    })
            })
            .await;
        wd.addr = addr;
        wd
    }

    fn addr(&self) -> SocketAddr {
        self.addr.expect("watchdog is listening")
    }

    /// Polls the stderr lines until `f` finds something (None if the process exited first).
    async fn wait_for<T>(&mut self, f: impl Fn(&[String]) -> Option<T>) -> Option<T> {
        let until = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(t) = f(&self.lines.lock().unwrap()) {
                return Some(t);
            }
            if self.child.try_wait().unwrap().is_some() {
                // Give the reader a moment to drain the pipe, then look once more.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return f(&self.lines.lock().unwrap());
            }
            assert!(
                tokio::time::Instant::now() < until,
                "timed out waiting on watchdog stderr: {:?}",
                self.lines.lock().unwrap()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_line(&mut self, needle: &str) {
        let found = self
            .wait_for(|lines| lines.iter().any(|l| l.contains(needle)).then_some(()))
            .await;
        assert!(found.is_some(), "no stderr line containing {needle:?}");
    }

    async fn wait_exit(&mut self) -> ExitStatus {
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("watchdog exits in time")
            .expect("wait watchdog")
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.id().expect("running") as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0);
    }

    fn stderr_text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// One request on a new connection.
    async fn call(&self, method: Method, uri: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut client = connect(self.addr()).await;
        send(&mut client, method, uri, headers, body).await
    }

    async fn wait_healthy(&self) {
        let until = tokio::time::Instant::now() + WAIT;
        loop {
            if self.call(Method::GET, "/_/health", &[], "").await.status == StatusCode::OK {
                return;
            }
            assert!(tokio::time::Instant::now() < until, "never healthy");
            tokio::time::sleep(POLL).await;
        }
    }
}

async fn connect(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect to watchdog");
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

async fn send(
    client: &mut SendRequest<Full<Bytes>>,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "watchdog.test");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    client.ready().await.expect("connection ready");
    let resp = tokio::time::timeout(WAIT, client.send_request(req))
        .await
        .expect("response in time")
        .expect("response");
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(WAIT, body.collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Gone, or a zombie nobody reaped yet.
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

async fn wait_gone(pid: u32) {
    let until = tokio::time::Instant::now() + WAIT;
    while !process_gone(pid) {
        assert!(tokio::time::Instant::now() < until, "pid {pid} still alive");
        tokio::time::sleep(POLL).await;
    }
}

async fn read_pid(path: &Path) -> u32 {
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if let Ok(pid) = s.trim().parse() {
                return pid;
            }
        }
        assert!(tokio::time::Instant::now() < until, "no pid file {path:?}");
        tokio::time::sleep(POLL).await;
    }
}

const ECHO_SERVER: &str = r#"
import http.server, os, sys
port, pidfile = int(sys.argv[1]), sys.argv[2]
with open(pidfile, "w") as f:
    f.write(str(os.getpid()))

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status = 418 if self.path.startswith("/teapot") else 200
        out = ("method=%s\npath=%s\nport=%d\nhost=%s\nxfh=%s\nbody=" % (
            self.command, self.path, self.client_address[1],
            self.headers.get("Host"), self.headers.get("X-Forwarded-Host"))).encode() + body
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("X-Upstream", "yes")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any

s = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
s.daemon_threads = True
s.serve_forever()
"#;

const SLOW_FUNCTION: &str = r#"
import os, sys, time
with open(sys.argv[1], "w") as f:
    f.write(str(os.getpid()))
time.sleep(60)
"#;

/// Starts http mode in front of the python echo server; returns the watchdog, the temp dir
/// and the server's pid.
async fn start_http_mode(extra: &[(&str, &str)]) -> (Watchdog, tempfile::TempDir, u32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("server.py");
    std::fs::write(&script, ECHO_SERVER).expect("write server.py");
    let pidfile = dir.path().join("server.pid");
    let port = free_port();
    let fprocess = format!("python3 {} {port} {}", script.display(), pidfile.display());
    let upstream = format!("http://127.0.0.1:{port}");
    let mut vars = vec![
        ("mode", "http"),
        ("fprocess", fprocess.as_str()),
        ("upstream_url", upstream.as_str()),
    ];
    vars.extend_from_slice(extra);
    let wd = Watchdog::start(&vars).await;
    wd.wait_healthy().await;
    let pid = read_pid(&pidfile).await;
    (wd, dir, pid)
}

#[tokio::test]
async fn streaming_env_has_cgi_vars_and_own_env() {
    let wd = Watchdog::start(&[("fprocess", "env"), ("X_TEST_ONLY", "from-watchdog")]).await;
    let r = wd
        .call(
            Method::PUT,
            "/some/path?a=1",
            &[("X-Custom-Thing", "hello"), ("Content-Type", "text/plain")],
            "ignored",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let out = text(&r);
    for want in [
        "Http_Method=PUT",
        "Http_Query=a=1",
        "Http_Path=/some/path",
        "Http_X_Custom_Thing=hello",
        "Http_Content_Type=text/plain",
        "Http_Host=watchdog.test",
        "Http_ContentLength=7",
        "X_TEST_ONLY=from-watchdog",
    ] {
        assert!(out.lines().any(|l| l == want), "missing {want} in:\n{out}");
    }
    assert_eq!(r.headers["content-type"], "text/plain");
    let secs: f64 = r.headers["x-duration-seconds"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(secs >= 0.0);
}

#[tokio::test]
async fn streaming_cat_echoes_body_and_logs() {
    let mut wd = Watchdog::start(&[("fprocess", "cat")]).await;
    let body = "hello, watchdog\n".repeat(10_000);
    let r = wd.call(Method::POST, "/", &[], &body).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.len(), body.len());
    assert_eq!(text(&r), body);
    assert_eq!(r.headers["content-type"], "application/octet-stream");
    assert!(r.headers.contains_key("x-duration-seconds"));
    wd.wait_line("Forking fprocess.").await;
    wd.wait_line(&format!("Wrote {} Bytes - Duration: ", body.len()))
        .await;
    wd.wait_line("POST / - 200 OK").await;
}

#[tokio::test]
async fn streaming_content_type_env_wins() {
    let wd = Watchdog::start(&[("fprocess", "cat"), ("content_type", "application/json")]).await;
    let r = wd
        .call(Method::POST, "/", &[("Content-Type", "text/plain")], "{}")
        .await;
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(text(&r), "{}");
}

#[tokio::test]
async fn streaming_sha512sum() {
    let wd = Watchdog::start(&[("fprocess", "sha512sum")]).await;
    let r = wd.call(Method::POST, "/", &[], "hello").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        text(&r),
        "9b71d224bd62f3785d96d46ad3ea3d73319bfbc2890caadae2dff72519673ca7\
         2323c3d99ba5c11d7c7acc6e14b8c5da0c4663475c2e5c3adef46f73bcdec043  -\n"
    );
}

#[tokio::test]
async fn streaming_failure_before_output_is_500() {
    let wd = Watchdog::start(&[("fprocess", "false")]).await;
    let r = wd.call(Method::GET, "/", &[], "").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(text(&r).contains("exit status: 1"), "{}", text(&r));
}

#[tokio::test]
async fn streaming_keeps_connections_alive() {
    let wd = Watchdog::start(&[("fprocess", "cat")]).await;
    let mut client = connect(wd.addr()).await;
    for i in 0..3 {
        let body = format!("call {i}");
        let r = send(&mut client, Method::POST, "/", &[], &body).await;
        assert_eq!(text(&r), body);
    }
}

#[tokio::test]
async fn max_inflight_answers_429() {
    let mut wd = Watchdog::start(&[("fprocess", "sleep 2"), ("max_inflight", "1")]).await;
    let addr = wd.addr();
    let first = tokio::spawn(async move {
        let mut client = connect(addr).await;
        send(&mut client, Method::GET, "/", &[], "").await.status
    });
    wd.wait_line("Forking fprocess.").await;
    let second = wd.call(Method::GET, "/", &[], "").await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    let ready = wd.call(Method::GET, "/_/ready", &[], "").await;
    assert_eq!(ready.status, StatusCode::TOO_MANY_REQUESTS);
    let health = wd.call(Method::GET, "/_/health", &[], "").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    let ready = wd.call(Method::GET, "/_/ready", &[], "").await;
    assert_eq!(ready.status, StatusCode::OK);
}

#[tokio::test]
async fn exec_timeout_answers_504() {
    let wd = Watchdog::start(&[("fprocess", "sleep 30"), ("exec_timeout", "300ms")]).await;
    let r = wd.call(Method::GET, "/", &[], "").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    // X-Timeout may shorten it (a generous exec_timeout, a short header).
    let wd = Watchdog::start(&[("fprocess", "sleep 30"), ("exec_timeout", "60s")]).await;
    let r = wd
        .call(Method::GET, "/", &[("X-Timeout", "200ms")], "")
        .await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn health_and_ready() {
    let wd = Watchdog::start(&[("fprocess", "cat")]).await;
    for path in ["/_/health", "/_/ready"] {
        let r = wd.call(Method::GET, path, &[], "").await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(text(&r), "OK");
    }
}

#[tokio::test]
async fn bad_mode_is_a_config_error() {
    let mut wd = Watchdog::start(&[("fprocess", "cat"), ("mode", "bogus")]).await;
    let status = wd.wait_exit().await;
    assert!(!status.success());
    assert!(wd.addr.is_none());
    assert!(
        wd.stderr_text().contains("mode=\"bogus\""),
        "{}",
        wd.stderr_text()
    );
}

#[tokio::test]
async fn http_mode_proxies_method_path_query_status_and_body() {
    let (wd, _dir, _pid) = start_http_mode(&[]).await;
    let mut client = connect(wd.addr()).await;

    let r = send(&mut client, Method::GET, "/echo/sub?x=1&y=2", &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    let out = text(&r);
    assert!(out.contains("method=GET\n"), "{out}");
    assert!(out.contains("path=/echo/sub?x=1&y=2\n"), "{out}");
    assert!(out.contains("xfh=watchdog.test\n"), "{out}");
    assert_eq!(r.headers["x-upstream"], "yes");
    assert!(r.headers.contains_key("x-duration-seconds"));
    let port_of = |out: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix("port="))
            .map(str::to_string)
    };
    let first_port = port_of(&out);

    let r = send(&mut client, Method::PUT, "/p", &[], "payload").await;
    let out = text(&r);
    assert!(out.contains("method=PUT\n"), "{out}");
    assert!(out.ends_with("body=payload"), "{out}");
    // Keep-alive upstream: the same pooled connection served both calls.
    assert_eq!(
        port_of(&out),
        first_port,
        "upstream connection was not reused"
    );

    let r = send(&mut client, Method::POST, "/redirect", &[], "x").await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.headers["location"], "/elsewhere");

    let r = send(&mut client, Method::DELETE, "/teapot", &[], "").await;
    assert_eq!(r.status, StatusCode::IM_A_TEAPOT);
    assert!(text(&r).contains("method=DELETE\n"));
    let r = send(&mut client, Method::GET, "/after", &[], "").await;
    assert_eq!(
        port_of(&text(&r)),
        first_port,
        "upstream connection was not reused"
    );

    let r = wd.call(Method::GET, "/_/ready", &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn http_mode_sigterm_exits_zero_and_kills_the_function() {
    let (mut wd, _dir, pid) = start_http_mode(&[("write_timeout", "2s")]).await;
    assert!(!process_gone(pid));
    wd.signal(libc::SIGTERM);
    let status = wd.wait_exit().await;
    assert!(status.success(), "{status:?}");
    wait_gone(pid).await;
}

#[tokio::test]
async fn http_mode_exits_nonzero_when_the_function_exits() {
    let port = free_port().to_string();
    let upstream = format!("http://127.0.0.1:{port}");
    let mut wd = Watchdog::start(&[
        ("mode", "http"),
        ("fprocess", "sleep 0.2"),
        ("upstream_url", upstream.as_str()),
    ])
    .await;
    let status = wd.wait_exit().await;
    assert!(!status.success(), "{status:?}");
    assert!(
        wd.stderr_text().contains("fprocess exited"),
        "{}",
        wd.stderr_text()
    );
}

#[tokio::test]
async fn streaming_sigterm_drains_then_kills_inflight_function() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("slow.py");
    std::fs::write(&script, SLOW_FUNCTION).expect("write slow.py");
    let pidfile = dir.path().join("slow.pid");
    let fprocess = format!("python3 {} {}", script.display(), pidfile.display());
    let mut wd =
        Watchdog::start(&[("fprocess", fprocess.as_str()), ("write_timeout", "300ms")]).await;
    let addr = wd.addr();
    let inflight = tokio::spawn(async move {
        let mut client = connect(addr).await;
        let req = Request::get("/")
            .header("host", "watchdog.test")
            .body(Full::new(Bytes::new()))
            .unwrap();
        // The connection is cut at the end of the drain: no response.
        client.send_request(req).await.is_err()
    });
    let pid = read_pid(&pidfile).await;
    wd.signal(libc::SIGTERM);
    let status = wd.wait_exit().await;
    assert!(status.success(), "{status:?}");
    wait_gone(pid).await;
    assert!(tokio::time::timeout(WAIT, inflight).await.unwrap().unwrap());
}
