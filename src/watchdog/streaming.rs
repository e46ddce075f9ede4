//! Streaming mode: fork `fprocess` per request, request body to its stdin, stdout streamed
//! back as the response body.
//!
//! Owns: one child per call and its lifetime. Invariants: output is forwarded chunk by chunk
//! through a bounded channel (never buffered whole; a slow client slows the child); the
//! status is decided by the first read: data -> 200 and streaming, EOF with a failed exit ->
//! 500 with the exit status, no output by the deadline -> kill and 504. After the response
//! has started a timeout kills the child and aborts the body (the client sees a truncated
//! chunked stream, not a clean end). The child is killed if the client goes away (the body
//! is dropped) and never outlives the call (see `process`). The child's stderr is the
//! watchdog's stderr.

use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tokio::time::timeout_at;

use super::cgi;
use super::process;
use super::response::{BoxError, CallError, ChannelBody, RespBody};
use super::stderr::log;

/// Bytes read from the child per chunk (at most).
const CHUNK: usize = 32 * 1024;
/// Chunks buffered between the child and the client.
const CHANNEL_CAPACITY: usize = 4;
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Forks the function per request.
pub(crate) struct Streaming {
    fprocess: Vec<String>,
    content_type: Option<HeaderValue>,
}

// === impl Streaming ===

impl Streaming {
    pub(crate) fn new(fprocess: Vec<String>, content_type: Option<&str>) -> Self {
        Self {
            fprocess,
            content_type: content_type.and_then(|v| HeaderValue::from_str(v).ok()),
        }
    }

    /// Runs the function for one request; `deadline` bounds the whole run (None: unbounded).
    pub(crate) async fn call(
        &self,
        req: Request<Incoming>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Response<RespBody>, CallError> {
        let start = Instant::now();
        let (parts, body) = req.into_parts();
        let content_type = self
            .content_type
            .clone()
            .or_else(|| parts.headers.get(header::CONTENT_TYPE).cloned())
            .unwrap_or(HeaderValue::from_static(DEFAULT_CONTENT_TYPE));

        log!("Forking fprocess.");
        let mut child = process::command(&self.fprocess)
            .envs(cgi::request_env(&parts))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| CallError::Spawn {
                program: self.fprocess.join(" "),
                source,
            })?;
        let (Some(stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(CallError::Process("stdio not captured".into()));
        };
        tokio::spawn(copy_body(body, stdin));

        let mut buf = BytesMut::with_capacity(CHUNK);
        let first = match until(deadline, stdout.read_buf(&mut buf)).await {
            None => {
                kill(&mut child).await;
                return Err(CallError::Timeout(elapsed_limit(start, deadline)));
            }
            Some(Err(e)) => {
                kill(&mut child).await;
                return Err(CallError::Process(e.to_string()));
            }
            Some(Ok(n)) => n,
        };

        let body = if first == 0 {
            // No output: the exit status decides.
            match until(deadline, child.wait()).await {
                None => {
                    kill(&mut child).await;
                    return Err(CallError::Timeout(elapsed_limit(start, deadline)));
                }
                Some(Err(e)) => return Err(CallError::Process(e.to_string())),
                Some(Ok(status)) if !status.success() => {
                    return Err(CallError::Process(status.to_string()))
                }
                Some(Ok(_)) => {
                    wrote(0, start);
                    super::response::full(Bytes::new())
                }
            }
        } else {
            let (tx, body) = ChannelBody::channel(CHANNEL_CAPACITY);
            tokio::spawn(pump(
                child,
                stdout,
                buf.split().freeze(),
                tx,
                deadline,
                start,
            ));
            body.boxed_unsync()
        };

        let mut resp = Response::new(body);
        *resp.status_mut() = StatusCode::OK;
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
        Ok(resp)
    }
}

/// Copies the request body to the child's stdin, then closes it. A child that does not read
/// stdin (or exits early) makes the writes fail: that is not an error of the call.
async fn copy_body(mut body: Incoming, mut stdin: ChildStdin) {
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return };
        if let Ok(data) = frame.into_data() {
            if stdin.write_all(&data).await.is_err() {
                return;
            }
        }
    }
    let _ = stdin.shutdown().await;
}

/// Streams the rest of stdout to the response body, then reaps the child.
async fn pump(
    mut child: Child,
    mut stdout: ChildStdout,
    first: Bytes,
    tx: mpsc::Sender<Result<Bytes, BoxError>>,
    deadline: Option<tokio::time::Instant>,
    start: Instant,
) {
    let mut written = first.len();
    if tx.send(Ok(first)).await.is_err() {
        kill(&mut child).await;
        log!("Client went away after {written} Bytes; fprocess killed");
        return;
    }
    let mut buf = BytesMut::with_capacity(CHUNK);
    loop {
        buf.reserve(CHUNK);
        match until(deadline, stdout.read_buf(&mut buf)).await {
            None => {
                kill(&mut child).await;
                let limit = elapsed_limit(start, deadline);
                log!("fprocess killed: exec_timeout {limit:?} reached after {written} Bytes");
                let _ = tx.send(Err(CallError::Timeout(limit).into())).await;
                return;
            }
            Some(Err(e)) => {
                kill(&mut child).await;
                log!("Error reading fprocess output: {e}");
                let _ = tx.send(Err(e.into())).await;
                return;
            }
            Some(Ok(0)) => break,
            Some(Ok(n)) => {
                written += n;
                if tx.send(Ok(buf.split().freeze())).await.is_err() {
                    kill(&mut child).await;
                    log!("Client went away after {written} Bytes; fprocess killed");
                    return;
                }
            }
        }
    }
    drop(tx);
    match until(deadline, child.wait()).await {
        Some(Ok(status)) if !status.success() => exited(status),
        Some(Ok(_)) => {}
        Some(Err(e)) => log!("Error waiting for fprocess: {e}"),
        None => {
            kill(&mut child).await;
            log!("fprocess killed: still running at exec_timeout after closing stdout");
        }
    }
    wrote(written, start);
}

fn exited(status: ExitStatus) {
    log!("fprocess exited after writing its response: {status}");
}

fn wrote(bytes: usize, start: Instant) {
    log!(
        "Wrote {bytes} Bytes - Duration: {:.6}s",
        start.elapsed().as_secs_f64()
    );
}

/// Awaits `fut` until `deadline` (None: no deadline); None when the deadline passed.
async fn until<F: std::future::Future>(
    deadline: Option<tokio::time::Instant>,
    fut: F,
) -> Option<F::Output> {
    match deadline {
        Some(d) => timeout_at(d, fut).await.ok(),
        None => Some(fut.await),
    }
}

fn elapsed_limit(start: Instant, deadline: Option<tokio::time::Instant>) -> Duration {
    match deadline {
        Some(d) => d.into_std().saturating_duration_since(start),
        None => start.elapsed(),
    }
}

/// SIGKILLs and reaps the child (it may already have exited).
async fn kill(child: &mut Child) {
    let _ = child.kill().await;
}
