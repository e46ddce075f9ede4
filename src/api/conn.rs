//! One client connection: invocations served by a byte-level HTTP/1.1 loop, everything else
//! by hyper.
//!
//! The loop reads a request head with `httparse`. When it is an invocation it serves
//! ([`plan`]: HTTP/1.1, an origin-form `/function/{name}[/path][?query]` target of a deployed
//! function, no `Transfer-Encoding`, `Expect` or `Upgrade`, a `Content-Length` body of at
//! most [`FAST_BODY`] bytes), it writes the upstream request straight from the client's
//! bytes (hop-by-hop headers and those `Connection` names out; `X-Call-Id`, `X-Start-Time`,
//! `X-Forwarded-For`, `X-Forwarded-Host` in), sends it with the forwarder's rules
//! (`Forwarder::send_raw`: pick, pool, retries, hold, timeout) and writes the client's
//! response head straight from the upstream's (the same rewrites), then the body by its
//! framing. No `HeaderMap`, `Request` or `Response` is built for it.
//!
//! Anything else (other paths, HTTP/1.0, chunked or large uploads, `Expect: 100-continue`,
//! upgrades, unknown functions, malformed or oversized heads) hands the connection, with the
//! bytes already read, to hyper's server for the rest of its life, where `Gateway::handle`
//! answers it as it answers every request: one behaviour, which the loop only reaches with
//! less work (`tests/downstream_wire.rs` runs the same cases through both).
//!
//! Every head the loop parses, whoever then serves it, first passes the RFC 9112 `Host` and
//! framing rules (`dataplane::request_rules`): a head that breaks one is answered 400 here
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
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::{Method, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Sleep;

use super::Gateway;
use crate::dataplane::forward::{self, Invocation, Peer, RawRequest};
use crate::dataplane::http1::{self, trim, ChunkedDecoder, Decoded, Framing, RawHead, LAST_CHUNK};
use crate::dataplane::pool::Conn;
use crate::dataplane::request_rules::{self, RequestError, RequestRules};
use crate::dataplane::table::FunctionHandle;
use crate::names::KeyRef;

/// A request body the loop buffers whole before sending (nginx buffers bodies too); a
/// longer one is streamed by hyper's path.
pub const FAST_BODY: usize = 64 * 1024;
/// Request head bytes the loop waits for; a longer head goes to hyper (which answers 431 or
/// serves it).
const MAX_HEAD: usize = 16 * 1024;
/// How long, and for how many bytes, a connection closed after an error answer keeps
/// reading what the client still sends (nginx's `lingering_time` is 30 s; a refused
/// request's body is short or unwanted).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;
/// The read buffer hyper's server may grow to for a request head.
const MAX_HYPER_HEAD: usize = 96 * 1024;
/// Request headers the loop parses; more goes to hyper.
const MAX_HEADERS: usize = 64;
/// `Connection`-named headers the loop strips; more goes to hyper.
const MAX_NAMED: usize = 8;
/// Response bytes gathered before a write to the client.
const OUT_INLINE: usize = 64 * 1024;
const READ_BUF: usize = 8 * 1024;
const FUNCTION_PREFIX: &[u8] = b"/function/";

/// Serves one client connection until it closes, errs, idles past `read_timeout`, or the
/// gateway shuts down (`shutdown` turns true).
pub async fn serve(
    stream: TcpStream,
    addr: SocketAddr,
    gateway: Arc<Gateway>,
    read_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let peer = Peer::new(addr);
    if !gateway.byte_loop {
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
    let upstream = tokio::time::sleep(gateway.forwarder.upstream_timeout());
    tokio::pin!(upstream);
    loop {
        // A complete request in `buf`, or the connection ends.
        forward::coarse_deadline(sleep.as_mut(), read_timeout);
        let (handle, plan) = loop {
            let lookup = |key: KeyRef<'_>| gateway.routes.get(key);
            let forwarded_for = peer.forwarded_for.as_bytes();
            match plan(
                &client.buf,
                &mut client.up,
                forwarded_for,
                gateway.forwarder.allow_underscore_headers(),
                lookup,
            ) {
                Step::Serve(handle, plan) => break (handle, plan),
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
        match client
            .invoke(&gateway, handle, plan, upstream.as_mut())
            .await
        {
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

/// What the bytes at the start of the buffer ask for.
enum Step<H> {
    /// An incomplete head or body: read more.
    More,
    /// Not for the loop: hyper takes the connection.
    Handoff,
    /// An invocation of the function `H` whose upstream request is written in `up`.
    Serve(H, Plan),
    /// A head that breaks a rule every request must pass: answered 400, then closed (`true`:
    /// it was a HEAD request, whose answer has no body).
    Reject(RequestError, bool),
}

/// An invocation the loop serves.
struct Plan {
    /// Bytes of the request (head and body) at the start of the buffer.
    len: usize,
    bodiless: bool,
    idempotent: bool,
    head_request: bool,
    /// The client asked to close after this response.
    close: bool,
    /// `X-Call-Id` generated here (`None`: the client sent one, which is kept).
    call_id: Option<[u8; 36]>,
    start_time: u64,
}

fn eq(a: &[u8], lower: &[u8]) -> bool {
    a.eq_ignore_ascii_case(lower)
}

/// One of the headers that apply to one hop only (`forward::HOP_BY_HOP`, the hyper path's
/// list).
fn is_hop_by_hop(name: &[u8]) -> bool {
    forward::HOP_BY_HOP
        .iter()
        .any(|h| eq(name, h.as_str().as_bytes()))
}

/// Reads the request at the start of `buf`; when the loop serves it (`lookup` finds its
/// function), writes its upstream form into `up`. `forwarded_for` is the client's address.
fn plan<H>(
    buf: &[u8],
    up: &mut Vec<u8>,
    forwarded_for: &[u8],
    allow_underscores: bool,
    lookup: impl FnOnce(KeyRef<'_>) -> Option<H>,
) -> Step<H> {
    if buf.is_empty() {
        return Step::More;
    }
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Step::More,
        _ => return Step::Handoff,
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Step::Handoff;
    };
    // One pass over the headers: the RFC 9112 rules every request passes, whoever serves
    // it (`request_rules`), and what an invocation's upstream head needs.
    let mut rules = RequestRules::new();
    let mut length: Option<u64> = None;
    let mut unusual = false;
    let mut close = false;
    let mut host: Option<&[u8]> = None;
    let (mut has_xff, mut has_xfh) = (false, false);
    let mut client_call_id: Option<&[u8]> = None;
    let mut named: [&[u8]; MAX_NAMED] = [&[]; MAX_NAMED];
    let mut named_count = 0;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if eq(name, b"content-length") {
            rules.content_length(h.value);
            match request_rules::parse_length_list(h.value) {
                Some(n) if length.map_or(true, |m| m == n) => length = Some(n),
                _ => unusual = true,
            }
        } else if eq(name, b"transfer-encoding") {
            rules.transfer_encoding(h.value);
            unusual = true;
        } else if eq(name, b"expect") || eq(name, b"upgrade") {
            unusual = true;
        } else if eq(name, b"connection") {
            for token in h.value.split(|&b| b == b',').map(trim) {
                // `Host` is never this hop's only: it is kept whatever `Connection` names.
                if token.is_empty() || eq(token, b"keep-alive") || eq(token, b"host") {
                    continue;
                }
                if eq(token, b"close") {
                    close = true;
                } else if eq(token, b"upgrade") || named_count == MAX_NAMED {
                    unusual = true;
                } else {
                    named[named_count] = token;
                    named_count += 1;
                }
            }
        } else if eq(name, b"host") {
            rules.host(h.value);
            host = Some(h.value);
        } else if eq(name, b"x-forwarded-for") {
            has_xff = true;
        } else if eq(name, b"x-forwarded-host") {
            has_xfh = true;
        } else if eq(name, b"x-call-id") {
            client_call_id = client_call_id.or(Some(h.value));
        }
    }
    if let Err(e) = rules.check(minor) {
        return Step::Reject(e, method == "HEAD");
    }
    if minor != 1 || unusual {
        return Step::Handoff;
    }
    // Its kind (idempotent, expects a body, HEAD) as the hyper path judges it; standard
    // methods parse without allocating.
    let Ok(kind) = Method::from_bytes(method.as_bytes()) else {
        return Step::Handoff;
    };
    let target = target.as_bytes();
    // Origin form only, in the bytes `http::Uri` accepts (others: hyper decides).
    if !target.starts_with(FUNCTION_PREFIX) || !uri_bytes(target) {
        return Step::Handoff;
    }
    let after = &target[FUNCTION_PREFIX.len()..];
    let segment_len = after
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(after.len());
    let Ok(segment) = std::str::from_utf8(&after[..segment_len]) else {
        return Step::Handoff;
    };
    let rest = &after[segment_len..];

    let named = &named[..named_count];
    // Headers the `Connection` header names do not reach the upstream: what the loop adds
    // (forwarding headers, framing) is decided on what is left, as the hyper path strips
    // before it inserts. Rare, so the common case keeps the single pass above.
    if !named.is_empty() {
        let is_named = |n: &[u8]| named.iter().any(|t| eq(n, t));
        (has_xff, has_xfh) = (false, false);
        for h in req.headers.iter() {
            let name = h.name.as_bytes();
            if is_named(name) {
                continue;
            }
            if eq(name, b"x-forwarded-for") {
                has_xff = true;
            } else if eq(name, b"x-forwarded-host") {
                has_xfh = true;
            }
        }
    }
    let body_len = length.unwrap_or(0);
    if body_len > FAST_BODY as u64 {
        return Step::Handoff;
    }
    let len = head_len + body_len as usize;
    if buf.len() < len {
        return Step::More;
    }
    // Looked up once the request is whole: a body still arriving costs no route lookup.
    let Some(handle) = lookup(KeyRef::parse_segment(segment, "")) else {
        return Step::Handoff;
    };

    let call_id = client_call_id.is_none().then(forward::call_id_bytes);
    let start_time = forward::start_time_nanos();
    let mut itoa = itoa::Buffer::new();
    up.clear();
    up.extend_from_slice(method.as_bytes());
    up.push(b' ');
    if rest.first() != Some(&b'/') {
        up.push(b'/');
    }
    up.extend_from_slice(rest);
    up.extend_from_slice(b" HTTP/1.1\r\n");
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if is_hop_by_hop(name)
            || eq(name, b"content-length")
            || eq(name, b"x-start-time")
            || eq(name, b"x-call-id")
            || !request_rules::forwardable_name(name, allow_underscores)
            || named.iter().any(|n| eq(name, n))
        {
            continue;
        }
        header(up, name, h.value);
    }
    // One call id, the client's first or ours, whatever the `Connection` header names.
    header(
        up,
        b"x-call-id",
        client_call_id.unwrap_or_else(|| call_id.as_ref().map_or(&[], |id| &id[..])),
    );
    header(up, b"x-start-time", itoa.format(start_time).as_bytes());
    if !has_xff {
        header(up, b"x-forwarded-for", forwarded_for);
    }
    if let (false, Some(host)) = (has_xfh, host) {
        header(up, b"x-forwarded-host", host);
    }
    // Framing is this hop's, written once, as the hyper path's `http1::write_request_head`
    // makes it: the client's length unless its `Connection` names it (equal duplicates are
    // one value, RFC 9110 section 8.6), else the body's when it has one, `0` for an empty
    // body of a method that expects one.
    let length_named = named.iter().any(|n| eq(n, b"content-length"));
    if (length.is_some() && !length_named) || body_len > 0 || http1::expects_body(&kind) {
        header(up, b"content-length", itoa.format(body_len).as_bytes());
    }
    up.extend_from_slice(b"\r\n");
    up.extend_from_slice(&buf[head_len..len]);
    Step::Serve(
        handle,
        Plan {
            len,
            bodiless: body_len == 0,
            idempotent: forward::idempotent(&kind),
            head_request: kind == Method::HEAD,
            close,
            call_id,
            start_time,
        },
    )
}

/// Whether `target` holds only the visible ASCII bytes `http::Uri` accepts unescaped, in its
/// path (not `<`, `>`, `` ` ``) and its query (not `"`, `<`, `>`), and no fragment: the loop
/// serves exactly the targets the hyper path would (others go to hyper, which answers 400).
fn uri_bytes(target: &[u8]) -> bool {
    let query = target
        .iter()
        .position(|&b| b == b'?')
        .unwrap_or(target.len());
    let visible = |b: u8| (0x21..=0x7e).contains(&b) && b != b'#' && b != b'<' && b != b'>';
    target[..query].iter().all(|&b| visible(b) && b != b'`')
        && target[query..].iter().all(|&b| visible(b) && b != b'"')
}

fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
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
/// coarsely (`forward::coarse_deadline`).
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
        gateway: &Gateway,
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
        let sent = gateway
            .forwarder
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
            limit: gateway.forwarder.body_timeout(),
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
            crate::dataplane::body::count_body_timeout();
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
        crate::dataplane::request_rules::count_rejected(e);
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
            forward::coarse_deadline(idle.sleep.as_mut(), idle.limit);
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

/// The client's response head, from the upstream's `head` (the bytes `raw` was parsed
/// from): hop-by-hop headers and those the upstream's `Connection` names out, this hop's
/// framing, `X-Call-Id` (when generated here) and `X-Start-Time` in.
fn response_head(out: &mut Vec<u8>, raw: &RawHead, head: &[u8], plan: &Plan) {
    status_line(out, raw.status, raw.reason(head));
    // For a bodiless answer the upstream's `Content-Length` says what a GET would get
    // (HEAD) or is 0: it is passed on; otherwise the length is this hop's.
    let keep_length = raw.framing == Framing::Empty
        && raw.status != StatusCode::NO_CONTENT
        && raw.status != StatusCode::NOT_MODIFIED;
    let mut has_date = false;
    // Whether the upstream's `Connection` names any header (rare): checked once.
    let named = raw.headers(head).any(|(n, v)| {
        eq(n, b"connection")
            && v.split(|&b| b == b',')
                .map(trim)
                .any(|t| !t.is_empty() && !eq(t, b"close") && !eq(t, b"keep-alive"))
    });
    for (name, value) in raw.headers(head) {
        if is_hop_by_hop(name)
            || (eq(name, b"content-length") && !keep_length)
            || eq(name, b"x-start-time")
            || (plan.call_id.is_some() && eq(name, b"x-call-id"))
            || (named && connection_names(raw, head, name))
        {
            continue;
        }
        has_date |= eq(name, b"date");
        header(out, name, value);
    }
    ids(out, plan);
    let mut itoa = itoa::Buffer::new();
    match raw.framing {
        Framing::Empty => {}
        Framing::Length(n) => header(out, b"content-length", itoa.format(n).as_bytes()),
        Framing::Chunked | Framing::Close => header(out, b"transfer-encoding", b"chunked"),
    }
    if !has_date {
        date::with(|d| header(out, b"date", d));
    }
    if plan.close {
        header(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
}

/// `HTTP/1.1 <code> <reason>`: the canonical reason, else `upstream_reason`.
fn status_line(out: &mut Vec<u8>, status: StatusCode, upstream_reason: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    match status.canonical_reason() {
        Some(reason) => out.extend_from_slice(reason.as_bytes()),
        None => out.extend_from_slice(upstream_reason),
    }
    out.extend_from_slice(b"\r\n");
}

/// The headers the gateway adds to every invocation's answer: `X-Call-Id` (when it made
/// one) and `X-Start-Time`.
fn ids(out: &mut Vec<u8>, plan: &Plan) {
    if let Some(id) = &plan.call_id {
        header(out, b"x-call-id", id);
    }
    let mut itoa = itoa::Buffer::new();
    header(
        out,
        b"x-start-time",
        itoa.format(plan.start_time).as_bytes(),
    );
}

/// Whether the upstream's `Connection` header names `name` (a header for that hop only).
fn connection_names(raw: &RawHead, head: &[u8], name: &[u8]) -> bool {
    raw.headers(head)
        .filter(|(n, _)| eq(n, b"connection"))
        .any(|(_, v)| v.split(|&b| b == b',').any(|t| eq(trim(t), name)))
}

/// Gives the connection, and what was read of it, to hyper's server for the rest of its life.
async fn handoff(
    io: Rewind,
    peer: Peer,
    gateway: Arc<Gateway>,
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

/// The `Date` header value, formatted once a second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHE: RefCell<(u64, [u8; 29])> = const { RefCell::new((0, [0; 29])) };
    }

    pub fn with<R>(f: impl FnOnce(&[u8]) -> R) -> R {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.0 != secs {
                let text = httpdate::fmt_http_date(now);
                let bytes = text.as_bytes();
                if bytes.len() == 29 {
                    c.1.copy_from_slice(bytes);
                    c.0 = secs;
                }
            }
            f(&c.1)
        })
    }
}

/// [`plan`] for `crate::testing` (the fuzz targets), its outcome as plain data.
pub(crate) fn plan_for_testing(
    buf: &[u8],
    up: &mut Vec<u8>,
    forwarded_for: &[u8],
    lookup: impl FnOnce(KeyRef<'_>) -> bool,
) -> crate::testing::Planned {
    use crate::testing::Planned;
    match plan(buf, up, forwarded_for, false, |k| lookup(k).then_some(())) {
        Step::More => Planned::More,
        Step::Handoff => Planned::Handoff,
        Step::Reject(e, _) => Planned::Reject(e.message()),
        Step::Serve((), p) => Planned::Serve {
            len: p.len,
            bodiless: p.bodiless,
            idempotent: p.idempotent,
            head_request: p.head_request,
            close: p.close,
            call_id: p.call_id,
            start_time: p.start_time,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PEER: &[u8] = b"10.0.0.9:4000";

    /// Plans `buf` against one function, `echo` in namespace `openfaas-fn`.
    fn run(buf: &[u8]) -> (Step<()>, Vec<u8>) {
        let mut up = Vec::new();
        let step = plan(buf, &mut up, PEER, false, |k: KeyRef<'_>| {
            (k.name == "echo" && k.namespace == "openfaas-fn").then_some(())
        });
        (step, up)
    }

    fn served(buf: &[u8]) -> (Plan, String) {
        match run(buf) {
            (Step::Serve((), p), up) => (p, String::from_utf8(up).unwrap()),
            (Step::More, _) => panic!("asked for more: {:?}", String::from_utf8_lossy(buf)),
            (Step::Handoff, _) => panic!("handed off: {:?}", String::from_utf8_lossy(buf)),
            (Step::Reject(e, _), _) => {
                panic!("rejected ({e}): {:?}", String::from_utf8_lossy(buf))
            }
        }
    }

    /// The upstream head's headers, lowercased names, in order.
    fn headers(up: &str) -> Vec<(String, String)> {
        let head = &up[..up.find("\r\n\r\n").unwrap()];
        head.split("\r\n")
            .skip(1)
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap();
                (n.to_ascii_lowercase(), v.to_string())
            })
            .collect()
    }

    fn get<'a>(h: &'a [(String, String)], name: &str) -> Vec<&'a str> {
        h.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn rewrites_the_head_for_the_upstream() {
        let (p, up) = served(
            b"GET /function/echo/a/b?q=1&r=%20 HTTP/1.1\r\nHost: gw:8080\r\n\
              Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\n\
              Proxy-Authorization: Basic x\r\nX-Start-Time: 5\r\nAccept: */*\r\n\r\n",
        );
        assert!(
            up.starts_with("GET /a/b?q=1&r=%20 HTTP/1.1\r\nHost: gw:8080\r\n"),
            "{up}"
        );
        let h = headers(&up);
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "te",
            "proxy-authorization",
        ] {
            assert!(
                get(&h, gone).is_empty(),
                "{gone} reached the upstream: {up}"
            );
        }
        assert_eq!(get(&h, "host"), ["gw:8080"]);
        assert_eq!(get(&h, "accept"), ["*/*"]);
        assert_eq!(get(&h, "x-forwarded-for"), ["10.0.0.9:4000"]);
        assert_eq!(get(&h, "x-forwarded-host"), ["gw:8080"]);
        assert_eq!(get(&h, "x-start-time"), [p.start_time.to_string().as_str()]);
        let id = get(&h, "x-call-id");
        assert_eq!(id.len(), 1);
        assert_eq!(id[0].as_bytes(), &p.call_id.unwrap());
        assert!(up.ends_with("\r\n\r\n"));
        assert!(p.bodiless && p.idempotent && !p.head_request && !p.close);
    }

    #[test]
    fn keeps_what_the_client_set() {
        let (p, up) = served(
            b"GET /function/echo HTTP/1.1\r\nX-Call-Id: abc\r\nX-Forwarded-For: 1.1.1.1\r\n\
              X-Forwarded-Host: front\r\nHost: gw\r\n\r\n",
        );
        let h = headers(&up);
        assert!(p.call_id.is_none());
        assert_eq!(get(&h, "x-call-id"), ["abc"]);
        assert_eq!(get(&h, "x-forwarded-for"), ["1.1.1.1"]);
        assert_eq!(get(&h, "x-forwarded-host"), ["front"]);
    }

    #[test]
    fn targets_map_to_the_function_path() {
        for (target, upstream) in [
            ("/function/echo", "/"),
            ("/function/echo/", "/"),
            ("/function/echo?x=1", "/?x=1"),
            ("/function/echo/p/q?x=1", "/p/q?x=1"),
            ("/function/echo.openfaas-fn/p", "/p"),
        ] {
            let req = format!("GET {target} HTTP/1.1\r\nHost: g\r\n\r\n");
            let (_, up) = served(req.as_bytes());
            assert!(
                up.starts_with(&format!("GET {upstream} HTTP/1.1\r\nHost: g\r\n")),
                "{target}: {up}"
            );
        }
    }

    #[test]
    fn bodies_are_buffered_whole_and_pipelined_requests_left() {
        let req = b"POST /function/echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhelloGET /function/echo HTTP/1.1\r\nHost: gw\r\n\r\n";
        let (p, up) = served(req);
        assert_eq!(
            p.len,
            req.len() - "GET /function/echo HTTP/1.1\r\nHost: gw\r\n\r\n".len()
        );
        assert!(up.ends_with("\r\n\r\nhello"), "{up}");
        assert!(!p.bodiless && !p.idempotent);
        assert_eq!(get(&headers(&up), "content-length"), ["5"]);
        // No length on a POST: an empty body, announced as the hyper path announces it.
        let (p, up) = served(b"POST /function/echo HTTP/1.1\r\nHost: gw\r\n\r\n");
        assert!(p.bodiless);
        assert_eq!(get(&headers(&up), "content-length"), ["0"]);
        // A body not yet all read, and a head cut short, ask for more.
        assert!(matches!(
            run(b"PUT /function/echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhel").0,
            Step::More
        ));
        assert!(matches!(run(b"GET /function/ec").0, Step::More));
        assert!(matches!(run(b"").0, Step::More));
    }

    #[test]
    fn heads_breaking_rfc_9112_rules_are_rejected_whoever_serves_them() {
        use RequestError::*;
        for (req, why) in [
            ("GET /function/echo HTTP/1.1\r\n\r\n", MissingHost),
            ("GET /system/info HTTP/1.1\r\n\r\n", MissingHost),
            ("GET /function/echo HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", DuplicateHost),
            ("GET /function/echo HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", DuplicateHost),
            ("GET /function/echo HTTP/1.1\r\nHost: a b\r\n\r\n", InvalidHost),
            (
                "POST /function/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                InvalidLength,
            ),
            ("POST /function/echo HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\na", InvalidLength),
            ("POST /function/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\na", InvalidLength),
            (
                "POST /function/echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                UnsupportedCoding,
            ),
            (
                "POST /function/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                LengthWithTransferEncoding,
            ),
            (
                "POST /healthz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                TransferEncoding,
            ),
        ] {
            match run(req.as_bytes()).0 {
                Step::Reject(e, _) => assert_eq!(e, why, "{req:?}"),
                _ => panic!("not rejected: {req:?}"),
            }
        }
        // HTTP/1.0 needs no Host; equal duplicate lengths are one length, sent once.
        assert!(matches!(
            run(b"GET /function/echo HTTP/1.0\r\n\r\n").0,
            Step::Handoff
        ));
        let (_, up) = served(
            b"POST /function/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
        );
        assert_eq!(get(&headers(&up), "content-length"), ["2"]);
        // `Connection: host` never removes Host; names with `_` are dropped by default.
        let (_, up) = served(
            b"GET /function/echo HTTP/1.1\r\nHost: a\r\nConnection: host\r\nContent_Length: 9\r\nX_Y: 1\r\n\r\n",
        );
        let h = headers(&up);
        assert_eq!(get(&h, "host"), ["a"]);
        assert!(
            get(&h, "content_length").is_empty() && get(&h, "x_y").is_empty(),
            "{up}"
        );
        let mut up = Vec::new();
        let step = plan(
            b"GET /function/echo HTTP/1.1\r\nHost: a\r\nX_Y: 1\r\n\r\n",
            &mut up,
            PEER,
            true,
            |_| Some(()),
        );
        assert!(matches!(step, Step::Serve(..)));
        assert_eq!(get(&headers(&String::from_utf8(up).unwrap()), "x_y"), ["1"]);
    }

    #[test]
    fn close_head_and_idempotence_are_read() {
        let (p, _) =
            served(b"HEAD /function/echo HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
        assert!(p.close && p.head_request && p.idempotent);
        let (p, _) = served(b"DELETE /function/echo HTTP/1.1\r\nHost: gw\r\n\r\n");
        assert!(!p.idempotent && !p.close);
    }

    #[test]
    fn what_the_loop_does_not_serve_goes_to_hyper() {
        let big = format!(
            "POST /function/echo HTTP/1.1\r\nHost: gw\r\nContent-Length: {}\r\n\r\n",
            FAST_BODY + 1
        );
        let long_head = format!(
            "GET /function/echo HTTP/1.1\r\nHost: gw\r\nX-Long: {}",
            "a".repeat(MAX_HEAD)
        );
        for req in [
            "GET /function/echo HTTP/1.0\r\n\r\n",
            "GET /system/info HTTP/1.1\r\nHost: gw\r\n\r\n",
            "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n",
            "GET http://gw/function/echo HTTP/1.1\r\nHost: gw\r\n\r\n",
            "GET /function/nope HTTP/1.1\r\nHost: gw\r\n\r\n",
            "GET /function/echo.other HTTP/1.1\r\nHost: gw\r\n\r\n",
            "POST /function/echo HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /function/echo HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "GET /function/echo HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "GET /function/echo HTTP/1.1\r\nHost: gw\r\nBad Header\r\n\r\n",
            "GET /function/echo#frag HTTP/1.1\r\nHost: gw\r\n\r\n",
            "GET /function/echo/<a> HTTP/1.1\r\nHost: gw\r\n\r\n",
            "GET /function/echo/`a HTTP/1.1\r\nHost: gw\r\n\r\n",
            "GET /function/echo?q=\"a\" HTTP/1.1\r\nHost: gw\r\n\r\n",
            "GET /function/echo HTTP/1.1\r\nHost: gw\r\nConnection: a, b, c, d, e, f, g, h, i\r\n\r\n",
            "BREW /function/echo HTCPCP/1.0\r\n\r\n",
            &big,
            &long_head,
        ] {
            assert!(
                matches!(run(req.as_bytes()).0, Step::Handoff),
                "served by the loop: {req:?}"
            );
        }
    }

    fn response(upstream: &[u8], head_request: bool, call_id: Option<[u8; 36]>) -> String {
        let mut buf = BytesMut::from(upstream);
        let mut raw = RawHead::default();
        assert!(http1::parse_response_raw(&mut buf, head_request, &mut raw).unwrap());
        let plan = Plan {
            len: 0,
            bodiless: true,
            idempotent: true,
            head_request,
            close: false,
            call_id,
            start_time: 42,
        };
        let mut out = Vec::new();
        response_head(&mut out, &raw, &buf[..raw.len], &plan);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn rewrites_the_response_head_for_the_client() {
        let out = response(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive, X-Up\r\n\
              X-Up: 1\r\nKeep-Alive: timeout=5\r\nX-Start-Time: 7\r\nX-Call-Id: up\r\n\
              Date: Fri, 27 Nov 2026 10:00:00 GMT\r\nContent-Length: 5\r\n\r\nhello",
            false,
            Some(*b"00000000-0000-4000-8000-000000000000"),
        );
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        let h = headers(&out);
        for gone in ["connection", "x-up", "keep-alive"] {
            assert!(get(&h, gone).is_empty(), "{gone} reached the client: {out}");
        }
        assert_eq!(get(&h, "content-type"), ["text/plain"]);
        assert_eq!(get(&h, "content-length"), ["5"]);
        assert_eq!(get(&h, "x-start-time"), ["42"]);
        assert_eq!(
            get(&h, "x-call-id"),
            ["00000000-0000-4000-8000-000000000000"]
        );
        assert_eq!(get(&h, "date"), ["Fri, 27 Nov 2026 10:00:00 GMT"]);
        assert!(out.ends_with("\r\n\r\n"));
    }

    #[test]
    fn response_framing_is_this_hops() {
        // Chunked and close-delimited bodies go to the client chunked; a date is added.
        for up in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
            b"HTTP/1.0 200 OK\r\n\r\n",
        ] {
            let h = headers(&response(up, false, None));
            assert_eq!(get(&h, "transfer-encoding"), ["chunked"]);
            assert!(get(&h, "content-length").is_empty());
            assert_eq!(get(&h, "date").len(), 1);
        }
        // HEAD keeps the length a GET would get; 204 and 304 carry none of ours.
        let h = headers(&response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n",
            true,
            None,
        ));
        assert_eq!(get(&h, "content-length"), ["12"]);
        let h = headers(&response(
            b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
            false,
            None,
        ));
        assert!(get(&h, "content-length").is_empty());
        assert!(get(&h, "transfer-encoding").is_empty());
        // A code without a canonical reason keeps the upstream's.
        assert!(response(
            b"HTTP/1.1 299 Fine Thanks\r\nContent-Length: 0\r\n\r\n",
            false,
            None
        )
        .starts_with("HTTP/1.1 299 Fine Thanks\r\n"));
    }

    /// Header names: random ones (never those that make a request go to hyper or that the
    /// gateway sets from others: those have their own tests) and hop-by-hop ones.
    fn token() -> impl Strategy<Value = String> {
        const SPECIAL: [&str; 7] = [
            "upgrade",
            "expect",
            "transfer-encoding",
            "host",
            "x-forwarded-host",
            "x-forwarded-for",
            "x-call-id",
        ];
        prop_oneof![
            "[A-Za-z][A-Za-z0-9-]{0,12}".prop_filter("special", |n| !SPECIAL
                .contains(&n.to_ascii_lowercase().as_str())),
            Just("Connection".to_string()),
            Just("keep-alive".to_string()),
            Just("TE".to_string()),
            Just("Trailer".to_string()),
            Just("proxy-connection".to_string()),
            Just("X-Start-Time".to_string()),
            Just("Content-Length".to_string()),
        ]
    }

    proptest! {
        /// Whatever the headers, the upstream head is well-formed HTTP/1.1 with no
        /// hop-by-hop or `Connection`-named header, one of each added header, and every
        /// other header in order; and however the request is split, a prefix asks for more
        /// and the whole gives the same plan.
        #[test]
        fn upstream_heads_are_clean_however_split(
            headers in proptest::collection::vec((token(), "[ -~]{0,20}"), 0..10),
            body in proptest::collection::vec(any::<u8>(), 0..64),
            cut in any::<usize>(),
        ) {
            let mut req = format!("POST /function/echo/x HTTP/1.1\r\nHost: gw\r\nContent-Length: {}\r\n", body.len());
            let mut sent = vec![("host".to_string(), "gw".to_string())];
            for (n, v) in &headers {
                if n.eq_ignore_ascii_case("content-length") {
                    continue;
                }
                let v = v.trim();
                req.push_str(&format!("{n}: {v}\r\n"));
                sent.push((n.to_ascii_lowercase(), v.to_string()));
            }
            req.push_str("\r\n");
            let mut bytes = req.into_bytes();
            bytes.extend_from_slice(&body);
            let (step, up) = run(&bytes);
            let Step::Serve((), p) = step else {
                return Err(TestCaseError::fail(format!("not served: {:?}", String::from_utf8_lossy(&bytes))));
            };
            prop_assert_eq!(p.len, bytes.len());
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Request::new(&mut slots);
            let head_len = match parsed.parse(&up) {
                Ok(httparse::Status::Complete(n)) => n,
                other => return Err(TestCaseError::fail(format!("bad upstream head {other:?}"))),
            };
            prop_assert_eq!(&up[head_len..], &body[..]);
            let named: Vec<String> = sent
                .iter()
                .filter(|(n, _)| n == "connection")
                .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()).collect::<Vec<_>>())
                .collect();
            let expected: Vec<(String, String)> = sent
                .iter()
                .filter(|(n, _)| !is_hop_by_hop(n.as_bytes()))
                .filter(|(n, _)| n != "x-start-time" && (n == "host" || !named.contains(n)))
                .cloned()
                .collect();
            let got: Vec<(String, String)> = parsed
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                .collect();
            let ours = ["content-length", "x-call-id", "x-start-time", "x-forwarded-for", "x-forwarded-host"];
            let theirs: Vec<(String, String)> = got
                .iter()
                .filter(|(n, _)| !ours.contains(&n.as_str()))
                .cloned()
                .collect();
            let expected_theirs: Vec<(String, String)> = expected
                .iter()
                .filter(|(n, _)| !ours.contains(&n.as_str()))
                .cloned()
                .collect();
            prop_assert_eq!(theirs, expected_theirs);
            for n in ["x-call-id", "x-start-time", "x-forwarded-for", "content-length"] {
                let count = got.iter().filter(|(g, _)| g == n).count();
                let client_sent = expected.iter().filter(|(e, _)| e == n).count();
                prop_assert_eq!(count, client_sent.max(1), "{}", n);
            }
            for (n, _) in &got {
                prop_assert!(!is_hop_by_hop(n.as_bytes()), "{} upstream", n);
                prop_assert!(!named.contains(n) || ours.contains(&n.as_str()), "{} named", n);
            }
            // Any strict prefix asks for more.
            let cut = cut % bytes.len();
            prop_assert!(matches!(run(&bytes[..cut]).0, Step::More));
        }

        /// Arbitrary bytes never panic the planner.
        #[test]
        fn arbitrary_bytes_never_panic(
            prefix in prop_oneof![Just(b"GET /function/echo".to_vec()), Just(Vec::new())],
            tail in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut bytes = prefix;
            bytes.extend_from_slice(&tail);
            let _ = run(&bytes);
        }
    }
}
