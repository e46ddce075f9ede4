//! The gateway's response body: one enum, so no response is boxed on the hot path.
//!
//! `Proxied` is a function's streamed response, read from the replica's connection in the
//! client connection's own task by the response framing (`http1::body::PooledResponse`):
//! each read becomes a frame as it arrives (SSE and NDJSON reach the client as produced).
//! When the upstream body ends, the connection goes back to its replica's pool and the
//! invocation is recorded (status, latency) by dropping the [`Invocation`]; if the client
//! goes away first, or the framing is broken, or the body was delimited by the connection's
//! close, the connection is dropped instead and the invocation is still recorded.

use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use http_body::{Body, Frame, SizeHint};

use crate::dataplane::forward::Invocation;
use crate::dataplane::replica::PendingGuard;
use crate::http1::body::{BodyTimeout, BoxError, PooledResponse, Release, Upload};
use crate::http1::codec::Framing;
use crate::http1::pool::Conn;

pub enum GatewayBody {
    Empty,
    Full(Option<Bytes>),
    Proxied(ProxiedBody),
    Stream(BoxStream<'static, Result<Bytes, BoxError>>),
}

/// An upstream response body, read from the replica's connection by the response framing,
/// with the resources to release when it ends.
pub struct ProxiedBody {
    /// The connection and, until the body ends, the replica's pending count.
    inner: PooledResponse<PendingGuard>,
    /// Records the invocation when dropped.
    invocation: Invocation,
}

// === impl GatewayBody ===

impl GatewayBody {
    pub(crate) fn full(b: impl Into<Bytes>) -> Self {
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
            GatewayBody::Proxied(p) => p.inner.is_end_stream(),
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

// === impl ProxiedBody ===

impl ProxiedBody {
    pub(crate) fn new(
        conn: Conn,
        upload: Option<Box<Upload>>,
        framing: Framing,
        keep_alive: bool,
        pending: PendingGuard,
        invocation: Invocation,
        body_timeout: Duration,
    ) -> Self {
        Self {
            inner: PooledResponse::new(conn, upload, framing, keep_alive, pending)
                .idle_timeout(body_timeout),
            invocation,
        }
    }

    fn poll_frame_inner(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = ready!(self.inner.poll_data(cx));
        if let Some(Err(e)) = &polled {
            if e.is::<BodyTimeout>() {
                // The client got a head and part of a body; hyper closes its connection.
                self.invocation
                    .set_status(http::StatusCode::GATEWAY_TIMEOUT.as_u16());
            }
        }
        Poll::Ready(polled.map(|r| r.map(Frame::data)))
    }
}

impl Release for PendingGuard {
    fn checkin(&mut self, conn: Conn) {
        let replica = self.replica();
        replica.pool().checkin(conn);
    }
}
