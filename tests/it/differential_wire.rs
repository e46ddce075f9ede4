//! A differential wire test: the same raw client bytes through three front
//! ends, each in front of its own recording upstream: faasgate's byte-level loop
//! (`api::conn`), faasgate's hyper path (`Gateway.byte_loop = false`), and a real nginx, the
//! reference.
//!
//! The recording upstream is a raw TCP listener. It keeps the bytes it receives per
//! connection, parses them strictly (requests and their bodies, and every ambiguity in a
//! forwarded head: two Hosts, two Content-Lengths, Content-Length with Transfer-Encoding,
//! obs-fold, bare CR or LF, NUL, an underscore in a name) and answers each request by a
//! script: by default a 200 whose `X-Echo` header and body name the request's target, so an
//! answer that reaches the wrong request shows; a case may script raw bytes in several writes
//! with pauses, stall, or close.
//!
//! Each case of [`cases`] writes its bytes on a new client connection and records, per front
//! end: (a) what the upstream received: the client's requests with the same method, target
//! and body, or nothing at all when the front end refused; (b) one answer per request; (c)
//! that the next request, on the same connection (when it stays open) and on new
//! connections, gets its own answer, which is where a desync through the upstream pool shows;
//! (d) that the front end still serves. Each case states the outcome faasgate must have (what
//! the safe one) and, where faasgate differs from nginx on purpose, why.
//!
//! The test prints a table of the three front ends and every place faasgate and nginx differ,
//! and fails when faasgate, in either mode, misses a case's required outcome. nginx's outcomes
//! are judged by the same rules and printed, never asserted: it is the reference.
//!
//! nginx is the Debian package nginx-light (`scripts/test-setup.sh` installs it); the test
//! fails naming the package when it is missing. Cases run concurrently, each over its own
//! upstreams, so the test's time is that of its slowest case (an upstream that stalls:
//! [`UPSTREAM_TIMEOUT`] plus the reads' bound).

use crate::inproc;

use faasgate::dataplane::forward::ForwardConfig;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faasgate::dataplane::Routes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// faasgate's `upstream_timeout` and nginx's `proxy_*_timeout`: an upstream that stalls.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// The bound on each answer the client waits for.
const ANSWER_WAIT: Duration = Duration::from_secs(6);
/// The bound on waits for the upstream: its scripts done, a partial request's connection closed.
const QUIET_WAIT: Duration = Duration::from_secs(4);
/// The pause of a script between two writes.
const PAUSE: Duration = Duration::from_millis(50);
/// After a script's late write, before the next request: the front end's reactor sees the
/// late bytes on its idle pooled connection (they are in its socket once our write returns;
/// a proxy learns of them on its next event loop turn).
const SETTLE: Duration = Duration::from_millis(100);
/// (case, front end) pairs run at once.
const CONCURRENCY: usize = 24;
const HOST: &str = "gw.test";
/// The function path in the cases' bytes; `NN` becomes the case's number, so the length (and
/// so every chunk size or Content-Length the table computes) is the same for every case.
const P: &str = "/function/cNN";
/// A whole response, which scripts write where no answer is due: it must never reach a client.
const SMUGGLED: &str = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Echo: SMUGGLED\r\n\r\nSMUGGLED";

// === the wire, parsed strictly ===

/// A message head: start line, fields (names lowercased, values trimmed), its length in bytes,
/// and what a strict reader objects to.
#[derive(Clone, Debug, Default)]
struct Head {
    start: String,
    fields: Vec<(String, String)>,
    len: usize,
    flaws: Vec<String>,
}

/// How a body is delimited.
enum Framing {
    None,
    Length(usize),
    Chunked,
    /// A response read to the connection's end.
    Close,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn lossy(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let mut out: String = s.chars().take(60).collect();
    if s.chars().count() > 60 {
        out.push('…');
    }
    format!("{out:?}")
}

fn subst(b: &[u8], from: &str, to: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(from.as_bytes()) {
            out.extend_from_slice(to.as_bytes());
            i += from.len();
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

impl Head {
    fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn flaw(&mut self, what: impl Into<String>) {
        let what = what.into();
        if !self.flaws.contains(&what) {
            self.flaws.push(what);
        }
    }

    /// The body's framing (RFC 9112 6.3), flagging what a strict reader would refuse.
    fn framing(&mut self, response: bool) -> Result<Framing, String> {
        let te: Vec<String> = self
            .all("transfer-encoding")
            .iter()
            .map(|s| s.to_string())
            .collect();
        let cl: Vec<String> = self
            .all("content-length")
            .iter()
            .map(|s| s.to_string())
            .collect();
        if cl.len() > 1 {
            self.flaw(format!("{} Content-Length fields", cl.len()));
        }
        if te.len() > 1 {
            self.flaw(format!("{} Transfer-Encoding fields", te.len()));
        }
        if !te.is_empty() && !cl.is_empty() {
            self.flaw("Content-Length with Transfer-Encoding");
        }
        if !te.is_empty() {
            let joined = te.join(",").to_ascii_lowercase();
            let codings: Vec<&str> = joined
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            let chunked = codings.iter().filter(|c| **c == "chunked").count();
            if codings.last() == Some(&"chunked") && chunked == 1 {
                return Ok(Framing::Chunked);
            }
            return if response {
                Ok(Framing::Close)
            } else {
                Err(format!("Transfer-Encoding {te:?}"))
            };
        }
        if !cl.is_empty() {
            let mut values = Vec::new();
            for v in cl.iter().flat_map(|v| v.split(',')) {
                let v = v.trim();
                if v.is_empty() || !v.bytes().all(|c| c.is_ascii_digit()) || v.len() > 15 {
                    return Err(format!("Content-Length {cl:?}"));
                }
                let n: usize = v.parse().expect("digits");
                if !values.contains(&n) {
                    values.push(n);
                }
            }
            if values.len() > 1 {
                return Err(format!("Content-Length {cl:?}"));
            }
            return Ok(Framing::Length(values[0]));
        }
        Ok(if response {
            Framing::Close
        } else {
            Framing::None
        })
    }
}

/// The head at the start of `b`, once its empty line arrived. Lines end in LF; a missing CR is
/// a flaw (and so is every other departure from RFC 9112's field syntax).
fn parse_head(b: &[u8]) -> Option<Head> {
    let mut h = Head::default();
    let mut pos = 0;
    let mut lines: Vec<&[u8]> = Vec::new();
    loop {
        let nl = b[pos..].iter().position(|&c| c == b'\n')?;
        let raw = &b[pos..pos + nl];
        pos += nl + 1;
        let line = match raw.strip_suffix(b"\r") {
            Some(l) => l,
            None => {
                h.flaw("bare LF");
                raw
            }
        };
        if line.is_empty() {
            if lines.is_empty() {
                // RFC 9112 2.2: empty lines before the start line are tolerated.
                continue;
            }
            break;
        }
        lines.push(line);
    }
    h.len = pos;
    h.start = String::from_utf8_lossy(lines[0]).into_owned();
    for l in &lines[1..] {
        if l.contains(&b'\r') {
            h.flaw("bare CR");
        }
        if l.contains(&0) {
            h.flaw("NUL");
        }
        if l[0] == b' ' || l[0] == b'\t' {
            h.flaw("obs-fold");
            continue;
        }
        let Some(colon) = l.iter().position(|&c| c == b':') else {
            h.flaw(format!("a field line without a colon: {}", lossy(l)));
            continue;
        };
        let name = &l[..colon];
        if name.last().is_some_and(|&c| c == b' ' || c == b'\t') {
            h.flaw("whitespace before a colon");
        }
        let name = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
        if name.contains('_') {
            h.flaw(format!("an underscore in {name}"));
        }
        let value = String::from_utf8_lossy(&l[colon + 1..])
            .trim_matches(|c| c == ' ' || c == '\t')
            .to_string();
        h.fields.push((name, value));
    }
    Some(h)
}

/// A chunked body at the start of `b`, strictly (hex sizes of at most 15 digits, CRLF after
/// each chunk's data): `Ok(None)` until it is complete, then the body and the bytes it took.
fn dechunk(b: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut pos = 0;
    let mut body = Vec::new();
    loop {
        let Some(end) = find(&b[pos..], b"\r\n") else {
            return if b[pos..].contains(&b'\n') {
                Err("a chunk line ending in a bare LF".into())
            } else {
                Ok(None)
            };
        };
        let line = &b[pos..pos + end];
        let size = line.split(|&c| c == b';').next().unwrap_or_default();
        let size = match line.contains(&b';') {
            // BWS before a chunk extension.
            true => size.trim_ascii_end(),
            false => size,
        };
        if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!("chunk size line {}", lossy(line)));
        }
        let size = usize::from_str_radix(std::str::from_utf8(size).expect("hex"), 16)
            .expect("at most 15 hex digits");
        pos += end + 2;
        if size == 0 {
            // Trailer fields, up to an empty line.
            loop {
                let Some(end) = find(&b[pos..], b"\r\n") else {
                    return Ok(None);
                };
                pos += end + 2;
                if end == 0 {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if b.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&b[pos..pos + size]);
        pos += size;
        if &b[pos..pos + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        pos += 2;
    }
}

/// One request as the upstream received it.
#[derive(Clone, Debug)]
struct UpReq {
    method: String,
    target: String,
    head: Head,
    body: Vec<u8>,
}

enum Parsed<T> {
    Complete(T, usize),
    /// Not complete yet; a response whose head arrived says its status.
    Incomplete(Option<u16>),
    Bad(String),
}

fn parse_request(b: &[u8]) -> Parsed<UpReq> {
    let Some(mut head) = parse_head(b) else {
        return Parsed::Incomplete(None);
    };
    let parts: Vec<String> = head.start.split(' ').map(String::from).collect();
    let [method, target, version] = &parts[..] else {
        return Parsed::Bad(format!("request line {:?}", head.start));
    };
    if !version.starts_with("HTTP/1.") {
        return Parsed::Bad(format!("request line {:?}", head.start));
    }
    let hosts = head.all("host").len();
    if hosts > 1 {
        head.flaw(format!("{hosts} Host fields"));
    }
    let start = head.len;
    let (body, used) = match head.framing(false) {
        Err(e) => return Parsed::Bad(e),
        Ok(Framing::Chunked) => match dechunk(&b[start..]) {
            Err(e) => return Parsed::Bad(e),
            Ok(None) => return Parsed::Incomplete(None),
            Ok(Some(done)) => done,
        },
        Ok(Framing::Length(n)) if b.len() < start + n => return Parsed::Incomplete(None),
        Ok(Framing::Length(n)) => (b[start..start + n].to_vec(), n),
        Ok(Framing::None | Framing::Close) => (Vec::new(), 0),
    };
    let req = UpReq {
        method: method.clone(),
        target: target.clone(),
        head,
        body,
    };
    Parsed::Complete(req, start + used)
}

/// One answer as the client received it.
#[derive(Clone, Debug)]
struct Answer {
    status: u16,
    echo: Option<String>,
    body: Vec<u8>,
    flaws: Vec<String>,
}

fn parse_response(b: &[u8], head_req: bool, eof: bool) -> Parsed<Answer> {
    if b.len() >= 5 && !b.starts_with(b"HTTP/") {
        return Parsed::Bad(format!("not a response: {}", lossy(b)));
    }
    let Some(mut head) = parse_head(b) else {
        return Parsed::Incomplete(None);
    };
    let Some(status) = head
        .start
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
    else {
        return Parsed::Bad(format!("status line {:?}", head.start));
    };
    let bodiless = head_req || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = match bodiless {
        true => Framing::None,
        false => match head.framing(true) {
            Ok(f) => f,
            Err(e) => return Parsed::Bad(e),
        },
    };
    let start = head.len;
    let (body, used) = match framing {
        Framing::None => (Vec::new(), 0),
        Framing::Length(n) if b.len() < start + n => return Parsed::Incomplete(Some(status)),
        Framing::Length(n) => (b[start..start + n].to_vec(), n),
        Framing::Chunked => match dechunk(&b[start..]) {
            Err(e) => return Parsed::Bad(e),
            Ok(None) => return Parsed::Incomplete(Some(status)),
            Ok(Some(done)) => done,
        },
        Framing::Close if !eof => return Parsed::Incomplete(Some(status)),
        Framing::Close => (b[start..].to_vec(), b.len() - start),
    };
    let echo = head.all("x-echo").first().map(|s| s.to_string());
    let answer = Answer {
        status,
        echo,
        body,
        flaws: head.flaws,
    };
    Parsed::Complete(answer, start + used)
}

// === the recording upstream ===

/// One step of an upstream's answer.
enum Step {
    Write(Vec<u8>),
    /// [`PAUSE`]; a write after it is a late one.
    Pause,
    /// Answer nothing more on this connection (it is still read until the peer closes it).
    Stall,
    /// Close the connection.
    Close,
}

/// How an upstream answers a request.
type Script = fn(&UpReq) -> Vec<Step>;

/// What one upstream connection received.
#[derive(Clone, Debug, Default)]
struct ConnRec {
    bytes: usize,
    /// Bytes taken by complete requests.
    parsed: usize,
    /// Bytes taken by the probes' requests.
    probe_bytes: usize,
    /// What the upstream could not parse.
    error: Option<String>,
    /// The connection ended (the peer closed it, or a script did).
    closed: bool,
}

#[derive(Debug, Default)]
struct Record {
    conns: Vec<ConnRec>,
    /// Every complete request, in arrival order.
    requests: Vec<UpReq>,
    /// Scripts running.
    busy: usize,
    /// A script wrote after a pause.
    late: bool,
}

/// A recording upstream on `127.0.0.1:0`.
struct Recorder {
    addr: SocketAddr,
    record: Arc<Mutex<Record>>,
}

fn is_probe(target: &str) -> bool {
    target.starts_with("/probe-")
}

/// A 200 naming `id` in its `X-Echo` and (unless it answers a HEAD) its body.
fn ok(id: &str, head: bool) -> Vec<u8> {
    let body = if head { "" } else { id };
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Echo: {id}\r\n\r\n{body}",
        id.len()
    )
    .into_bytes()
}

fn echo(r: &UpReq) -> Vec<Step> {
    vec![Step::Write(ok(&r.target, r.method == "HEAD"))]
}

impl Recorder {
    /// Answers requests for `/case*` targets by `script`, every other one by [`echo`].
    async fn spawn(script: Script) -> Recorder {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream address");
        let record = Arc::new(Mutex::new(Record::default()));
        let rec = record.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let id = {
                    let mut r = rec.lock().unwrap();
                    r.conns.push(ConnRec::default());
                    r.conns.len() - 1
                };
                tokio::spawn(serve_conn(stream, id, rec.clone(), script));
            }
        });
        Recorder { addr, record }
    }

    fn busy(&self) -> bool {
        self.record.lock().unwrap().busy > 0
    }

    fn late(&self) -> bool {
        self.record.lock().unwrap().late
    }

    /// Connections holding bytes that are not a complete request and not yet closed.
    fn open_partials(&self) -> usize {
        let r = self.record.lock().unwrap();
        r.conns
            .iter()
            .filter(|c| (c.bytes > c.parsed || c.error.is_some()) && !c.closed)
            .count()
    }

    /// Polls `cond` every 10 ms for at most [`QUIET_WAIT`]; whether it came true.
    async fn until(&self, cond: impl Fn(&Recorder) -> bool) -> bool {
        let deadline = Instant::now() + QUIET_WAIT;
        while !cond(self) {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

async fn serve_conn(mut s: TcpStream, id: usize, rec: Arc<Mutex<Record>>, script: Script) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    let mut parsed = 0;
    let mut answering = true;
    loop {
        while answering {
            match parse_request(&buf[parsed..]) {
                Parsed::Incomplete(_) => break,
                Parsed::Bad(e) => {
                    rec.lock().unwrap().conns[id].error = Some(e);
                    answering = false;
                }
                Parsed::Complete(req, used) => {
                    parsed += used;
                    let steps = match req.target.starts_with("/case") {
                        true => script(&req),
                        false => echo(&req),
                    };
                    {
                        let mut r = rec.lock().unwrap();
                        let c = &mut r.conns[id];
                        c.parsed = parsed;
                        if is_probe(&req.target) {
                            c.probe_bytes += used;
                        }
                        r.requests.push(req);
                        r.busy += 1;
                    }
                    let mut paused = false;
                    let mut close = false;
                    for step in steps {
                        match step {
                            Step::Write(b) => {
                                if paused {
                                    rec.lock().unwrap().late = true;
                                }
                                if s.write_all(&b).await.is_err() {
                                    break;
                                }
                            }
                            Step::Pause => {
                                tokio::time::sleep(PAUSE).await;
                                paused = true;
                            }
                            Step::Stall => {
                                answering = false;
                                break;
                            }
                            Step::Close => {
                                close = true;
                                break;
                            }
                        }
                    }
                    let mut r = rec.lock().unwrap();
                    r.busy -= 1;
                    if close {
                        r.conns[id].closed = true;
                        return;
                    }
                }
            }
        }
        let mut chunk = [0u8; 16 * 1024];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                rec.lock().unwrap().conns[id].closed = true;
                return;
            }
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                rec.lock().unwrap().conns[id].bytes += n;
            }
        }
    }
}

// === response scripts ===

fn late_extra(r: &UpReq) -> Vec<Step> {
    vec![
        Step::Write(ok(&r.target, false)),
        Step::Pause,
        Step::Write(SMUGGLED.into()),
    ]
}

fn glued_extra(r: &UpReq) -> Vec<Step> {
    let mut b = ok(&r.target, false);
    b.extend_from_slice(SMUGGLED.as_bytes());
    vec![Step::Write(b)]
}

fn head_answer(r: &UpReq) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Echo: {}\r\n\r\n",
        SMUGGLED.len(),
        r.target
    )
    .into_bytes()
}

fn head_body_glued(r: &UpReq) -> Vec<Step> {
    let mut b = head_answer(r);
    b.extend_from_slice(SMUGGLED.as_bytes());
    vec![Step::Write(b)]
}

fn head_body_late(r: &UpReq) -> Vec<Step> {
    vec![
        Step::Write(head_answer(r)),
        Step::Pause,
        Step::Write(SMUGGLED.into()),
    ]
}

fn raw(s: String) -> Vec<Step> {
    vec![Step::Write(s.into_bytes())]
}

fn no_content_body(r: &UpReq) -> Vec<Step> {
    raw(format!(
        "HTTP/1.1 204 No Content\r\nX-Echo: {}\r\n\r\n{SMUGGLED}",
        r.target
    ))
}

fn not_modified_body(r: &UpReq) -> Vec<Step> {
    raw(format!(
        "HTTP/1.1 304 Not Modified\r\nX-Echo: {}\r\n\r\n{SMUGGLED}",
        r.target
    ))
}

fn two_lengths(r: &UpReq) -> Vec<Step> {
    let t = &r.target;
    raw(format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Length: 3\r\nX-Echo: {t}\r\n\r\n{t}",
        t.len()
    ))
}

fn equal_lengths(r: &UpReq) -> Vec<Step> {
    let (t, n) = (&r.target, r.target.len());
    raw(format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nContent-Length: {n}\r\nX-Echo: {t}\r\n\r\n{t}"
    ))
}

fn length_and_chunked(r: &UpReq) -> Vec<Step> {
    let (t, n) = (&r.target, r.target.len());
    raw(format!(
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nX-Echo: {t}\r\n\r\n\
         {n:x}\r\n{t}\r\n0\r\n\r\n"
    ))
}

fn bad_length(r: &UpReq) -> Vec<Step> {
    let t = &r.target;
    raw(format!(
        "HTTP/1.1 200 OK\r\nContent-Length: abc\r\nX-Echo: {t}\r\n\r\n{t}"
    ))
}

fn chunked_head(t: &str) -> String {
    format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Echo: {t}\r\n\r\n")
}

fn chunk_bad_hex(r: &UpReq) -> Vec<Step> {
    let t = &r.target;
    raw(format!("{}zz\r\n{t}\r\n0\r\n\r\n", chunked_head(t)))
}

fn chunk_no_crlf(r: &UpReq) -> Vec<Step> {
    let t = &r.target;
    raw(format!(
        "{}{:x}\r\n{t}XX0\r\n\r\n",
        chunked_head(t),
        t.len()
    ))
}

fn chunk_overflow(r: &UpReq) -> Vec<Step> {
    let t = &r.target;
    raw(format!(
        "{}ffffffffffffffffff\r\n{t}\r\n0\r\n\r\n",
        chunked_head(t)
    ))
}

fn chunked_then_late_extra(r: &UpReq) -> Vec<Step> {
    let t = &r.target;
    vec![
        Step::Write(format!("{}{:x}\r\n{t}\r\n0\r\n\r\n", chunked_head(t), t.len()).into_bytes()),
        Step::Pause,
        Step::Write(SMUGGLED.into()),
    ]
}

fn stall_mid_body(r: &UpReq) -> Vec<Step> {
    let t = &r.target;
    vec![
        Step::Write(
            format!("HTTP/1.1 200 OK\r\nContent-Length: 100\r\nX-Echo: {t}\r\n\r\n{t}")
                .into_bytes(),
        ),
        Step::Stall,
    ]
}

fn stall_mid_chunked(r: &UpReq) -> Vec<Step> {
    let t = &r.target;
    vec![
        Step::Write(format!("{}{:x}\r\n{t}\r\n", chunked_head(t), t.len()).into_bytes()),
        Step::Stall,
    ]
}

fn stall_before_head(_: &UpReq) -> Vec<Step> {
    vec![Step::Stall]
}

fn close_delimited(r: &UpReq) -> Vec<Step> {
    let t = &r.target;
    vec![
        Step::Write(format!("HTTP/1.1 200 OK\r\nX-Echo: {t}\r\n\r\n{t}").into_bytes()),
        Step::Close,
    ]
}

fn folded_response(r: &UpReq) -> Vec<Step> {
    let t = &r.target;
    raw(format!(
        "HTTP/1.1 200 OK\r\nX-Echo: {t}\r\nX-A: 1\r\n 2\r\nContent-Length: {}\r\n\r\n{t}",
        t.len()
    ))
}

fn interim_then_final(r: &UpReq) -> Vec<Step> {
    let mut b = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
    b.extend(ok(&r.target, false));
    vec![Step::Write(b)]
}

// === the client ===

/// What the client got where it waited for an answer.
#[derive(Clone, Debug)]
enum Got {
    Resp(Answer),
    /// A head, then the connection ended before the body did.
    Truncated(u16),
    /// A head, then nothing more within [`ANSWER_WAIT`], the connection still open.
    Stuck(u16),
    /// Nothing within [`ANSWER_WAIT`].
    Timeout,
    /// Bytes that are not a well-framed response.
    Garbage(String),
    /// The connection ended before an answer began.
    Ended,
}

/// A raw client connection.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    ended: bool,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Conn, String> {
        let s = tokio::time::timeout(QUIET_WAIT, TcpStream::connect(addr))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| format!("connect: {e}"))?;
        let _ = s.set_nodelay(true);
        Ok(Conn {
            s,
            buf: Vec::new(),
            ended: false,
        })
    }

    /// Writes `b`; false when the connection refused it (the answers tell the rest).
    async fn send(&mut self, b: &[u8]) -> bool {
        matches!(
            tokio::time::timeout(QUIET_WAIT, self.s.write_all(b)).await,
            Ok(Ok(()))
        )
    }

    /// The next answer (interim 1xx ones skipped).
    async fn answer(&mut self, head_req: bool) -> Got {
        let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
        loop {
            match parse_response(&self.buf, head_req, self.ended) {
                Parsed::Complete(a, used) => {
                    self.buf.drain(..used);
                    if (100..200).contains(&a.status) {
                        continue;
                    }
                    return Got::Resp(a);
                }
                Parsed::Bad(e) => {
                    self.buf.clear();
                    return Got::Garbage(e);
                }
                Parsed::Incomplete(status) => {
                    if self.ended {
                        return match status {
                            Some(s) => Got::Truncated(s),
                            None if self.buf.is_empty() => Got::Ended,
                            None => Got::Garbage(format!("cut short: {}", lossy(&self.buf))),
                        };
                    }
                    self.buf.reserve(64 * 1024);
                    match tokio::time::timeout_at(deadline, self.s.read_buf(&mut self.buf)).await {
                        Err(_) => {
                            return match status {
                                Some(s) => Got::Stuck(s),
                                None => Got::Timeout,
                            }
                        }
                        Ok(Ok(0)) | Ok(Err(_)) => self.ended = true,
                        Ok(Ok(_)) => {}
                    }
                }
            }
        }
    }
}

/// What the next request got.
#[derive(Clone, Debug, PartialEq)]
enum Probe {
    /// Its own answer.
    Own,
    /// The connection was closed (only ever acceptable on the case's own connection).
    Closed,
    /// Another request's answer, or stray bytes.
    Desync(String),
    /// An error or no answer.
    Failed(String),
    /// Not sent: the connection is still inside the case's cut answer.
    Skipped,
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Own => write!(f, "its own answer"),
            Probe::Closed => write!(f, "closed"),
            Probe::Desync(s) => write!(f, "DESYNC ({s})"),
            Probe::Failed(s) => write!(f, "failed ({s})"),
            Probe::Skipped => write!(f, "not sent"),
        }
    }
}

/// Sends `GET {prefix}{id}` on `c` and classifies its answer.
async fn probe(c: &mut Conn, prefix: &str, id: &str, same: bool) -> Probe {
    if c.ended {
        return Probe::Closed;
    }
    let req = format!("GET {prefix}{id} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    if !c.send(req.as_bytes()).await {
        return Probe::Closed;
    }
    match c.answer(false).await {
        Got::Resp(a)
            if a.status == 200 && a.echo.as_deref() == Some(id) && a.body == id.as_bytes() =>
        {
            Probe::Own
        }
        Got::Resp(a) if a.status == 200 || a.echo.is_some() => Probe::Desync(format!(
            "{} X-Echo {:?} body {}",
            a.status,
            a.echo,
            lossy(&a.body)
        )),
        Got::Resp(a) => Probe::Failed(format!("{} {}", a.status, lossy(&a.body))),
        Got::Ended if same => Probe::Closed,
        Got::Ended => Probe::Failed("closed without an answer".into()),
        Got::Garbage(e) => Probe::Desync(e),
        Got::Truncated(s) | Got::Stuck(s) => Probe::Failed(format!("{s} with a cut body")),
        Got::Timeout => Probe::Failed(format!("no answer within {ANSWER_WAIT:?}")),
    }
}

// === the cases ===

/// A request the upstream must receive.
#[derive(Clone, Debug)]
struct Up {
    method: &'static str,
    target: &'static str,
    /// With [`P`] standing for the function path.
    body: Vec<u8>,
}

/// An acceptable answer.
#[derive(Clone, Debug)]
enum Ans {
    /// 200 naming this target (X-Echo, and the body unless HEAD).
    Own(&'static str),
    Code(u16),
    /// A head and then the connection closed mid-body.
    Truncated,
    /// No answer: the connection closed.
    Dropped,
}

/// A checker of the requests the upstream received.
type Check = fn(&[UpReq]) -> Result<(), String>;

/// An acceptable outcome of a case.
#[derive(Clone)]
enum Alt {
    /// Answered with one of `codes`, nothing reaching the upstream; `close`: then closed.
    Refuse { codes: &'static [u16], close: bool },
    /// Forwarded as exactly `up`; the client got one of `answers[i]` for its request `i`;
    /// `close`: the client connection then closed.
    Serve {
        up: Vec<Up>,
        answers: Vec<Vec<Ans>>,
        close: bool,
        check: Option<Check>,
    },
    /// A request body whose chunked framing breaks: 400 with nothing sent upstream, or else
    /// both connections closed and no complete request upstream.
    BadBody,
}

struct Case {
    name: &'static str,
    /// What the client writes, [`P`] standing for the function path.
    request: Vec<u8>,
    /// The client's requests are HEAD.
    head: bool,
    /// How the upstream answers `/case*` targets.
    script: Script,
    /// faasgate's acceptable outcomes (any one).
    want: Vec<Alt>,
    /// Where faasgate differs from nginx on purpose, why.
    why: &'static str,
    /// Outcomes also acceptable on the hyper path only (a connection after a handoff),
    /// where hyper's parser decides before our code sees the request.
    hyper_also: Vec<Alt>,
}

fn case(name: &'static str, request: impl Into<Vec<u8>>, want: Vec<Alt>) -> Case {
    Case {
        name,
        request: request.into(),
        head: false,
        script: echo,
        want,
        why: "",
        hyper_also: Vec::new(),
    }
}

impl Case {
    fn head(mut self) -> Case {
        self.head = true;
        self
    }
    fn script(mut self, s: Script) -> Case {
        self.script = s;
        self
    }
    fn why(mut self, why: &'static str) -> Case {
        self.why = why;
        self
    }
    fn hyper_also(mut self, alt: Alt, why: &'static str) -> Case {
        self.hyper_also.push(alt);
        self.why = why;
        self
    }
}

fn up(method: &'static str, target: &'static str, body: impl Into<Vec<u8>>) -> Up {
    Up {
        method,
        target,
        body: body.into(),
    }
}

fn refuse(codes: &'static [u16]) -> Alt {
    Alt::Refuse {
        codes,
        close: false,
    }
}

fn refuse_close(codes: &'static [u16]) -> Alt {
    Alt::Refuse { codes, close: true }
}

fn serve(up: Vec<Up>, answers: Vec<Vec<Ans>>) -> Alt {
    Alt::Serve {
        up,
        answers,
        close: false,
        check: None,
    }
}

/// `GET /case` forwarded and answered as such.
fn get_case() -> Alt {
    serve(vec![up("GET", "/case", "")], vec![vec![Ans::Own("/case")]])
}

/// `POST /case` forwarded with `body` and answered as such.
fn post_case(body: &str) -> Alt {
    serve(
        vec![up("POST", "/case", body.as_bytes())],
        vec![vec![Ans::Own("/case")]],
    )
}

/// `GET /case` forwarded, the client getting one of `answers`.
fn answered(answers: Vec<Ans>) -> Alt {
    serve(vec![up("GET", "/case", "")], vec![answers])
}

impl Alt {
    fn closing(mut self) -> Alt {
        if let Alt::Serve { close, .. } = &mut self {
            *close = true;
        }
        self
    }
    fn checked(mut self, f: Check) -> Alt {
        if let Alt::Serve { check, .. } = &mut self {
            *check = Some(f);
        }
        self
    }
    /// Answers the client waits for under this outcome.
    fn answers(&self) -> usize {
        match self {
            Alt::Serve { answers, .. } => answers.len(),
            _ => 1,
        }
    }
}

fn get(fields: &str) -> String {
    format!("GET {P}/case HTTP/1.1\r\nHost: {HOST}\r\n{fields}\r\n")
}

fn post(fields: &str, body: &str) -> String {
    format!("POST {P}/case HTTP/1.1\r\nHost: {HOST}\r\n{fields}\r\n{body}")
}

fn chunked(fields: &str, body: &str) -> String {
    post(&format!("Transfer-Encoding: chunked\r\n{fields}"), body)
}

const HELLO_CHUNKED: &str = "5\r\nhello\r\n0\r\n\r\n";

/// Why the hyper path may serve a request with both framings.
const CL_TE_ON_HYPER: &str = "RFC 9112 6.1 lets a server process it by Transfer-Encoding and close; \
    hyper's parser drops the Content-Length before faasgate sees the request, so a connection \
    handed to hyper does that. The byte loop, which reads every connection first, refuses it as nginx";

fn one_host(up: &[UpReq]) -> Result<(), String> {
    for r in up {
        if r.head.all("host") != [HOST] {
            return Err(format!("Host fields upstream {:?}", r.head.all("host")));
        }
    }
    Ok(())
}

fn one_length(up: &[UpReq]) -> Result<(), String> {
    for r in up {
        if r.head.all("content-length") != ["5"] {
            return Err(format!(
                "Content-Length upstream {:?}",
                r.head.all("content-length")
            ));
        }
    }
    Ok(())
}

/// Every case, with faasgate's required outcome.
fn cases() -> Vec<Case> {
    let either_body = |body: &str| vec![refuse_close(&[400]), post_case(body)];
    let big = |n: usize| get(&format!("X-Big: {}\r\n", "b".repeat(n)));
    let many = |n: usize| {
        get(&(0..n)
            .map(|i| format!("X-H{i}: {i}\r\n"))
            .collect::<String>())
    };
    let hidden = format!("GET {P}/hidden HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    let fake_end = format!("0\r\n\r\n{hidden}");
    let too_big: &[u16] = &[400, 431];
    let not_chunked: &[u16] = &[400, 501];
    let bad = || vec![Alt::BadBody];
    vec![
        // Controls: plain requests every front end serves.
        case("control: GET", get(""), vec![get_case()]),
        case(
            "control: POST with Content-Length",
            post("Content-Length: 5\r\n", "hello"),
            vec![post_case("hello")],
        ),
        case(
            "control: chunked POST",
            chunked("", HELLO_CHUNKED),
            vec![post_case("hello")],
        ),
        case(
            "control: three pipelined GETs",
            [1, 2, 3]
                .map(|i| format!("GET {P}/case{i} HTTP/1.1\r\nHost: {HOST}\r\n\r\n"))
                .concat(),
            vec![serve(
                vec![
                    up("GET", "/case1", ""),
                    up("GET", "/case2", ""),
                    up("GET", "/case3", ""),
                ],
                vec![
                    vec![Ans::Own("/case1")],
                    vec![Ans::Own("/case2")],
                    vec![Ans::Own("/case3")],
                ],
            )],
        ),
        case(
            "control: HTTP/1.0 without Host",
            format!("GET {P}/case HTTP/1.0\r\n\r\n"),
            vec![get_case().closing()],
        ),
        // Host (RFC 9112 3.2).
        case(
            "missing Host on HTTP/1.1",
            format!("GET {P}/case HTTP/1.1\r\n\r\n"),
            vec![refuse(&[400])],
        ),
        case(
            "two Host lines, same value",
            get(&format!("Host: {HOST}\r\n")),
            vec![refuse(&[400])],
        ),
        case(
            "two Host lines, different values",
            get("Host: other.test\r\n"),
            vec![refuse(&[400])],
        ),
        case(
            "Host with a space",
            format!("GET {P}/case HTTP/1.1\r\nHost: gw test\r\n\r\n"),
            vec![refuse(&[400])],
        ),
        case(
            "Host with a slash",
            format!("GET {P}/case HTTP/1.1\r\nHost: gw.test/x\r\n\r\n"),
            vec![refuse(&[400])],
        ),
        case(
            "Connection: Host",
            get("Connection: Host\r\n"),
            vec![get_case().checked(one_host)],
        ),
        case(
            "Connection: content-length on a POST",
            post(
                "Content-Length: 5\r\nConnection: content-length\r\n",
                "hello",
            ),
            vec![post_case("hello")],
        ),
        case(
            "Connection: transfer-encoding on a chunked POST",
            chunked("Connection: transfer-encoding\r\n", HELLO_CHUNKED),
            vec![post_case("hello")],
        ),
        // Underscores: a name some backends read as its dashed twin, dropped (nginx's default).
        case(
            "underscore: Content_Length on a GET",
            get("Content_Length: 5\r\n"),
            vec![get_case()],
        ),
        case(
            "underscore: Transfer_Encoding on a POST",
            post(
                "Content-Length: 5\r\nTransfer_Encoding: chunked\r\n",
                "hello",
            ),
            vec![post_case("hello")],
        ),
        case(
            "underscore: X_Custom",
            get("X_Custom: 1\r\n"),
            vec![get_case()],
        ),
        // Content-Length (RFC 9112 6.3, RFC 9110 8.6).
        case(
            "two equal Content-Length",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            vec![post_case("hello").checked(one_length)],
        )
        .why("RFC 9110 8.6 lets a recipient take equal values as one; nginx refuses any repeat"),
        case(
            "Content-Length list 5, 5",
            post("Content-Length: 5, 5\r\n", "hello"),
            vec![refuse_close(&[400]), post_case("hello").checked(one_length)],
        ),
        case(
            "two different Content-Length",
            post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
            vec![refuse_close(&[400])],
        ),
        case(
            "Content-Length +5",
            post("Content-Length: +5\r\n", "hello"),
            vec![refuse_close(&[400])],
        ),
        case(
            "Content-Length and Transfer-Encoding",
            chunked("Content-Length: 5\r\n", HELLO_CHUNKED),
            vec![refuse_close(&[400])],
        )
        .hyper_also(post_case("hello").closing(), CL_TE_ON_HYPER),
        case(
            "Transfer-Encoding and Content-Length, reversed",
            post(
                "Content-Length: 15\r\nTransfer-Encoding: chunked\r\n",
                HELLO_CHUNKED,
            ),
            vec![refuse_close(&[400])],
        )
        .hyper_also(post_case("hello").closing(), CL_TE_ON_HYPER),
        // Transfer-Encoding (RFC 9112 6.1, 6.3).
        case(
            "Transfer-Encoding: gzip, chunked",
            post("Transfer-Encoding: gzip, chunked\r\n", HELLO_CHUNKED),
            vec![refuse_close(not_chunked), post_case("hello")],
        )
        .why("nginx decodes no coding but chunked (501); a proxy may pass gzip on to the replica"),
        case(
            "Transfer-Encoding: chunked, identity",
            post("Transfer-Encoding: chunked, identity\r\n", HELLO_CHUNKED),
            vec![refuse_close(not_chunked)],
        )
        .why("RFC 9112 6.3: a request not ending in chunked is 400; nginx: 501, a coding it lacks"),
        case(
            "Transfer-Encoding: Chunked (case)",
            post("Transfer-Encoding: Chunked\r\n", HELLO_CHUNKED),
            vec![post_case("hello")],
        ),
        case(
            "Transfer-Encoding with spaces and a tab around",
            post("Transfer-Encoding:   chunked \t\r\n", HELLO_CHUNKED),
            vec![post_case("hello")],
        )
        .why("OWS around a value includes HTAB (RFC 9110 5.6.3); nginx 1.22 keeps the tab: 501"),
        case(
            "two Transfer-Encoding: chunked lines",
            chunked("Transfer-Encoding: chunked\r\n", HELLO_CHUNKED),
            vec![refuse_close(not_chunked)],
        ),
        case(
            "Transfer-Encoding on HTTP/1.0",
            format!("POST {P}/case HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n{HELLO_CHUNKED}"),
            vec![refuse_close(&[400]), post_case("hello").closing()],
        ),
        // Malformed chunked request bodies.
        case(
            "chunk size zz",
            chunked("", "zz\r\nhello\r\n0\r\n\r\n"),
            bad(),
        ),
        case(
            "chunk data without its CRLF",
            chunked("", "5\r\nhelloXX0\r\n\r\n"),
            bad(),
        ),
        case(
            "chunk size overflow ffffffffffffffffff",
            chunked("", "ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
            bad(),
        ),
        case(
            "chunk size 0x5",
            chunked("", "0x5\r\nhello\r\n0\r\n\r\n"),
            bad(),
        ),
        case(
            "chunk size -5",
            chunked("", "-5\r\nhello\r\n0\r\n\r\n"),
            bad(),
        ),
        case(
            "chunk size with leading spaces",
            chunked("", "  5\r\nhello\r\n0\r\n\r\n"),
            bad(),
        ),
        case(
            "a good chunk, then chunk size zz",
            chunked("", "5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n"),
            bad(),
        )
        .why("nginx reads the whole body before it connects; faasgate streams it"),
        case(
            "chunk extension",
            chunked("", "5;ext=1\r\nhello\r\n0\r\n\r\n"),
            vec![post_case("hello")],
        ),
        // Field syntax (RFC 9112 2.2, 5; RFC 9110 5.5).
        case(
            "obs-fold in a field",
            get("X-A: 1\r\n 2\r\n"),
            vec![refuse(&[400]), get_case()],
        ),
        case(
            "obs-fold hiding Transfer-Encoding",
            post(
                "Content-Length: 5\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n",
                "hello",
            ),
            either_body("hello"),
        ),
        case(
            "bare LF line endings",
            format!("GET {P}/case HTTP/1.1\nHost: {HOST}\nX-A: 1\n\n"),
            vec![refuse_close(&[400]), get_case()],
        ),
        case(
            "a bare CR in a field line",
            get("X-A: 1\rX-B: 2\r\n"),
            vec![refuse_close(&[400]), get_case()],
        ),
        case(
            "a NUL in a field value",
            get("X-A: a\0b\r\n"),
            vec![refuse_close(&[400]), get_case()],
        ),
        case(
            "a space before the colon",
            get("X-A : 1\r\n"),
            vec![refuse(&[400])],
        ),
        case(
            "a space before the colon of Content-Length",
            post("Content-Length : 5\r\n", "hello"),
            vec![refuse_close(&[400])],
        ),
        // Requests hidden in bodies.
        case(
            "a Content-Length body holding a request, then a GET",
            format!(
                "{}GET {P}/second HTTP/1.1\r\nHost: {HOST}\r\n\r\n",
                post(&format!("Content-Length: {}\r\n", hidden.len()), &hidden)
            ),
            vec![serve(
                vec![
                    up("POST", "/case", hidden.as_bytes()),
                    up("GET", "/second", ""),
                ],
                vec![vec![Ans::Own("/case")], vec![Ans::Own("/second")]],
            )],
        ),
        case(
            "a chunk holding a fake last chunk and a request",
            chunked(
                "",
                &format!("{:x}\r\n{fake_end}\r\n0\r\n\r\n", fake_end.len()),
            ),
            vec![serve(
                vec![up("POST", "/case", fake_end.as_bytes())],
                vec![vec![Ans::Own("/case")]],
            )],
        ),
        // Targets.
        case(
            "absolute-form target",
            format!("GET http://{HOST}{P}/case HTTP/1.1\r\nHost: {HOST}\r\n\r\n"),
            vec![get_case()],
        ),
        case(
            "absolute-form target, another authority",
            format!("GET http://other.test{P}/case HTTP/1.1\r\nHost: {HOST}\r\n\r\n"),
            vec![get_case()],
        ),
        // Sizes.
        case(
            "a 20 KiB field",
            big(20 << 10),
            vec![refuse(too_big), get_case()],
        )
        .why("nginx's large_client_header_buffers (4 x 8k) refuse it"),
        case(
            "a 70 KiB field",
            big(70 << 10),
            vec![refuse(too_big), get_case()],
        )
        .why("nginx's large_client_header_buffers (4 x 8k) refuse it"),
        case("100 fields", many(100), vec![refuse(too_big), get_case()])
            .why("faasgate bounds a head's field count (431), nginx only its bytes"),
        case("200 fields", many(200), vec![refuse(too_big), get_case()])
            .why("faasgate bounds a head's field count (431), nginx only its bytes"),
        // Response side: the upstream's bytes are scripted. The late writes land on a pooled
        // connection while it is idle: nginx closes one when bytes arrive on it.
        case(
            "response: extra response in a separate write",
            get(""),
            vec![get_case()],
        )
        .script(late_extra),
        case(
            "response: extra response in the same write",
            get(""),
            vec![get_case()],
        )
        .script(glued_extra),
        case(
            "response: a body on a HEAD answer",
            format!("HEAD {P}/case HTTP/1.1\r\nHost: {HOST}\r\n\r\n"),
            vec![serve(
                vec![up("HEAD", "/case", "")],
                vec![vec![Ans::Own("/case")]],
            )],
        )
        .head()
        .script(head_body_glued),
        case(
            "response: a body on a HEAD answer, in a separate write",
            format!("HEAD {P}/case HTTP/1.1\r\nHost: {HOST}\r\n\r\n"),
            vec![serve(
                vec![up("HEAD", "/case", "")],
                vec![vec![Ans::Own("/case")]],
            )],
        )
        .head()
        .script(head_body_late),
        case(
            "response: a body on a 204",
            get(""),
            vec![answered(vec![Ans::Code(204)])],
        )
        .script(no_content_body),
        case(
            "response: a body on a 304",
            get(""),
            vec![answered(vec![Ans::Code(304)])],
        )
        .script(not_modified_body),
        case(
            "response: two different Content-Length",
            get(""),
            vec![answered(vec![Ans::Code(502)])],
        )
        .script(two_lengths),
        case(
            "response: two equal Content-Length",
            get(""),
            vec![answered(vec![Ans::Own("/case"), Ans::Code(502)])],
        )
        .script(equal_lengths),
        case(
            "response: Content-Length and Transfer-Encoding",
            get(""),
            vec![answered(vec![Ans::Own("/case"), Ans::Code(502)])],
        )
        .script(length_and_chunked),
        case(
            "response: Content-Length abc",
            get(""),
            vec![answered(vec![Ans::Code(502)])],
        )
        .script(bad_length),
        case(
            "response: chunk size zz",
            get(""),
            vec![answered(vec![Ans::Code(502), Ans::Truncated, Ans::Dropped])],
        )
        .script(chunk_bad_hex),
        case(
            "response: chunk data without its CRLF",
            get(""),
            vec![answered(vec![Ans::Code(502), Ans::Truncated, Ans::Dropped])],
        )
        .script(chunk_no_crlf),
        case(
            "response: chunk size overflow",
            get(""),
            vec![answered(vec![Ans::Code(502), Ans::Truncated, Ans::Dropped])],
        )
        .script(chunk_overflow),
        case(
            "response: extra response after a chunked body, separate write",
            get(""),
            vec![get_case()],
        )
        .script(chunked_then_late_extra),
        case(
            "response: head, part of the body, then a stall",
            get(""),
            vec![answered(vec![Ans::Truncated, Ans::Code(504)])],
        )
        .script(stall_mid_body),
        case(
            "response: chunked head and a chunk, then a stall",
            get(""),
            vec![answered(vec![Ans::Truncated, Ans::Code(504)])],
        )
        .script(stall_mid_chunked),
        case(
            "response: nothing, a stall",
            get(""),
            vec![answered(vec![Ans::Code(504)])],
        )
        .script(stall_before_head),
        case("response: close-delimited", get(""), vec![get_case()]).script(close_delimited),
        case(
            "response: obs-fold in a field",
            get(""),
            vec![answered(vec![Ans::Own("/case"), Ans::Code(502)])],
        )
        .script(folded_response),
        case(
            "response: 100 Continue, then the answer",
            get(""),
            vec![get_case()],
        )
        .script(interim_then_final),
    ]
}

// === one case through one front end ===

/// What one case did through one front end.
#[derive(Clone, Debug)]
struct Observed {
    prefix: String,
    /// The answers to the case's requests (not counting the connection's end).
    answers: Vec<Got>,
    /// The client connection ended (seen while reading answers or by the next request).
    closed: bool,
    /// Bytes on the client connection after the answers.
    extra: Option<String>,
    /// The next request on the same connection.
    same: Probe,
    /// Requests on new connections.
    fresh: Vec<Probe>,
    /// The upstream's complete requests but the probes', in arrival order.
    up: Vec<UpReq>,
    /// Flaws of every head the upstream received, probes' included.
    flaws: Vec<String>,
    /// Bytes the upstream received outside the probes' requests.
    case_bytes: usize,
    /// Upstream connections holding bytes that are not a complete request.
    partial: Vec<String>,
    /// One of those is still open.
    partial_open: bool,
}

async fn observe(addr: SocketAddr, case: &Case, prefix: &str, rec: &Recorder) -> Observed {
    let request = subst(&case.request, P, prefix);
    let wanted = case.want.iter().map(Alt::answers).max().unwrap_or(1);
    let mut answers = Vec::new();
    let mut closed = false;
    let mut extra = None;
    let same = match Conn::open(addr).await {
        Err(e) => Probe::Failed(e),
        Ok(mut c) => {
            // A refused write is not an outcome: the answers say what the front end did.
            let _ = c.send(&request).await;
            for _ in 0..wanted {
                match c.answer(case.head).await {
                    Got::Ended => {
                        closed = true;
                        break;
                    }
                    got => {
                        let last = !matches!(got, Got::Resp(_));
                        answers.push(got);
                        if last {
                            break;
                        }
                    }
                }
            }
            rec.until(|r| !r.busy()).await;
            if rec.late() {
                tokio::time::sleep(SETTLE).await;
            }
            match answers.last() {
                // Still inside that answer: nothing can follow it on this connection.
                Some(Got::Stuck(_)) => Probe::Skipped,
                // After whole answers, any byte is one too many.
                None | Some(Got::Resp(_)) => {
                    if !c.buf.is_empty() {
                        extra = Some(lossy(&c.buf));
                        c.buf.clear();
                    }
                    probe(&mut c, prefix, "/probe-same", true).await
                }
                // The buffer holds the broken answer's bytes, already counted against it.
                Some(_) => {
                    c.buf.clear();
                    probe(&mut c, prefix, "/probe-same", true).await
                }
            }
        }
    };
    closed |= same == Probe::Closed;
    let mut fresh = Vec::new();
    for id in ["/probe-new-1", "/probe-new-2"] {
        fresh.push(match Conn::open(addr).await {
            Ok(mut c) => probe(&mut c, prefix, id, false).await,
            Err(e) => Probe::Failed(e),
        });
    }
    // An upstream connection holding part of a request must be closed by the front end.
    let partial_open = !rec.until(|r| r.open_partials() == 0).await;
    let r = rec.record.lock().unwrap();
    let mut flaws = Vec::new();
    for q in &r.requests {
        for f in &q.head.flaws {
            flaws.push(format!("{} {}: {f}", q.method, q.target));
        }
    }
    let partial = r
        .conns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.bytes > c.parsed || c.error.is_some())
        .map(|(i, c)| {
            format!(
                "upstream connection {i}: {} bytes unanswered{}{}",
                c.bytes - c.parsed,
                c.error
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default(),
                if c.closed { ", closed" } else { ", open" }
            )
        })
        .collect();
    Observed {
        prefix: prefix.to_string(),
        answers,
        closed,
        extra,
        same,
        fresh,
        up: r
            .requests
            .iter()
            .filter(|q| !is_probe(&q.target))
            .cloned()
            .collect(),
        flaws,
        case_bytes: r.conns.iter().map(|c| c.bytes - c.probe_bytes).sum(),
        partial,
        partial_open,
    }
}

// === judging ===

fn got_text(g: &Got) -> String {
    match g {
        Got::Resp(a) => a.status.to_string(),
        Got::Truncated(s) => format!("{s}-cut"),
        Got::Stuck(s) => format!("{s}-stuck"),
        Got::Timeout => "timeout".into(),
        Got::Garbage(_) => "garbage".into(),
        Got::Ended => "closed".into(),
    }
}

/// [`answers_text`] with what identifies a 200: its `X-Echo` and body.
fn answers_detail(answers: &[Got]) -> String {
    if answers.is_empty() {
        return "none".into();
    }
    let each: Vec<String> = answers
        .iter()
        .map(|g| match g {
            Got::Resp(a) => format!(
                "{} (X-Echo {:?}, body {})",
                a.status,
                a.echo,
                lossy(&a.body)
            ),
            Got::Garbage(e) => format!("garbage ({e})"),
            g => got_text(g),
        })
        .collect();
    each.join(", ")
}

fn answers_text(answers: &[Got]) -> String {
    if answers.is_empty() {
        return "-".into();
    }
    answers.iter().map(got_text).collect::<Vec<_>>().join(",")
}

fn desync(o: &Observed) -> bool {
    o.extra.is_some()
        || std::iter::once(&o.same)
            .chain(&o.fresh)
            .any(|p| matches!(p, Probe::Desync(_)))
}

/// One table cell: answers, upstream requests, the connection's end, desync.
fn summary(o: &Observed) -> String {
    let mut s = format!("{} up{}", answers_text(&o.answers), o.up.len());
    if !o.partial.is_empty() {
        s.push_str("+part");
    }
    if o.closed {
        s.push_str(" cl");
    }
    if desync(o) {
        s.push_str(" DESYNC");
    }
    s
}

fn ans_matches(a: &Ans, g: &Got, head: bool) -> bool {
    match (a, g) {
        (Ans::Own(id), Got::Resp(r)) => {
            r.status == 200 && r.echo.as_deref() == Some(*id) && (head || r.body == id.as_bytes())
        }
        (Ans::Code(c), Got::Resp(r)) => r.status == *c,
        (Ans::Truncated, Got::Truncated(_)) => true,
        (Ans::Dropped, Got::Ended) => true,
        _ => false,
    }
}

fn up_text(up: &[UpReq]) -> String {
    let reqs: Vec<String> = up
        .iter()
        .map(|r| format!("{} {} body {}", r.method, r.target, lossy(&r.body)))
        .collect();
    format!("[{}]", reqs.join("; "))
}

impl Alt {
    /// Why `o` is not this outcome, if it is not.
    fn miss(&self, case: &Case, o: &Observed) -> Option<String> {
        let mut why = Vec::new();
        match self {
            Alt::Refuse { codes, close } => {
                let refused = matches!(&o.answers[..], [Got::Resp(a)] if codes.contains(&a.status));
                if !refused {
                    why.push(format!("answers {}", answers_detail(&o.answers)));
                }
                if o.case_bytes > 0 {
                    why.push(format!(
                        "the upstream got {} bytes: {}",
                        o.case_bytes,
                        up_text(&o.up)
                    ));
                }
                if *close && !o.closed {
                    why.push("the connection stayed open".into());
                }
                (!why.is_empty()).then(|| format!("refuse {codes:?}: {}", why.join(", ")))
            }
            Alt::Serve {
                up,
                answers,
                close,
                check,
            } => {
                let same = up.len() == o.up.len()
                    && up.iter().zip(&o.up).all(|(w, g)| {
                        w.method == g.method
                            && w.target == g.target
                            && subst(&w.body, P, &o.prefix) == g.body
                    });
                if !same {
                    why.push(format!("the upstream got {}", up_text(&o.up)));
                }
                // An answer missing at the end: the connection closed before it.
                let right = answers.len() >= o.answers.len()
                    && answers.iter().enumerate().all(|(i, w)| {
                        let g = o.answers.get(i).unwrap_or(&Got::Ended);
                        w.iter().any(|a| ans_matches(a, g, case.head))
                    });
                if !right {
                    why.push(format!("answers {}", answers_detail(&o.answers)));
                }
                if !o.partial.is_empty() {
                    why.push(o.partial.join("; "));
                }
                if *close && !o.closed {
                    why.push("the connection stayed open".into());
                }
                if let Some(Err(e)) = check.map(|f| f(&o.up)) {
                    why.push(e);
                }
                (!why.is_empty()).then(|| format!("serve: {}", why.join(", ")))
            }
            Alt::BadBody => {
                let refused = matches!(&o.answers[..], [Got::Resp(a)] if a.status == 400)
                    && o.case_bytes == 0
                    && o.closed;
                let cut = o.case_bytes > 0 && o.closed && o.up.is_empty() && !o.partial_open;
                (!refused && !cut).then(|| {
                    format!(
                        "400 with nothing upstream, or both connections closed: answers {}, \
                         upstream got {} bytes {}{}, client connection {}",
                        answers_text(&o.answers),
                        o.case_bytes,
                        up_text(&o.up),
                        if o.partial_open { " (left open)" } else { "" },
                        if o.closed { "closed" } else { "open" }
                    )
                })
            }
        }
    }
}

/// Every requirement `o` misses; empty when the case passed. `hyper`: `o` is the hyper
/// path's, which may also meet [`Case::hyper_also`].
fn judge(case: &Case, o: &Observed, hyper: bool) -> Vec<String> {
    let mut fails = Vec::new();
    if let Some(x) = &o.extra {
        fails.push(format!("DESYNC: bytes after the answers: {x}"));
    }
    match &o.same {
        Probe::Own | Probe::Closed | Probe::Skipped => {}
        p => fails.push(format!("the next request on the connection: {p}")),
    }
    for p in &o.fresh {
        if *p != Probe::Own {
            fails.push(format!("a request on a new connection: {p}"));
        }
    }
    for f in &o.flaws {
        fails.push(format!("forwarded head: {f}"));
    }
    for g in &o.answers {
        match g {
            Got::Resp(a) if !a.flaws.is_empty() => {
                fails.push(format!("answer {}: {}", a.status, a.flaws.join(", ")))
            }
            Got::Garbage(e) => fails.push(format!("answer: garbage: {e}")),
            _ => {}
        }
    }
    if o.partial_open {
        fails.push(format!(
            "an upstream connection holding part of a request stayed open: {}",
            o.partial.join("; ")
        ));
    }
    let extra: &[Alt] = if hyper { &case.hyper_also } else { &[] };
    let misses: Vec<String> = case
        .want
        .iter()
        .chain(extra)
        .filter_map(|w| w.miss(case, o))
        .collect();
    if misses.len() == case.want.len() + extra.len() {
        fails.push(misses.join(" | or "));
    }
    fails
}

// === nginx ===

/// A running nginx; killed when dropped.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d: PathBuf| d.join("nginx"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nginx is missing: install the Debian package nginx-light \
                 (scripts/test-setup.sh does; the README's test command runs it)"
            )
        })
}

/// The config: one upstream (pooled, as faasgate pools) and one location per case.
fn nginx_config(dir: &Path, port: u16, routes: &[(String, SocketAddr)]) -> String {
    let d = dir.display();
    let secs = UPSTREAM_TIMEOUT.as_secs();
    let mut upstreams = String::new();
    let mut locations = String::new();
    for (i, (prefix, addr)) in routes.iter().enumerate() {
        upstreams.push_str(&format!(
            "    upstream up{i} {{ server {addr}; keepalive 16; }}\n"
        ));
        locations.push_str(&format!(
            "        location {prefix}/ {{ proxy_pass http://up{i}/; }}\n"
        ));
    }
    format!(
        "daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/client-body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    proxy_http_version 1.1;
    proxy_set_header Connection \"\";
    proxy_set_header Host $host;
    proxy_connect_timeout {secs}s;
    proxy_send_timeout {secs}s;
    proxy_read_timeout {secs}s;
{upstreams}
    server {{
        listen 127.0.0.1:{port};
        server_name {HOST};
{locations}    }}
}}
"
    )
}

async fn start_nginx(bin: &Path, routes: &[(String, SocketAddr)]) -> Nginx {
    let dir = tempfile::tempdir().expect("tempdir");
    // Bound and released: a small race, as with any free-port helper.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, nginx_config(dir.path(), port, routes)).expect("write nginx.conf");
    let log = dir.path().join("error.log");
    let child = Command::new(bin)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let mut nginx = Nginx {
        child,
        addr: ([127, 0, 0, 1], port).into(),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect(nginx.addr).await.is_ok() {
            return nginx;
        }
        let exited = nginx.child.try_wait().expect("nginx status");
        if exited.is_some() || Instant::now() > deadline {
            panic!(
                "nginx did not start ({exited:?}); error.log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === the test ===

const FRONTS: [&str; 3] = ["faasgate-byteloop", "faasgate-hyper", "nginx"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faasgate_and_nginx_on_the_same_wire() {
    let bin = nginx_binary();
    let cases = Arc::new(cases());
    assert!(cases.len() >= 40, "{} cases", cases.len());
    assert!(cases.len() < 100, "case numbers are two digits");

    // Per case and front end, its own recording upstream.
    let (byte_routes, hyper_routes) = (Arc::new(Routes::new()), Arc::new(Routes::new()));
    let mut recs = Vec::new();
    let mut nginx_routes = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let name = format!("c{i:02}");
        let r = [
            Recorder::spawn(case.script).await,
            Recorder::spawn(case.script).await,
            Recorder::spawn(case.script).await,
        ];
        inproc::publish(&byte_routes, &name, &[r[0].addr]);
        inproc::publish(&hyper_routes, &name, &[r[1].addr]);
        nginx_routes.push((format!("/function/{name}"), r[2].addr));
        recs.push(r);
    }
    // nginx's proxy_read_timeout bounds both the head and each body read: so do ours.
    let config = || ForwardConfig {
        upstream_timeout: UPSTREAM_TIMEOUT,
        body_timeout: UPSTREAM_TIMEOUT,
        ..ForwardConfig::default()
    };
    let byte_loop = inproc::spawn_gateway_config(byte_routes, true, config()).await;
    let hyper = inproc::spawn_gateway_config(hyper_routes, false, config()).await;
    let nginx = start_nginx(&bin, &nginx_routes).await;
    let addrs = [byte_loop.addr, hyper.addr, nginx.addr];

    // Every (case, front end), a bounded number at a time.
    let started = Instant::now();
    let recs = Arc::new(recs);
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut runs = JoinSet::new();
    for i in 0..cases.len() {
        for (f, addr) in addrs.into_iter().enumerate() {
            let (cases, recs, permits) = (cases.clone(), recs.clone(), permits.clone());
            runs.spawn(async move {
                let _permit = permits.acquire_owned().await.expect("semaphore open");
                let prefix = format!("/function/c{i:02}");
                let o = observe(addr, &cases[i], &prefix, &recs[i][f]).await;
                (i, f, o)
            });
        }
    }
    let mut seen: Vec<[Option<Observed>; 3]> = vec![Default::default(); cases.len()];
    while let Some(done) = runs.join_next().await {
        let (i, f, o) = done.expect("a case run");
        seen[i][f] = Some(o);
    }
    let took = started.elapsed();
    let seen: Vec<[Observed; 3]> = seen
        .into_iter()
        .map(|row| row.map(|o| o.expect("every run reported")))
        .collect();

    // The table.
    let width = cases.iter().map(|c| c.name.len()).max().unwrap_or(4);
    println!(
        "\n{} cases through 3 front ends in {took:.1?} (cell: answers, upstream requests, \
         +part: partial request upstream, cl: client connection closed, DESYNC; ! = misses \
         faasgate's required outcome)\n",
        cases.len()
    );
    println!(
        "{:width$} | {:26} | {:26} | {:26}",
        "case", FRONTS[0], FRONTS[1], FRONTS[2]
    );
    let mut failures = Vec::new();
    let mut nginx_misses = Vec::new();
    let mut differ = Vec::new();
    for (case, row) in cases.iter().zip(&seen) {
        let verdicts: Vec<Vec<String>> = row
            .iter()
            .enumerate()
            .map(|(f, o)| judge(case, o, f == 1))
            .collect();
        let cells: Vec<String> = row
            .iter()
            .zip(&verdicts)
            .map(|(o, v)| format!("{}{}", if v.is_empty() { " " } else { "!" }, summary(o)))
            .collect();
        println!(
            "{:width$} | {:26} | {:26} | {:26}",
            case.name, cells[0], cells[1], cells[2]
        );
        for (f, v) in verdicts.iter().enumerate().take(2) {
            if !v.is_empty() {
                failures.push(format!("{} [{}]: {}", case.name, FRONTS[f], v.join("; ")));
            }
        }
        if !verdicts[2].is_empty() {
            nginx_misses.push(format!("{}: {}", case.name, verdicts[2].join("; ")));
        }
        let [b, h, n] = [&row[0], &row[1], &row[2]].map(summary);
        if b != n || h != n {
            let why = match case.why {
                "" => String::new(),
                w => format!(" (why: {w})"),
            };
            differ.push(format!(
                "{}: byteloop {b} | hyper {h} | nginx {n}{why}",
                case.name
            ));
        }
    }
    println!("\nwhere faasgate and nginx differ ({}):", differ.len());
    for d in &differ {
        println!("  {d}");
    }
    println!(
        "\nwhere nginx misses what faasgate must do ({}):",
        nginx_misses.len()
    );
    for m in &nginx_misses {
        println!("  {m}");
    }
    println!("\nfaasgate failures ({}):", failures.len());
    for f in &failures {
        println!("  {f}");
    }

    byte_loop.stop();
    hyper.stop();
    drop(nginx);
    assert!(
        failures.is_empty(),
        "{} case runs miss faasgate's required outcome:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
