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
//! The ring is `dataplane::pool::IdleRing`, allocated at the first check-in.

use std::io;
use std::net::SocketAddr;

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::dataplane::body::UpstreamBody;
use crate::dataplane::pool::IdleRing;

pub type Sender = SendRequest<UpstreamBody>;

pub struct Pool {
    addr: SocketAddr,
    idle: IdleRing<Sender>,
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
            idle: IdleRing::new(),
        }
    }

    /// An idle connection ready for a request, or a new one.
    pub async fn checkout(&self) -> io::Result<Checkout> {
        while let Some(mut sender) = self.idle.pop() {
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
            sender: connect(self.addr).await?,
            reused: false,
        })
    }

    /// Returns a connection whose response has ended. Dropped if the pool is full or closed.
    pub fn checkin(&self, sender: Sender) {
        if !sender.is_closed() {
            self.idle.push(sender);
        }
    }

    /// Idle connections now (tests, metrics).
    pub fn idle(&self) -> usize {
        self.idle.len()
    }
}

/// A new hyper client connection to `addr`, its connection task spawned (it ends when the
/// peer closes or the sender is dropped; errors are per request).
pub async fn connect(addr: SocketAddr) -> io::Result<Sender> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}
