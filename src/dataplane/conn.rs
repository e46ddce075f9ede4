//! One client connection: invocations and async calls served by a byte-level HTTP/1.1
//! loop, everything else by hyper.
//!
//! The loop reads a request head with `httparse`. When it is an invocation it serves
//! (`http1::head::plan`: HTTP/1.1, an origin-form `/function/{name}[/path][?query]` target of a deployed
//! function, no `Transfer-Encoding`, `Expect` or `Upgrade`, a `Content-Length` body of at
//! most [`FAST_BODY`](crate::http1::head::FAST_BODY) bytes), it writes the upstream request straight from the client's
//! bytes (hop-by-hop headers and those `Connection` names out; `X-Call-Id`, `X-Start-Time`,
//! `X-Forwarded-For`, `X-Forwarded-Host` in), sends it with the forwarder's rules
//! (`Forwarder::send_raw`: pick, pool, retries, hold, timeout) and writes the client's
//! response head straight from the upstream's (the same rewrites), then the body by its
//! framing. No `HeaderMap`, `Request` or `Response` is built for it.
//!
//! An async call (`/async-function/{name}[/path][?query]`, HTTP/1.1, not HEAD, the same
//! framing limits) is read whole and given to [`Frontend::enqueue`] (`api::async_wire`),
//! which stores its record straight from the bytes and writes the `202`, or declines it
//! (a refusal hyper's path words: unknown function, bad name, large body, bad callback
//! URL), and then hyper takes the connection as for any other request.
//!
//! Anything else (other paths, HTTP/1.0, chunked or large uploads, `Expect: 100-continue`,
//! upgrades, unknown functions, malformed or oversized heads) hands the connection, with the
//! bytes already read, to hyper's server for the rest of its life, where `Gateway::handle`
//! answers it as it answers every request: one behaviour, which the loop only reaches with
//! less work (`tests/downstream_wire.rs` runs the same cases through both).
//!
//! Every head the loop parses, whoever then serves it, first passes the RFC 9112 `Host` and
//! framing rules (`http1::request_rules`): a head that breaks one is answered 400 here
//! and the connection closed, so nothing ambiguous reaches hyper or a replica. Header names
//! with `_` are not forwarded unless the forwarder allows them.
//!
//! Invariants: requests on a connection are answered in order, one at a time (a pipelined
//! request is read after the previous response is written); nothing is allocated per
//! request (the buffers belong to the connection) and no lock is taken but tokio's own (an
//! idle wait registers with the shutdown channel's notifier); every wait is bounded:
//! a head (and a buffered body) by `read_timeout` (less at most a tenth of it, or 1 s), the
//! upstream's head by `upstream_timeout`, each wait for more of its body by `body_timeout`
//! (the connection's one upstream timer, set at the body's first wait). On shutdown the
//! loop finishes the request in hand and closes.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::StatusCode;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Sleep;

use crate::dataplane::forward::{Forwarder, Invocation, RawRequest};
use crate::dataplane::response::GatewayBody;
use crate::dataplane::table::{FunctionHandle, Routes};
use crate::http1::codec::{self as http1, ChunkedDecoder, Decoded, Framing, RawHead, LAST_CHUNK};
use crate::http1::exchange::coarse_deadline;
use crate::http1::head::{
    date, header, ids, plan, response_head, status_line, Enqueue, Plan, Step,
};
use crate::http1::headers::Peer;
use crate::http1::pool::Conn;
use crate::http1::request_rules::{self, RequestError};
use crate::model::names::KeyRef;

/// What the invocation loop needs from the server it runs in: the data plane it serves
/// invocations with, and the handler it hands every other request to (with the connection).
pub(crate) trait Frontend: Send + Sync + 'static {
    /// The deployed functions, looked up by the loop's planner.
    fn routes(&self) -> &Routes;
    /// Sends invocations to replicas.
    fn forwarder(&self) -> &Forwarder;
    /// `false`: every request goes to [`Frontend::handle`] through hyper's server (tests run
    /// their cases both ways).
    fn byte_loop(&self) -> bool;
    /// Answers a request the loop does not serve.
    fn handle(
        &self,
        req: http::Request<hyper::body::Incoming>,
        peer: &Peer,
    ) -> impl std::future::Future<Output = http::Response<GatewayBody>> + Send;
    /// Enqueues the async call `req` (head `head_len` bytes, then its whole body), writing
    /// its answer to `out`; `false`: not served here (nothing stored, `out` untouched), the
    /// connection goes to [`Frontend::handle`].
    fn enqueue<'a>(
        &'a self,
        req: &'a [u8],
        head_len: usize,
        close: bool,
        out: &'a mut Vec<u8>,
    ) -> impl std::future::Future<Output = bool> + Send + 'a;
}

/// What the loop does with the request at the start of its buffer.
enum Next {
    Invoke(Arc<FunctionHandle>, Plan),
    Enqueue(Enqueue),
}

/// How long, and for how many bytes, a connection closed after an error answer keeps
/// reading what the client still sends (nginx's `lingering_time` is 30 s; a refused
/// request's body is short or unwanted).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;
/// The read buffer hyper's server may grow to for a request head.
const MAX_HYPER_HEAD: usize = 96 * 1024;
/// Response bytes gathered before a write to the client.
const OUT_INLINE: usize = 64 * 1024;
const READ_BUF: usize = 8 * 1024;

/// Serves one client connection until it closes, errs, idles past `read_timeout`, or the
/// gateway shuts down (`shutdown` turns true).
pub(crate) async fn serve<G: Frontend>(
    stream: TcpStream,
    addr: SocketAddr,
    gateway: Arc<G>,
    read_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let peer = Peer::new(addr);
    if !gateway.byte_loop() {
        let stream = Rewind {
            prefix: BytesMut::new(),
            stream,
        };
        return handoff(stream, peer, gateway, read_timeout, shutdown).await;
    }
    let mut client = Client {
        stream,
        buf: BytesMut::with_capacity(READ_BUF),
        up: Vec::with_capacity(1024),
        out: Vec::with_capacity(READ_BUF),
        head: RawHead::default(),
    };
    // The connection's two timers, the head's and the upstream's, are moved forward coarsely
    // (`coarse_deadline`): one timer update per second of a busy connection, not per request.
    let sleep = tokio::time::sleep(read_timeout);
    tokio::pin!(sleep);
    let upstream = tokio::time::sleep(gateway.forwarder().upstream_timeout());
    tokio::pin!(upstream);
    loop {
        // A complete request in `buf`, or the connection ends.
        coarse_deadline(sleep.as_mut(), read_timeout);
        let next = loop {
            let lookup = |key: KeyRef<'_>| gateway.routes().get(key);
            let forwarded_for = peer.forwarded_for.as_bytes();
            match plan(
                &client.buf,
                &mut client.up,
                forwarded_for,
                gateway.forwarder().allow_underscore_headers(),
                lookup,
            ) {
                Step::Serve(handle, plan) => break Next::Invoke(handle, plan),
                Step::Enqueue(e) => break Next::Enqueue(e),
                Step::Reject(e, head_request) => {
                    client.reject(e, head_request).await;
                    return;
                }
                Step::Handoff => {
                    let stream = Rewind {
                        prefix: client.buf,
                        stream: client.stream,
                    };
                    return handoff(stream, peer, gateway, read_timeout, shutdown).await;
                }
                Step::More => {}
            }
            let idle = client.buf.is_empty();
            if idle && stopping(&shutdown) {
                return;
            }
            match client.read(sleep.as_mut(), &mut shutdown, idle).await {
                Ok(Read::More) => {}
                // Part of a request came, the rest not in time.
                Ok(Read::Timeout) if !idle => {
                    client.request_timeout().await;
                    return;
                }
                // EOF, an error, an idle connection's timeout, or shutdown while idle: close.
                // A partial request cut by EOF is dropped, as hyper drops it.
                _ => return,
            }
        };
        let served = match next {
            Next::Invoke(handle, plan) => {
                client
                    .invoke(gateway.forwarder(), handle, plan, upstream.as_mut())
                    .await
            }
            Next::Enqueue(e) => {
                client.out.clear();
                if !gateway
                    .enqueue(&client.buf[..e.len], e.head_len, e.close, &mut client.out)
                    .await
                {
                    let stream = Rewind {
                        prefix: client.buf,
                        stream: client.stream,
                    };
                    return handoff(stream, peer, gateway, read_timeout, shutdown).await;
                }
                client.buf.advance(e.len);
                client.flush().await.map(|()| !e.close)
            }
        };
        match served {
            Ok(true) if !stopping(&shutdown) => {}
            _ => {
                let _ = client.stream.shutdown().await;
                return;
            }
        }
    }
}

/// The connection's socket and reused buffers.
struct Client {
    stream: TcpStream,
    /// Bytes read from the client and not yet served.
    buf: BytesMut,
    /// The upstream request being sent (head and body).
    up: Vec<u8>,
    /// Response bytes for the client not yet written.
    out: Vec<u8>,
    /// The upstream response head, parsed in place.
    head: RawHead,
}

/// Whether the gateway is shutting down. The channel only ever changes once, false to true,
/// so a change is shutdown; `has_changed` is one atomic load where `borrow` takes the
/// channel's lock, shared by every connection (a closed channel: the server is gone).
fn stopping(shutdown: &watch::Receiver<bool>) -> bool {
    shutdown.has_changed().unwrap_or(true)
}

/// What a read of the client's bytes gave.
enum Read {
    More,
    Stop,
    Timeout,
}

/// Why a response could not be completed; the client connection is closed.
#[derive(Debug)]
enum Broken {
    Client,
    Upstream,
    /// No body byte from the upstream within `body_timeout`.
    Stalled,
}

/// The bound on each wait for the next upstream body byte: the connection's timer, moved
/// coarsely (`coarse_deadline`).
struct Idle<'a> {
    sleep: Pin<&'a mut Sleep>,
    limit: Duration,
    /// The timer has been set for this body (at its first wait: a body that came with its
    /// head costs no timer update).
    armed: bool,
}

impl Client {
    /// Reads more of the client's bytes. `Ok(Read::Stop)`: EOF, or (when `idle`, between
    /// requests) shutdown; `Ok(Read::Timeout)`: the deadline passed.
    async fn read(
        &mut self,
        deadline: Pin<&mut Sleep>,
        shutdown: &mut watch::Receiver<bool>,
        idle: bool,
    ) -> io::Result<Read> {
        if self.buf.capacity() - self.buf.len() < READ_BUF / 8 {
            self.buf.reserve(READ_BUF);
        }
        tokio::select! {
            biased;
            n = self.stream.read_buf(&mut self.buf) => Ok(if n? > 0 { Read::More } else { Read::Stop }),
            _ = deadline => Ok(Read::Timeout),
            _ = shutdown.wait_for(|s| *s), if idle => Ok(Read::Stop),
        }
    }

    /// A request's head or body did not arrive within `read_timeout`: 408 and close, as
    /// hyper's server answers a head that times out.
    async fn request_timeout(&mut self) {
        self.refuse(StatusCode::REQUEST_TIMEOUT, "408 Request Timeout", true)
            .await;
    }

    /// Writes a plain-text answer that closes the connection (`with_body` false for a HEAD
    /// request's), then closes.
    async fn refuse(&mut self, status: StatusCode, body: &str, with_body: bool) {
        self.out.clear();
        let out = &mut self.out;
        status_line(out, status, b"");
        header(out, b"content-type", b"text/plain; charset=utf-8");
        let mut itoa = itoa::Buffer::new();
        header(out, b"content-length", itoa.format(body.len()).as_bytes());
        date::with(|d| header(out, b"date", d));
        header(out, b"connection", b"close");
        out.extend_from_slice(b"\r\n");
        if with_body {
            out.extend_from_slice(body.as_bytes());
        }
        self.close_after_answer().await;
    }

    /// Serves one planned invocation. `Ok(true)`: the connection may carry another request.
    async fn invoke(
        &mut self,
        forwarder: &Forwarder,
        handle: Arc<FunctionHandle>,
        plan: Plan,
        mut deadline: Pin<&mut Sleep>,
    ) -> Result<bool, Broken> {
        let mut invocation = Invocation::start(handle);
        let mut req = RawRequest {
            bytes: &self.up,
            bodiless: plan.bodiless,
            idempotent: plan.idempotent,
            head_request: plan.head_request,
            head: &mut self.head,
        };
        let sent = forwarder
            .send_raw(
                invocation.handle(),
                &mut req,
                invocation.arrived_ms(),
                deadline.as_mut(),
            )
            .await;
        self.buf.advance(plan.len);
        self.out.clear();
        let (mut conn, pending) = match sent {
            Ok(sent) => sent,
            Err(e) => {
                let status = e.status();
                invocation.set_status(status.as_u16());
                tracing::debug!(function = invocation.handle().label(), error = %e, "invocation failed");
                self.error_response(status, &e.to_string(), &plan);
                self.flush().await?;
                return Ok(!plan.close);
            }
        };
        invocation.set_status(self.head.status.as_u16());
        // `keep_alive` is false for a close-delimited body (`http1::framing_of`).
        let (framing, keep_alive) = (self.head.framing, self.head.keep_alive);
        response_head(
            &mut self.out,
            &self.head,
            &conn.read[..self.head.len],
            &plan,
        );
        conn.read.advance(self.head.len);
        // The body's reads share the connection's upstream timer, now bounding each wait
        // for the next body byte (`body_timeout`).
        let mut idle = Idle {
            sleep: deadline,
            limit: forwarder.body_timeout(),
            armed: false,
        };
        let copied = match framing {
            Framing::Empty => Ok(()),
            Framing::Length(n) => self.copy_length(&mut conn, n, &mut idle).await,
            Framing::Chunked => self.copy_chunked(&mut conn, &mut idle).await,
            Framing::Close => self.copy_to_close(&mut conn, &mut idle).await,
        };
        if let Err(Broken::Stalled) = copied {
            // The client got a head and part of a body: only closing tells it the answer
            // is cut. Recorded as a gateway timeout.
            invocation.set_status(StatusCode::GATEWAY_TIMEOUT.as_u16());
            crate::http1::body::count_body_timeout();
        }
        copied?;
        self.flush().await?;
        if keep_alive {
            pending.replica().pool().checkin(conn);
        }
        drop(pending);
        drop(invocation);
        Ok(!plan.close)
    }

    /// Answers a request head that breaks a rule with 400 and closes: what follows its
    /// head cannot be framed with confidence (RFC 9112 section 6.3).
    async fn reject(&mut self, e: RequestError, head_request: bool) {
        request_rules::count_rejected(e);
        self.refuse(e.status(), e.message(), !head_request).await;
    }

    /// Writes what is gathered, sends FIN, then reads and drops what the client still sends
    /// for a moment (nginx's lingering close): closing with unread bytes makes the kernel
    /// send a reset, which can destroy the answer before the client reads it.
    async fn close_after_answer(&mut self) {
        if self.flush().await.is_err() || self.stream.shutdown().await.is_err() {
            return;
        }
        let linger = async {
            let mut drained = 0usize;
            let mut sink = [0u8; 4096];
            while drained < LINGER_BYTES {
                match self.stream.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => drained += n,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, linger).await;
    }

    /// The answer for an invocation that got no upstream response, as the hyper path writes it.
    fn error_response(&mut self, status: StatusCode, body: &str, plan: &Plan) {
        let out = &mut self.out;
        status_line(out, status, b"");
        header(out, b"content-type", b"text/plain; charset=utf-8");
        ids(out, plan);
        header(out, b"x-openfaas-internal", b"proxy");
        let mut itoa = itoa::Buffer::new();
        header(out, b"content-length", itoa.format(body.len()).as_bytes());
        date::with(|d| header(out, b"date", d));
        if plan.close {
            header(out, b"connection", b"close");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body.as_bytes());
    }

    /// Writes what is gathered in `out` to the client.
    async fn flush(&mut self) -> Result<(), Broken> {
        if !self.out.is_empty() {
            self.stream
                .write_all(&self.out)
                .await
                .map_err(|_| Broken::Client)?;
            self.out.clear();
        }
        Ok(())
    }

    /// Reads more of the upstream body, first writing what the client has not got yet (a
    /// streamed answer reaches the client as produced). `Ok(false)`: EOF.
    async fn refill(&mut self, conn: &mut Conn, idle: &mut Idle<'_>) -> Result<bool, Broken> {
        self.flush().await?;
        if idle.armed {
            coarse_deadline(idle.sleep.as_mut(), idle.limit);
        } else {
            // The timer bounded the head's wait until now (`upstream_timeout`).
            idle.sleep
                .as_mut()
                .reset(tokio::time::Instant::now() + idle.limit);
            idle.armed = true;
        }
        tokio::select! {
            biased;
            read = conn.read_more() => match read {
                Ok(n) => Ok(n > 0),
                Err(_) => Err(Broken::Upstream),
            },
            _ = idle.sleep.as_mut() => Err(Broken::Stalled),
        }
    }

    async fn copy_length(
        &mut self,
        conn: &mut Conn,
        mut left: u64,
        idle: &mut Idle<'_>,
    ) -> Result<(), Broken> {
        loop {
            let take = (conn.read.len() as u64).min(left) as usize;
            if take > 0 {
                if self.out.len() + take > OUT_INLINE {
                    self.flush().await?;
                    self.stream
                        .write_all(&conn.read[..take])
                        .await
                        .map_err(|_| Broken::Client)?;
                } else {
                    self.out.extend_from_slice(&conn.read[..take]);
                }
                conn.read.advance(take);
                left -= take as u64;
            }
            if left == 0 {
                return Ok(());
            }
            if !self.refill(conn, idle).await? {
                return Err(Broken::Upstream);
            }
        }
    }

    async fn copy_chunked(&mut self, conn: &mut Conn, idle: &mut Idle<'_>) -> Result<(), Broken> {
        let mut decoder = ChunkedDecoder::new();
        loop {
            match decoder.decode(&mut conn.read) {
                Ok(Decoded::Data(data)) => {
                    self.chunk(&data);
                    if self.out.len() > OUT_INLINE {
                        self.flush().await?;
                    }
                }
                Ok(Decoded::End) => {
                    self.out.extend_from_slice(LAST_CHUNK);
                    return Ok(());
                }
                Ok(Decoded::NeedMore) => {
                    if !self.refill(conn, idle).await? {
                        return Err(Broken::Upstream);
                    }
                }
                Err(_) => return Err(Broken::Upstream),
            }
        }
    }

    /// A body delimited by the upstream closing: sent on chunked, to its end.
    async fn copy_to_close(&mut self, conn: &mut Conn, idle: &mut Idle<'_>) -> Result<(), Broken> {
        loop {
            if !conn.read.is_empty() {
                let data = conn.read.split();
                self.chunk(&data);
            }
            if !self.refill(conn, idle).await? {
                self.out.extend_from_slice(LAST_CHUNK);
                return Ok(());
            }
        }
    }

    fn chunk(&mut self, data: &[u8]) {
        if !data.is_empty() {
            http1::write_chunk_header(data.len(), &mut self.out);
            self.out.extend_from_slice(data);
            self.out.extend_from_slice(b"\r\n");
        }
    }
}

/// Gives the connection, and what was read of it, to hyper's server for the rest of its life.
async fn handoff<G: Frontend>(
    io: Rewind,
    peer: Peer,
    gateway: Arc<G>,
    read_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout)
        // A head's buffer is bounded (hyper's default is ~400 KiB) so that many clients
        // sending heads slowly cost bounded memory; a head over it is answered 431.
        .max_buf_size(MAX_HYPER_HEAD)
        .keep_alive(true);
    let svc = service_fn(move |req| {
        let gw = gateway.clone();
        let peer = peer.clone();
        async move { Ok::<_, std::convert::Infallible>(gw.handle(req, &peer).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = shutdown.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

/// A stream that yields `prefix` before what is still to be read from `stream`.
struct Rewind {
    prefix: BytesMut,
    stream: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
