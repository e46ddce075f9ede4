//! The watchdog's HTTP server: accept loop, health and readiness, admission, per-call
//! logging, and graceful shutdown.
//!
//! Owns: the listener, the connections, the in-flight count and the http-mode child process.
//! Invariants:
//! - `/_/health` is 200 only while ready (http mode: the upstream accepted a TCP connection)
//!   and not shutting down; `/_/ready` also answers 429 while `max_inflight` calls run.
//! - An in-flight slot is held until the response body is dropped (ended or aborted), so
//!   `max_inflight` bounds running functions, not just response heads; beyond it: 429.
//! - Every function response carries `X-Duration-Seconds` (time to the response head) and
//!   produces one stderr line (method, path, status, duration to the end of the body).
//! - On shutdown: unhealthy first, the listener is closed, open connections finish their
//!   current request (keep-alive off) for up to `write_timeout`, then the http-mode child is
//!   killed. If that child exits on its own, `run` returns an error (the supervisor
//!   restarts the watchdog).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Child;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::config::{Mode, WatchdogConfig};
use super::http::HttpProxy;
use super::process;
use super::response::{self, BoxError, CallError, RespBody};
use super::stderr::log;
use super::streaming::Streaming;
use super::WatchdogError;
use crate::config::parse_duration;

pub(crate) const HEALTH_PATH: &str = "/_/health";
pub(crate) const READY_PATH: &str = "/_/ready";
const X_DURATION_SECONDS: HeaderName = HeaderName::from_static("x-duration-seconds");
const X_TIMEOUT: HeaderName = HeaderName::from_static("x-timeout");

/// How calls reach the function.
enum Handler {
    Streaming(Streaming),
    Http(HttpProxy),
}

/// Shared by every connection.
struct State {
    handler: Handler,
    exec_timeout: Duration,
    max_inflight: usize,
    inflight: Arc<AtomicUsize>,
    /// The function can take calls (always in streaming mode; once the upstream listens).
    ready: AtomicBool,
    shutting_down: AtomicBool,
}

/// One in-flight slot, released on drop.
struct Slot(Arc<AtomicUsize>);

/// Logs a call when its response body is dropped.
struct CallRecord {
    method: Method,
    path: String,
    status: StatusCode,
    start: Instant,
    _slot: Option<Slot>,
}

/// A response body carrying its call's record.
struct Observed {
    inner: RespBody,
    _record: CallRecord,
}

/// Serves `listener` until `shutdown` resolves, then drains (see the module doc).
pub async fn run(
    config: WatchdogConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WatchdogError> {
    let (handler, mut child) = match &config.mode {
        Mode::Streaming => (
            Handler::Streaming(Streaming::new(
                config.fprocess.clone(),
                config.content_type.as_deref(),
            )),
            None,
        ),
        Mode::Http { upstream } => {
            let proxy = HttpProxy::resolve(upstream).await?;
            log!(
                "Forking: {}, upstream {}",
                config.fprocess.join(" "),
                proxy.addr()
            );
            let child = process::spawn_server(&config.fprocess)?;
            (Handler::Http(proxy), Some(child))
        }
    };
    let streaming = matches!(handler, Handler::Streaming(_));
    let state = Arc::new(State {
        handler,
        exec_timeout: config.exec_timeout,
        max_inflight: config.max_inflight,
        inflight: Arc::new(AtomicUsize::new(0)),
        ready: AtomicBool::new(streaming),
        shutting_down: AtomicBool::new(false),
    });

    let probe_state = state.clone();
    let probe = async move {
        match &probe_state.handler {
            Handler::Http(proxy) => proxy.wait_ready().await,
            Handler::Streaming(_) => Ok(()),
        }
    };
    tokio::pin!(probe, shutdown);
    let mut probing = !streaming;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();

    loop {
        tokio::select! {
            () = &mut shutdown => break,
            status = wait_child(&mut child) => {
                let status = match status {
                    Ok(s) => s.to_string(),
                    Err(e) => e.to_string(),
                };
                log!("fprocess exited: {status}");
                return Err(WatchdogError::ProcessExited(status));
            }
            probed = &mut probe, if probing => {
                probing = false;
                probed?;
                state.ready.store(true, Ordering::Release);
                log!("Upstream ready");
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    conns.spawn(serve_connection(
                        stream,
                        remote,
                        state.clone(),
                        stop_rx.clone(),
                        config.read_timeout,
                    ));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly, keep serving.
                    log!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }

    state.shutting_down.store(true, Ordering::Release);
    drop(listener);
    log!(
        "Shutting down: draining {} connection(s) for up to {:?}",
        conns.len(),
        config.write_timeout
    );
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(config.write_timeout, async {
        while conns.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if !drained {
        log!("Drain timed out; aborting {} connection(s)", conns.len());
        conns.shutdown().await;
    }
    if let Some(mut child) = child {
        let _ = child.kill().await;
    }
    log!("Exiting");
    Ok(())
}

/// Resolves when the http-mode child exits; never in streaming mode. Cancel-safe.
async fn wait_child(child: &mut Option<Child>) -> std::io::Result<ExitStatus> {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
    read_timeout: Duration,
) {
    let _ = stream.set_nodelay(true);
    // The client's address for `X-Forwarded-For`, formatted once per connection (cloning it
    // per request only bumps a reference count).
    let forwarded_for = HeaderValue::from_str(&remote.ip().to_string())
        .expect("an IP address is a valid header value");
    let service = service_fn(move |req| {
        let state = state.clone();
        let forwarded_for = forwarded_for.clone();
        async move { Ok::<_, Infallible>(state.handle(req, &forwarded_for).await) }
    });
    let mut builder = http1::Builder::new();
    builder.keep_alive(true);
    if !read_timeout.is_zero() {
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(read_timeout);
    }
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = async { stop.wait_for(|stop| *stop).await.map(|_| ()) } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

// === impl State ===

impl State {
    async fn handle(
        &self,
        req: Request<Incoming>,
        forwarded_for: &HeaderValue,
    ) -> Response<RespBody> {
        match req.uri().path() {
            HEALTH_PATH => self.health(),
            READY_PATH => self.readiness(),
            _ => self.invoke(req, forwarded_for).await,
        }
    }

    fn accepting(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.shutting_down.load(Ordering::Acquire)
    }

    fn health(&self) -> Response<RespBody> {
        if self.accepting() {
            response::text(StatusCode::OK, "OK")
        } else {
            response::text(StatusCode::SERVICE_UNAVAILABLE, "Not ready")
        }
    }

    fn readiness(&self) -> Response<RespBody> {
        if !self.accepting() {
            response::text(StatusCode::SERVICE_UNAVAILABLE, "Not ready")
        } else if self.max_inflight > 0
            && self.inflight.load(Ordering::Acquire) >= self.max_inflight
        {
            response::text(StatusCode::TOO_MANY_REQUESTS, "Busy")
        } else {
            response::text(StatusCode::OK, "OK")
        }
    }

    /// Takes an in-flight slot, or None when `max_inflight` calls are running.
    fn admit(&self) -> Option<Slot> {
        let before = self.inflight.fetch_add(1, Ordering::AcqRel);
        if self.max_inflight > 0 && before >= self.max_inflight {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(self.inflight.clone()))
    }

    /// exec_timeout, shortened by a smaller positive `X-Timeout` header; None: no limit.
    fn limit(&self, req: &Request<Incoming>) -> Option<Duration> {
        let configured = (!self.exec_timeout.is_zero()).then_some(self.exec_timeout);
        let asked = req
            .headers()
            .get(X_TIMEOUT)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_duration("X-Timeout", v).ok())
            .filter(|d| !d.is_zero());
        match (configured, asked) {
            (Some(c), Some(a)) => Some(c.min(a)),
            (Some(c), None) => Some(c),
            (None, _) => None,
        }
    }

    async fn invoke(
        &self,
        req: Request<Incoming>,
        forwarded_for: &HeaderValue,
    ) -> Response<RespBody> {
        let start = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let slot = self.admit();
        let result = match slot {
            None => Err(CallError::Busy(self.max_inflight)),
            Some(_) => {
                let limit = self.limit(&req);
                let deadline = limit.map(|l| tokio::time::Instant::now() + l);
                match &self.handler {
                    Handler::Streaming(s) => s.call(req, deadline).await,
                    Handler::Http(p) => {
                        p.call(req, forwarded_for, deadline, limit.unwrap_or_default())
                            .await
                    }
                }
            }
        };
        let mut resp = result.unwrap_or_else(|e| {
            if !matches!(e, CallError::Busy(_)) {
                log!("{method} {path}: {e}");
            }
            e.into_response()
        });
        let secs = format!("{:.6}", start.elapsed().as_secs_f64());
        if let Ok(v) = HeaderValue::from_str(&secs) {
            resp.headers_mut().insert(X_DURATION_SECONDS, v);
        }
        let record = CallRecord {
            method,
            path,
            status: resp.status(),
            start,
            _slot: slot,
        };
        resp.map(|inner| {
            Observed {
                inner,
                _record: record,
            }
            .boxed_unsync()
        })
    }
}

// === impl Slot ===

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

// === impl CallRecord ===

impl Drop for CallRecord {
    fn drop(&mut self) {
        log!(
            "{} {} - {} - {:.4}s",
            self.method,
            self.path,
            self.status,
            self.start.elapsed().as_secs_f64()
        );
    }
}

// === impl Observed ===

impl Body for Observed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
