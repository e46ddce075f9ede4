//! Forwarding one invocation to a replica: hold for capacity, pick, send, stream back.
//!
//! Contract (OpenFaaS gateway semantics, reference section 2.3):
//! - method, sub-path, raw query, headers and status are preserved; redirects pass through;
//!   hop-by-hop headers are removed both ways; `X-Call-Id` (kept if sent), `X-Start-Time`
//!   (unix nanoseconds), `X-Forwarded-For` and `X-Forwarded-Host` are added.
//! - Two request forms share one send loop ([`Outbound`]): an `http::Request` (hyper's
//!   server path; `http1::headers::rewrite_request` makes the upstream head) and a [`RawRequest`],
//!   head and body already in upstream form (the byte-level client loop, `dataplane::conn`, which
//!   rewrites heads as bytes). Retries, hold, draining, timeouts and accounting are the
//!   same for both.
//! - The upstream leg is an HTTP/1.1 exchange driven in this request's task on a pooled
//!   `TcpStream` (`http1::pool`, `http1::exchange`): the head (and a body of known small length) in one write, a
//!   streamed body after it (chunked when its length is unknown), then the response head
//!   parsed with `httparse` (`http1`; 1xx skipped, a malformed head is a 502) and the body
//!   read by its framing as the client takes it (`response::ProxiedBody`). The request is
//!   written from `&Request`, never consumed, so a bodiless request can be sent again as is.
//! - A request is retried on another replica only when it was never sent: connect failure, a
//!   bodiless request whose write failed on a reused connection, or a replica that is
//!   draining (see `replica`). One more case: a bodiless request answered 429 (the
//!   watchdog's `max_inflight`: the call was refused, not run) goes to another replica when
//!   one is in rotation and not throttled itself; else the 429 reaches the client. And a
//!   bodiless GET/HEAD/OPTIONS/TRACE whose reused keep-alive connection turns out closed by
//!   the replica (no response byte) is sent again, as Go's transport does: a replica killed
//!   between requests cannot have acted on it.
//! - Errors map to statuses in one place, [`ForwardError::status`]: no ready replica within
//!   the hold timeout 503, hold queue full 429, upstream failure 502, upstream timeout 504,
//!   a malformed chunked request body 400 and one that stalls past the client body timeout
//!   408 (both close the client connection; nothing of the request is sent before its
//!   body's first piece is read, and a connection that carried part of it is dropped).
//! - Once the response head is relayed, each wait for more of its body is bounded by
//!   `body_timeout` (`http1::body::PooledResponse::idle_timeout`): past it the client connection is
//!   cut and the call recorded as a 504.
//! - No lock is taken and nothing is allocated per request in this module (proved by
//!   `tests/alloc_budget.rs`): the header values made per request (`X-Call-Id`,
//!   `X-Start-Time`) are carved out of a per-thread slab (`http1::headers::slab_value`), the
//!   upstream URI is a slice of the request's own (or static), and `X-Forwarded-For` is
//!   formatted once per client connection.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::time::Sleep;

use crate::dataplane::balance;
use crate::dataplane::replica::{PendingGuard, Replica, DOWN_MS};
use crate::dataplane::response::{GatewayBody, ProxiedBody};
use crate::dataplane::table::FunctionHandle;
use crate::http1::body::{Upload, UpstreamBody};
use crate::http1::codec::{self as http1, Framing, RawHead, ResponseHead};
use crate::http1::exchange::{coarse_deadline, exchange, idempotent, Failure};
use crate::http1::headers::{
    new_call_id, rewrite_request, start_time_header, strip_hop_by_hop, BadTarget, Peer, X_CALL_ID,
    X_START_TIME,
};
use crate::http1::pool::Conn;
use crate::http1::request_rules::RequestError;
use crate::sys::clock;

/// Sends of one request (each only when the previous never left the gateway).
const MAX_ATTEMPTS: usize = 8;

/// Settings of the forwarder.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// Bound on waiting for a response head (504 beyond).
    pub upstream_timeout: Duration,
    /// Bound on the wait for each next byte of a response body once its head has arrived
    /// (nginx's `proxy_read_timeout`): the client connection is closed beyond it and the
    /// call recorded with code 504.
    pub body_timeout: Duration,
    /// Bound on the wait for each next piece of a client's request body (`read_timeout`).
    pub client_body_timeout: Duration,
    pub hold_timeout: Duration,
    pub max_queue: u64,
    /// Forward request headers whose names hold `_` (dropped by default, as nginx does: see
    /// `request_rules::forwardable_name`).
    pub allow_underscore_headers: bool,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            upstream_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            client_body_timeout: Duration::from_secs(60),
            hold_timeout: Duration::from_secs(30),
            max_queue: 10_000,
            allow_underscore_headers: false,
        }
    }
}

/// Sends functions that need a scale from zero to the control plane.
pub(crate) type ColdStartSender = mpsc::UnboundedSender<Arc<FunctionHandle>>;

pub struct Forwarder {
    config: ForwardConfig,
    cold_start: ColdStartSender,
}

#[derive(Debug, Error)]
pub(crate) enum ForwardError {
    #[error("No ready replica of {function} within {waited:?}; it is being started, retry later.")]
    NoReplicas { function: String, waited: Duration },
    #[error("Too many requests are waiting for {function} to start ({max}); retry later.")]
    QueueFull { function: String, max: u64 },
    #[error("Function {function} was removed while the request waited.")]
    Removed { function: String },
    #[error("Can't reach service for: {function}.")]
    Upstream { function: String },
    #[error("Upstream timeout after {0:?}.")]
    Timeout(Duration),
    #[error("Bad request path.")]
    BadPath,
    #[error("Malformed request body.")]
    BadBody,
    #[error("Request body stalled for {0:?}.")]
    ClientTimeout(Duration),
    #[error("Client closed the request.")]
    ClientGone,
}

/// Counts one invocation from arrival to the end of its response; records on drop.
pub struct Invocation {
    handle: Arc<FunctionHandle>,
    start: Instant,
    /// `start` in `clock` microseconds (demand accounting).
    start_us: u64,
    code: u16,
}

// === impl ForwardError ===

impl ForwardError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ForwardError::NoReplicas { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ForwardError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            ForwardError::Removed { .. } => StatusCode::NOT_FOUND,
            ForwardError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ForwardError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ForwardError::BadPath | ForwardError::BadBody => StatusCode::BAD_REQUEST,
            ForwardError::ClientTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            // nginx's code for a client that closed before its answer; it reaches no one.
            ForwardError::ClientGone => StatusCode::from_u16(499).expect("499 is a valid code"),
        }
    }
}

// === impl Invocation ===

impl Invocation {
    /// Counts an arrival (demand, `started`); the invocation is recorded when dropped.
    pub fn start(handle: Arc<FunctionHandle>) -> Self {
        let start = Instant::now();
        let start_us = clock::us_at(start);
        handle.demand.begin(start_us);
        handle.metrics.started.fetch_add(1, Ordering::Relaxed);
        Self {
            handle,
            start,
            start_us,
            code: 0,
        }
    }

    /// The function invoked.
    pub fn handle(&self) -> &Arc<FunctionHandle> {
        &self.handle
    }

    /// The arrival in `clock` milliseconds (the first replica pick reuses it).
    pub(crate) fn arrived_ms(&self) -> u64 {
        self.start_us / 1000
    }

    /// The status to record (499, client closed, when never set).
    pub fn set_status(&mut self, code: u16) {
        self.code = code;
    }
}

impl Drop for Invocation {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        let code = if self.code == 0 { 499 } else { self.code };
        self.handle.metrics.codes.record(code, elapsed);
        self.handle.metrics.latency.record(elapsed);
        self.handle
            .demand
            .end(self.start_us + elapsed.as_micros() as u64);
    }
}

// === impl Forwarder ===

impl Forwarder {
    pub fn new(config: ForwardConfig, cold_start: ColdStartSender) -> Self {
        Self { config, cold_start }
    }

    /// Asks for a scale from zero of `handle`'s function, as a held request would (once per
    /// cold period; nothing when replicas are desired already). A cluster's leader does this
    /// for a follower's held requests.
    pub(crate) fn wake(&self, handle: &Arc<FunctionHandle>) {
        if handle.state().desired == 0 && handle.claim_cold_start() {
            let _ = self.cold_start.send(handle.clone());
        }
    }

    /// Forwards `req` to a replica of `handle`. `rest` is the path after the function name
    /// (`""` or `/sub/path`), the query is taken from the request URI.
    pub async fn forward(
        &self,
        handle: Arc<FunctionHandle>,
        mut req: Request<Incoming>,
        rest_start: usize,
        peer: &Peer,
    ) -> Response<GatewayBody> {
        let mut invocation = Invocation::start(handle);
        let start_time = start_time_header();
        let (call_id, generated) = match req.headers().get(&X_CALL_ID) {
            Some(v) => (v.clone(), false),
            None => (new_call_id(), true),
        };
        let allow = self.config.allow_underscore_headers;
        match rewrite_request(&mut req, rest_start, &call_id, &start_time, peer, allow) {
            Ok(()) => {}
            Err(BadTarget) => {
                let e = ForwardError::BadPath;
                return error_response(invocation, e, call_id, generated, start_time);
            }
        }
        let mut req = req.map(UpstreamBody::from_client);
        let arrived_ms = invocation.arrived_ms();
        match self
            .send(&invocation.handle, &mut req, arrived_ms, None)
            .await
        {
            Ok((head, conn, upload, pending)) => {
                let ResponseHead {
                    mut parts,
                    framing,
                    keep_alive,
                } = head;
                invocation.code = parts.status.as_u16();
                strip_hop_by_hop(&mut parts.headers);
                // The length is this hop's (hyper writes it from the body's exact size):
                // the upstream's is kept only on a bodiless answer where it tells what a GET
                // would get (HEAD), as the byte loop does. A `Content-Length` beside
                // `Transfer-Encoding` must not reach the client (RFC 9112 section 6.1).
                let keep_length = framing == Framing::Empty
                    && parts.status != StatusCode::NO_CONTENT
                    && parts.status != StatusCode::NOT_MODIFIED;
                if !keep_length {
                    parts.headers.remove(header::CONTENT_LENGTH);
                }
                if generated {
                    parts.headers.insert(X_CALL_ID, call_id);
                }
                parts.headers.insert(X_START_TIME, start_time);
                let body = ProxiedBody::new(
                    conn,
                    upload,
                    framing,
                    keep_alive,
                    pending,
                    invocation,
                    self.config.body_timeout,
                );
                Response::from_parts(parts, GatewayBody::Proxied(body))
            }
            Err(e) => error_response(invocation, e, call_id, generated, start_time),
        }
    }

    /// Sends a request already written in upstream form (`RawRequest`; the client loop's
    /// byte-level path, `api::conn`) with the same rules as [`Forwarder::forward`]; the
    /// response head is parsed into `req.head`, its body is left on the returned connection.
    /// `deadline` is the connection's own upstream timer, moved forward coarsely (see
    /// [`coarse_deadline`]) instead of a timer made and dropped per request.
    pub(crate) async fn send_raw(
        &self,
        handle: &Arc<FunctionHandle>,
        req: &mut RawRequest<'_>,
        arrived_ms: u64,
        deadline: Pin<&mut Sleep>,
    ) -> Result<(Conn, PendingGuard), ForwardError> {
        let (_, conn, _, pending) = self.send(handle, req, arrived_ms, Some(deadline)).await?;
        Ok((conn, pending))
    }

    /// The bound on one upstream exchange, to the response head.
    pub fn upstream_timeout(&self) -> Duration {
        self.config.upstream_timeout
    }

    /// The bound on the wait for each next byte of a response body.
    pub fn body_timeout(&self) -> Duration {
        self.config.body_timeout
    }

    /// The bound on the wait for each next piece of a client's request body.
    pub fn client_body_timeout(&self) -> Duration {
        self.config.client_body_timeout
    }

    /// Whether request headers with `_` in their names are forwarded.
    pub fn allow_underscore_headers(&self) -> bool {
        self.config.allow_underscore_headers
    }

    async fn send<O: Outbound>(
        &self,
        handle: &Arc<FunctionHandle>,
        req: &mut O,
        arrived_ms: u64,
        mut deadline: Option<Pin<&mut Sleep>>,
    ) -> Result<(O::Head, Conn, Option<Box<Upload>>, PendingGuard), ForwardError> {
        // A request is re-sent only when it never left: a refused connection (the replica is
        // marked down and skipped), a bodiless request whose write failed on a reused
        // connection, a replica found draining, or a bodiless request refused with 429 (see
        // the module doc); and once, an idempotent bodiless request whose new connection died
        // before any response byte. The request's head is written from `req`, never consumed, so a
        // bodiless request is sent again as is.
        let bodiless = req.bodiless();
        let idempotent = req.idempotent();
        let mut attempts = 0usize;
        let mut fresh_resets = 0usize;
        loop {
            attempts += 1;
            if attempts > MAX_ATTEMPTS {
                return Err(ForwardError::Upstream {
                    function: handle.label().to_string(),
                });
            }
            let state = handle.state();
            // The first pick reuses the arrival's clock read.
            let now = if attempts == 1 {
                arrived_ms
            } else {
                clock::now_ms()
            };
            let picked = balance::pick(&state.replicas, now).cloned();
            let several = state.replicas.len() > 1;
            let Some(replica) = picked else {
                drop(state);
                // No replica, or every replica refused us: wait for the provider's next set.
                self.hold(handle).await?;
                continue;
            };
            drop(state);
            let pending = replica.start();
            if replica.is_draining() {
                // Picked from a snapshot older than its removal: its drain may already have
                // seen zero pending, so it must not get this request (see `Replica::drain`).
                drop(pending);
                tokio::task::yield_now().await;
                continue;
            }
            let mut checkout = match replica.pool().checkout().await {
                Ok(c) => c,
                Err(_) => {
                    replica.mark_down();
                    continue;
                }
            };
            let limit = self.config.upstream_timeout;
            let client_idle = self.config.client_body_timeout;
            let sent = match deadline.as_mut() {
                Some(sleep) => {
                    coarse_deadline(sleep.as_mut(), limit);
                    tokio::select! {
                        biased;
                        sent = req.exchange(&mut checkout.conn, client_idle) => Ok(sent),
                        _ = sleep.as_mut() => Err(()),
                    }
                }
                None => tokio::time::timeout(limit, req.exchange(&mut checkout.conn, client_idle))
                    .await
                    .map_err(|_| ()),
            };
            match sent {
                Err(_) => return Err(ForwardError::Timeout(self.config.upstream_timeout)),
                Ok(Ok((head, upload))) => {
                    if O::status(&head) == StatusCode::TOO_MANY_REQUESTS {
                        replica.throttle();
                        if bodiless && several && has_other_open(handle, &replica) {
                            // The refusal's connection is dropped with its unread body.
                            continue;
                        }
                    }
                    return Ok((head, checkout.conn, upload, pending));
                }
                // The write failed on a reused connection the replica had closed: nothing of
                // a bodiless request can have been acted on.
                Ok(Err(Failure::NotSent)) if bodiless && checkout.reused => continue,
                // No response byte came back on a reused connection (EOF or reset): as Go's
                // transport does, treat it as stale and send an idempotent request again.
                Ok(Err(Failure::NoResponse)) if bodiless && checkout.reused && idempotent => {
                    continue
                }
                // A new connection closed or reset before any response byte: the replica is
                // going away (killed, crashed, stopping). An idempotent bodiless request is
                // sent once more (RFC 9110, 9.2.2), elsewhere when another replica is open.
                Ok(Err(Failure::NoResponse)) if bodiless && fresh_resets == 0 && idempotent => {
                    fresh_resets += 1;
                    if several && has_other_open(handle, &replica) {
                        replica.mark_down();
                    }
                    continue;
                }
                // RFC 9112 section 7.1: a chunked body that does not parse is the client's
                // error (400), whether or not part of it had left; a connection that carried
                // part of it is dropped with the exchange.
                Ok(Err(Failure::ClientBody { sent })) => {
                    crate::http1::request_rules::count_rejected(RequestError::Chunked);
                    tracing::debug!(function = handle.label(), sent, "malformed request body");
                    return Err(ForwardError::BadBody);
                }
                Ok(Err(Failure::ClientGone)) => return Err(ForwardError::ClientGone),
                Ok(Err(Failure::ClientStalled { sent })) => {
                    tracing::debug!(function = handle.label(), sent, "request body stalled");
                    return Err(ForwardError::ClientTimeout(self.config.client_body_timeout));
                }
                Ok(Err(e)) => {
                    tracing::debug!(function = handle.label(), error = ?e, "upstream exchange failed");
                    return Err(ForwardError::Upstream {
                        function: handle.label().to_string(),
                    });
                }
            }
        }
    }

    /// Waits (bounded) until the function has a ready replica, asking the control plane for
    /// one scale-up from zero when it has none desired. Replicas marked down (connection
    /// refused) do not count: the wait ends when the provider publishes a new set or a down
    /// mark expires.
    async fn hold(&self, handle: &Arc<FunctionHandle>) -> Result<(), ForwardError> {
        let demand = &handle.demand;
        let queued = demand.queued.fetch_add(1, Ordering::AcqRel);
        let _queued = QueuedGuard(handle);
        if queued >= self.config.max_queue {
            return Err(ForwardError::QueueFull {
                function: handle.label().to_string(),
                max: self.config.max_queue,
            });
        }
        let deadline = tokio::time::Instant::now() + self.config.hold_timeout;
        loop {
            let notified = handle.ready_notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = handle.state();
                let now = clock::now_ms();
                if state.replicas.iter().any(|r| !r.is_down(now)) {
                    return Ok(());
                }
                if handle.is_removed() {
                    return Err(ForwardError::Removed {
                        function: handle.label().to_string(),
                    });
                }
                if state.desired == 0 && handle.claim_cold_start() {
                    let _ = self.cold_start.send(handle.clone());
                }
            }
            // Down marks expire on their own: re-check at least that often.
            let wake = deadline.min(tokio::time::Instant::now() + Duration::from_millis(DOWN_MS));
            if tokio::time::timeout_at(wake, notified).await.is_err()
                && tokio::time::Instant::now() >= deadline
            {
                return Err(ForwardError::NoReplicas {
                    function: handle.label().to_string(),
                    waited: self.config.hold_timeout,
                });
            }
        }
    }
}

/// True when `handle` has a replica in rotation other than `not` that is neither down,
/// throttled nor draining: somewhere a refused request may go instead.
fn has_other_open(handle: &FunctionHandle, not: &Arc<Replica>) -> bool {
    let now = clock::now_ms();
    handle.state().replicas.iter().any(|r| {
        !Arc::ptr_eq(r, not) && !r.is_down(now) && !r.is_throttled(now) && !r.is_draining()
    })
}

/// A request the send loop writes to a replica, and may write again when it never left.
pub(crate) trait Outbound {
    /// What the exchange gives back of the response head.
    type Head;
    /// No body: the request can be written again as is.
    fn bodiless(&self) -> bool;
    /// GET, HEAD, OPTIONS or TRACE: may be sent again after its connection closed under it
    /// (RFC 9110 9.2.2; the set Go's transport retries without an idempotency key).
    fn idempotent(&self) -> bool;
    fn status(head: &Self::Head) -> StatusCode;
    /// Writes the request on `conn` and reads the response head; the body is left on `conn`.
    /// `client_idle` bounds each wait for the client's next body piece.
    async fn exchange(
        &mut self,
        conn: &mut Conn,
        client_idle: Duration,
    ) -> Result<(Self::Head, Option<Box<Upload>>), Failure>;
}

impl Outbound for Request<UpstreamBody> {
    type Head = ResponseHead;

    fn bodiless(&self) -> bool {
        self.body().is_empty()
    }

    fn idempotent(&self) -> bool {
        idempotent(self.method())
    }

    fn status(head: &ResponseHead) -> StatusCode {
        head.parts.status
    }

    async fn exchange(
        &mut self,
        conn: &mut Conn,
        client_idle: Duration,
    ) -> Result<(ResponseHead, Option<Box<Upload>>), Failure> {
        exchange(conn, self, Some(client_idle)).await
    }
}

/// A request in upstream wire form, head and whole body in `bytes` (built by `api::conn`
/// from the client's bytes); the response head is parsed into `head`, the client's head
/// is then written from it.
pub(crate) struct RawRequest<'a> {
    pub bytes: &'a [u8],
    pub bodiless: bool,
    pub idempotent: bool,
    pub head_request: bool,
    pub head: &'a mut RawHead,
}

impl Outbound for RawRequest<'_> {
    type Head = StatusCode;

    fn bodiless(&self) -> bool {
        self.bodiless
    }

    fn idempotent(&self) -> bool {
        self.idempotent
    }

    fn status(head: &StatusCode) -> StatusCode {
        *head
    }

    async fn exchange(
        &mut self,
        conn: &mut Conn,
        _client_idle: Duration,
    ) -> Result<(StatusCode, Option<Box<Upload>>), Failure> {
        if conn.stream.write_all(self.bytes).await.is_err() {
            return Err(Failure::NotSent);
        }
        let mut got_byte = false;
        loop {
            if !conn.read.is_empty() {
                got_byte = true;
                match http1::parse_response_raw(&mut conn.read, self.head_request, self.head) {
                    Ok(true) => return Ok((self.head.status, None)),
                    Ok(false) => {}
                    Err(_) => return Err(Failure::Broken),
                }
            }
            match conn.read_more().await {
                Ok(n) if n > 0 => {}
                _ if !got_byte => return Err(Failure::NoResponse),
                _ => return Err(Failure::Broken),
            }
        }
    }
}

struct QueuedGuard<'a>(&'a FunctionHandle);

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        self.0.demand.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

fn error_response(
    mut invocation: Invocation,
    e: ForwardError,
    call_id: HeaderValue,
    generated: bool,
    start_time: HeaderValue,
) -> Response<GatewayBody> {
    let status = e.status();
    invocation.code = status.as_u16();
    tracing::debug!(function = invocation.handle.label(), error = %e, "invocation failed");
    let close = matches!(
        e,
        ForwardError::BadBody | ForwardError::ClientTimeout(_) | ForwardError::ClientGone
    );
    let mut resp = Response::new(GatewayBody::full(e.to_string()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if close {
        // The rest of the client's stream cannot be framed.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if generated {
        h.insert(X_CALL_ID, call_id);
    }
    h.insert(X_START_TIME, start_time);
    h.insert(
        HeaderName::from_static("x-openfaas-internal"),
        HeaderValue::from_static("proxy"),
    );
    resp
}
