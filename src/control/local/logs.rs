//! Function logs: a bounded in-memory history plus a live feed for followers.
//!
//! Owns, per function, the last [`HISTORY_LINES`] lines written by any of its replicas (stdout
//! and stderr alike) and a `broadcast` channel that carries every new line.
//!
//! Invariants: a line is appended to the history and sent to followers under one short lock,
//! and a follower subscribes under that same lock while copying the history, so a follower
//! sees every line exactly once (history, then live), never a gap or a duplicate. A follower
//! that falls behind the channel loses the lines it missed rather than slowing writers down.
//! Nothing here awaits while holding the lock.
//!
//! Recording is cheap because replicas log a line per request (as of-watchdog does): an entry
//! holds the time, the instance and the text, shared (`Arc`) by the history and the live
//! feed; the OpenFaaS `LogMessage` (names, RFC 3339 timestamp) is built only when a line is
//! read. Building it per line was ~4k instructions of the gateway's per request under load.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, StreamExt};
use time::OffsetDateTime;
use tokio::sync::broadcast;

use crate::control::provider::{LogQuery, LogStream};
use crate::model::names::FunctionKey;
use crate::model::types::LogMessage;

/// Lines of history kept per function.
pub(crate) const HISTORY_LINES: usize = 1000;
/// Lines a slow follower may lag behind before it skips ahead.
const FOLLOW_BUFFER: usize = 1024;

const TIMESTAMP: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z"
);

/// The log history and live feed of one function.
pub(crate) struct LogBuffer {
    name: String,
    namespace: String,
    capacity: usize,
    history: Mutex<VecDeque<Arc<Entry>>>,
    live: broadcast::Sender<Arc<Entry>>,
}

#[derive(Debug)]
struct Entry {
    at: OffsetDateTime,
    instance: Arc<str>,
    text: String,
}

// === impl LogBuffer ===

impl LogBuffer {
    pub(super) fn new(key: &FunctionKey) -> Self {
        Self::with_capacity(key, HISTORY_LINES)
    }

    pub(super) fn with_capacity(key: &FunctionKey, capacity: usize) -> Self {
        let (live, _) = broadcast::channel(FOLLOW_BUFFER);
        Self {
            name: key.name().to_string(),
            namespace: key.namespace().to_string(),
            capacity: capacity.max(1),
            history: Mutex::new(VecDeque::with_capacity(capacity.min(64))),
            live,
        }
    }

    /// Records one line of `instance`, stamped now.
    pub(super) fn push(&self, instance: &Arc<str>, text: String) {
        self.push_at(OffsetDateTime::now_utc(), instance, text);
    }

    /// Records one line of `instance` stamped `at` (UTC).
    pub(crate) fn push_at(&self, at: OffsetDateTime, instance: &Arc<str>, text: String) {
        let entry = Arc::new(Entry {
            at: at.to_offset(time::UtcOffset::UTC),
            instance: instance.clone(),
            text,
        });
        let mut history = self.history.lock().expect("log history mutex poisoned");
        if history.len() == self.capacity {
            history.pop_front();
        }
        history.push_back(entry.clone());
        // No receiver is not an error: nobody follows.
        let _ = self.live.send(entry);
    }

    /// The OpenFaaS form of an entry, made when it is read.
    fn message(&self, e: &Entry) -> LogMessage {
        message(&self.name, &self.namespace, e)
    }

    /// The lines `query` asks for: matching history (last `tail`), then, with `follow`, every
    /// new matching line until the stream is dropped or the function goes away.
    pub(super) fn stream(&self, query: &LogQuery) -> LogStream {
        let filter = Filter {
            instance: query.instance.clone(),
            since: query.since,
        };
        let (past, live) = {
            let history = self.history.lock().expect("log history mutex poisoned");
            let live = query.follow.then(|| self.live.subscribe());
            let mut past: Vec<LogMessage> = history
                .iter()
                .filter(|e| filter.matches(e))
                .map(|e| self.message(e))
                .collect();
            if let Some(tail) = query.tail {
                let skip = past.len().saturating_sub(tail);
                past.drain(..skip);
            }
            (past, live)
        };
        let past = stream::iter(past);
        match live {
            None => past.boxed(),
            Some(rx) => {
                let names = (self.name.clone(), self.namespace.clone());
                let live =
                    stream::unfold((rx, filter, names), |(mut rx, filter, names)| async move {
                        loop {
                            match rx.recv().await {
                                Ok(entry) if filter.matches(&entry) => {
                                    let m = message(&names.0, &names.1, &entry);
                                    return Some((m, (rx, filter, names)));
                                }
                                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                                Err(broadcast::error::RecvError::Closed) => return None,
                            }
                        }
                    });
                past.chain(live).boxed()
            }
        }
    }
}

struct Filter {
    instance: Option<String>,
    since: Option<OffsetDateTime>,
}

impl Filter {
    fn matches(&self, e: &Entry) -> bool {
        self.instance.as_deref().is_none_or(|i| i == &*e.instance)
            && self.since.is_none_or(|s| e.at >= s)
    }
}

fn message(name: &str, namespace: &str, e: &Entry) -> LogMessage {
    LogMessage {
        name: name.to_string(),
        namespace: namespace.to_string(),
        instance: e.instance.to_string(),
        timestamp: format_timestamp(e.at),
        text: e.text.clone(),
    }
}

/// RFC 3339, UTC, nanoseconds: `2024-05-01T10:00:00.123456789Z`.
pub(crate) fn format_timestamp(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(TIMESTAMP)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key() -> FunctionKey {
        FunctionKey::new("echo", "").unwrap()
    }

    fn query(
        tail: Option<usize>,
        since: Option<OffsetDateTime>,
        instance: Option<&str>,
    ) -> LogQuery {
        LogQuery {
            function: key(),
            instance: instance.map(str::to_string),
            tail,
            since,
            follow: false,
        }
    }

    async fn texts(buf: &LogBuffer, q: &LogQuery) -> Vec<String> {
        buf.stream(q).map(|m| m.text).collect::<Vec<_>>().await
    }

    #[tokio::test]
    async fn ring_keeps_the_last_lines() {
        let buf = LogBuffer::with_capacity(&key(), 3);
        for i in 0..5 {
            buf.push(&"a".into(), i.to_string());
        }
        assert_eq!(texts(&buf, &query(None, None, None)).await, ["2", "3", "4"]);
        assert_eq!(texts(&buf, &query(Some(2), None, None)).await, ["3", "4"]);
        assert_eq!(
            texts(&buf, &query(Some(10), None, None)).await,
            ["2", "3", "4"]
        );
        assert!(texts(&buf, &query(Some(0), None, None)).await.is_empty());
    }

    #[tokio::test]
    async fn filters_by_instance_and_since() {
        let buf = LogBuffer::new(&key());
        let t0 = OffsetDateTime::now_utc();
        buf.push_at(t0, &"a".into(), "old".into());
        buf.push_at(t0 + Duration::from_secs(10), &"b".into(), "new-b".into());
        buf.push_at(t0 + Duration::from_secs(20), &"a".into(), "new-a".into());
        let since = Some(t0 + Duration::from_secs(5));
        assert_eq!(
            texts(&buf, &query(None, since, None)).await,
            ["new-b", "new-a"]
        );
        assert_eq!(
            texts(&buf, &query(None, None, Some("a"))).await,
            ["old", "new-a"]
        );
        assert_eq!(
            texts(&buf, &query(Some(1), since, Some("b"))).await,
            ["new-b"]
        );
    }

    #[tokio::test]
    async fn timestamps_are_utc_with_nanoseconds() {
        let at = time::macros::datetime!(2024-05-01 12:00:00.5 +02:00);
        assert_eq!(format_timestamp(at), "2024-05-01T10:00:00.500000000Z");
        let buf = LogBuffer::new(&key());
        buf.push(&"echo-abc".into(), "hi".into());
        let q = query(None, None, None);
        let m = buf.stream(&q).collect::<Vec<_>>().await;
        assert_eq!(m[0].name, "echo");
        assert_eq!(m[0].namespace, "openfaas-fn");
        assert_eq!(m[0].instance, "echo-abc");
        assert!(OffsetDateTime::parse(
            &m[0].timestamp,
            &time::format_description::well_known::Rfc3339
        )
        .is_ok());
    }

    #[tokio::test]
    async fn follow_sees_history_then_live_lines() {
        let buf = LogBuffer::new(&key());
        buf.push(&"a".into(), "1".into());
        let mut q = query(None, None, None);
        q.follow = true;
        let mut s = buf.stream(&q);
        buf.push(&"a".into(), "2".into());
        assert_eq!(s.next().await.unwrap().text, "1");
        assert_eq!(s.next().await.unwrap().text, "2");
        drop(buf);
        assert!(s.next().await.is_none());
    }
}
