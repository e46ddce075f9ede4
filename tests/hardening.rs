//! The upstream leg's safety rules, through both client-side paths (the byte loop
//! and hyper's server): a pooled connection is never reused when its replica wrote past a
//! response (response desync), a stalled response body is cut after the body timeout, and
//! the pool's idle connections are bounded by count and age while a steady load reuses them.
//!
//! Each upstream here is a raw socket script, so what reaches the gateway is exactly what a
//! buggy or hostile function would write.
#![allow(clippy::unwrap_used)] // test and tool code: a failed unwrap is a failed run

#[path = "support/inproc.rs"]
mod inproc;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faasgate::dataplane::forward::ForwardConfig;
use faasgate::dataplane::Routes;
use faasgate::http1::pool::{self, Discard};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// The bound on every wait.
const WAIT: Duration = Duration::from_secs(10);

/// Reads one request head (and nothing of a body: the scripts answer bodiless requests).
async fn read_head(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&byte[..n]),
        }
    }
    Some(buf)
}

/// An upstream that answers every request with `answer(n)` (n counts requests over all
/// connections), then, in a separate write after `pause`, with `late` bytes (none when
/// empty). `written` counts late writes done.
async fn late_writer(
    answer: fn(usize) -> Vec<u8>,
    late: &'static [u8],
    pause: Duration,
    written: Arc<AtomicUsize>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let count = count.clone();
            let written = written.clone();
            tokio::spawn(async move {
                while read_head(&mut s).await.is_some() {
                    let n = count.fetch_add(1, Ordering::SeqCst);
                    if s.write_all(&answer(n)).await.is_err() {
                        return;
                    }
                    if !late.is_empty() {
                        tokio::time::sleep(pause).await;
                        if s.write_all(late).await.is_err() {
                            return;
                        }
                        written.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    addr
}

/// Sends one raw request on a new connection and reads until the response is whole by
/// `Content-Length` (the scripts' answers all carry one) or the connection closes.
async fn call(gw: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect(gw).await.unwrap();
    c.write_all(request).await.unwrap();
    read_response(&mut c, request.starts_with(b"HEAD ")).await
}

/// One response off `c`; `head`: it answers a HEAD (no body whatever the headers say).
async fn read_response(c: &mut TcpStream, head_request: bool) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let mut head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            if head_request {
                head.push_str("\nhead-request");
            }
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok());
            let head_only = head.starts_with("http/1.1 204") || head.starts_with("http/1.1 304");
            if head_only || head.contains("\nhead-request") {
                return buf;
            }
            if head.contains("transfer-encoding: chunked") {
                if buf.ends_with(b"\r\n0\r\n\r\n") {
                    return buf;
                }
            } else {
                match len {
                    Some(n) if buf.len() >= end + 4 + n => return buf,
                    _ => {}
                }
            }
        }
        match timeout(WAIT, c.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return buf,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!(
                "no response within {WAIT:?}: {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    }
}

fn get(name: &str, method: &str) -> Vec<u8> {
    format!("{method} /function/{name} HTTP/1.1\r\nHost: gw.test\r\n\r\n").into_bytes()
}

async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "not within {WAIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn answer_ok(n: usize) -> Vec<u8> {
    let body = format!("answer-{n}");
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn answer_no_content(_: usize) -> Vec<u8> {
    b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()
}

fn answer_chunked(n: usize) -> Vec<u8> {
    let body = format!("answer-{n}");
    format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    )
    .into_bytes()
}

const STALE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTALE";

/// A replica writes past its response, in a separate write once the response has been
/// relayed; the next request, from another client on a new connection, must get its own
/// answer. Before the idle check at checkout it got `STALE` (the late bytes, read as its
/// response), and every answer on that connection after it was shifted by one.
async fn late_bytes_never_reach_the_next_caller(
    byte_loop: bool,
    answer: fn(usize) -> Vec<u8>,
    method: &str,
) {
    let written = Arc::new(AtomicUsize::new(0));
    let up = late_writer(answer, STALE, Duration::from_millis(30), written.clone()).await;
    let unread_before = pool::discarded(Discard::Unread);
    let routes = Arc::new(Routes::new());
    inproc::publish(&routes, "f", &[up]);
    let gw = inproc::spawn_gateway_config(routes, byte_loop, ForwardConfig::default()).await;
    for round in 0..3 {
        let first = call(gw.addr, &get("f", method)).await;
        assert!(
            first.starts_with(b"HTTP/1.1 2"),
            "{:?}",
            String::from_utf8_lossy(&first)
        );
        // The late bytes are on the pooled connection before the next request comes.
        eventually("the late write", || {
            written.load(Ordering::SeqCst) > 2 * round
        })
        .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let next = call(gw.addr, &get("f", "GET")).await;
        let text = String::from_utf8_lossy(&next);
        assert!(
            !text.contains("STALE"),
            "round {round}: the next caller got the stale bytes: {text:?}"
        );
        assert!(text.starts_with("HTTP/1.1 2"), "round {round}: {text:?}");
        eventually("the late write", || {
            written.load(Ordering::SeqCst) > 2 * round + 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(pool::discarded(Discard::Unread) > unread_before);
}

macro_rules! both_ways {
    ($($name:ident => $body:expr),* $(,)?) => {
        mod byte_loop {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let byte_loop = true;
                ($body)(byte_loop).await
            })*
        }
        mod hyper_server {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let byte_loop = false;
                ($body)(byte_loop).await
            })*
        }
    };
}

both_ways!(
    bytes_after_a_content_length_body_are_not_read_as_the_next_answer =>
        |b| late_bytes_never_reach_the_next_caller(b, answer_ok, "GET"),
    a_body_on_a_204_is_not_read_as_the_next_answer =>
        |b| late_bytes_never_reach_the_next_caller(b, answer_no_content, "GET"),
    a_body_on_a_head_answer_is_not_read_as_the_next_answer =>
        |b| late_bytes_never_reach_the_next_caller(b, answer_ok, "HEAD"),
    a_response_after_a_chunked_body_is_not_read_as_the_next_answer =>
        |b| late_bytes_never_reach_the_next_caller(b, answer_chunked, "GET"),
    a_stalled_response_body_is_cut_after_the_body_timeout => stalled_body_is_cut,
);

/// A replica sends a head and part of its body, then nothing. With a 300 ms body timeout
/// the client's connection is closed (it cannot learn otherwise that the answer is cut), the
/// call is counted as a 504, and the gateway serves the next call. Before the body timeout
/// the client waited for ever.
async fn stalled_body_is_cut(byte_loop: bool) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                if let Some(head) = read_head(&mut s).await {
                    if head.starts_with(b"GET /stall") {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
                            .await;
                        // Hold the connection open, silent.
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    } else {
                        let _ = s.write_all(&answer_ok(0)).await;
                    }
                }
            });
        }
    });
    let routes = Arc::new(Routes::new());
    let handle = inproc::publish(&routes, "f", &[up]);
    let config = ForwardConfig {
        body_timeout: Duration::from_millis(300),
        ..ForwardConfig::default()
    };
    let gw = inproc::spawn_gateway_config(routes, byte_loop, config).await;
    let timeouts_before = faasgate::http1::body::body_timeouts();
    let mut c = TcpStream::connect(gw.addr).await.unwrap();
    c.write_all(b"GET /function/f/stall HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match timeout(WAIT, c.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("the stalled answer was not cut within {WAIT:?}"),
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text:?}");
    let head_end = text.find("\r\n\r\n").expect("a whole head") + 4;
    let body = &got[head_end..];
    // The client got the head and what the replica sent (`abc`, plain or as one chunk), and
    // neither the rest of the announced 10 bytes nor a chunked terminator.
    assert!(body.windows(3).any(|w| w == b"abc"), "{text:?}");
    assert!(
        body.len() < 10 || text.contains("transfer-encoding"),
        "{text:?}"
    );
    assert!(!body.ends_with(b"0\r\n\r\n"), "{text:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "cut too early"
    );
    // Counted as a gateway timeout once the invocation is recorded.
    eventually("a 504 recorded", || {
        handle
            .metrics
            .codes
            .samples()
            .iter()
            .any(|s| s.code == Some(504))
    })
    .await;
    assert!(faasgate::http1::body::body_timeouts() > timeouts_before);
    let next = call(gw.addr, &get("f", "GET")).await;
    assert!(
        next.starts_with(b"HTTP/1.1 200 OK"),
        "{:?}",
        String::from_utf8_lossy(&next)
    );
}

/// Counts an upstream's open connections and the connects it accepted.
struct Counting {
    addr: SocketAddr,
    open: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
}

async fn counting_upstream() -> Counting {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (o, a) = (open.clone(), accepted.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            o.fetch_add(1, Ordering::SeqCst);
            a.fetch_add(1, Ordering::SeqCst);
            let o = o.clone();
            tokio::spawn(async move {
                while read_head(&mut s).await.is_some() {
                    if s.write_all(&answer_ok(0)).await.is_err() {
                        break;
                    }
                }
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Counting {
        addr,
        open,
        accepted,
    }
}

/// After a burst of 512 concurrent clients the replica keeps at most the idle bound of the
/// gateway's connections, and none after the idle timeout; a steady load of a few clients
/// reuses its connections (no connect per request). Before the bound and the timeout, the
/// 512 connections stayed open for ever.
///
/// The pool limits are process-wide, so this is the one test in this binary that sets them
/// (to 8 idle, 1 s); the other tests' pools keep working under them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_are_bounded_and_expire() {
    const MAX_IDLE: usize = 8;
    pool::configure(MAX_IDLE, Duration::from_secs(1));
    let up = counting_upstream().await;
    let routes = Arc::new(Routes::new());
    let handle = inproc::publish(&routes, "burst", &[up.addr]);
    let gw = inproc::spawn_gateway_config(routes, true, ForwardConfig::default()).await;

    // Steady load: 4 clients, 50 keep-alive requests each.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            for _ in 0..50 {
                c.write_all(&get("burst", "GET")).await.unwrap();
                let r = read_response(&mut c, false).await;
                assert!(r.starts_with(b"HTTP/1.1 200"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let steady = up.accepted.load(Ordering::SeqCst);
    println!("steady load: 200 requests from 4 clients, {steady} upstream connects");
    assert!(steady <= 8, "{steady} connects for 4 concurrent clients");

    // A burst of 512 concurrent clients, each held until all are in flight.
    let barrier = Arc::new(tokio::sync::Barrier::new(512));
    let mut tasks = Vec::new();
    for _ in 0..512 {
        let (addr, barrier) = (gw.addr, barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            barrier.wait().await;
            c.write_all(&get("burst", "GET")).await.unwrap();
            let r = read_response(&mut c, false).await;
            assert!(r.starts_with(b"HTTP/1.1 200"));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let peak = up.accepted.load(Ordering::SeqCst);
    println!("burst: {peak} upstream connects in all");
    let pool = handle.state().replicas[0].clone();
    eventually("idle connections back to the bound", || {
        up.open.load(Ordering::SeqCst) <= MAX_IDLE
    })
    .await;
    println!(
        "after the burst: {} open at the replica, {} idle in the pool",
        up.open.load(Ordering::SeqCst),
        pool.pool().idle()
    );
    assert!(pool.pool().idle() <= MAX_IDLE);
    // No traffic now: the trimmer is the gateway binary's; here `trim` is called as it does.
    let start = Instant::now();
    while up.open.load(Ordering::SeqCst) > 0 {
        assert!(start.elapsed() < WAIT, "idle connections never expired");
        pool.pool().trim();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "all idle connections closed {:?} after the burst",
        start.elapsed()
    );
    assert!(pool::discarded(Discard::Full) > 0 && pool::discarded(Discard::Expired) > 0);
}

/// A chunked upload whose client stops sending after its first chunk: with a 300 ms client
/// body timeout the gateway answers 408 and closes, and the replica (which waits for the
/// whole body before answering) never answers anything. Both client paths: the byte loop
/// hands chunked bodies to hyper's path, which streams them.
async fn stalled_request_body_is_408(byte_loop: bool) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                // Answers only once the chunked body has ended.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.ends_with(b"\r\n0\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = s.write_all(&answer_ok(0)).await;
            });
        }
    });
    let routes = Arc::new(Routes::new());
    inproc::publish(&routes, "f", &[up]);
    let config = ForwardConfig {
        client_body_timeout: Duration::from_millis(300),
        ..ForwardConfig::default()
    };
    let gw = inproc::spawn_gateway_config(routes, byte_loop, config).await;
    let mut c = TcpStream::connect(gw.addr).await.unwrap();
    c.write_all(
        b"POST /function/f HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    )
    .await
    .unwrap();
    let r = read_response(&mut c, false).await;
    let text = String::from_utf8_lossy(&r);
    assert!(text.starts_with("HTTP/1.1 408 Request Timeout"), "{text:?}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text:?}"
    );
    let mut rest = [0u8; 16];
    let closed = timeout(WAIT, c.read(&mut rest))
        .await
        .expect("closed in time");
    assert!(matches!(closed, Ok(0) | Err(_)), "still open: {closed:?}");
}

/// A buffered (Content-Length) body that stops coming: the byte loop answers 408 after
/// `read_timeout`, as hyper answers a head that times out, and closes; nothing reaches the
/// replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_loop_stalled_buffered_body_is_408() {
    let up = counting_upstream().await;
    let routes = Arc::new(Routes::new());
    inproc::publish(&routes, "f", &[up.addr]);
    let config = ForwardConfig {
        client_body_timeout: Duration::from_millis(300),
        ..ForwardConfig::default()
    };
    let gw = inproc::spawn_gateway_config(routes, true, config).await;
    let mut c = TcpStream::connect(gw.addr).await.unwrap();
    c.write_all(b"POST /function/f HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let r = read_response(&mut c, false).await;
    let text = String::from_utf8_lossy(&r);
    assert!(text.starts_with("HTTP/1.1 408 Request Timeout"), "{text:?}");
    let mut rest = [0u8; 16];
    let closed = timeout(WAIT, c.read(&mut rest))
        .await
        .expect("closed in time");
    assert!(matches!(closed, Ok(0) | Err(_)), "still open: {closed:?}");
    assert_eq!(
        up.accepted.load(Ordering::SeqCst),
        0,
        "the replica was reached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_loop_stalled_request_body_is_408() {
    stalled_request_body_is_408(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_server_stalled_request_body_is_408() {
    stalled_request_body_is_408(false).await
}

/// `--max-connections 4`: with four connections open the fifth is not served (it waits in
/// the listen backlog); once one of the four closes, it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_wait_for_a_free_slot() {
    let up = inproc::spawn_upstream().await;
    let routes = Arc::new(Routes::new());
    inproc::publish(&routes, "echo", &[up]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(faasgate::api::server::serve_limited(
        listener,
        inproc::gateway(routes),
        Duration::from_secs(60),
        Duration::from_secs(1),
        4,
        std::future::pending(),
    ));
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        // Served: each holds a slot.
        c.write_all(&get("echo", "GET")).await.unwrap();
        assert!(read_response(&mut c, false)
            .await
            .starts_with(b"HTTP/1.1 200"));
        held.push(c);
    }
    // The kernel completes the handshake (backlog); the gateway does not accept it.
    let mut fifth = TcpStream::connect(addr).await.unwrap();
    fifth.write_all(&get("echo", "GET")).await.unwrap();
    let mut byte = [0u8; 1];
    assert!(
        timeout(Duration::from_millis(500), fifth.read(&mut byte))
            .await
            .is_err(),
        "the fifth connection was served while four were open"
    );
    drop(held.pop());
    let r = read_response(&mut fifth, false).await;
    assert!(
        r.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&r)
    );
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// 1,000 connections each sending a request head one byte every 200 ms (a slowloris) while
/// one client invokes a function 400 times: every invocation is answered, and the process's
/// memory grows by a bounded amount (each slow connection holds one task and its read
/// buffer; heads are bounded by the byte loop's 16 KiB and hyper's 96 KiB). Prints the
/// client's latency percentiles beside the same client's without the slow connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_clients_do_not_hold_up_others() {
    const SLOW: usize = 1000;
    const CALLS: usize = 400;
    let up = inproc::spawn_upstream().await;
    let routes = Arc::new(Routes::new());
    inproc::publish(&routes, "echo", &[up]);
    let gw = inproc::spawn_gateway(routes).await;

    async fn measure(addr: SocketAddr) -> Vec<Duration> {
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut lat = Vec::with_capacity(CALLS);
        for _ in 0..CALLS {
            let t = Instant::now();
            c.write_all(&get("echo", "GET")).await.unwrap();
            let r = read_response(&mut c, false).await;
            assert!(
                r.starts_with(b"HTTP/1.1 200"),
                "{:?}",
                String::from_utf8_lossy(&r)
            );
            lat.push(t.elapsed());
        }
        lat.sort();
        lat
    }
    let pct = |lat: &[Duration], p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];

    let quiet = measure(gw.addr).await;
    let before = rss_kib();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let c = TcpStream::connect(gw.addr).await.unwrap();
        let stop = stop.clone();
        slow.push(tokio::spawn(async move {
            let mut c = c;
            let head = b"GET /function/echo HTTP/1.1\r\nHost: gw.test\r\nX-Slow: ";
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let b = head.get(i).copied().unwrap_or(b'a');
                if c.write_all(&[b]).await.is_err() {
                    return;
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    // Every slow connection has sent a few bytes.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let loaded = measure(gw.addr).await;
    let during = rss_kib();
    stop.store(true, Ordering::Relaxed);
    for t in slow {
        t.await.unwrap();
    }
    println!(
        "invocations, p50/p99/max ms: alone {:.2}/{:.2}/{:.2}; beside {SLOW} slow-header connections {:.2}/{:.2}/{:.2}",
        pct(&quiet, 0.5).as_secs_f64() * 1e3,
        pct(&quiet, 0.99).as_secs_f64() * 1e3,
        quiet[quiet.len() - 1].as_secs_f64() * 1e3,
        pct(&loaded, 0.5).as_secs_f64() * 1e3,
        pct(&loaded, 0.99).as_secs_f64() * 1e3,
        loaded[loaded.len() - 1].as_secs_f64() * 1e3,
    );
    println!(
        "resident memory: {before} KiB before the slow connections, {during} KiB with them ({} KiB each)",
        during.saturating_sub(before) / SLOW as u64
    );
    assert_eq!(loaded.len(), CALLS);
    // Bounded: a task and a read buffer per connection (17 KiB each measured), far from
    // the 96 KiB head buffer hyper may grow to.
    assert!(
        during.saturating_sub(before) < (SLOW as u64) * 40,
        "memory grew by {} KiB for {SLOW} slow connections",
        during - before
    );
}

/// A streamed body behind a head larger than the coalescing buffer (16 KiB) still goes out:
/// the upload polls the body until its first piece is staged, however large the head.
/// (Found in review: the head filled the buffer, the body was never polled, and the call
/// timed out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upload_behind_a_large_head_is_sent() {
    let up = inproc::spawn_upstream().await;
    let routes = Arc::new(Routes::new());
    inproc::publish(&routes, "echo", &[up]);
    for byte_loop in [true, false] {
        let config = ForwardConfig {
            upstream_timeout: Duration::from_secs(5),
            ..ForwardConfig::default()
        };
        let gw = inproc::spawn_gateway_config(routes.clone(), byte_loop, config).await;
        let mut c = TcpStream::connect(gw.addr).await.unwrap();
        let big = "v".repeat(20 * 1024);
        let req = format!(
            "POST /function/echo HTTP/1.1\r\nHost: gw.test\r\nX-Big: {big}\r\n\
             Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        );
        c.write_all(req.as_bytes()).await.unwrap();
        let r = read_response(&mut c, false).await;
        let text = String::from_utf8_lossy(&r);
        assert!(
            text.starts_with("HTTP/1.1 200"),
            "byte_loop={byte_loop}: {text:?}"
        );
        assert!(
            text.ends_with("hello") || text.contains("\r\n5\r\nhello\r\n"),
            "{text:?}"
        );
    }
}
