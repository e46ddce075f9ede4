//! The rules a request head must pass before any byte of it is forwarded: `Host` and body
//! framing as RFC 9112 states them, the way nginx enforces them.
//!
//! Owns: [`RequestRules`], an accumulator fed the `Host`, `Content-Length` and
//! `Transfer-Encoding` fields of one request head (by the byte-level client loop from its
//! `httparse` headers, by the hyper path from its `HeaderMap`), whose [`RequestRules::check`]
//! gives the one verdict both paths answer with; and [`forwardable_name`], the header-name
//! rule for what reaches a replica.
//!
//! Invariants: nothing here does I/O or allocates; every refusal is a 400 that closes the
//! client connection (a request whose framing is in doubt leaves the rest of the stream in
//! doubt too, RFC 9112 section 6.3); a value is never guessed: an ambiguous head is refused,
//! never repaired, except equal duplicate `Content-Length` values, which RFC 9110 section
//! 8.6 allows a recipient to treat as one.

use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

use crate::http1::codec::trim;

/// Why a request head is refused with 400.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestError {
    /// RFC 9112 section 3.2: "A server MUST respond with a 400 (Bad Request) status code
    /// to any HTTP/1.1 request message that lacks a Host header field".
    #[error("missing Host header")]
    MissingHost,
    /// RFC 9112 section 3.2: "... and to any request message that contains more than one
    /// Host header field line".
    #[error("more than one Host header")]
    DuplicateHost,
    /// RFC 9112 section 3.2: "... or a Host header field with an invalid field value"
    /// (RFC 3986 section 3.2.2 `host [ ":" port ]`; an empty value is refused, as nginx does).
    #[error("invalid Host header")]
    InvalidHost,
    /// RFC 9112 section 6.1: a request with both is a smuggling signal; "A server MAY reject
    /// a request that contains both Content-Length and Transfer-Encoding", which nginx does.
    #[error("both Content-Length and Transfer-Encoding")]
    LengthWithTransferEncoding,
    /// RFC 9112 section 6.3 item 5: an invalid `Content-Length` (not digits, or several
    /// different values) is an unrecoverable framing error.
    #[error("invalid or conflicting Content-Length")]
    InvalidLength,
    /// RFC 9112 section 6.3 item 4: a request whose `Transfer-Encoding` does not end in
    /// `chunked` has no determinable length; section 6.1: HTTP/1.0 has no transfer codings.
    #[error("unsupported Transfer-Encoding")]
    TransferEncoding,
    /// RFC 9112 section 7.1: a chunked request body that does not parse.
    #[error("malformed chunked request body")]
    Chunked,
    /// RFC 9112 section 6.1: "A server that receives a request message with a transfer
    /// coding it does not understand SHOULD respond with 501 (Not Implemented)": faasgate
    /// decodes `chunked` only (a `gzip` transfer coding would reach the replica as bytes
    /// with nothing saying they are compressed).
    #[error("unsupported transfer coding")]
    UnsupportedCoding,
}

impl RequestError {
    pub(crate) const ALL: [RequestError; 8] = [
        RequestError::MissingHost,
        RequestError::DuplicateHost,
        RequestError::InvalidHost,
        RequestError::LengthWithTransferEncoding,
        RequestError::InvalidLength,
        RequestError::TransferEncoding,
        RequestError::Chunked,
        RequestError::UnsupportedCoding,
    ];

    /// The metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RequestError::MissingHost => "missing_host",
            RequestError::DuplicateHost => "duplicate_host",
            RequestError::InvalidHost => "invalid_host",
            RequestError::LengthWithTransferEncoding => "length_with_transfer_encoding",
            RequestError::InvalidLength => "invalid_length",
            RequestError::TransferEncoding => "transfer_encoding",
            RequestError::Chunked => "malformed_chunked_body",
            RequestError::UnsupportedCoding => "unsupported_transfer_coding",
        }
    }

    /// The answer's body.
    pub(crate) fn message(self) -> &'static str {
        match self {
            RequestError::MissingHost => "400 Bad Request: missing Host header",
            RequestError::DuplicateHost => "400 Bad Request: more than one Host header",
            RequestError::InvalidHost => "400 Bad Request: invalid Host header",
            RequestError::LengthWithTransferEncoding => {
                "400 Bad Request: both Content-Length and Transfer-Encoding"
            }
            RequestError::InvalidLength => "400 Bad Request: invalid Content-Length",
            RequestError::TransferEncoding => "400 Bad Request: unsupported Transfer-Encoding",
            RequestError::Chunked => "400 Bad Request: malformed chunked request body",
            RequestError::UnsupportedCoding => {
                "501 Not Implemented: transfer codings other than chunked are not supported"
            }
        }
    }

    /// The answer's status: 400, or 501 for a transfer coding faasgate does not decode.
    pub(crate) fn status(self) -> http::StatusCode {
        match self {
            RequestError::UnsupportedCoding => http::StatusCode::NOT_IMPLEMENTED,
            _ => http::StatusCode::BAD_REQUEST,
        }
    }
}

static REJECTED: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

/// Counts one request refused for `e` (`faasgate_requests_rejected_total{reason}`).
pub(crate) fn count_rejected(e: RequestError) {
    REJECTED[e as usize].fetch_add(1, Ordering::Relaxed);
}

/// Requests refused for `e` since the process started.
pub(crate) fn rejected(e: RequestError) -> u64 {
    REJECTED[e as usize].load(Ordering::Relaxed)
}

/// The framing and `Host` fields of one request head, gathered field by field.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RequestRules {
    hosts: u8,
    host_invalid: bool,
    length: Option<u64>,
    length_invalid: bool,
    transfer_encoding: bool,
    /// The last `Transfer-Encoding` field ends in `chunked`.
    chunked_last: bool,
    /// A `chunked` coding was followed by another coding.
    chunked_not_last: bool,
    /// A coding other than `chunked` was named.
    other_coding: bool,
}

/// How a request's body is delimited, once its head passed [`RequestRules::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestFraming {
    /// No `Content-Length` nor `Transfer-Encoding`: no body (RFC 9112 section 6.3 item 7).
    None,
    Length(u64),
    Chunked,
}

impl RequestRules {
    pub(crate) const fn new() -> Self {
        Self {
            hosts: 0,
            host_invalid: false,
            length: None,
            length_invalid: false,
            transfer_encoding: false,
            chunked_last: false,
            chunked_not_last: false,
            other_coding: false,
        }
    }

    /// One `Host` field line.
    pub(crate) fn host(&mut self, value: &[u8]) {
        self.hosts = self.hosts.saturating_add(1);
        self.host_invalid |= !valid_host(value);
    }

    /// One `Content-Length` field line (a list of equal values counts as one value).
    pub(crate) fn content_length(&mut self, value: &[u8]) {
        match parse_length_list(value) {
            Some(n) if self.length.is_none_or(|m| m == n) => self.length = Some(n),
            _ => self.length_invalid = true,
        }
    }

    /// One `Transfer-Encoding` field line. Its codings continue those of earlier lines
    /// (RFC 9110 section 5.3): `chunked` anywhere but last is applied twice or before
    /// another coding, which RFC 9112 section 6.1 forbids.
    pub(crate) fn transfer_encoding(&mut self, value: &[u8]) {
        self.transfer_encoding = true;
        for coding in value.split(|&b| b == b',').map(trim) {
            if coding.is_empty() {
                continue;
            }
            self.chunked_not_last |= self.chunked_last;
            self.chunked_last = coding.eq_ignore_ascii_case(b"chunked");
            self.other_coding |= !self.chunked_last;
        }
    }

    /// The verdict for a head of version `HTTP/1.{minor}`.
    pub(crate) fn check(&self, minor: u8) -> Result<RequestFraming, RequestError> {
        match self.hosts {
            0 if minor >= 1 => return Err(RequestError::MissingHost),
            0 | 1 => {}
            _ => return Err(RequestError::DuplicateHost),
        }
        if self.host_invalid {
            return Err(RequestError::InvalidHost);
        }
        if self.transfer_encoding {
            if self.length.is_some() || self.length_invalid {
                return Err(RequestError::LengthWithTransferEncoding);
            }
            if minor == 0 || !self.chunked_last || self.chunked_not_last {
                return Err(RequestError::TransferEncoding);
            }
            if self.other_coding {
                return Err(RequestError::UnsupportedCoding);
            }
            return Ok(RequestFraming::Chunked);
        }
        if self.length_invalid {
            return Err(RequestError::InvalidLength);
        }
        Ok(match self.length {
            Some(n) => RequestFraming::Length(n),
            None => RequestFraming::None,
        })
    }
}

/// The rules for a request hyper parsed: the same verdict as [`RequestRules::check`] gives
/// the byte-level loop, but for what hyper's parser hides. It refuses a conflicting
/// `Content-Length` itself, and for a request with both `Content-Length` and
/// `Transfer-Encoding` it drops the length before the request reaches us, processes the
/// body by `Transfer-Encoding` and closes the connection after answering (RFC 9112 section
/// 6.1 allows this; the byte loop, which reads every connection's first requests, refuses
/// it as nginx does).
pub(crate) fn check_parsed(
    version: http::Version,
    headers: &http::HeaderMap,
) -> Result<(), RequestError> {
    let mut rules = RequestRules::new();
    for v in headers.get_all(http::header::HOST) {
        rules.host(v.as_bytes());
    }
    for v in headers.get_all(http::header::TRANSFER_ENCODING) {
        rules.transfer_encoding(v.as_bytes());
    }
    for v in headers.get_all(http::header::CONTENT_LENGTH) {
        rules.content_length(v.as_bytes());
    }
    let minor = if version == http::Version::HTTP_10 || version == http::Version::HTTP_09 {
        0
    } else {
        1
    };
    rules.check(minor).map(|_| ())
}

/// Whether a header of this name is forwarded to a replica: names with `_` are dropped
/// unless `allow_underscores` (nginx's `underscores_in_headers off`, its default). Such a
/// name is legal (a token), but CGI-style consumers, the watchdog's `Http_` variables among
/// them, map `_` and `-` to the same name, so `Content_Length` could be read as
/// `Content-Length` by the function while every hop before it framed by the real one.
#[inline]
pub(crate) fn forwardable_name(name: &[u8], allow_underscores: bool) -> bool {
    allow_underscores || !name.contains(&b'_')
}

/// A `Content-Length` field value: 1 to 19 digits (fits `u64`), nothing else. A list of
/// equal values (`5, 5`), which RFC 9110 section 8.6 lets a recipient accept, is refused as
/// nginx and hyper's parser refuse it, so both client paths answer it alike; equal values on
/// separate lines are accepted as one.
pub(crate) fn parse_length_list(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        v.iter()
            .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0')),
    )
}

/// `uri-host [ ":" port ]` (RFC 9110 section 7.2, RFC 3986 section 3.2.2), without
/// surrounding whitespace inside the value. An empty value is refused (nginx).
pub(crate) fn valid_host(v: &[u8]) -> bool {
    let v = trim(v);
    if v.is_empty() {
        return false;
    }
    let (host, port) = if v[0] == b'[' {
        // IP-literal: IPv6address or IPvFuture, then an optional port.
        let Some(close) = v.iter().position(|&b| b == b']') else {
            return false;
        };
        let inner = &v[1..close];
        if inner.is_empty()
            || !inner.iter().all(|&b| {
                b.is_ascii_hexdigit() || b == b':' || b == b'.' || is_unreserved_or_sub(b)
            })
        {
            return false;
        }
        return match &v[close + 1..] {
            [] => true,
            [b':', port @ ..] => port.len() <= 5 && port.iter().all(u8::is_ascii_digit),
            _ => false,
        };
    } else {
        match v.iter().rposition(|&b| b == b':') {
            Some(i) => (&v[..i], &v[i + 1..]),
            None => (v, &v[..0]),
        }
    };
    if !port.iter().all(u8::is_ascii_digit) || port.len() > 5 {
        return false;
    }
    // An http(s) URI's host is never empty (RFC 9110 section 4.2.1).
    !host.is_empty() && reg_name(host)
}

/// `reg-name = *( unreserved / pct-encoded / sub-delims )`.
fn reg_name(host: &[u8]) -> bool {
    let mut i = 0;
    while i < host.len() {
        let b = host[i];
        if b == b'%' {
            if i + 2 >= host.len()
                || !(host[i + 1].is_ascii_hexdigit() && host[i + 2].is_ascii_hexdigit())
            {
                return false;
            }
            i += 3;
            continue;
        }
        if !is_unreserved_or_sub(b) {
            return false;
        }
        i += 1;
    }
    true
}

fn is_unreserved_or_sub(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(minor: u8, fields: &[(&str, &str)]) -> Result<RequestFraming, RequestError> {
        let mut r = RequestRules::new();
        for (n, v) in fields {
            match n.to_ascii_lowercase().as_str() {
                "host" => r.host(v.as_bytes()),
                "content-length" => r.content_length(v.as_bytes()),
                "transfer-encoding" => r.transfer_encoding(v.as_bytes()),
                _ => {}
            }
        }
        r.check(minor)
    }

    #[test]
    fn host_rules_follow_rfc_9112_section_3_2() {
        use RequestError::*;
        assert_eq!(verdict(1, &[("Host", "a")]), Ok(RequestFraming::None));
        assert_eq!(verdict(1, &[]), Err(MissingHost));
        assert_eq!(verdict(0, &[]), Ok(RequestFraming::None));
        assert_eq!(
            verdict(1, &[("Host", "a"), ("host", "a")]),
            Err(DuplicateHost)
        );
        assert_eq!(
            verdict(0, &[("Host", "a"), ("host", "b")]),
            Err(DuplicateHost)
        );
        for bad in [
            "", " ", "a b", "a/b", "a\\b", "a:b", "a:123456", "[::1", "[]", "[::1]x", "a%zz",
            "a%4", ":80", "u@h",
        ] {
            assert_eq!(verdict(1, &[("Host", bad)]), Err(InvalidHost), "{bad:?}");
        }
        for good in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]",
            "[::1]:80",
            "a.b-c_d~e",
            "x%41y",
            "h:",
            " padded ",
        ] {
            assert!(verdict(1, &[("Host", good)]).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn framing_rules_follow_rfc_9112_section_6() {
        use RequestError::*;
        use RequestFraming as F;
        let h = ("Host", "a");
        assert_eq!(verdict(1, &[h, ("Content-Length", "5")]), Ok(F::Length(5)));
        // Equal duplicates on separate lines are one value (RFC 9110 8.6); a list in one
        // line is refused, as nginx and hyper refuse it.
        assert_eq!(
            verdict(1, &[h, ("Content-Length", "5"), ("Content-Length", "5")]),
            Ok(F::Length(5))
        );
        assert_eq!(
            verdict(1, &[h, ("Content-Length", "5, 5")]),
            Err(InvalidLength)
        );
        assert_eq!(
            verdict(1, &[h, ("Content-Length", "5"), ("Content-Length", "6")]),
            Err(InvalidLength)
        );
        for bad in ["", "-1", "+5", "0x5", "5 5", "1e3", "99999999999999999999"] {
            assert_eq!(
                verdict(1, &[h, ("Content-Length", bad)]),
                Err(InvalidLength),
                "{bad:?}"
            );
        }
        assert_eq!(
            verdict(1, &[h, ("Transfer-Encoding", "chunked")]),
            Ok(F::Chunked)
        );
        assert_eq!(
            verdict(1, &[h, ("Transfer-Encoding", "gzip, chunked")]),
            Err(UnsupportedCoding)
        );
        assert_eq!(
            verdict(1, &[h, ("Transfer-Encoding", "chunked, gzip")]),
            Err(TransferEncoding)
        );
        assert_eq!(
            verdict(
                1,
                &[
                    h,
                    ("Transfer-Encoding", "chunked"),
                    ("Transfer-Encoding", "identity")
                ]
            ),
            Err(TransferEncoding)
        );
        assert_eq!(
            verdict(0, &[("Transfer-Encoding", "chunked")]),
            Err(TransferEncoding)
        );
        for order in [
            [("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
            [("Transfer-Encoding", "chunked"), ("Content-Length", "5")],
        ] {
            assert_eq!(
                verdict(1, &[h, order[0], order[1]]),
                Err(LengthWithTransferEncoding)
            );
        }
        assert_eq!(
            verdict(
                1,
                &[h, ("Content-Length", "x"), ("Transfer-Encoding", "chunked")]
            ),
            Err(LengthWithTransferEncoding)
        );
    }

    #[test]
    fn underscore_names_are_dropped_unless_allowed() {
        assert!(!forwardable_name(b"Content_Length", false));
        assert!(forwardable_name(b"Content_Length", true));
        assert!(forwardable_name(b"Content-Length", false));
    }

    proptest::proptest! {
        #[test]
        fn host_validation_never_panics_and_refuses_controls(v in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
            let ok = valid_host(&v);
            if v.iter().any(|&b| b < 0x21 && b != b' ' && b != b'\t' || b == 0x7f || b == b'/' || b == b'@') {
                proptest::prop_assert!(!ok);
            }
        }
    }
}
