//! The gateway's own HTTP/1.1 upstream leg (`dataplane::http1`, `pool`, `body`) against a
//! scripted upstream that writes raw bytes: response framings (chunked with extensions and
//! trailers, close-delimited, `Connection: close`, HEAD), interim 1xx heads, malformed heads
//! (502), and when a connection is or is not reused (counted by the upstream's accepts).

use crate::inproc;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use faasgate::dataplane::Routes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1 as client;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted upstream does after answering.
#[derive(Clone, Copy)]
enum After {
    KeepOpen,
    Close,
    /// The first connection reads a request and closes without a byte of answer (a replica
    /// killed mid-request); later ones answer and stay open.
    DieFirst,
}

/// An upstream that answers every request on every connection with `response`, and counts
/// the connections it accepted.
async fn scripted(response: &'static [u8], after: After) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let nth = count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request: a head, and a body of its Content-Length.
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < end + len {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + len);
                    if matches!(after, After::DieFirst) && nth == 0 {
                        return;
                    }
                    if s.write_all(response).await.is_err() {
                        return;
                    }
                    if let After::Close = after {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

struct Gw {
    _gw: inproc::InProc,
    sender: client::SendRequest<Full<Bytes>>,
}

async fn gateway_to(upstream: SocketAddr) -> Gw {
    let routes = Arc::new(Routes::new());
    inproc::publish(&routes, "wire", &[upstream]);
    let gw = inproc::spawn_gateway(routes).await;
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (sender, conn) = client::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    Gw { _gw: gw, sender }
}

impl Gw {
    async fn call(&mut self, method: Method) -> (u16, http::HeaderMap, Bytes) {
        let req = Request::builder()
            .method(method)
            .uri("/function/wire")
            .header("host", "gateway")
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.sender.ready().await.unwrap();
        let resp = self.sender.send_request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (parts.status.as_u16(), parts.headers, body)
    }
}

#[tokio::test]
async fn chunked_body_is_decoded_and_the_connection_reused() {
    let (up, accepted) = scripted(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\n\r\n\
          5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n",
        After::KeepOpen,
    )
    .await;
    let mut gw = gateway_to(up).await;
    for _ in 0..3 {
        let (status, headers, body) = gw.call(Method::GET).await;
        assert_eq!(status, 200);
        assert_eq!(body, "hello, world");
        assert_eq!(headers["x-up"], "1");
        assert!(headers.contains_key("x-call-id"));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one pooled connection");
}

#[tokio::test]
async fn close_delimited_body_is_read_to_eof_and_not_reused() {
    let (up, accepted) = scripted(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", After::Close).await;
    let mut gw = gateway_to(up).await;
    for _ in 0..2 {
        let (status, _, body) = gw.call(Method::GET).await;
        assert_eq!((status, &body[..]), (200, &b"until the end"[..]));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn connection_close_and_http_1_0_are_not_reused() {
    for response in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"[..],
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ] {
        let (up, accepted) = scripted(response, After::KeepOpen).await;
        let mut gw = gateway_to(up).await;
        for _ in 0..2 {
            let (status, _, body) = gw.call(Method::POST).await;
            assert_eq!((status, &body[..]), (200, &b"ok"[..]));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}

#[tokio::test]
async fn interim_heads_are_skipped_and_head_requests_have_no_body() {
    let (up, accepted) = scripted(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        After::KeepOpen,
    )
    .await;
    let mut gw = gateway_to(up).await;
    for _ in 0..2 {
        let (status, headers, body) = gw.call(Method::HEAD).await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-length"], "5");
        assert!(body.is_empty());
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn malformed_heads_and_truncated_bodies_fail() {
    let (up, _) = scripted(b"HTTP/1.1 2x0 Nope\r\n\r\n", After::Close).await;
    let mut gw = gateway_to(up).await;
    assert_eq!(gw.call(Method::GET).await.0, 502);

    let (up, _) = scripted(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        After::Close,
    )
    .await;
    let gw = gateway_to(up).await;
    let mut sender = gw.sender;
    let req = Request::get("/function/wire")
        .header("host", "gateway")
        .body(Full::new(Bytes::new()))
        .unwrap();
    // The head may not have left the gateway yet when the body breaks: either way the
    // client must not get a complete response.
    if let Ok(resp) = sender.send_request(req).await {
        assert_eq!(resp.status(), 200);
        assert!(
            resp.into_body().collect().await.is_err(),
            "broken framing aborts the body"
        );
    }
}

#[tokio::test]
async fn a_get_on_a_connection_the_replica_closed_is_sent_again() {
    // Every connection answers one request and closes, though it says keep-alive.
    let (up, accepted) = scripted(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        After::Close,
    )
    .await;
    let mut gw = gateway_to(up).await;
    for _ in 0..5 {
        let (status, _, body) = gw.call(Method::GET).await;
        assert_eq!((status, &body[..]), (200, &b"ok"[..]));
    }
    assert!(accepted.load(Ordering::SeqCst) >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_streams_to_an_echoing_replica_and_back() {
    // The replica echoes the body as it reads it, so its answer starts before the request
    // ends: the gateway must read while it writes, or both sides' buffers fill and stall.
    let up = inproc::spawn_upstream().await;
    let mut gw = gateway_to(up).await;
    let body = Bytes::from((0..32 * 1024 * 1024).map(|i| i as u8).collect::<Vec<u8>>());
    let req = Request::post("/function/wire")
        .header("host", "gateway")
        .body(Full::new(body.clone()))
        .unwrap();
    let call = async {
        let resp = gw.sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap().to_bytes()
    };
    let got = tokio::time::timeout(std::time::Duration::from_secs(30), call)
        .await
        .expect("no stall");
    assert!(
        got == body,
        "echo differs: {} of {} bytes",
        got.len(),
        body.len()
    );
}

#[tokio::test]
async fn a_body_of_unknown_length_goes_upstream_chunked() {
    let up = inproc::spawn_upstream().await;
    let routes = Arc::new(Routes::new());
    inproc::publish(&routes, "wire", &[up]);
    let gw = inproc::spawn_gateway(routes).await;
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) = client::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let parts: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> =
        ["a", "bc", "", "def"]
            .into_iter()
            .map(|p| Ok(http_body::Frame::data(Bytes::from(p))))
            .collect();
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(parts));
    let req = Request::post("/function/wire")
        .header("host", "gateway")
        .body(body)
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes(),
        "abcdef"
    );
    drop(gw);
}

/// [`scripted`] answering `ok`, whose first connection dies unanswered.
async fn dies_on_first_connection() -> (SocketAddr, Arc<AtomicUsize>) {
    scripted(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        After::DieFirst,
    )
    .await
}

#[tokio::test]
async fn a_get_whose_new_connection_dies_unanswered_is_sent_once_more() {
    let (up, accepted) = dies_on_first_connection().await;
    let mut gw = gateway_to(up).await;
    let (status, _, body) = gw.call(Method::GET).await;
    assert_eq!((status, &body[..]), (200, &b"ok"[..]));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_non_idempotent_request_whose_connection_dies_unanswered_is_not_resent() {
    let (up, accepted) = dies_on_first_connection().await;
    let mut gw = gateway_to(up).await;
    let (status, _, _) = gw.call(Method::POST).await;
    assert_eq!(status, 502);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}
