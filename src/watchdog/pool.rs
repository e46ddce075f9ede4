//! The watchdog's HTTP/1.1 keep-alive connection pool to its function's server, lock-free.
//!
//! (The gateway's data plane has its own pool of raw connections, `dataplane::pool`; this one
//! holds hyper client connections, each driven by a spawned task.)
//!
//! Idle connections sit in a bounded `crossbeam` `ArrayQueue` (a lock-free MPMC ring), so a
//! checkout is one `pop` and a checkin one `push`: no mutex, unlike hyper-util's legacy client
//! pool, which locks per checkout. A connection is checked in by the response body wrapper
//! when the body has ended, so a connection is only ever reused for one request at a time.
//! Closed connections are dropped at checkout (`is_closed`, then `ready()`), and a request that
//! a pooled connection could not send comes back untouched for a retry (see `forward`).
//!
//! The ring is allocated at the first check-in: a ring of [`MAX_IDLE`] slots is ~40 KiB.

use std::io;
use std::net::SocketAddr;
use std::sync::OnceLock;

use crossbeam_queue::ArrayQueue;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::dataplane::body::UpstreamBody;

/// Idle connections kept.
pub const MAX_IDLE: usize = 1024;

pub type Sender = SendRequest<UpstreamBody>;

pub struct Pool {
    addr: SocketAddr,
    idle: OnceLock<ArrayQueue<Sender>>,
}

/// A connection checked out of a pool, and whether it was reused.
pub struct Checkout {
    pub sender: Sender,
    pub reused: bool,
}

impl Pool {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            idle: OnceLock::new(),
        }
    }

    /// An idle connection ready for a request, or a new one.
    pub async fn checkout(&self) -> io::Result<Checkout> {
        while let Some(mut sender) = self.idle.get().and_then(ArrayQueue::pop) {
            if sender.is_closed() {
                continue;
            }
            if sender.ready().await.is_ok() {
                return Ok(Checkout {
                    sender,
                    reused: true,
                });
            }
        }
        Ok(Checkout {
            sender: self.connect().await?,
            reused: false,
        })
    }

    /// Returns a connection whose response has ended. Dropped if the pool is full or closed.
    pub fn checkin(&self, sender: Sender) {
        if !sender.is_closed() {
            let _ = self
                .idle
                .get_or_init(|| ArrayQueue::new(MAX_IDLE))
                .push(sender);
        }
    }

    /// Idle connections now (tests, metrics).
    pub fn idle(&self) -> usize {
        self.idle.get().map_or(0, ArrayQueue::len)
    }

    async fn connect(&self) -> io::Result<Sender> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        tokio::spawn(async move {
            // Ends when the peer closes or the sender is dropped; errors are per-request.
            let _ = conn.await;
        });
        Ok(sender)
    }
}
