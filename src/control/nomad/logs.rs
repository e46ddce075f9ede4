//! Function logs on Nomad: the client filesystem logs API turned into OpenFaaS log lines.
//!
//! For each allocation of the function's job (the live ones; the newest few when none is
//! live; only `instance` when asked), both streams of the main task are read with
//! `GET /v1/client/fs/logs/{alloc}?task=&type=stdout|stderr&plain=true&follow=&origin=`,
//! split into lines and sent as [`LogMessage`]s (`instance` = the allocation ID).
//!
//! Limits: Nomad's plain log stream carries no timestamps, so `timestamp` is the time a line
//! was read and `since` cannot be honoured exactly (lines are not filtered by it). `tail`
//! reads about [`TAIL_BYTES_PER_LINE`] bytes per wanted line from the end of each stream,
//! then keeps the last `tail` lines overall when not following. A non-following read stops
//! after [`MAX_READ_BYTES`] per stream.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::stream::{self, StreamExt};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use time::format_description::well_known::Rfc3339;

use crate::client::nomad::{LogOrigin, LogType};
use crate::client::wire::nomad::Allocation;
use crate::client::{ClientError, NomadClient, QueryOptions};
use crate::control::provider::{LogQuery, LogStream, ProviderError};
use crate::model::types::LogMessage;

/// Bytes read from the end of a stream per line asked for with `tail`.
pub(crate) const TAIL_BYTES_PER_LINE: u64 = 512;
/// Bound on what one non-following read takes from one stream.
pub(crate) const MAX_READ_BYTES: usize = 8 << 20;
/// Terminal allocations shown when none is live.
const RECENT_ALLOCS: usize = 3;

/// One task output stream being split into lines.
struct Lines {
    body: Option<Incoming>,
    buf: BytesMut,
    ready: VecDeque<String>,
    /// Drop the first line (a read that started mid-line).
    skip_first: bool,
    read: usize,
    limit: Option<usize>,
}

/// The log stream of `query.function`, whose job is `job_id` and main task `task`.
pub(crate) async fn stream(
    nomad: Arc<NomadClient>,
    job_id: String,
    task: String,
    query: LogQuery,
) -> Result<LogStream, ProviderError> {
    let allocs = nomad
        .job_allocations(&job_id, QueryOptions::default())
        .await
        .map_err(map_err)?
        .value;
    let allocs = pick_allocs(allocs, query.instance.as_deref());
    let origin = match query.tail {
        Some(n) => LogOrigin::End(n as u64 * TAIL_BYTES_PER_LINE),
        None => LogOrigin::Start(0),
    };
    let mut sources = Vec::new();
    for a in &allocs {
        for kind in [LogType::Stdout, LogType::Stderr] {
            match nomad.logs(&a.id, &task, kind, origin, query.follow).await {
                Ok(body) => sources.push((a.id.clone(), body)),
                Err(e) if e.is_not_found() => {
                    tracing::debug!(alloc = %a.id, error = %e, "no logs for allocation")
                }
                Err(e) => return Err(map_err(e)),
            }
        }
    }
    let name = query.function.name().to_string();
    let namespace = query.function.namespace().to_string();
    let skip_first = matches!(origin, LogOrigin::End(n) if n > 0);
    let limit = (!query.follow).then_some(MAX_READ_BYTES);
    let per_source = sources.into_iter().map(move |(instance, body)| {
        let (name, namespace) = (name.clone(), namespace.clone());
        Lines::new(body, skip_first, limit)
            .into_stream()
            .map(move |text| LogMessage {
                name: name.clone(),
                namespace: namespace.clone(),
                instance: instance.clone(),
                timestamp: now(),
                text,
            })
            .boxed()
    });
    let merged = stream::select_all(per_source);
    if query.follow {
        return Ok(merged.boxed());
    }
    let mut all: Vec<LogMessage> = merged.collect().await;
    if let Some(n) = query.tail {
        let drop = all.len().saturating_sub(n);
        all.drain(..drop);
    }
    Ok(stream::iter(all).boxed())
}

/// The allocations to read: `instance` (an ID or ID prefix) when given, else the live ones,
/// else the most recent ones.
fn pick_allocs(mut allocs: Vec<Allocation>, instance: Option<&str>) -> Vec<Allocation> {
    allocs.sort_by_key(|a| std::cmp::Reverse(a.create_index));
    if let Some(i) = instance {
        allocs.retain(|a| a.id.starts_with(i) || a.name == i);
        return allocs;
    }
    if allocs.iter().any(Allocation::is_live) {
        allocs.retain(Allocation::is_live);
    } else {
        allocs.truncate(RECENT_ALLOCS);
    }
    allocs
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn map_err(e: ClientError) -> ProviderError {
    match e {
        ClientError::Status {
            status, message, ..
        } => ProviderError::Upstream {
            status,
            message: format!("nomad: {message}"),
        },
        other => ProviderError::Upstream {
            status: 502,
            message: other.to_string(),
        },
    }
}

// === impl Lines ===

impl Lines {
    fn new(body: Incoming, skip_first: bool, limit: Option<usize>) -> Self {
        Self {
            body: Some(body),
            buf: BytesMut::new(),
            ready: VecDeque::new(),
            skip_first,
            read: 0,
            limit,
        }
    }

    fn into_stream(self) -> impl futures_util::Stream<Item = String> + Send + 'static {
        stream::unfold(self, |mut s| async move {
            loop {
                if let Some(line) = s.ready.pop_front() {
                    return Some((line, s));
                }
                let body = s.body.as_mut()?;
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            s.push(data);
                        }
                    }
                    _ => {
                        // End of stream (or an error): flush the last partial line.
                        s.body = None;
                        if !s.buf.is_empty() {
                            let rest = s.buf.split();
                            s.emit(&rest);
                        }
                    }
                }
            }
        })
    }

    fn push(&mut self, data: Bytes) {
        self.read += data.len();
        self.buf.extend_from_slice(&data);
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line = self.buf.split_to(i + 1);
            line.truncate(i);
            self.emit(&line);
        }
        if self.limit.is_some_and(|l| self.read >= l) {
            self.body = None;
            self.buf.advance(self.buf.len());
        }
    }

    fn emit(&mut self, line: &[u8]) {
        if std::mem::take(&mut self.skip_first) {
            return;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.ready
            .push_back(String::from_utf8_lossy(line).into_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(id: &str, idx: u64, desired: &str, client: &str) -> Allocation {
        Allocation {
            id: id.into(),
            create_index: idx,
            desired_status: desired.into(),
            client_status: client.into(),
            ..Default::default()
        }
    }

    #[test]
    fn live_allocations_first() {
        let all = vec![
            alloc("a", 1, "stop", "complete"),
            alloc("b", 2, "run", "running"),
            alloc("c", 3, "run", "pending"),
        ];
        let ids = |v: Vec<Allocation>| v.into_iter().map(|a| a.id).collect::<Vec<_>>();
        assert_eq!(ids(pick_allocs(all.clone(), None)), ["c", "b"]);
        assert_eq!(ids(pick_allocs(all.clone(), Some("a"))), ["a"]);
        let dead = vec![
            alloc("x", 1, "stop", "complete"),
            alloc("y", 2, "stop", "failed"),
        ];
        assert_eq!(ids(pick_allocs(dead, None)), ["y", "x"]);
    }
}
