//! Per-replica pool of idle HTTP/1.1 keep-alive connections, lock-free.
//!
//! A pooled [`Conn`] is a plain `TcpStream` with its reusable read and write buffers: the
//! request's own task writes the request and reads the response on it (`forward`, `body`),
//! with no connection task, channel or oneshot in between (hyper's client connection cost a
//! task wake and several channel operations per request).
//!
//! Idle connections sit in a bounded `crossbeam` `ArrayQueue` (a lock-free MPMC ring), so a
//! checkout is one `pop` and a checkin one `push`: no mutex, unlike hyper-util's legacy client
//! pool, which locks per checkout. A connection is checked in by the response body when the
//! body has ended cleanly on a persistent connection with nothing left unread, so a
//! connection only ever carries one request at a time. A connection whose peer has closed
//! (the reactor saw EOF or a reset: no syscall to check) is dropped at checkout; one closed
//! without the reactor noticing yet is found when its request fails (see `forward`).
//!
//! The ring is allocated at the first check-in, not with the replica: a ring of [`MAX_IDLE`]
//! slots is ~40 KiB, and with 10,000 functions deployed most replicas never see a request
//! (`examples/scalegate.rs` measures the table's memory).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::BytesMut;
use crossbeam_queue::ArrayQueue;
use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::TcpStream;

/// Idle connections kept per replica.
pub const MAX_IDLE: usize = 1024;
/// Initial capacity of a connection's read buffer (grown on demand, kept across requests).
pub const READ_BUF: usize = 8 * 1024;

pub struct Pool {
    addr: SocketAddr,
    idle: IdleRing<Conn>,
}

/// A bounded lock-free ring of idle connections, allocated at the first check-in. ([`Pool`]
/// serves the gateway's replicas and the watchdog's http mode alike.)
pub struct IdleRing<T> {
    ring: OnceLock<ArrayQueue<T>>,
}

impl<T> IdleRing<T> {
    pub const fn new() -> Self {
        Self {
            ring: OnceLock::new(),
        }
    }

    /// The idle entry kept longest, if any (one `pop`, no lock; FIFO).
    pub fn pop(&self) -> Option<T> {
        self.ring.get().and_then(ArrayQueue::pop)
    }

    /// Keeps `item` for reuse; dropped when [`MAX_IDLE`] are kept already.
    pub fn push(&self, item: T) {
        let _ = self
            .ring
            .get_or_init(|| ArrayQueue::new(MAX_IDLE))
            .push(item);
    }

    /// Entries kept now.
    #[allow(clippy::len_without_is_empty)] // a count for tests and metrics, not a collection
    pub fn len(&self) -> usize {
        self.ring.get().map_or(0, ArrayQueue::len)
    }
}

impl<T> Default for IdleRing<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// One upstream connection and its buffers.
pub struct Conn {
    pub stream: TcpStream,
    /// Bytes read and not yet consumed (empty whenever the connection is idle).
    pub read: BytesMut,
    /// The request head (and a small body) being written; cleared per request.
    pub write: Vec<u8>,
}

/// A connection checked out of a pool, and whether it was reused.
pub struct Checkout {
    pub conn: Conn,
    pub reused: bool,
}

// === impl Pool ===

impl Pool {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            idle: IdleRing::new(),
        }
    }

    /// An idle connection not known to be closed, or a new one.
    pub async fn checkout(&self) -> io::Result<Checkout> {
        while let Some(conn) = self.idle.pop() {
            if conn.peer_closed() {
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
    pub async fn connect(&self) -> io::Result<Conn> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            read: BytesMut::with_capacity(READ_BUF),
            write: Vec::with_capacity(1024),
        })
    }

    /// Returns a connection whose response has ended cleanly. Dropped if the pool is full.
    pub fn checkin(&self, conn: Conn) {
        if conn.read.is_empty() {
            self.idle.push(conn);
        }
    }

    /// Idle connections now (tests, metrics).
    pub fn idle(&self) -> usize {
        self.idle.len()
    }
}

// === impl Conn ===

impl Conn {
    /// True when the reactor has seen the peer close or reset this idle connection. Reads
    /// the readiness the reactor already recorded; makes no syscall.
    fn peer_closed(&self) -> bool {
        match self.stream.ready(Interest::READABLE).now_or_never() {
            Some(Ok(ready)) => ready.is_read_closed() || ready.is_error(),
            Some(Err(_)) => true,
            None => false,
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
    pub fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_BUF / 8 {
            self.read.reserve(READ_BUF);
        }
        let read = self.stream.read_buf(&mut self.read);
        std::pin::pin!(read).poll(cx)
    }

    pub async fn read_more(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_read(cx)).await
    }
}
