//! Response bodies and the one place where a failed call becomes an HTTP status.
//!
//! Owns: [`RespBody`] (the boxed body every handler returns), [`ChannelBody`] (a body fed by a
//! task through a bounded channel, so output streams with backpressure and is never buffered
//! whole), and [`CallError`] with its status mapping: busy 429, exec timeout 504, process or
//! upstream failure 500 (as of-watchdog).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use thiserror::Error;
use tokio::sync::mpsc;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every watchdog response.
pub(crate) type RespBody = UnsyncBoxBody<Bytes, BoxError>;

/// Why a call to the function failed before its response started.
#[derive(Debug, Error)]
pub(crate) enum CallError {
    #[error("Concurrent request limit exceeded. Max concurrent requests: {0}")]
    Busy(usize),
    #[error("Function timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("Can't start fprocess {program:?}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("fprocess failed: {0}")]
    Process(String),
    #[error("Can't reach service: {0}")]
    Connect(std::io::Error),
    #[error("Can't reach service: {0}")]
    Upstream(#[from] super::http::UpstreamError),
}

/// A body whose frames come from a channel; the sender side ends it by dropping.
pub(crate) struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, BoxError>>,
}

// === impl CallError ===

impl CallError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            CallError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            CallError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            CallError::Spawn { .. }
            | CallError::Process(_)
            | CallError::Connect(_)
            | CallError::Upstream(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(crate) fn into_response(self) -> Response<RespBody> {
        text(self.status(), self.to_string())
    }
}

// === impl ChannelBody ===

impl ChannelBody {
    /// A body and the sender that feeds it (`capacity` frames in flight).
    pub(crate) fn channel(capacity: usize) -> (mpsc::Sender<Result<Bytes, BoxError>>, Self) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, Self { rx })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }
}

/// A plain-text response.
pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<RespBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A complete body.
pub(crate) fn full(body: impl Into<Bytes>) -> RespBody {
    Full::new(body.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}
