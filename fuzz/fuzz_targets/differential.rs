//! Differential: the same client bytes through the byte-level client loop and through
//! hyper's server (`Gateway::byte_loop` true and false) must reach the upstream as the same
//! requests and get the client the same answers.
//!
//! Two in-process gateways (one per mode) and two recording upstreams run on one
//! current-thread tokio runtime made once for the process; each serves function `echo`.
//! Each input is sent on a fresh loopback connection to each gateway, followed by a
//! sentinel (`GET /healthz` with `Connection: close`) so a well-framed input ends with the
//! gateway closing the connection, and the client reads to EOF. An input whose last request
//! would wait for bytes that never come (a head or body cut short: only a timeout ends it)
//! is skipped before sending.
//!
//! Compared, per mode: the requests the upstream received, in order (request line, headers
//! with names lowercased and sorted stably by name, body), and the answers the client
//! read, in order (status for every answer; for answers to `/function/` requests also the
//! headers, normalised the same way, and the body, except for a refusal that closes the
//! connection, 400/408/431/501, whose wording depends on which parser refused first). Masked: the gateway's per-request
//! values (`X-Start-Time`, a generated `X-Call-Id`, `Date`) and `X-Forwarded-For`'s
//! client port. Why each normalisation is needed is in the report of issue 11.
//!
//! The upstream's answer is chosen by the request's `X-Fuzz-Response` header (a digit):
//! a length, chunked, 204, close-delimited, 500, hop-by-hop-laden, non-canonical-reason or
//! reason-less answer. What the gateway sends must always parse at the upstream (either
//! mode).
//!
//! A difference is re-checked: it must show on every one of several runs (a loopback
//! reset racing a read is not a finding).
#![no_main]

#[path = "../../tests/support/inproc.rs"]
mod inproc;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use faasgate::dataplane::Routes;
use faasgate::http1::codec::{ChunkedDecoder, Decoded};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const SENTINEL: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: sentinel\r\nConnection: close\r\n\r\n";
/// The bound on one exchange; past it the run is inconclusive (not compared).
const WAIT: Duration = Duration::from_secs(5);
/// Runs of an input that showed a difference; every one must show it.
const RECHECKS: usize = 3;

/// The upstream's canned answers, by `X-Fuzz-Response` digit. The last has no reason phrase
/// (it once panicked the byte loop: httparse's static empty reason was taken as a position).
const ANSWERS: [&[u8]; 8] = [
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n3\r\n!!!\r\n0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nX-Empty: 1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nclose-delimited",
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nfail",
    b"HTTP/1.1 200 OK\r\nConnection: X-Up\r\nX-Up: 1\r\nKeep-Alive: timeout=5\r\nTE: x\r\nX-Call-Id: up\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 299 Fine Thanks\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
];
/// The canned answers whose upstream connection closes after the body.
const CLOSES: usize = 3;

/// One mode's gateway and what its upstream received.
struct Side {
    gateway: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    /// Dropping it would stop the gateway.
    _running: inproc::InProc,
}

struct Harness {
    rt: Runtime,
    byte_loop: Side,
    hyper: Side,
}

/// A request as the upstream read it.
#[derive(Debug, Clone, PartialEq)]
enum Received {
    Request {
        line: String,
        headers: Headers,
        body: Vec<u8>,
        chunked: bool,
    },
    /// Bytes the upstream could not read as a request.
    Garbage(Vec<u8>),
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (byte_loop, hyper) = rt.block_on(async { (side(true).await, side(false).await) });
        Harness {
            rt,
            byte_loop,
            hyper,
        }
    })
}

async fn side(byte_loop: bool) -> Side {
    let received = Arc::new(Mutex::new(Vec::new()));
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind upstream");
    let upstream = listener.local_addr().expect("upstream address");
    tokio::spawn(upstream_loop(listener, received.clone()));
    let routes = Arc::new(Routes::new());
    inproc::publish(&routes, "echo", &[upstream]);
    let gw = inproc::spawn_gateway_with(([127, 0, 0, 1], 0).into(), routes, byte_loop).await;
    Side {
        gateway: gw.addr,
        received,
        _running: gw,
    }
}

// === the recording upstream ===

async fn upstream_loop(listener: TcpListener, received: Arc<Mutex<Vec<Received>>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(upstream_conn(stream, received.clone()));
    }
}

/// Reads requests off one gateway connection, records each and answers it.
async fn upstream_conn(mut s: TcpStream, received: Arc<Mutex<Vec<Received>>>) {
    let mut buf = BytesMut::new();
    loop {
        let parsed = loop {
            match read_request(&mut buf) {
                Ok(Some(r)) => break r,
                Ok(None) => {}
                Err(()) => {
                    received
                        .lock()
                        .unwrap()
                        .push(Received::Garbage(buf.to_vec()));
                    return;
                }
            }
            match s.read_buf(&mut buf).await {
                Ok(n) if n > 0 => {}
                _ => {
                    if !buf.is_empty() {
                        received
                            .lock()
                            .unwrap()
                            .push(Received::Garbage(buf.to_vec()));
                    }
                    return;
                }
            }
        };
        let (request, answer, head) = parsed;
        received.lock().unwrap().push(request);
        let bytes = ANSWERS[answer];
        let bytes = if head {
            // The head only.
            let end = find(bytes, b"\r\n\r\n").unwrap() + 4;
            &bytes[..end]
        } else {
            bytes
        };
        if s.write_all(bytes).await.is_err() || answer == CLOSES {
            return;
        }
    }
}

/// One request off the start of `buf` (consumed): the record, the answer to give, whether
/// it is a HEAD. `Ok(None)`: incomplete.
fn read_request(buf: &mut BytesMut) -> Result<Option<(Received, usize, bool)>, ()> {
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut slots);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let line = format!(
        "{} {} HTTP/1.{}",
        req.method.unwrap_or(""),
        req.path.unwrap_or(""),
        req.version.unwrap_or(9)
    );
    let headers: Headers = req
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    let head = req.method == Some("HEAD");
    let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let answer = get("x-fuzz-response")
        .and_then(|v| v.first())
        .filter(|d| d.is_ascii_digit())
        .map_or(0, |d| usize::from(d - b'0') % ANSWERS.len());
    let chunked = get("transfer-encoding").is_some();
    let mut rest = buf.clone().split_off(n);
    let (body, used) = if chunked {
        let before = rest.len();
        let mut decoder = ChunkedDecoder::new();
        let mut body = Vec::new();
        loop {
            match decoder.decode(&mut rest) {
                Ok(Decoded::Data(d)) => body.extend_from_slice(&d),
                Ok(Decoded::End) => break,
                Ok(Decoded::NeedMore) => return Ok(None),
                Err(_) => return Err(()),
            }
        }
        (body, before - rest.len())
    } else {
        let len = match get("content-length") {
            None => 0,
            Some(v) => std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or(())?,
        };
        if rest.len() < len {
            return Ok(None);
        }
        (rest[..len].to_vec(), len)
    };
    let _ = buf.split_to(n + used);
    Ok(Some((
        Received::Request {
            line,
            headers,
            body,
            chunked,
        },
        answer,
        head,
    )))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// === the client's side ===

/// What a server reading `bytes` sees: per complete request, whether it is a HEAD and
/// whether it invokes a function; `None` when the last request waits for bytes that never
/// come (only a timeout would end it), or shows a known difference.
fn requests(bytes: &[u8]) -> Option<Vec<(bool, bool)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let mut slots = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut slots);
        let n = match req.parse(&bytes[pos..]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return None,
            // The server answers 400 and closes.
            Err(_) => return Some(out),
        };
        out.push((
            req.method == Some("HEAD"),
            req.path.is_some_and(|p| p.starts_with("/function/")),
        ));
        let has = |name: &str, token: &str| {
            req.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case(name)
                    && String::from_utf8_lossy(h.value)
                        .to_ascii_lowercase()
                        .contains(token)
            })
        };
        let mut rest = BytesMut::from(&bytes[pos + n..]);
        let before = rest.len();
        if has("transfer-encoding", "") {
            let mut decoder = ChunkedDecoder::new();
            loop {
                match decoder.decode(&mut rest) {
                    Ok(Decoded::Data(_)) => {}
                    Ok(Decoded::End) => break,
                    Ok(Decoded::NeedMore) => return None,
                    Err(_) => return Some(out),
                }
            }
        } else if let Some(h) = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        {
            let Some(len) = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
            else {
                return Some(out);
            };
            if rest.len() < len {
                return None;
            }
            rest = rest.split_off(len);
        }
        pos += n + (before - rest.len());
        if req.version == Some(0) || has("connection", "close") {
            return Some(out);
        }
    }
    Some(out)
}

/// Header names (lowercased) and values, in order.
type Headers = Vec<(String, Vec<u8>)>;

/// An answer as the client read it.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: u16,
    /// `None` for answers that are not to a function invocation (compared by status only).
    detail: Option<Detail>,
}

#[derive(Debug, Clone, PartialEq)]
struct Detail {
    headers: Headers,
    body: Vec<u8>,
    chunked: bool,
}

/// What one mode did: the answers the client read, the requests the upstream received.
type Seen = (Vec<Answer>, Vec<Received>);

/// Splits what the client read into answers; anything left that is not an answer ends the
/// list as an answer with status 0 and the bytes as body.
fn answers(mut bytes: &[u8], requests: &[(bool, bool)]) -> Vec<Answer> {
    let mut out = Vec::new();
    let mut finals = 0;
    while !bytes.is_empty() {
        let mut slots = [httparse::EMPTY_HEADER; 128];
        let mut resp = httparse::Response::new(&mut slots);
        let n = match resp.parse(bytes) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => {
                out.push(Answer {
                    status: 0,
                    detail: Some(Detail {
                        headers: Vec::new(),
                        body: bytes.to_vec(),
                        chunked: false,
                    }),
                });
                return out;
            }
        };
        let status = resp.code.unwrap_or(0);
        let headers: Headers = resp
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
            .collect();
        let (head_request, function) = if status >= 200 {
            let r = requests.get(finals).copied().unwrap_or((false, false));
            finals += 1;
            r
        } else {
            (false, false)
        };
        let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        let mut rest = &bytes[n..];
        let mut body = Vec::new();
        let chunked = get("transfer-encoding").is_some();
        if head_request || status < 200 || status == 204 || status == 304 {
        } else if chunked {
            let mut buf = BytesMut::from(rest);
            let mut decoder = ChunkedDecoder::new();
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Decoded::Data(d)) => body.extend_from_slice(&d),
                    Ok(Decoded::End) => break,
                    _ => {
                        body.extend_from_slice(b"<broken chunked body>");
                        buf.clear();
                        break;
                    }
                }
            }
            rest = &rest[rest.len() - buf.len()..];
        } else if let Some(len) = get("content-length")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            let len = len.min(rest.len());
            body.extend_from_slice(&rest[..len]);
            rest = &rest[len..];
        } else {
            body.extend_from_slice(rest);
            rest = &[];
        }
        // A refusal that closes the connection (the request rules' 400/501, a timeout's
        // 408, hyper's 400/431 for what it cannot parse) is compared by status: which of
        // the two parsers refused it first decides only the body's wording.
        // (hyper appends `keep-alive` to our `close` for an HTTP/1.0 keep-alive request: the
        // `close` token decides, and hyper does close.)
        let refusal = matches!(status, 400 | 408 | 431 | 501)
            && headers.iter().any(|(n, v)| {
                n == "connection"
                    && v.split(|&b| b == b',')
                        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
            });
        out.push(Answer {
            status,
            detail: (function && !refusal).then_some(Detail {
                headers,
                body,
                chunked,
            }),
        });
        bytes = rest;
    }
    out
}

/// Header values that differ per request or per connection, masked; headers sorted stably
/// by name (hyper's `HeaderMap` groups a name's values; the byte loop keeps the client's
/// order).
fn normalise(headers: &mut [(String, Vec<u8>)], input: &[u8], peer: &str) {
    for (name, value) in headers.iter_mut() {
        let mask = match name.as_str() {
            "x-start-time" | "date" => true,
            // A generated id (not one the client sent).
            "x-call-id" => value.len() == 36 && find(input, value).is_none(),
            "x-forwarded-for" => value.as_slice() == peer.as_bytes(),
            // The replica's own address (each mode's upstream has its own), given as Host to
            // an HTTP/1.0 request that had none. Any loopback socket address is masked: the
            // fuzzer learns compared bytes, so an input may hold the upstream's address.
            "host" => std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<std::net::SocketAddr>().ok())
                .is_some_and(|a| a.ip().is_loopback()),
            _ => false,
        };
        if mask {
            *value = b"<masked>".to_vec();
        } else if name == "content-length"
            && !value.is_empty()
            && value.iter().all(u8::is_ascii_digit)
        {
            // The same length in other digits: the byte loop forwards the length it framed
            // the body with (`0`), hyper the client's digits (`00`). Both say the same.
            let digits = value
                .iter()
                .position(|&b| b != b'0')
                .unwrap_or(value.len() - 1);
            value.drain(..digits);
        }
    }
    headers.sort_by(|a, b| a.0.cmp(&b.0));
}

/// What one mode did with `input`: the answers the client read and the requests the
/// upstream received; `None` when the exchange did not end within [`WAIT`].
async fn exchange(side: &Side, input: &[u8], requests: &[(bool, bool)]) -> Option<Seen> {
    side.received.lock().unwrap().clear();
    let mut s = TcpStream::connect(side.gateway).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let peer = s.local_addr().expect("local address").to_string();
    let mut read = Vec::new();
    let io = async {
        let mut bytes = input.to_vec();
        bytes.extend_from_slice(SENTINEL);
        // The gateway may close before reading it all: what it answered is still read.
        let _ = s.write_all(&bytes).await;
        // A reset ends the answers as EOF does.
        let _ = s.read_to_end(&mut read).await;
    };
    tokio::time::timeout(WAIT, io).await.ok()?;
    let mut answers = answers(&read, requests);
    for a in &mut answers {
        if let Some(d) = &mut a.detail {
            normalise(&mut d.headers, input, &peer);
        }
    }
    // A last answer that refuses the request and closes is the same outcome as a close with
    // no answer (hyper's parser closes without one for some heads the byte loop answers 400):
    // nothing was forwarded either way, which `received` still compares.
    while answers
        .last()
        .is_some_and(|a| a.detail.is_none() && matches!(a.status, 400 | 408 | 431 | 501))
    {
        answers.pop();
    }
    let mut received = side.received.lock().unwrap().clone();
    for r in &mut received {
        if let Received::Request { headers, .. } = r {
            normalise(headers, input, &peer);
        }
    }
    Some((answers, received))
}

/// Both modes' results for `input`; `None` when either was inconclusive.
fn both(h: &Harness, input: &[u8], requests: &[(bool, bool)]) -> Option<(Seen, Seen)> {
    h.rt.block_on(async {
        // One after the other: the upstream records are per side, but sequential runs keep
        // the two from competing for the runtime.
        let a = exchange(&h.byte_loop, input, requests).await?;
        let b = exchange(&h.hyper, input, requests).await?;
        Some((a, b))
    })
}

fuzz_target!(|input: &[u8]| {
    let mut all = input.to_vec();
    all.extend_from_slice(SENTINEL);
    let Some(requests) = requests(&all) else {
        return;
    };
    let h = harness();
    let Some((byte_loop, hyper)) = both(h, input, &requests) else {
        return;
    };
    for (mode, (_, received)) in [("byte loop", &byte_loop), ("hyper", &hyper)] {
        for r in received {
            assert!(
                !matches!(r, Received::Garbage(_)),
                "{mode}: the upstream could not read what the gateway sent: {r:?}"
            );
        }
    }
    if byte_loop == hyper {
        return;
    }
    // A difference: it must show on every run.
    for _ in 0..RECHECKS {
        match both(h, input, &requests) {
            Some((a, b)) if a != b => {}
            _ => return,
        }
    }
    assert_eq!(
        byte_loop.1, hyper.1,
        "the upstream received different requests (left: byte loop, right: hyper)"
    );
    assert_eq!(
        byte_loop.0, hyper.0,
        "the client read different answers (left: byte loop, right: hyper)"
    );
});
