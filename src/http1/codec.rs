//! The HTTP/1.1 wire format of the upstream leg: request head out, response head and body in.
//!
//! Owns: serializing a request head (and a small body) into a reused buffer, parsing a
//! response head with `httparse` into an `http::response::Parts`, deciding the response body's
//! framing (RFC 9112 section 6.3) and decoding a chunked body. It does no I/O: `forward` and
//! `body` read and write the socket and hand bytes here, so every rule is unit-tested on bytes.
//!
//! Invariants: nothing here panics on any input (proptest below feeds adversarial bytes split
//! at arbitrary points); a malformed head or chunk framing is an error, never a guess; header
//! values are `Bytes` slices of the head as read (no copy, no allocation per value); the
//! connection is reusable only when the framing delimits the body and neither HTTP/1.0 nor
//! `Connection: close` says otherwise.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use thiserror::Error;

/// Response headers parsed at most (hyper's default is 100).
pub(crate) const MAX_HEADERS: usize = 100;
/// Bytes a response head may take, with its 1xx heads (hyper's default buffer is ~400 KiB;
/// a function answering more head than this is broken).
pub(crate) const MAX_HEAD_BYTES: usize = u16::MAX as usize;
/// Response header slots kept free for the headers the gateway adds.
const RESERVED_HEADERS: usize = 4;
/// Bytes a chunk-size line (with extensions) may take.
pub(crate) const MAX_CHUNK_LINE: usize = 4096;
/// Bytes the trailer section of a chunked body may take (it is read and dropped).
pub(crate) const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Request bytes coalesced into one write: the head, and the body's frames that are ready
/// together (a small body of known length leaves in the same write as its head).
pub(crate) const INLINE_BODY: usize = 16 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("malformed response head")]
    Head,
    #[error("response head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("unsupported response status {0}")]
    Status(u16),
    #[error("invalid Content-Length")]
    ContentLength,
    #[error("malformed chunked body")]
    Chunk,
    #[error("connection closed before the body ended")]
    Truncated,
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304, or `Content-Length: 0`).
    Empty,
    Length(u64),
    Chunked,
    /// Read to EOF; the connection cannot be reused.
    Close,
}

/// A parsed final response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub parts: http::response::Parts,
    pub framing: Framing,
    /// The connection may carry another request once this body ends.
    pub keep_alive: bool,
}

/// Incremental decoder of a chunked body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: ChunkState,
    trailer_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// What a decoding step produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// More input is needed.
    NeedMore,
    /// The terminating chunk and the trailers have been read.
    End,
}

/// Serializes the head of `req` (origin-form target from its URI) into `out`, with framing
/// headers for a body of `body_len` (`Some(n)`: known length; `None`: chunked). A
/// `Content-Length` the request already carries is kept as is.
pub(crate) fn write_request_head<B>(req: &Request<B>, body_len: Option<u64>, out: &mut Vec<u8>) {
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    out.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let headers = req.headers();
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !headers.contains_key(header::CONTENT_LENGTH) {
        match body_len {
            None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            Some(0) if !expects_body(req.method()) => {}
            Some(n) => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Methods whose empty body is still announced (`Content-Length: 0`), as hyper does.
pub(crate) fn expects_body(m: &Method) -> bool {
    matches!(*m, Method::POST | Method::PUT | Method::PATCH)
}

/// Appends one chunk of a chunked body (`data` non-empty).
pub fn write_chunk_header(len: usize, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk of a chunked body, without trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A final response head as positions in the bytes it was parsed from: what both the
/// `HeaderMap` path ([`parse_response_head`]) and the byte-level path (`api::conn`, which
/// writes the client's head straight from these spans) need, computed once.
pub struct RawHead {
    /// Bytes of the head at the start of the buffer (interim 1xx heads already consumed).
    pub len: usize,
    pub status: StatusCode,
    /// The upstream's reason phrase (a position in the head), for codes without a canonical one.
    reason: Span2,
    pub framing: Framing,
    /// The connection may carry another request once this body ends.
    pub keep_alive: bool,
    count: usize,
    spans: [Span; MAX_HEADERS],
}

/// Where one header's name and value lie in the head.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    name: Span2,
    value: Span2,
}

/// A range of the head (< 64 KiB).
#[derive(Debug, Clone, Copy, Default)]
struct Span2(u16, u16);

impl Span2 {
    fn of<'h>(&self, head: &'h [u8]) -> &'h [u8] {
        &head[usize::from(self.0)..usize::from(self.1)]
    }
}

impl Default for RawHead {
    fn default() -> Self {
        Self {
            len: 0,
            status: StatusCode::OK,
            reason: Span2::default(),
            framing: Framing::Empty,
            keep_alive: false,
            count: 0,
            spans: [Span::default(); MAX_HEADERS],
        }
    }
}

impl RawHead {
    /// The headers as `(name, value)` slices of `head` (the bytes the head was parsed from).
    pub fn headers<'h>(&'h self, head: &'h [u8]) -> impl Iterator<Item = (&'h [u8], &'h [u8])> {
        self.spans[..self.count]
            .iter()
            .map(move |s| (s.name.of(head), s.value.of(head)))
    }

    /// The reason phrase as sent (may be empty).
    pub fn reason<'h>(&self, head: &'h [u8]) -> &'h [u8] {
        self.reason.of(head)
    }
}

/// Parses the final response head at the start of `buf` into `out`, skipping (consuming)
/// interim 1xx heads. `Ok(false)`: incomplete, read more. On success the final head is left
/// in `buf` (its first `out.len` bytes): the caller consumes it.
pub fn parse_response_raw(
    buf: &mut BytesMut,
    head_request: bool,
    out: &mut RawHead,
) -> Result<bool, WireError> {
    loop {
        // Uninitialized slots: zeroing 100 headers cost more than parsing a small head.
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                return if buf.len() > MAX_HEAD_BYTES {
                    Err(WireError::HeadTooLarge)
                } else {
                    Ok(false)
                };
            }
            Err(httparse::Error::TooManyHeaders) => return Err(WireError::HeadTooLarge),
            Err(_) => return Err(WireError::Head),
        };
        let code = resp.code.ok_or(WireError::Head)?;
        let status = StatusCode::from_u16(code).map_err(|_| WireError::Head)?;
        if status.is_informational() {
            if code == 101 {
                // Upgrades are not forwarded (`Upgrade` is stripped from requests).
                return Err(WireError::Status(code));
            }
            buf.advance(len);
            continue;
        }
        if len > MAX_HEAD_BYTES {
            return Err(WireError::HeadTooLarge);
        }
        // Positions of each header inside the head (< 64 KiB).
        let base = buf.as_ptr() as usize;
        let at = |s: &[u8]| {
            let start = s.as_ptr() as usize - base;
            Span2(start as u16, (start + s.len()) as u16)
        };
        out.count = resp.headers.len();
        for (span, h) in out.spans.iter_mut().zip(resp.headers.iter()) {
            *span = Span {
                name: at(h.name.as_bytes()),
                value: at(h.value),
            };
        }
        // httparse gives a static `""` (not a slice of `buf`) for a missing reason or one
        // with obs-text bytes: only a non-empty slice lying inside the head is a position.
        let within = |r: &str| {
            let start = r.as_ptr() as usize;
            !r.is_empty() && start >= base && start + r.len() <= base + len
        };
        out.reason = resp
            .reason
            .filter(|r| within(r))
            .map_or(Span2::default(), |r| at(r.as_bytes()));
        out.len = len;
        out.status = status;
        let http10 = resp.version == Some(0);
        let (framing, keep_alive) = framing_of(&buf[..len], out, http10, head_request)?;
        out.framing = framing;
        out.keep_alive = keep_alive;
        return Ok(true);
    }
}

/// Parses the final response head at the start of `buf` into a `HeaderMap`, skipping
/// (consuming) interim 1xx heads. `Ok(None)`: incomplete, read more. On success the head's
/// bytes are consumed and `buf` starts at the body.
pub fn parse_response_head(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<ResponseHead>, WireError> {
    let mut raw = RawHead::default();
    if !parse_response_raw(buf, head_request, &mut raw)? {
        return Ok(None);
    }
    let head = buf.split_to(raw.len).freeze();
    // Room for the headers the gateway adds (`X-Call-Id`, `X-Start-Time`) without a regrow.
    let mut headers = HeaderMap::with_capacity(raw.count + RESERVED_HEADERS);
    for span in &raw.spans[..raw.count] {
        let raw_name = span.name.of(&head);
        let name = match known_name(raw_name) {
            Some(name) => name,
            None => HeaderName::from_bytes(raw_name).map_err(|_| WireError::Head)?,
        };
        let value = HeaderValue::from_maybe_shared(
            head.slice(usize::from(span.value.0)..usize::from(span.value.1)),
        )
        .map_err(|_| WireError::Head)?;
        headers.append(name, value);
    }
    let mut resp = http::Response::new(());
    *resp.status_mut() = raw.status;
    // The version is this hop's: the gateway answers its client in its own HTTP/1.1.
    *resp.headers_mut() = headers;
    let (parts, ()) = resp.into_parts();
    Ok(Some(ResponseHead {
        parts,
        framing: raw.framing,
        keep_alive: raw.keep_alive,
    }))
}

/// The body's framing (RFC 9112 section 6.3) and whether the connection persists after it.
fn framing_of(
    head: &[u8],
    raw: &RawHead,
    http10: bool,
    head_request: bool,
) -> Result<(Framing, bool), WireError> {
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut close = false;
    let mut keep_alive_token = false;
    for (name, value) in raw.headers(head) {
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_content_length(value)?;
            if content_length.is_some_and(|m| m != n) {
                return Err(WireError::ContentLength);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            // Only a final `chunked` delimits the body; anything after it is read to EOF.
            chunked = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| trim(last).eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = trim(token);
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let status = raw.status;
    let bodiless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        Framing::Empty
    } else if transfer_encoding {
        if chunked {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else {
        match content_length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    };
    let persistent = if http10 {
        keep_alive_token && !close
    } else {
        !close
    };
    // Framing that leaves doubt about where the response ends: both framings (a smuggling
    // signal, RFC 9112 section 6.1), or a 204 announcing a body it must not have (RFC 9110
    // section 15.3.5). The response is answered, its connection is never reused.
    let doubtful = (transfer_encoding && content_length.is_some())
        || (status == StatusCode::NO_CONTENT
            && (transfer_encoding || content_length.is_some_and(|n| n > 0)));
    if doubtful && persistent {
        crate::http1::pool::count_discard(crate::http1::pool::Discard::Framing);
    }
    let keep_alive = persistent && framing != Framing::Close && !doubtful;
    Ok((framing, keep_alive))
}

/// Custom names every watchdog answer carries: taken from constants, since `HeaderName`
/// allocates for each custom name it parses.
const KNOWN_NAMES: [HeaderName; 3] = [
    HeaderName::from_static("x-call-id"),
    HeaderName::from_static("x-start-time"),
    HeaderName::from_static("x-duration-seconds"),
];

fn known_name(raw: &[u8]) -> Option<HeaderName> {
    if !matches!(raw.first(), Some(b'x' | b'X')) {
        return None;
    }
    KNOWN_NAMES
        .iter()
        .find(|n| n.as_str().as_bytes().eq_ignore_ascii_case(raw))
        .cloned()
}

/// `Content-Length` value: digits, or a list of equal digit strings (RFC 9110 8.6).
fn parse_content_length(v: &[u8]) -> Result<u64, WireError> {
    let mut value: Option<u64> = None;
    for part in v.split(|&b| b == b',') {
        let part = trim(part);
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(WireError::ContentLength);
        }
        let n = part
            .iter()
            .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
        if value.is_some_and(|m| m != n) {
            return Err(WireError::ContentLength);
        }
        value = Some(n);
    }
    value.ok_or(WireError::ContentLength)
}

/// `s` without leading and trailing spaces and tabs (optional whitespace, RFC 9110 5.6.3).
pub fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &s[start..end.max(start)]
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

// === impl ChunkedDecoder ===

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self {
            state: ChunkState::Size,
            trailer_bytes: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes from the start of `buf`, consuming what it used. Data comes out as slices of
    /// `buf` (no copy).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, WireError> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(end) = find_crlf(buf) else {
                        return if buf.len() > MAX_CHUNK_LINE {
                            Err(WireError::Chunk)
                        } else {
                            Ok(Decoded::NeedMore)
                        };
                    };
                    if end > MAX_CHUNK_LINE {
                        return Err(WireError::Chunk);
                    }
                    let size = parse_chunk_size(&buf[..end])?;
                    buf.advance(end + 2);
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = (buf.len() as u64).min(left) as usize;
                    let data = buf.split_to(n).freeze();
                    self.state = if left == n as u64 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n as u64)
                    };
                    return Ok(Decoded::Data(data));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return if buf.first().is_some_and(|&b| b != b'\r') {
                            Err(WireError::Chunk)
                        } else {
                            Ok(Decoded::NeedMore)
                        };
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(WireError::Chunk);
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let Some(end) = find_crlf(buf) else {
                        return if self.trailer_bytes + buf.len() > MAX_TRAILER_BYTES {
                            Err(WireError::Chunk)
                        } else {
                            Ok(Decoded::NeedMore)
                        };
                    };
                    self.trailer_bytes += end + 2;
                    if self.trailer_bytes > MAX_TRAILER_BYTES {
                        return Err(WireError::Chunk);
                    }
                    buf.advance(end + 2);
                    if end == 0 {
                        self.state = ChunkState::Done;
                    }
                }
                ChunkState::Done => return Ok(Decoded::End),
            }
        }
    }
}

/// A chunk-size line: hex digits, optional whitespace, optional `;extensions` (ignored).
fn parse_chunk_size(line: &[u8]) -> Result<u64, WireError> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 || digits > 16 {
        return Err(WireError::Chunk);
    }
    let rest = trim(&line[digits..]);
    if !(rest.is_empty() || rest[0] == b';') || rest.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err(WireError::Chunk);
    }
    let mut n = 0u64;
    for &d in &line[..digits] {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => d - b'A' + 10,
        };
        n = (n << 4) | u64::from(v);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(bytes: &[u8], head_request: bool) -> Result<Option<ResponseHead>, WireError> {
        parse_response_head(&mut BytesMut::from(bytes), head_request)
    }

    fn framing(bytes: &str) -> (Framing, bool) {
        let h = parse(bytes.as_bytes(), false).unwrap().unwrap();
        (h.framing, h.keep_alive)
    }

    #[test]
    fn parses_a_head_and_leaves_the_body() {
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello"[..]);
        let h = parse_response_head(&mut buf, false).unwrap().unwrap();
        assert_eq!(h.parts.status, 200);
        assert_eq!(h.parts.headers["x-a"], "b");
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn known_custom_names_match_any_case() {
        let h = parse(b"HTTP/1.1 200 OK\r\nX-Call-ID: a\r\nx-start-time: 1\r\nX-Other: 2\r\nContent-Length: 0\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!(h.parts.headers["x-call-id"], "a");
        assert_eq!(h.parts.headers["x-start-time"], "1");
        assert_eq!(h.parts.headers["x-other"], "2");
    }

    #[test]
    fn a_missing_or_non_ascii_reason_is_empty() {
        // httparse gives a static "" for these; it once became an out-of-range position.
        for head in [
            &b"HTTP/1.1 599\r\nContent-Length: 0\r\n\r\n"[..],
            b"HTTP/1.1 599 \xffbad\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(head);
            let mut raw = RawHead::default();
            assert!(parse_response_raw(&mut buf, false, &mut raw).unwrap());
            assert_eq!(raw.reason(&buf[..raw.len]), b"", "{head:?}");
        }
    }

    #[test]
    fn incomplete_heads_ask_for_more() {
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Le", false)
            .unwrap()
            .is_none());
        assert!(parse(b"", false).unwrap().is_none());
    }

    #[test]
    fn skips_100_continue_and_rejects_101() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"[..],
        );
        let h = parse_response_head(&mut buf, false).unwrap().unwrap();
        assert_eq!(h.parts.status, 201);
        assert_eq!(h.framing, Framing::Empty);
        assert!(buf.is_empty());
        let mut partial = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2"[..]);
        assert!(parse_response_head(&mut partial, false).unwrap().is_none());
        assert_eq!(&partial[..], b"HTTP/1.1 2");
        assert_eq!(
            parse(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", false).unwrap_err(),
            WireError::Status(101)
        );
    }

    #[test]
    fn malformed_heads_are_errors() {
        for bad in [
            &b"HTTP/1.1 2000 OK\r\n\r\n"[..],
            b"HTTX/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        ] {
            assert!(
                parse(bad, false).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(
            parse(huge.as_bytes(), false).unwrap_err(),
            WireError::HeadTooLarge
        );
    }

    #[test]
    fn framing_follows_rfc_9112() {
        use Framing::*;
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"),
            (Length(3), true)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n"),
            (Length(3), true)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            (Chunked, true)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"),
            (Chunked, true)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            (Close, false)
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n"), (Close, false));
        assert_eq!(framing("HTTP/1.1 204 No Content\r\n\r\n"), (Empty, true));
        assert_eq!(
            framing("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"),
            (Empty, true)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"),
            (Length(3), false)
        );
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n"),
            (Length(3), false)
        );
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: Keep-Alive\r\n\r\n"),
            (Length(3), true)
        );
        // Both framings: chunked wins, and the connection is not reused.
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            (Chunked, false)
        );
        let h = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Empty);
        assert_eq!(h.parts.headers["content-length"], "3");
    }

    #[test]
    fn writes_request_heads_with_framing() {
        let req = Request::post("/a?b=1")
            .header("host", "x")
            .body(())
            .unwrap();
        let mut out = Vec::new();
        write_request_head(&req, Some(5), &mut out);
        assert_eq!(
            out,
            b"POST /a?b=1 HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\n"
        );
        out.clear();
        write_request_head(&req, None, &mut out);
        assert_eq!(
            out,
            b"POST /a?b=1 HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        out.clear();
        write_request_head(&Request::get("/").body(()).unwrap(), Some(0), &mut out);
        assert_eq!(out, b"GET / HTTP/1.1\r\n\r\n");
        out.clear();
        let req = Request::put("/")
            .header("content-length", "0")
            .body(())
            .unwrap();
        write_request_head(&req, Some(0), &mut out);
        assert_eq!(out, b"PUT / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        out.clear();
        write_chunk_header(0x1a2, &mut out);
        assert_eq!(out, b"1a2\r\n");
    }

    fn decode_all(dec: &mut ChunkedDecoder, input: &[u8]) -> Result<Vec<u8>, WireError> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match dec.decode(&mut buf)? {
                Decoded::Data(d) => out.extend_from_slice(&d),
                Decoded::End => return Ok(out),
                Decoded::NeedMore => return Err(WireError::Truncated),
            }
        }
    }

    #[test]
    fn decodes_chunked_bodies() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\nA \r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(
            decode_all(&mut ChunkedDecoder::new(), body).unwrap(),
            b"hello world0123456789"
        );
        assert_eq!(
            decode_all(&mut ChunkedDecoder::new(), b"0\r\n\r\n").unwrap(),
            b""
        );
        for bad in [
            &b"x\r\n"[..],
            b"5\r\nhelloXX",
            b"5\r\nhello\r\n-1\r\n",
            b"11111111111111111\r\n",
            b"5 5\r\nhello\r\n",
        ] {
            assert!(
                matches!(
                    decode_all(&mut ChunkedDecoder::new(), bad),
                    Err(WireError::Chunk)
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = vec![b'1'; MAX_CHUNK_LINE + 1];
        assert!(decode_all(&mut ChunkedDecoder::new(), &long).is_err());
        let mut trailers = b"0\r\n".to_vec();
        trailers.extend(std::iter::repeat_n(b'a', MAX_TRAILER_BYTES + 1));
        assert_eq!(
            decode_all(&mut ChunkedDecoder::new(), &trailers).unwrap_err(),
            WireError::Chunk
        );
    }

    /// Feeds `input` to the decoder in pieces cut at `cuts`; returns the body or the error.
    fn decode_split(input: &[u8], cuts: &[usize]) -> Result<Vec<u8>, WireError> {
        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        points.push(input.len());
        points.sort_unstable();
        let mut fed = 0;
        for p in points {
            buf.extend_from_slice(&input[fed..p]);
            fed = p;
            loop {
                match dec.decode(&mut buf)? {
                    Decoded::Data(d) => out.extend_from_slice(&d),
                    Decoded::End => return Ok(out),
                    Decoded::NeedMore => break,
                }
            }
        }
        Err(WireError::Truncated)
    }

    fn encode(chunks: &[Vec<u8>], ext: bool, trailer: bool) -> Vec<u8> {
        encode_marked(chunks, ext, trailer).0
    }

    /// The chunked encoding of `chunks`, and which of its bytes are data (not framing).
    fn encode_marked(chunks: &[Vec<u8>], ext: bool, trailer: bool) -> (Vec<u8>, Vec<bool>) {
        let mut out = Vec::new();
        let mut data = Vec::new();
        let framing = |out: &mut Vec<u8>, data: &mut Vec<bool>, bytes: &[u8]| {
            out.extend_from_slice(bytes);
            data.resize(out.len(), false);
        };
        for c in chunks.iter().filter(|c| !c.is_empty()) {
            framing(&mut out, &mut data, format!("{:X}", c.len()).as_bytes());
            if ext {
                framing(&mut out, &mut data, b";name=\"v\"");
            }
            framing(&mut out, &mut data, b"\r\n");
            out.extend_from_slice(c);
            data.resize(out.len(), true);
            framing(&mut out, &mut data, b"\r\n");
        }
        framing(&mut out, &mut data, b"0\r\n");
        if trailer {
            framing(&mut out, &mut data, b"Expires: never\r\n");
        }
        framing(&mut out, &mut data, b"\r\n");
        (out, data)
    }

    proptest! {
        #[test]
        fn valid_chunked_bodies_decode_exactly(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
            ext in any::<bool>(),
            trailer in any::<bool>(),
        ) {
            let wire = encode(&chunks, ext, trailer);
            let body = decode_split(&wire, &cuts).unwrap();
            prop_assert_eq!(body, chunks.concat());
        }

        #[test]
        fn corrupted_chunked_bodies_never_decode_wrong(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..100), 1..5),
            at in any::<usize>(),
            byte in any::<u8>(),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            // One byte changed. A data byte: the body with that byte changed (framing has
            // no checksum). A framing byte: the original body when the byte is the same or
            // a size digit in the other case; otherwise an error, or a body that is not
            // silently accepted as the original.
            let (mut wire, is_data) = encode_marked(&chunks, false, false);
            let i = at % wire.len();
            let original = wire[i];
            wire[i] = byte;
            let result = decode_split(&wire, &cuts);
            if is_data[i] {
                let data_before = is_data[..i].iter().filter(|&&d| d).count();
                let mut expected = chunks.concat();
                expected[data_before] = byte;
                prop_assert_eq!(result.unwrap(), expected);
            } else if original == byte
                || (original.is_ascii_hexdigit() && byte.eq_ignore_ascii_case(&original))
            {
                prop_assert_eq!(result.unwrap(), chunks.concat());
            } else if let Ok(body) = result {
                prop_assert_ne!(body, chunks.concat());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            input in proptest::collection::vec(any::<u8>(), 0..600),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
            head_request in any::<bool>(),
        ) {
            let _ = decode_split(&input, &cuts);
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
            points.push(input.len());
            points.sort_unstable();
            let mut buf = BytesMut::new();
            let mut fed = 0;
            for p in points {
                buf.extend_from_slice(&input[fed..p]);
                fed = p;
                match parse_response_head(&mut buf, head_request) {
                    Ok(None) => continue,
                    _ => break,
                }
            }
        }

        #[test]
        fn valid_heads_parse_the_same_however_split(
            status in 200u16..600,
            values in proptest::collection::vec("[a-zA-Z0-9 ;=/._-]{0,40}", 0..6),
            len in 0u64..100_000,
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {len}\r\n");
            for (i, v) in values.iter().enumerate() {
                head.push_str(&format!("X-H{i}: {v}\r\n"));
            }
            head.push_str("\r\nBODY");
            let input = head.as_bytes();
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
            points.push(input.len());
            points.sort_unstable();
            let mut buf = BytesMut::new();
            let mut fed = 0;
            let mut parsed = None;
            for p in points {
                buf.extend_from_slice(&input[fed..p]);
                fed = p;
                if let Some(h) = parse_response_head(&mut buf, false).unwrap() {
                    parsed = Some(h);
                    break;
                }
            }
            buf.extend_from_slice(&input[fed..]);
            let h = parsed.unwrap();
            prop_assert_eq!(h.parts.status.as_u16(), status);
            for (i, v) in values.iter().enumerate() {
                let got = &h.parts.headers[format!("x-h{i}").as_str()];
                prop_assert_eq!(got.to_str().unwrap(), v.trim());
            }
            let bodiless = status == 204 || status == 304 || len == 0;
            prop_assert_eq!(h.framing, if bodiless { Framing::Empty } else { Framing::Length(len) });
            prop_assert_eq!(&buf[..], b"BODY");
        }
    }
}
