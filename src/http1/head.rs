//! Request-head planning and response-head rewriting for the byte-level invocation loop,
//! on bytes: no `HeaderMap`, `Request` or `Response` is built.
//!
//! [`plan`] reads the request at the start of a buffer with `httparse`, applies the RFC 9112
//! `Host` and framing rules (`request_rules`), and, when the request is an invocation the
//! loop serves (HTTP/1.1, an origin-form `/function/{name}[/path][?query]` target that the
//! caller's lookup finds, no `Transfer-Encoding`, `Expect` or `Upgrade`, a `Content-Length`
//! body of at most [`FAST_BODY`] bytes), writes its upstream form: hop-by-hop headers and
//! those `Connection` names out; `X-Call-Id`, `X-Start-Time`, `X-Forwarded-For`,
//! `X-Forwarded-Host` in. An `/async-function/...` call (HTTP/1.1, not HEAD, the same
//! framing limits) is [`Step::Enqueue`] once whole. Anything else (CONNECT on any route
//! included) is [`Step::Handoff`] (a general HTTP/1.1 server serves it) or
//! [`Step::Reject`]. [`response_head`] writes the client's response head from the
//! upstream's, with the same rewrites and this hop's framing; [`status_line`] and the
//! per-thread `Date` cache ([`date`]) serve error answers too.
//!
//! Invariant: nothing is allocated per request; the caller owns the buffers.

use std::mem::MaybeUninit;

use http::{Method, StatusCode};

use crate::http1::codec::{trim, Framing, RawHead};
use crate::http1::exchange::idempotent;
use crate::http1::headers::{call_id_bytes, names_a_header, start_time_nanos, HOP_BY_HOP};
use crate::http1::request_rules::{self, RequestError, RequestRules};
use crate::model::names::KeyRef;

/// A request body the loop buffers whole before sending (nginx buffers bodies too); a
/// longer one is streamed by hyper's path.
pub(crate) const FAST_BODY: usize = 64 * 1024;
/// Request head bytes the loop waits for; a longer head goes to hyper (which answers 431 or
/// serves it).
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Request headers the loop parses; more goes to hyper.
pub(crate) const MAX_HEADERS: usize = 64;
/// `Connection`-named headers the loop strips; more goes to hyper.
pub(crate) const MAX_NAMED: usize = 8;
pub(crate) const FUNCTION_PREFIX: &[u8] = b"/function/";
/// The async route's prefix (`api::async_call::PREFIX` is this).
pub(crate) const ASYNC_PREFIX: &str = "/async-function/";
/// What the bytes at the start of the buffer ask for.
pub(crate) enum Step<H> {
    /// An incomplete head or body: read more.
    More,
    /// Not for the loop: hyper takes the connection.
    Handoff,
    /// An invocation of the function `H` whose upstream request is written in `up`.
    Serve(H, Plan),
    /// An async call (`/async-function/...`), whole at the start of the buffer, for the
    /// enqueue path (`api::async_wire`), which may still hand it to hyper.
    Enqueue(Enqueue),
    /// A head that breaks a rule every request must pass: answered 400, then closed (`true`:
    /// it was a HEAD request, whose answer has no body).
    Reject(RequestError, bool),
}

/// An invocation the loop serves.
pub(crate) struct Plan {
    /// Bytes of the request (head and body) at the start of the buffer.
    pub len: usize,
    pub bodiless: bool,
    pub idempotent: bool,
    pub head_request: bool,
    /// The client asked to close after this response.
    pub close: bool,
    /// `X-Call-Id` generated here (`None`: the client sent one, which is kept).
    pub call_id: Option<[u8; 36]>,
    pub start_time: u64,
}

/// An async call the loop may enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Enqueue {
    /// Bytes of its head; its body follows.
    pub head_len: usize,
    /// Bytes of the request (head and body) at the start of the buffer.
    pub len: usize,
    /// The client asked to close after this response.
    pub close: bool,
}

pub(crate) fn eq(a: &[u8], lower: &[u8]) -> bool {
    a.eq_ignore_ascii_case(lower)
}

/// One of the headers that apply to one hop only (`HOP_BY_HOP`, the hyper path's
/// list).
pub(crate) fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP.iter().any(|h| eq(name, h.as_str().as_bytes()))
}

/// Reads the request at the start of `buf`; when the loop serves it (`lookup` finds its
/// function), writes its upstream form into `up`. `forwarded_for` is the client's address.
pub(crate) fn plan<H>(
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
                Some(n) if length.is_none_or(|m| m == n) => length = Some(n),
                _ => unusual = true,
            }
        } else if eq(name, b"transfer-encoding") {
            rules.transfer_encoding(h.value);
            unusual = true;
        } else if eq(name, b"expect") || eq(name, b"upgrade") {
            unusual = true;
        } else if eq(name, b"connection") {
            for token in h.value.split(|&b| b == b',').map(trim) {
                if eq(token, b"close") {
                    close = true;
                } else if !names_a_header(token) {
                    continue;
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
    // hyper's server treats CONNECT as an upgrade (a 2xx ends the connection's HTTP): never
    // the loop's, on any route.
    if kind == Method::CONNECT {
        return Step::Handoff;
    }
    let target = target.as_bytes();
    // An async call, whole, in the bytes `http::Uri` accepts (a HEAD, a long body: hyper's).
    if target.starts_with(ASYNC_PREFIX.as_bytes()) && uri_bytes(target) && kind != Method::HEAD {
        let len = match whole(buf, head_len, length) {
            Ok(len) => len,
            Err(step) => return step,
        };
        return Step::Enqueue(Enqueue {
            head_len,
            len,
            close,
        });
    }
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
    let len = match whole(buf, head_len, length) {
        Ok(len) => len,
        Err(step) => return step,
    };
    let body_len = (len - head_len) as u64;
    // Looked up once the request is whole: a body still arriving costs no route lookup.
    let Some(handle) = lookup(KeyRef::parse_segment(segment, "")) else {
        return Step::Handoff;
    };

    let call_id = client_call_id.is_none().then(call_id_bytes);
    let start_time = start_time_nanos();
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
    // Framing is this hop's, written once, as the hyper path's `codec::write_request_head`
    // makes it: the client's length unless its `Connection` names it (equal duplicates are
    // one value, RFC 9110 section 8.6), else the body's when it has one, `0` for an empty
    // body of a method that expects one.
    let length_named = named.iter().any(|n| eq(n, b"content-length"));
    if (length.is_some() && !length_named)
        || body_len > 0
        || crate::http1::codec::expects_body(&kind)
    {
        header(up, b"content-length", itoa.format(body_len).as_bytes());
    }
    up.extend_from_slice(b"\r\n");
    up.extend_from_slice(&buf[head_len..len]);
    Step::Serve(
        handle,
        Plan {
            len,
            bodiless: body_len == 0,
            idempotent: idempotent(&kind),
            head_request: kind == Method::HEAD,
            close,
            call_id,
            start_time,
        },
    )
}

/// The length of the request whose head is `head_len` bytes and whose body `length` says,
/// once all of it is in `buf`; else read more, or (a body over [`FAST_BODY`]) hand it off.
fn whole<H>(buf: &[u8], head_len: usize, length: Option<u64>) -> Result<usize, Step<H>> {
    let body_len = length.unwrap_or(0);
    if body_len > FAST_BODY as u64 {
        return Err(Step::Handoff);
    }
    let len = head_len + body_len as usize;
    if buf.len() < len {
        return Err(Step::More);
    }
    Ok(len)
}

/// Whether `target` holds only the visible ASCII bytes `http::Uri` accepts unescaped, in its
/// path (not `<`, `>`, `` ` ``) and its query (not `"`, `<`, `>`), and no fragment: the loop
/// serves exactly the targets the hyper path would (others go to hyper, which answers 400).
pub(crate) fn uri_bytes(target: &[u8]) -> bool {
    let query = target
        .iter()
        .position(|&b| b == b'?')
        .unwrap_or(target.len());
    let visible = |b: u8| (0x21..=0x7e).contains(&b) && b != b'#' && b != b'<' && b != b'>';
    target[..query].iter().all(|&b| visible(b) && b != b'`')
        && target[query..].iter().all(|&b| visible(b) && b != b'"')
}

pub(crate) fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The client's response head, from the upstream's `head` (the bytes `raw` was parsed
/// from): hop-by-hop headers and those the upstream's `Connection` names out, this hop's
/// framing, `X-Call-Id` (when generated here) and `X-Start-Time` in.
pub(crate) fn response_head(out: &mut Vec<u8>, raw: &RawHead, head: &[u8], plan: &Plan) {
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
pub(crate) fn status_line(out: &mut Vec<u8>, status: StatusCode, upstream_reason: &[u8]) {
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
pub(crate) fn ids(out: &mut Vec<u8>, plan: &Plan) {
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
pub(crate) fn connection_names(raw: &RawHead, head: &[u8], name: &[u8]) -> bool {
    raw.headers(head)
        .filter(|(n, _)| eq(n, b"connection"))
        .any(|(_, v)| v.split(|&b| b == b',').any(|t| eq(trim(t), name)))
}

/// The `Date` header value, formatted once a second per thread.
pub(crate) mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHE: RefCell<(u64, [u8; 29])> = const { RefCell::new((0, [0; 29])) };
    }

    pub(crate) fn with<R>(f: impl FnOnce(&[u8]) -> R) -> R {
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
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
            (Step::Enqueue(e), _) => panic!("{e:?}: {:?}", String::from_utf8_lossy(buf)),
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
            "CONNECT /function/echo HTTP/1.1\r\nHost: gw\r\n\r\n",
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

    #[test]
    fn async_calls_are_planned_whole_for_the_enqueue_path() {
        let req = b"POST /async-function/any/p?q=1 HTTP/1.1\r\nHost: gw\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabcGET";
        let head_len = req.len() - 6;
        assert_eq!(
            run(req).0.enqueue(),
            Some(Enqueue {
                head_len,
                len: head_len + 3,
                close: true
            })
        );
        // The function is looked up by the enqueue path, not here: any name is planned.
        let get = b"GET /async-function/nope HTTP/1.1\r\nHost: gw\r\n\r\n";
        assert_eq!(run(get).0.enqueue().map(|e| e.len), Some(get.len()));
        // A body still arriving: more.
        assert!(matches!(run(&req[..head_len + 2]).0, Step::More));
        let big = format!(
            "POST /async-function/echo HTTP/1.1\r\nHost: gw\r\nContent-Length: {}\r\n\r\n",
            FAST_BODY + 1
        );
        for req in [
            "HEAD /async-function/echo HTTP/1.1\r\nHost: gw\r\n\r\n",
            "POST /async-function/echo HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
            "POST /async-function/echo HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /async-function/echo HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "CONNECT /async-function/echo HTTP/1.1\r\nHost: gw\r\n\r\n",
            "GET /async-function/echo?q=\"a\" HTTP/1.1\r\nHost: gw\r\n\r\n",
            "GET /async-functions/echo HTTP/1.1\r\nHost: gw\r\n\r\n",
            &big,
        ] {
            assert!(
                matches!(run(req.as_bytes()).0, Step::Handoff),
                "planned for the enqueue path: {req:?}"
            );
        }
        // The rules every head passes come first.
        let two_hosts = b"POST /async-function/echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
        assert!(matches!(run(two_hosts).0, Step::Reject(..)));
    }

    impl<H> Step<H> {
        fn enqueue(&self) -> Option<Enqueue> {
            match self {
                Step::Enqueue(e) => Some(*e),
                _ => None,
            }
        }
    }

    fn response(upstream: &[u8], head_request: bool, call_id: Option<[u8; 36]>) -> String {
        let mut buf = BytesMut::from(upstream);
        let mut raw = RawHead::default();
        assert!(crate::http1::codec::parse_response_raw(&mut buf, head_request, &mut raw).unwrap());
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
