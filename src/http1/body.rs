//! Bodies on the upstream leg: the request body written to a replica as the socket takes it
//! ([`Upload`]) and a response body read off its pooled connection by its framing
//! ([`PooledResponse`]).
//!
//! Invariants: a connection goes back to its pool (through [`Release`]) only when its
//! response body ended cleanly, the connection may carry another request and the request was
//! all sent; every other end (an error, a close-delimited body, a body dropped unread, a
//! stall past the idle bound) drops it. Nothing here knows which function or replica a body
//! belongs to: the caller's `Release` does.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::io::AsyncWrite;
use tokio::time::Sleep;

use crate::http1::codec::{
    write_chunk_header, ChunkedDecoder, Decoded, Framing, WireError, INLINE_BODY, LAST_CHUNK,
};
use crate::http1::pool::Conn;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body sent to a replica: the client's, streamed, or none. A bodiless request can be
/// sent again (to another replica, after a 429) because nothing of it was consumed.
pub(crate) enum UpstreamBody {
    Client(Incoming),
    Empty,
}

/// Where a response's connection goes when its body has ended cleanly on a connection that
/// may carry another request.
pub trait Release {
    fn checkin(&mut self, conn: Conn);
}

/// A response body read off its pooled connection by its framing: the one place that
/// decides whether the connection goes back to its pool (a clean end, a persistent
/// connection, the request all sent) or is dropped (an error, a close-delimited body, a
/// body dropped unread). `release` is dropped when the body ends either way.
pub(crate) struct PooledResponse<R> {
    conn: Option<Conn>,
    /// The rest of the request body, when the replica answered before it was all sent
    /// (boxed: rare, and it would make every response body larger).
    upload: Option<Box<Upload>>,
    framing: BodyFraming,
    keep_alive: bool,
    release: Option<R>,
    /// The bound on each wait for the next body byte, when set ([`Self::idle_timeout`]).
    idle: Option<IdleTimer>,
}

/// An idle bound armed lazily: the timer is made (one allocation) the first time a body
/// read has to wait, so a body that arrived with its head costs none; it is moved forward
/// at most once a second of progress ([`crate::http1::exchange::coarse_deadline`]).
struct IdleTimer {
    limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    progressed: bool,
}

/// The body bytes stopped coming within the idle bound.
#[derive(Debug, thiserror::Error)]
#[error("no response body byte for {0:?}")]
pub(crate) struct BodyTimeout(pub Duration);

static BODY_TIMEOUTS: AtomicU64 = AtomicU64::new(0);

/// Counts one response cut because its body stalled (`faasgate_upstream_body_timeouts_total`).
pub(crate) fn count_body_timeout() {
    BODY_TIMEOUTS.fetch_add(1, Ordering::Relaxed);
}

/// Responses cut because their body stalled, since the process started.
pub fn body_timeouts() -> u64 {
    BODY_TIMEOUTS.load(Ordering::Relaxed)
}

/// The client's request body on its way to the replica, written as the socket takes it.
/// It is driven by the exchange until the response head arrives, then by the response body:
/// a replica may answer (and stream its answer) before it has read the whole request, so
/// the gateway reads while it writes, as hyper's client connection did.
pub(crate) struct Upload {
    body: Incoming,
    chunked: bool,
    /// Written bytes of `conn.write` (the head, chunk framing and small frames).
    pos: usize,
    /// A large frame, written from its own buffer after `conn.write`.
    big: Bytes,
    /// `\r\n` to frame after `big` (chunked).
    crlf_after_big: bool,
    /// The body has ended and its end is staged.
    ended: bool,
    /// Some byte (the head included) has been written to the replica.
    sent: bool,
    /// A client frame (or the body's end) has been staged: until then nothing is written, so
    /// a body malformed from its first byte is refused before the replica sees the request.
    started: bool,
    /// The bound on each wait for the client's next body piece, when set.
    client_idle: Option<IdleTimer>,
}

/// Why the rest of a request body could not be sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    /// The client's body failed (a malformed chunked body, a client gone mid-body).
    /// `sent`: part of the request had reached the replica already.
    #[error("client request body: {source}")]
    Client { sent: bool, source: hyper::Error },
    /// The client's next body piece did not come within the client body timeout.
    #[error("client request body stalled for {limit:?}")]
    ClientStalled { sent: bool, limit: Duration },
    /// Writing to the replica failed.
    #[error("writing the request body upstream: {0}")]
    Upstream(#[from] io::Error),
}

/// How a response body is delimited on its connection, with the state of reading it (the
/// bytes left, the chunk decoder). Read with [`poll_response_data`].
enum BodyFraming {
    Empty,
    Length(u64),
    Chunked(ChunkedDecoder),
    Close,
}

// === impl UpstreamBody ===

impl UpstreamBody {
    /// The client's body; `Empty` when it has none (GET, `Content-Length: 0`).
    pub(crate) fn from_client(body: Incoming) -> Self {
        if body.is_end_stream() {
            UpstreamBody::Empty
        } else {
            UpstreamBody::Client(body)
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, UpstreamBody::Empty)
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpstreamBody::Client(b) => Pin::new(b).poll_frame(cx),
            UpstreamBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Client(b) => b.is_end_stream(),
            UpstreamBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Client(b) => b.size_hint(),
            UpstreamBody::Empty => SizeHint::with_exact(0),
        }
    }
}

// === impl Upload ===

impl Upload {
    /// `conn.write` holds the request head; `chunked` when the body's length is unknown.
    pub(crate) fn new(body: Incoming, chunked: bool) -> Self {
        Self {
            body,
            chunked,
            pos: 0,
            big: Bytes::new(),
            crlf_after_big: false,
            ended: false,
            sent: false,
            started: false,
            client_idle: None,
        }
    }

    /// Bounds each wait for the client's next body piece by `limit` (`read_timeout`).
    pub(crate) fn client_idle_timeout(mut self, limit: Duration) -> Self {
        self.client_idle = Some(IdleTimer::new(limit));
        self
    }

    /// Writes what the socket takes: staged bytes first, then the client's next frames.
    /// Frames that are ready together are coalesced (up to [`INLINE_BODY`]) into one write,
    /// so a head and a small body leave in one segment. `Ready(Ok)` once all is written.
    pub(crate) fn poll_send(
        &mut self,
        conn: &mut Conn,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), UploadError>> {
        loop {
            // The body is polled at least until its first piece is staged, however large
            // the head waiting in `conn.write` (nothing is written before that).
            while !self.ended
                && self.big.is_empty()
                && (!self.started || conn.write.len() - self.pos < INLINE_BODY)
            {
                if self.body.is_end_stream() {
                    self.end(conn);
                    break;
                }
                match Pin::new(&mut self.body).poll_frame(cx) {
                    Poll::Pending => {
                        if let Some(idle) = self.client_idle.as_mut() {
                            if idle.poll_expired(cx).is_ready() {
                                let (sent, limit) = (self.sent, idle.limit);
                                return Poll::Ready(Err(UploadError::ClientStalled {
                                    sent,
                                    limit,
                                }));
                            }
                        }
                        break;
                    }
                    Poll::Ready(None) => self.end(conn),
                    Poll::Ready(Some(Err(source))) => {
                        let sent = self.sent;
                        return Poll::Ready(Err(UploadError::Client { sent, source }));
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(idle) = self.client_idle.as_mut() {
                            idle.progressed = true;
                        }
                        // Trailers are not forwarded.
                        if let Ok(data) = frame.into_data() {
                            self.stage(conn, data);
                        }
                    }
                }
            }
            if !self.started {
                // Nothing goes out before the body's first piece is known good.
                return Poll::Pending;
            }
            if self.pos < conn.write.len() {
                let n = ready!(Pin::new(&mut conn.stream).poll_write(cx, &conn.write[self.pos..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
                }
                self.sent = true;
                self.pos += n;
                continue;
            }
            conn.write.clear();
            self.pos = 0;
            if !self.big.is_empty() {
                let n = ready!(Pin::new(&mut conn.stream).poll_write(cx, &self.big))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
                }
                self.sent = true;
                self.big.advance(n);
                if self.big.is_empty() && self.crlf_after_big {
                    self.crlf_after_big = false;
                    conn.write.extend_from_slice(b"\r\n");
                }
                continue;
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            // Everything staged is written and the client's next frame is not ready: its
            // `poll_frame` holds the waker.
            return Poll::Pending;
        }
    }

    fn stage(&mut self, conn: &mut Conn, data: Bytes) {
        if data.is_empty() {
            return;
        }
        self.started = true;
        if self.chunked {
            write_chunk_header(data.len(), &mut conn.write);
        }
        if conn.write.len() - self.pos + data.len() <= INLINE_BODY {
            conn.write.extend_from_slice(&data);
            if self.chunked {
                conn.write.extend_from_slice(b"\r\n");
            }
        } else {
            self.big = data;
            self.crlf_after_big = self.chunked;
        }
    }

    fn end(&mut self, conn: &mut Conn) {
        self.ended = true;
        self.started = true;
        if self.chunked {
            conn.write.extend_from_slice(LAST_CHUNK);
        }
    }
}

// === impl PooledResponse ===

impl<R: Release> PooledResponse<R> {
    pub(crate) fn new(
        conn: Conn,
        upload: Option<Box<Upload>>,
        framing: Framing,
        keep_alive: bool,
        release: R,
    ) -> Self {
        let mut body = Self {
            conn: Some(conn),
            // A connection whose request was not all sent cannot carry another one.
            keep_alive: keep_alive && upload.is_none(),
            upload,
            framing: BodyFraming::new(framing),
            release: Some(release),
            idle: None,
        };
        if body.framing.is_complete() {
            // No body: the reader may never poll it, so the connection goes back now.
            body.finish();
        }
        body
    }

    /// The body has ended (cleanly or not): nothing more will come.
    pub(crate) fn is_end_stream(&self) -> bool {
        self.release.is_none()
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        if self.is_end_stream() {
            return SizeHint::with_exact(0);
        }
        self.framing.size_hint()
    }

    /// Bounds each wait for the next body byte by `limit`: past it the body ends with a
    /// [`BodyTimeout`] error and the connection is dropped.
    pub(crate) fn idle_timeout(mut self, limit: Duration) -> Self {
        if !self.is_end_stream() {
            self.idle = Some(IdleTimer::new(limit));
        }
        self
    }

    /// The next piece of the body as it arrives; `None` at its end. After an error the
    /// connection is dropped (it may be mid-response), never pooled.
    pub(crate) fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, BoxError>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = poll_response_data(conn, &mut self.upload, &mut self.framing, cx);
        let polled = match (polled, self.idle.as_mut()) {
            (Poll::Pending, Some(idle)) => match idle.poll_expired(cx) {
                Poll::Ready(()) => {
                    count_body_timeout();
                    Err(Box::new(BodyTimeout(idle.limit)) as BoxError)
                }
                Poll::Pending => return Poll::Pending,
            },
            (Poll::Pending, None) => return Poll::Pending,
            (Poll::Ready(r), idle) => {
                if let Some(idle) = idle {
                    idle.progressed = true;
                }
                r
            }
        };
        match polled {
            Ok(Some(data)) => {
                if self.framing.is_complete() {
                    // A reader stops polling once the body says it has ended: release now.
                    self.finish();
                }
                Poll::Ready(Some(Ok(data)))
            }
            Ok(None) => {
                // A body delimited by the connection's close leaves nothing to reuse.
                self.keep_alive &= !matches!(self.framing, BodyFraming::Close);
                self.finish();
                Poll::Ready(None)
            }
            Err(e) => {
                self.conn = None;
                self.upload = None;
                self.release = None;
                self.idle = None;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    /// The body ended cleanly: the connection goes back when it may be reused.
    fn finish(&mut self) {
        self.upload = None;
        self.idle = None;
        let conn = self.conn.take();
        if let Some(mut release) = self.release.take() {
            if let Some(conn) = conn.filter(|_| self.keep_alive) {
                release.checkin(conn);
            }
        }
    }
}

// === impl IdleTimer ===

impl IdleTimer {
    fn new(limit: Duration) -> Self {
        Self {
            limit,
            sleep: None,
            progressed: false,
        }
    }

    /// Arms the timer on the first wait, moves it after progress, and polls it.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        use std::future::Future as _;
        let sleep = match self.sleep.as_mut() {
            None => self.sleep.insert(Box::pin(tokio::time::sleep(self.limit))),
            Some(sleep) => {
                if std::mem::take(&mut self.progressed) {
                    crate::http1::exchange::coarse_deadline(sleep.as_mut(), self.limit);
                }
                sleep
            }
        };
        self.progressed = false;
        sleep.as_mut().poll(cx)
    }
}

// === impl BodyFraming ===

impl BodyFraming {
    pub(crate) fn new(framing: Framing) -> Self {
        match framing {
            Framing::Empty | Framing::Length(0) => BodyFraming::Empty,
            Framing::Length(n) => BodyFraming::Length(n),
            Framing::Chunked => BodyFraming::Chunked(ChunkedDecoder::new()),
            Framing::Close => BodyFraming::Close,
        }
    }

    /// True once the body's known length has been read (or it had none): nothing more to
    /// read, and the connection is clean.
    pub(crate) fn is_complete(&self) -> bool {
        matches!(self, BodyFraming::Empty | BodyFraming::Length(0))
    }

    /// What is left of the body, exactly when known.
    pub(crate) fn size_hint(&self) -> SizeHint {
        match self {
            BodyFraming::Empty => SizeHint::with_exact(0),
            BodyFraming::Length(n) => SizeHint::with_exact(*n),
            BodyFraming::Chunked(_) | BodyFraming::Close => SizeHint::default(),
        }
    }
}

/// One step of reading a response body off `conn` by its `framing`, writing what is left of
/// the request body (`upload`, cleared once sent) meanwhile. `Ready(Ok(Some(data)))`: the
/// next piece as it arrived; `Ready(Ok(None))`: the body ended cleanly (for
/// [`BodyFraming::Close`], at the peer's EOF); `Ready(Err)`: the upload, the framing or the
/// connection failed, and the connection must not be reused. [`PooledResponse`] decides where
/// the connection goes afterwards.
fn poll_response_data(
    conn: &mut Conn,
    upload: &mut Option<Box<Upload>>,
    framing: &mut BodyFraming,
    cx: &mut Context<'_>,
) -> Poll<Result<Option<Bytes>, BoxError>> {
    loop {
        if let Some(u) = upload.as_mut() {
            match u.poll_send(conn, cx) {
                Poll::Ready(Ok(())) => *upload = None,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Box::new(e))),
                Poll::Pending => {}
            }
        }
        let data = match framing {
            BodyFraming::Empty | BodyFraming::Length(0) => None,
            BodyFraming::Length(left) => {
                if conn.read.is_empty() {
                    Some(None)
                } else {
                    let n = (conn.read.len() as u64).min(*left);
                    *left -= n;
                    Some(Some(conn.read.split_to(n as usize).freeze()))
                }
            }
            BodyFraming::Chunked(decoder) => match decoder.decode(&mut conn.read) {
                Ok(Decoded::Data(d)) => Some(Some(d)),
                Ok(Decoded::End) => None,
                Ok(Decoded::NeedMore) => Some(None),
                Err(e) => return Poll::Ready(Err(Box::new(e))),
            },
            BodyFraming::Close => {
                if conn.read.is_empty() {
                    Some(None)
                } else {
                    let n = conn.read.len();
                    Some(Some(conn.read.split_to(n).freeze()))
                }
            }
        };
        match data {
            None => return Poll::Ready(Ok(None)),
            Some(Some(data)) => return Poll::Ready(Ok(Some(data))),
            Some(None) => {}
        }
        match ready!(conn.poll_read(cx)) {
            Ok(0) if matches!(framing, BodyFraming::Close) => return Poll::Ready(Ok(None)),
            Ok(0) => return Poll::Ready(Err(Box::new(WireError::Truncated))),
            Ok(_) => {}
            Err(e) => return Poll::Ready(Err(Box::new(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A connection to a peer whose end the test writes the response on.
    async fn pair() -> (Conn, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (peer, _) = listener.accept().await.unwrap();
        (Conn::new(stream), peer)
    }

    /// Reads the whole body: its pieces, and how it ended.
    async fn read_all(
        conn: &mut Conn,
        framing: &mut BodyFraming,
    ) -> (Vec<Bytes>, Result<(), String>) {
        let mut upload = None;
        let mut pieces = Vec::new();
        loop {
            match std::future::poll_fn(|cx| poll_response_data(conn, &mut upload, framing, cx))
                .await
            {
                Ok(Some(data)) => pieces.push(data),
                Ok(None) => return (pieces, Ok(())),
                Err(e) => return (pieces, Err(e.to_string())),
            }
        }
    }

    #[tokio::test]
    async fn length_body_stops_at_its_length() {
        let (mut conn, mut peer) = pair().await;
        peer.write_all(b"hello").await.unwrap();
        let mut framing = BodyFraming::new(Framing::Length(5));
        let data =
            std::future::poll_fn(|cx| poll_response_data(&mut conn, &mut None, &mut framing, cx))
                .await
                .unwrap();
        assert_eq!(data.as_deref(), Some(&b"hello"[..]));
        assert!(framing.is_complete());
        assert_eq!(framing.size_hint().exact(), Some(0));
        // Bytes past the body (a next response) stay on the connection.
        conn.read.extend_from_slice(b"HTTP/1.1");
        let (pieces, end) = read_all(&mut conn, &mut framing).await;
        assert!(pieces.is_empty() && end.is_ok());
        assert_eq!(&conn.read[..], b"HTTP/1.1");
    }

    #[tokio::test]
    async fn chunked_body_streams_piece_by_piece() {
        let (mut conn, mut peer) = pair().await;
        let mut framing = BodyFraming::new(Framing::Chunked);
        assert_eq!(framing.size_hint().exact(), None);
        peer.write_all(b"5\r\nfirst\r\n").await.unwrap();
        let first =
            std::future::poll_fn(|cx| poll_response_data(&mut conn, &mut None, &mut framing, cx))
                .await
                .unwrap();
        assert_eq!(first.as_deref(), Some(&b"first"[..]));
        peer.write_all(b"6\r\nsecond\r\n0\r\n\r\n").await.unwrap();
        let (pieces, end) = read_all(&mut conn, &mut framing).await;
        assert_eq!(pieces, [Bytes::from_static(b"second")]);
        assert!(end.is_ok());
        assert!(conn.read.is_empty());
    }

    #[tokio::test]
    async fn close_delimited_body_ends_at_eof_and_a_short_one_is_an_error() {
        let (mut conn, mut peer) = pair().await;
        peer.write_all(b"to the end").await.unwrap();
        drop(peer);
        let mut framing = BodyFraming::new(Framing::Close);
        let (pieces, end) = read_all(&mut conn, &mut framing).await;
        assert_eq!(pieces.concat(), b"to the end");
        assert!(end.is_ok());

        let (mut conn, mut peer) = pair().await;
        peer.write_all(b"short").await.unwrap();
        drop(peer);
        let mut framing = BodyFraming::new(Framing::Length(10));
        let (pieces, end) = read_all(&mut conn, &mut framing).await;
        assert_eq!(pieces.concat(), b"short");
        assert_eq!(end, Err(WireError::Truncated.to_string()));
    }

    #[test]
    fn empty_framings_are_complete() {
        assert!(BodyFraming::new(Framing::Empty).is_complete());
        assert!(BodyFraming::new(Framing::Length(0)).is_complete());
        assert!(!BodyFraming::new(Framing::Length(1)).is_complete());
        assert!(!BodyFraming::new(Framing::Chunked).is_complete());
        assert!(!BodyFraming::new(Framing::Close).is_complete());
    }
}
