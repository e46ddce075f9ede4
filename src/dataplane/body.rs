//! The gateway's response body: one enum, so no response is boxed on the hot path.
//!
//! `Proxied` wraps a function's streamed response: frames pass through as they arrive (SSE
//! and NDJSON reach the client as produced). When the upstream body ends, the connection goes
//! back to its replica's pool and the invocation is recorded (status, latency) by dropping the
//! [`Invocation`]; if the client goes away first, the connection is dropped instead (it may
//! be mid-response) and the invocation is still recorded.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::dataplane::forward::Invocation;
use crate::dataplane::pool::Sender;
use crate::dataplane::replica::PendingGuard;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub enum GatewayBody {
    Empty,
    Full(Option<Bytes>),
    Proxied(ProxiedBody),
    Stream(BoxStream<'static, Result<Bytes, BoxError>>),
}

/// The body sent to a replica: the client's, streamed, or none. A bodiless request can be
/// sent again (to another replica, after a 429) because nothing of it was consumed.
pub enum UpstreamBody {
    Client(Incoming),
    Empty,
}

/// An upstream response body with the resources to release when it ends.
pub struct ProxiedBody {
    inner: Incoming,
    /// The connection, returned to the pool at end of stream.
    sender: Option<Sender>,
    /// Keeps the replica's pending count until the body ends or is dropped.
    pending: Option<PendingGuard>,
    /// Records the invocation when dropped.
    _invocation: Invocation,
}

// === impl GatewayBody ===

impl GatewayBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        GatewayBody::Full(Some(b.into()))
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            GatewayBody::Empty => Poll::Ready(None),
            GatewayBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            GatewayBody::Proxied(p) => p.poll_frame_inner(cx),
            GatewayBody::Stream(s) => s
                .as_mut()
                .poll_next(cx)
                .map(|o| o.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Empty => true,
            GatewayBody::Full(d) => d.is_none(),
            GatewayBody::Proxied(p) => p.sender.is_none() && p.pending.is_none(),
            GatewayBody::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GatewayBody::Empty => SizeHint::with_exact(0),
            GatewayBody::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |b| b.len() as u64)),
            GatewayBody::Proxied(p) => p.inner.size_hint(),
            GatewayBody::Stream(_) => SizeHint::default(),
        }
    }
}

// === impl UpstreamBody ===

impl UpstreamBody {
    /// The client's body; `Empty` when it has none (GET, `Content-Length: 0`).
    pub fn from_client(body: Incoming) -> Self {
        if body.is_end_stream() {
            UpstreamBody::Empty
        } else {
            UpstreamBody::Client(body)
        }
    }

    pub fn is_empty(&self) -> bool {
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

// === impl ProxiedBody ===

impl ProxiedBody {
    pub fn new(
        inner: Incoming,
        sender: Sender,
        pending: PendingGuard,
        invocation: Invocation,
    ) -> Self {
        let mut body = Self {
            inner,
            sender: Some(sender),
            pending: Some(pending),
            _invocation: invocation,
        };
        if body.inner.is_end_stream() {
            body.finish();
        }
        body
    }

    fn finish(&mut self) {
        if let (Some(sender), Some(pending)) = (self.sender.take(), self.pending.take()) {
            pending.replica().pool().checkin(sender);
        }
    }

    fn poll_frame_inner(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.sender.is_none() && self.pending.is_none() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                self.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if self.inner.is_end_stream() {
                    self.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // The connection is broken: drop it, do not pool it.
                self.sender = None;
                self.pending = None;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
