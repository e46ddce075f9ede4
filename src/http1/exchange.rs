//! One HTTP/1.1 exchange with an upstream on a pooled connection: the request head (and a
//! small body of known length) in one write, a streamed body after it, then the response
//! head parsed (1xx skipped); the response body is left on the connection for
//! `body::PooledResponse`.
//!
//! Also the rules a sender needs to decide what may be sent again: [`idempotent`] methods
//! and the [`Failure`] kinds (a request that never left may go elsewhere), and
//! [`coarse_deadline`], the one-update-a-second timer rule for busy connections.

use std::pin::Pin;
use std::task::{ready, Poll};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request};
use http_body::Body as _;
use tokio::io::AsyncWriteExt;
use tokio::time::Sleep;

use crate::http1::body::{Upload, UploadError, UpstreamBody};
use crate::http1::codec::{self as http1, ResponseHead};
use crate::http1::pool::Conn;

/// Whether a client body error is a framing error of the body itself (hyper's chunked
/// decoder reports `InvalidData`/`InvalidInput`), not a client that went away or cut a
/// body short (`UnexpectedEof`, a closed connection).
pub(crate) fn malformed_body(e: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            );
        }
        source = s.source();
    }
    false
}

/// Moves `sleep` to `limit` from now unless it is already within a tenth of `limit` (at most
/// 1 s) before that: a busy connection updates its timer once a second, not once a request,
/// and a wait it bounds lasts between `limit` less that slack and `limit`. A deadline later
/// than `limit` from now (the timer last bounded a longer wait) is brought back.
pub(crate) fn coarse_deadline(sleep: Pin<&mut Sleep>, limit: Duration) {
    let fresh = tokio::time::Instant::now() + limit;
    let slack = (limit / 10).min(Duration::from_secs(1));
    let deadline = sleep.deadline();
    if deadline + slack < fresh || deadline > fresh {
        sleep.reset(fresh);
    }
}

/// Methods that may be sent again after a connection closed under them (RFC 9110 9.2.2;
/// the set Go's transport retries without an idempotency key).
pub(crate) fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// How an exchange failed, for the retry decision.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Writing the request failed before the body was read from the client.
    NotSent,
    /// The request was written; the connection closed or reset before any response byte.
    NoResponse,
    /// The client's request body was malformed or cut (`sent`: part of the request had
    /// reached the replica, whose connection is then dropped).
    ClientBody { sent: bool },
    /// The client's request body stalled past the client body timeout.
    ClientStalled { sent: bool },
    /// The client went away (or cut its body short) before its body was all read.
    ClientGone,
    /// Anything else: a malformed response, a reset mid-head.
    Broken,
}

/// Writes `req` on `conn` and reads the response head; the response body is left on the
/// connection. The head and a small body of known length go out in one write; a streamed body
/// follows frame by frame (chunked when its length is unknown) while the response is read,
/// and what is left of it when the head arrives goes on with the response body ([`Upload`]).
pub(crate) async fn exchange(
    conn: &mut Conn,
    req: &mut Request<UpstreamBody>,
    client_idle: Option<Duration>,
) -> Result<(ResponseHead, Option<Box<Upload>>), Failure> {
    let body_len = match req.body() {
        UpstreamBody::Empty => Some(0),
        UpstreamBody::Client(b) => b.size_hint().exact(),
    };
    // An HTTP/1.0 client may send no Host; an HTTP/1.1 request must carry one (RFC 9112
    // section 3.2): this replica's address, as a client naming it would send (taken out
    // again after the write: a retry elsewhere names its own replica).
    let host_added = !req.headers().contains_key(header::HOST)
        && match conn
            .stream
            .peer_addr()
            .map(|a| HeaderValue::from_str(&a.to_string()))
        {
            Ok(Ok(host)) => req.headers_mut().insert(header::HOST, host).is_none(),
            _ => false,
        };
    conn.write.clear();
    http1::write_request_head(req, body_len, &mut conn.write);
    if host_added {
        req.headers_mut().remove(header::HOST);
    }
    let mut upload = match std::mem::replace(req.body_mut(), UpstreamBody::Empty) {
        UpstreamBody::Client(body) => {
            let upload = Upload::new(body, body_len.is_none());
            Some(match client_idle {
                Some(limit) => upload.client_idle_timeout(limit),
                None => upload,
            })
        }
        UpstreamBody::Empty => {
            if conn.stream.write_all(&conn.write).await.is_err() {
                return Err(Failure::NotSent);
            }
            None
        }
    };
    let head_request = req.method() == Method::HEAD;
    let mut got_byte = false;
    let head = std::future::poll_fn(|cx| {
        if let Some(u) = upload.as_mut() {
            match u.poll_send(conn, cx) {
                Poll::Ready(Ok(())) => upload = None,
                Poll::Ready(Err(UploadError::Client { sent, source })) => {
                    return Poll::Ready(Err(if malformed_body(&source) {
                        Failure::ClientBody { sent }
                    } else {
                        Failure::ClientGone
                    }))
                }
                Poll::Ready(Err(UploadError::ClientStalled { sent, .. })) => {
                    return Poll::Ready(Err(Failure::ClientStalled { sent }))
                }
                Poll::Ready(Err(UploadError::Upstream(_))) => {
                    return Poll::Ready(Err(Failure::Broken))
                }
                Poll::Pending => {}
            }
        }
        loop {
            if !conn.read.is_empty() {
                got_byte = true;
                match http1::parse_response_head(&mut conn.read, head_request) {
                    Ok(Some(head)) => return Poll::Ready(Ok(head)),
                    Ok(None) => {}
                    Err(_) => return Poll::Ready(Err(Failure::Broken)),
                }
            }
            match ready!(conn.poll_read(cx)) {
                Ok(n) if n > 0 => {}
                _ if !got_byte => return Poll::Ready(Err(Failure::NoResponse)),
                _ => return Poll::Ready(Err(Failure::Broken)),
            }
        }
    })
    .await?;
    Ok((head, upload.map(Box::new)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn coarse_deadlines_move_only_past_their_slack() {
        let limit = Duration::from_secs(10);
        let start = tokio::time::Instant::now();
        let sleep = tokio::time::sleep_until(start + limit);
        tokio::pin!(sleep);
        coarse_deadline(sleep.as_mut(), limit);
        assert_eq!(
            sleep.deadline(),
            start + limit,
            "within the slack: left alone"
        );
        sleep.as_mut().reset(start + Duration::from_secs(8));
        coarse_deadline(sleep.as_mut(), limit);
        assert!(
            sleep.deadline() >= start + limit,
            "2 s stale (slack 1 s): moved"
        );
        let short = Duration::from_millis(100);
        sleep.as_mut().reset(start + Duration::from_millis(80));
        coarse_deadline(sleep.as_mut(), short);
        assert!(
            sleep.deadline() >= start + short,
            "slack is a tenth of a short limit"
        );
        // A deadline set for a longer wait (a response body's) is brought back, so the
        // next request's head wait is bounded by its own limit.
        sleep.as_mut().reset(start + Duration::from_secs(60));
        coarse_deadline(sleep.as_mut(), limit);
        assert!(
            sleep.deadline() <= tokio::time::Instant::now() + limit,
            "a later deadline is brought back"
        );
    }
}
