//! Per-replica pool of idle HTTP/1.1 keep-alive connections, lock-free.
//!
//! A pooled [`Conn`] is a plain `TcpStream` with its reusable read and write buffers: the
//! request's own task writes the request and reads the response on it (`forward`, `body`),
//! with no connection task, channel or oneshot in between (hyper's client connection cost a
//! task wake and several channel operations per request).
//!
//! Idle connections sit in a bounded `crossbeam` `ArrayQueue` (a lock-free MPMC ring), so a
//! checkout is one `pop` and a checkin one `push`: no mutex, unlike hyper-util's legacy client
//! pool, which locks per checkout.
//!
//! Invariants (the pool is shared by every client of a function, so a connection that could
//! carry a byte of an earlier exchange must never serve another request: that byte would be
//! read as the next caller's response, and every answer after it would be shifted by one):
//! - A connection is checked in only by the response body that ended cleanly on a persistent
//!   connection, with the request all sent and nothing read past the response
//!   ([`Pool::checkin`] drops one with unread bytes). So a connection carries one request at
//!   a time.
//! - At checkout a connection is reused only when no read event was seen on it since its
//!   response ended: nginx's rule (its idle upstream connections close on any read event).
//!   The reactor's recorded readiness is read first, at no cost; when it reports data, EOF
//!   or an error, a non-blocking one-byte `MSG_PEEK` confirms (a readiness left set by a read
//!   that filled its buffer is not data), and the connection is closed if anything is there.
//!   Bytes the reactor has not reported yet (its next turn is due), or that a replica writes
//!   after the checkout, reach the next request's reader first: no HTTP/1.1 proxy can tell
//!   them apart from its answer; the framing checks of that response, then this check at the
//!   following checkout, close the connection. (Peeking at every checkout would narrow the
//!   first window to nothing at one `recvfrom` per request, about a tenth of the gateway's
//!   CPU per request as `loadtest/percall` measures it. The periodic [`Pool::trim`] peeks at
//!   every idle connection.)
//! - At most [`Limits::max_idle`] connections stay idle per replica (more are closed at
//!   checkin), and one idle longer than [`Limits::idle_timeout`] is closed, at checkout or by
//!   [`Pool::trim`], which the gateway calls periodically for every replica.
//!
//! Every connection closed by these rules is counted by reason ([`discarded`], exported as
//! `faasgate_upstream_connections_discarded_total{reason}`).
//!
//! The ring is allocated at the first check-in, not with the replica: a ring of a thousand
//! slots is ~40 KiB, and with 10,000 functions deployed most replicas never see a request
//! (`loadtest/scalegate.rs` measures the table's memory).

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use crossbeam_queue::ArrayQueue;
use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::TcpStream;

use crate::sys::clock;

/// Idle connections kept per replica unless configured ([`Limits`]): about the concurrency
/// of a busy function, so a steady load reconnects never and a burst leaves a bounded rest.
pub const DEFAULT_MAX_IDLE: usize = 256;
/// How long an idle connection is kept unless configured (nginx's `keepalive_timeout`).
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Initial capacity of a connection's read buffer (grown on demand, kept across requests).
pub(crate) const READ_BUF: usize = 8 * 1024;

/// The process's pool limits: set once at start ([`configure`]), read when a pool is made
/// (the idle bound) and at every checkout (the idle timeout, one relaxed load).
pub(crate) struct Limits {
    max_idle: AtomicUsize,
    idle_timeout_ms: AtomicU64,
}

static LIMITS: Limits = Limits {
    max_idle: AtomicUsize::new(DEFAULT_MAX_IDLE),
    idle_timeout_ms: AtomicU64::new(DEFAULT_IDLE_TIMEOUT.as_millis() as u64),
};

/// Sets the limits of pools made from now on (`faasgate serve --upstream-max-idle` and
/// `--upstream-idle-timeout`). `max_idle` 0 keeps no idle connection.
pub fn configure(max_idle: usize, idle_timeout: Duration) {
    LIMITS.max_idle.store(max_idle, Ordering::Relaxed);
    LIMITS
        .idle_timeout_ms
        .store(idle_timeout.as_millis() as u64, Ordering::Relaxed);
}

impl Limits {
    /// Idle connections kept per replica.
    pub(crate) fn max_idle() -> usize {
        LIMITS.max_idle.load(Ordering::Relaxed)
    }

    /// How long a connection may stay idle.
    pub(crate) fn idle_timeout() -> Duration {
        Duration::from_millis(LIMITS.idle_timeout_ms.load(Ordering::Relaxed))
    }
}

/// Why a pooled connection was closed instead of reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// Bytes were left unread after its response, or arrived while it was idle.
    Unread,
    /// The replica closed or reset it while it was idle.
    Closed,
    /// Idle longer than the idle timeout.
    Expired,
    /// The idle ring of its replica was full.
    Full,
    /// Its response's framing left doubt about where the response ended (both
    /// `Content-Length` and `Transfer-Encoding`, a body on a 204).
    Framing,
}

impl Discard {
    pub(crate) const ALL: [Discard; 5] = [
        Discard::Unread,
        Discard::Closed,
        Discard::Expired,
        Discard::Full,
        Discard::Framing,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Discard::Unread => "unread_bytes",
            Discard::Closed => "peer_closed",
            Discard::Expired => "idle_timeout",
            Discard::Full => "pool_full",
            Discard::Framing => "framing",
        }
    }
}

static DISCARDED: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

/// Counts one connection closed for `why` (also used by the response body, which decides
/// [`Discard::Framing`]).
pub(crate) fn count_discard(why: Discard) {
    DISCARDED[why as usize].fetch_add(1, Ordering::Relaxed);
}

/// Connections closed for `why` since the process started.
pub fn discarded(why: Discard) -> u64 {
    DISCARDED[why as usize].load(Ordering::Relaxed)
}

pub struct Pool {
    addr: SocketAddr,
    idle: IdleRing<Conn>,
}

/// A bounded lock-free ring of idle entries, allocated at the first check-in. ([`Pool`]
/// serves the gateway's replicas and the watchdog's http mode alike.)
pub(crate) struct IdleRing<T> {
    ring: OnceLock<ArrayQueue<T>>,
    capacity: usize,
}

impl<T> IdleRing<T> {
    /// A ring that keeps at most `capacity` entries (0: none).
    pub(crate) const fn new(capacity: usize) -> Self {
        Self {
            ring: OnceLock::new(),
            capacity,
        }
    }

    /// The idle entry kept longest, if any (one `pop`, no lock; FIFO).
    pub(crate) fn pop(&self) -> Option<T> {
        self.ring.get().and_then(ArrayQueue::pop)
    }

    /// Keeps `item` for reuse; gives it back when the ring is full.
    pub(crate) fn push(&self, item: T) -> Result<(), T> {
        if self.capacity == 0 {
            return Err(item);
        }
        self.ring
            .get_or_init(|| ArrayQueue::new(self.capacity))
            .push(item)
    }

    /// Entries kept now.
    #[allow(clippy::len_without_is_empty)] // a count for tests and metrics, not a collection
    pub(crate) fn len(&self) -> usize {
        self.ring.get().map_or(0, ArrayQueue::len)
    }
}

/// One upstream connection and its buffers.
pub struct Conn {
    pub stream: TcpStream,
    /// Bytes read and not yet consumed (empty whenever the connection is idle).
    pub read: BytesMut,
    /// The request head (and a small body) being written; cleared per request.
    pub write: Vec<u8>,
    /// When it was last checked in (`clock` milliseconds).
    idle_since_ms: u64,
}

/// A connection checked out of a pool, and whether it was reused.
pub(crate) struct Checkout {
    pub conn: Conn,
    pub reused: bool,
}

// === impl Pool ===

impl Pool {
    /// A pool for `addr` with the process's [`Limits`].
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            idle: IdleRing::new(Limits::max_idle()),
        }
    }

    /// An idle connection on which nothing was seen since its last response, or a new one.
    pub(crate) async fn checkout(&self) -> io::Result<Checkout> {
        let now = clock::now_ms();
        let timeout_ms = Limits::idle_timeout().as_millis() as u64;
        while let Some(conn) = self.idle.pop() {
            if now.saturating_sub(conn.idle_since_ms) >= timeout_ms {
                count_discard(Discard::Expired);
                continue;
            }
            if let Err(why) = conn.idle_check() {
                count_discard(why);
                continue;
            }
            return Ok(Checkout { conn, reused: true });
        }
        Ok(Checkout {
            conn: self.connect().await?,
            reused: false,
        })
    }

    /// A new connection, bypassing the idle ones (a retry after a stale pooled one).
    pub(crate) async fn connect(&self) -> io::Result<Conn> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn::new(stream))
    }

    /// Returns a connection whose response has ended cleanly. Closed instead when bytes were
    /// read past that response, or when the pool keeps [`Limits::max_idle`] already.
    pub(crate) fn checkin(&self, mut conn: Conn) {
        if !conn.read.is_empty() {
            count_discard(Discard::Unread);
            return;
        }
        conn.idle_since_ms = clock::now_ms();
        if self.idle.push(conn).is_err() {
            count_discard(Discard::Full);
        }
    }

    /// Closes the idle connections older than the idle timeout, or that the replica closed
    /// or wrote to while idle; keeps the others. Called periodically off the request path
    /// (a pool with no traffic is never checked out). Returns how many were closed.
    pub fn trim(&self) -> usize {
        let now = clock::now_ms();
        let timeout_ms = Limits::idle_timeout().as_millis() as u64;
        let mut closed = 0;
        // At most the entries there now: ones checked in meanwhile are fresh.
        for _ in 0..self.idle.len() {
            let Some(conn) = self.idle.pop() else { break };
            let why = if now.saturating_sub(conn.idle_since_ms) >= timeout_ms {
                Err(Discard::Expired)
            } else {
                conn.peek()
            };
            match why {
                Ok(()) => {
                    if self.idle.push(conn).is_err() {
                        count_discard(Discard::Full);
                        closed += 1;
                    }
                }
                Err(why) => {
                    count_discard(why);
                    closed += 1;
                }
            }
        }
        closed
    }

    /// Idle connections now (tests, metrics).
    pub fn idle(&self) -> usize {
        self.idle.len()
    }
}

// === impl Conn ===

impl Conn {
    /// A connection on `stream` with empty buffers.
    pub fn new(stream: TcpStream) -> Self {
        Conn {
            stream,
            read: BytesMut::with_capacity(READ_BUF),
            write: Vec::with_capacity(1024),
            idle_since_ms: 0,
        }
    }

    /// Whether this idle connection can carry a new request (at checkout): nothing unread,
    /// and no read event recorded by the reactor since, or only one a peek shows was stale.
    fn idle_check(&self) -> Result<(), Discard> {
        if !self.read.is_empty() {
            return Err(Discard::Unread);
        }
        match self.stream.ready(Interest::READABLE).now_or_never() {
            // Nothing seen: reused without a syscall.
            None => Ok(()),
            Some(Ok(ready)) if ready.is_empty() => Ok(()),
            Some(Ok(_)) => self.peek(),
            Some(Err(_)) => Err(Discard::Closed),
        }
    }

    /// Whether a non-blocking one-byte `MSG_PEEK` finds the socket empty and open (used by
    /// [`Pool::trim`] for every idle connection, and at checkout to confirm a read event).
    fn peek(&self) -> Result<(), Discard> {
        if !self.read.is_empty() {
            return Err(Discard::Unread);
        }
        let mut byte = [MaybeUninit::<u8>::uninit(); 1];
        match socket2::SockRef::from(&self.stream).peek(&mut byte) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Ok(0) | Err(_) => Err(Discard::Closed),
            Ok(_) => Err(Discard::Unread),
        }
    }
}

impl Conn {
    /// Reads what the socket has into `read` (at least one byte, or `Ok(0)` at EOF).
    ///
    /// Through `AsyncRead::poll_read` (`read_buf`), not `try_read_buf`: tokio's `poll_read`
    /// clears the socket's readiness after a read that did not fill the buffer (on epoll
    /// that read drained the socket), where `try_read_buf` leaves it set, so the next
    /// exchange's first read was a `recvfrom` answering `EAGAIN`, one per request
    /// (`loadtest/percall`).
    pub(crate) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_BUF / 8 {
            self.read.reserve(READ_BUF);
        }
        let read = self.stream.read_buf(&mut self.read);
        std::pin::pin!(read).poll(cx)
    }

    pub(crate) async fn read_more(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_read(cx)).await
    }
}
