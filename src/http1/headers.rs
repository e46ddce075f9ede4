//! The headers one hop adds, removes or rewrites: hop-by-hop headers (RFC 9110 section
//! 7.6.1) and the `Connection`-named ones, `X-Call-Id` and `X-Start-Time` (made per request),
//! and `X-Forwarded-For` / `X-Forwarded-Host` (from the client connection, [`Peer`]).
//!
//! Invariant: nothing here allocates per request: the per-request values (a call id, a
//! start time) are carved out of a per-thread slab ([`slab_value`]) and `X-Forwarded-For`
//! is formatted once per client connection.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Uri};

use crate::http1::codec as http1;
use crate::http1::request_rules::forwardable_name;

pub const X_CALL_ID: HeaderName = HeaderName::from_static("x-call-id");
pub const X_START_TIME: HeaderName = HeaderName::from_static("x-start-time");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that apply to one hop only (RFC 9110 section 7.6.1, and Go's list). hyper
/// frames each hop itself (`Transfer-Encoding`), so it is removed too.
pub const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// What the data plane knows of the client connection, computed once per connection.
#[derive(Clone)]
pub struct Peer {
    pub(crate) forwarded_for: HeaderValue,
}

// === impl Peer ===

impl Peer {
    pub(crate) fn new(addr: std::net::SocketAddr) -> Self {
        let forwarded_for = HeaderValue::from_str(&addr.to_string())
            .expect("a socket address is a valid header value");
        Self { forwarded_for }
    }
}

/// A request target that cannot be forwarded: a sub-path `http::Uri` refuses, userinfo in
/// an absolute-form target, or a host `Host` could not carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request target cannot be forwarded")]
pub(crate) struct BadTarget;

/// Turns the client's request into the upstream request, in place.
pub(crate) fn rewrite_request<B>(
    req: &mut Request<B>,
    rest_start: usize,
    call_id: &HeaderValue,
    start_time: &HeaderValue,
    peer: &Peer,
    allow_underscores: bool,
) -> Result<(), BadTarget> {
    let pq = req
        .uri()
        .path_and_query()
        .map(PathAndQuery::as_str)
        .unwrap_or("/");
    let rest = pq.get(rest_start..).ok_or(BadTarget)?;
    let uri = if rest.is_empty() {
        Uri::from_static("/")
    } else if rest.starts_with('?') {
        let mut s = String::with_capacity(rest.len() + 1);
        s.push('/');
        s.push_str(rest);
        Uri::try_from(s).map_err(|_| BadTarget)?
    } else {
        Uri::try_from(rest).map_err(|_| BadTarget)?
    };
    // RFC 9112 section 3.2.2: the host of an absolute-form target replaces `Host`. Userinfo
    // in it is refused (RFC 9110 section 4.2.4), and so is a host `Host` could not carry.
    let authority = match req.uri().authority() {
        None => None,
        Some(a) if a.as_str().contains('@') => return Err(BadTarget),
        Some(a) if !crate::http1::request_rules::valid_host(a.as_str().as_bytes()) => {
            return Err(BadTarget)
        }
        Some(a) => Some(HeaderValue::from_str(a.as_str()).map_err(|_| BadTarget)?),
    };
    *req.uri_mut() = uri;
    let headers = req.headers_mut();
    if let Some(host) = authority {
        headers.insert(header::HOST, host);
    }
    strip_hop_by_hop(headers);
    if !allow_underscores {
        drop_underscore_names(headers);
    }
    headers.insert(X_CALL_ID, call_id.clone());
    headers.insert(X_START_TIME, start_time.clone());
    if !headers.contains_key(&X_FORWARDED_FOR) {
        headers.insert(X_FORWARDED_FOR, peer.forwarded_for.clone());
    }
    if !headers.contains_key(&X_FORWARDED_HOST) {
        if let Some(host) = headers.get(header::HOST).cloned() {
            headers.insert(X_FORWARDED_HOST, host);
        }
    }
    Ok(())
}

/// Removes the headers whose names hold `_` (`request_rules::forwardable_name`). One pass
/// over the names when there is none (the common case); allocates only when there is.
pub(crate) fn drop_underscore_names(headers: &mut HeaderMap) {
    if headers
        .keys()
        .all(|k| forwardable_name(k.as_str().as_bytes(), false))
    {
        return;
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|k| !forwardable_name(k.as_str().as_bytes(), false))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// Whether a `Connection` token (trimmed) names a header for this hop only: not empty, not
/// the `close` or `keep-alive` options, and never `Host` (it is not this hop's only, and a
/// request without one would break RFC 9112 section 3.2 at the next hop). One rule for
/// hyper's path and the byte loop's.
pub(crate) fn names_a_header(token: &[u8]) -> bool {
    !(token.is_empty()
        || token.eq_ignore_ascii_case(b"close")
        || token.eq_ignore_ascii_case(b"keep-alive")
        || token.eq_ignore_ascii_case(b"host"))
}

/// Removes hop-by-hop headers, and the headers the `Connection` header names (never
/// `Host`: it is not this hop's only, and a request without one would break RFC 9112
/// section 3.2 at the next hop).
/// Requests rarely carry one, so the common case is one pass over the (few) names present.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let mut named: Vec<HeaderName> = Vec::new();
        // As bytes: a value with obs-text still names the tokens it holds (the byte loop
        // reads it the same way).
        for value in headers.get_all(header::CONNECTION) {
            for token in value.as_bytes().split(|&b| b == b',').map(http1::trim) {
                if !names_a_header(token) {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token) {
                    named.push(name);
                }
            }
        }
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        if headers.contains_key(name) {
            headers.remove(name);
        }
    }
}

/// Bytes of each per-thread slab that per-request header values are carved from.
const SLAB_BYTES: usize = 64 * 1024;

thread_local! {
    static SLAB: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// A header value holding a copy of `bytes`, without a heap allocation per call: the bytes
/// go into this thread's slab and the value is a reference-counted slice of it (cloning it
/// only bumps the count). A new slab is allocated every ~1,000 requests; an old one is freed
/// when its last value is dropped. `bytes` must be a valid header value.
pub(crate) fn slab_value(bytes: &[u8]) -> HeaderValue {
    SLAB.with(|slab| {
        let mut slab = slab.borrow_mut();
        if slab.capacity() < bytes.len() {
            *slab = BytesMut::with_capacity(SLAB_BYTES.max(bytes.len()));
        }
        slab.extend_from_slice(bytes);
        let value = slab.split_to(bytes.len()).freeze();
        HeaderValue::from_maybe_shared(value).expect("callers pass valid header bytes")
    })
}

pub(crate) fn start_time_header() -> HeaderValue {
    let mut buf = itoa::Buffer::new();
    slab_value(buf.format(start_time_nanos()).as_bytes())
}

/// Now, in unix nanoseconds (`X-Start-Time`).
pub(crate) fn start_time_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub(crate) fn new_call_id() -> HeaderValue {
    slab_value(&call_id_bytes())
}

/// A random UUID v4 in its canonical text form, formatted without `format!`.
pub(crate) fn call_id_bytes() -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Where each of the 32 hex digits goes, around the dashes.
    const AT: [u8; 32] = [
        0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 19, 20, 21, 22, 24, 25, 26, 27, 28,
        29, 30, 31, 32, 33, 34, 35,
    ];
    let mut out = *b"00000000-0000-0000-0000-000000000000";
    let (hi, lo) = (fastrand::u64(..), fastrand::u64(..));
    for (half, value) in [hi, lo].into_iter().enumerate() {
        for i in 0..16 {
            let nibble = (value >> (60 - 4 * i)) & 0xf;
            out[usize::from(AT[half * 16 + i])] = HEX[nibble as usize];
        }
    }
    out[14] = b'4'; // version 4
    out[19] = HEX[8 | (lo >> 60) as usize & 3]; // variant 10: the first digit of `lo` is 8-b
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_id_is_a_uuid_v4() {
        let id = new_call_id();
        let s = id.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
        assert_eq!(s.matches('-').count(), 4);
        assert_ne!(new_call_id(), id);
        // Every variant digit and every hex digit elsewhere turns up.
        let ids: Vec<[u8; 36]> = (0..400).map(|_| call_id_bytes()).collect();
        for v in [b'8', b'9', b'a', b'b'] {
            assert!(ids.iter().any(|id| id[19] == v), "variant {}", v as char);
        }
        for pos in [0, 20, 35] {
            for d in b"0123456789abcdef" {
                assert!(
                    ids.iter().any(|id| id[pos] == *d),
                    "{} at {pos}",
                    *d as char
                );
            }
        }
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert(header::LOCATION, HeaderValue::from_static("/elsewhere"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type", "location"]);
    }

    #[test]
    fn slab_values_are_independent() {
        let values: Vec<HeaderValue> = (0..5000u32)
            .map(|i| slab_value(itoa::Buffer::new().format(i).as_bytes()))
            .collect();
        for (i, v) in values.iter().enumerate() {
            assert_eq!(v.to_str().unwrap(), i.to_string());
        }
        let long = vec![b'a'; SLAB_BYTES + 10];
        assert_eq!(slab_value(&long).len(), SLAB_BYTES + 10);
    }

    #[test]
    fn strips_hop_by_hop_only() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a"));
        h.insert("x-custom", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["host", "x-custom"]);
    }

    #[test]
    fn start_time_is_unix_nanos() {
        let v: u64 = start_time_header().to_str().unwrap().parse().unwrap();
        assert!(v > 1_600_000_000_000_000_000);
    }
}
