//! The async queue on NATS JetStream (`--queue nats://HOST:PORT`): every gateway of a cluster
//! enqueues into and delivers from the same stream, so any gateway accepts a call and any
//! gateway delivers it, and a gateway that dies leaves its calls to the others.
//!
//! Layout (all names ours; no OpenFaaS client depends on them):
//! - Stream `faasgate-async`, subjects `faasgate.async.>`: WorkQueue retention (a message is
//!   gone once acked), file storage, `discard: new` with `max_msgs` = `--max-async-queue` (a
//!   full queue refuses the publish, which is a 429, instead of dropping the oldest call).
//!   A call of function `name.ns` is published on `faasgate.async.name.ns` with its
//!   `X-Call-Id` as `Nats-Msg-Id`, so a client that sends the same call id twice within the
//!   stream's duplicate window (2 minutes) has it stored once. The payload is the call's
//!   own record ([`QueuedCall::encode`]).
//! - One durable pull consumer per function (`fn_<name>_<ns>`), filtered on its subject
//!   (disjoint filters: WorkQueue allows that), created by the first gateway that enqueues
//!   or takes a call of the function. Explicit acks; no server-side delivery bound (the
//!   dispatcher counts attempts from the delivery count the server keeps and buries the
//!   call itself: a message that reached a server `max_deliver` would stay stored forever).
//! - Stream `faasgate-async-dead`, subjects `faasgate.dead.>`: limits retention, the
//!   dead-letter list. A dead letter's id is its sequence in that stream; its attempts,
//!   status, reason and time travel as headers.
//!
//! Invariants:
//! - [`CallStore::enqueue`] returns once the stream acknowledged the publish (stored, and on
//!   a clustered NATS replicated): that is the 202's durability point.
//! - A call is fetched only as many at a time as the dispatcher has room for (no prefetch,
//!   so nothing waits in a buffer while its ack deadline runs). While a call runs, its lease
//!   is renewed (`+WPI`) every [`ACK_WAIT`]/3, so a call still running is never delivered a
//!   second time however long it takes; a gateway that dies stops renewing, and its calls
//!   go to another gateway after [`ACK_WAIT`].
//! - A retry is a NAK with the backoff as its delay: the server redelivers the call then,
//!   to whichever gateway asks, and counts the delivery.
//! - A burial publishes the dead letter (and waits for its ack) before it terminates the
//!   call: a crash between the two delivers the call once more, never loses it.
//! - The final ack and the termination wait for the server's confirmation (`double_ack`):
//!   a lost ack would run the call again.
//! - [`CallStore::backlog`] is a snapshot refreshed every [`REFRESH`] from the consumers'
//!   counts (cluster-wide: calls not yet delivered, and calls delivered and not acked by
//!   any gateway) plus this gateway's own enqueues since; the leader's scaler reads it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, PullConsumer},
    message::Acker,
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
    AckKind,
};
use async_nats::{HeaderMap, Subject};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::queue::call::{EncodedCall, QueuedCall};
use crate::queue::store::{Backlog, CallStore, DeadLetter, StoreError, Taken};
use crate::sys::clock::unix_ms;

const STREAM: &str = "faasgate-async";
const SUBJECT_PREFIX: &str = "faasgate.async.";
const DEAD_STREAM: &str = "faasgate-async-dead";
const DEAD_PREFIX: &str = "faasgate.dead.";
/// How long a delivered call stays leased without a renewal.
pub const ACK_WAIT: Duration = Duration::from_secs(30);
/// How often the backlog snapshot is refreshed.
pub const REFRESH: Duration = Duration::from_millis(200);
/// The oldest call's age is re-read every this many refreshes (a second).
const OLDEST_EVERY: u64 = 5;
/// Bound on one JetStream request made by the store.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most dead letters one listing returns.
const MAX_LISTED: usize = 10_000;
/// Room kept in NATS's `max_payload` for the record's framing and headers.
pub const ENVELOPE: usize = 64 * 1024;

const H_ATTEMPTS: &str = "Faasgate-Attempts";
const H_STATUS: &str = "Faasgate-Status";
const H_REASON: &str = "Faasgate-Reason";
const H_FAILED: &str = "Faasgate-Failed-Ms";

/// A call delivered to this gateway and not yet settled.
struct Lease {
    function: String,
    /// The delivery's reply subject: where acks, NAKs and renewals go.
    reply: Subject,
    /// The stored record (a dead letter carries it).
    record: Bytes,
}

/// The JetStream store.
pub struct NatsStore {
    js: jetstream::Context,
    work: stream::Stream<()>,
    dead: stream::Stream<()>,
    /// Each function's consumer, once made (an enqueue reads this map under a read lock,
    /// never across a request to the server).
    consumers: std::sync::RwLock<HashMap<String, PullConsumer>>,
    /// Refreshes so far (the oldest call's age is re-read every [`OLDEST_EVERY`]th).
    refreshes: std::sync::atomic::AtomicU64,
    leases: Mutex<HashMap<u64, Lease>>,
    snapshot: Mutex<Vec<Backlog>>,
    /// Dead letters per function, re-read every [`OLDEST_EVERY`]th refresh.
    dead_counts: Mutex<Vec<(String, u64)>>,
    /// The largest record a publish may carry (the server's `max_payload`).
    max_record: usize,
    /// Calls queued at most (the stream's `max_msgs`).
    bound: u64,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

fn backend(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("NATS: {what}: {e}"))
}

/// The JetStream error behind a client error, if the server sent one.
fn server_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a jetstream::Error> {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(js) = s.downcast_ref::<jetstream::Error>() {
            return Some(js);
        }
        source = s.source();
    }
    None
}

/// `name.ns` → the consumer's name (`.` is not allowed in one; `_` is in no function name).
fn consumer_name(function: &str) -> String {
    format!("fn_{}", function.replace('.', "_"))
}

impl NatsStore {
    /// Connects to `url` (`nats://host:port`), creates or updates the streams, and starts the
    /// backlog refresher and the lease renewer. `bound`: calls queued at most.
    pub async fn connect(url: &str, bound: u64) -> Result<Arc<Self>, StoreError> {
        let client = async_nats::ConnectOptions::new()
            .name("faasgate")
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| backend(&format!("cannot connect to {url}"), e))?;
        let max_record = client.server_info().max_payload;
        let mut js = jetstream::new(client);
        js.set_timeout(REQUEST_TIMEOUT);
        js.create_or_update_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec![format!("{SUBJECT_PREFIX}>")],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            discard: DiscardPolicy::New,
            max_messages: i64::try_from(bound).unwrap_or(i64::MAX),
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| backend(&format!("stream {STREAM}"), e))?;
        js.create_or_update_stream(stream::Config {
            name: DEAD_STREAM.into(),
            subjects: vec![format!("{DEAD_PREFIX}>")],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| backend(&format!("stream {DEAD_STREAM}"), e))?;
        let work = js
            .get_stream_no_info(STREAM)
            .await
            .map_err(|e| backend(STREAM, e))?;
        let dead = js
            .get_stream_no_info(DEAD_STREAM)
            .await
            .map_err(|e| backend(DEAD_STREAM, e))?;
        let store = Arc::new(Self {
            js,
            work,
            dead,
            consumers: Default::default(),
            refreshes: Default::default(),
            leases: Default::default(),
            snapshot: Default::default(),
            dead_counts: Default::default(),
            max_record,
            bound,
            tasks: Default::default(),
        });
        store.refresh().await;
        let weak = Arc::downgrade(&store);
        let refresher = tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                let Some(store) = weak.upgrade() else { return };
                store.refresh().await;
            }
        });
        let weak = Arc::downgrade(&store);
        let renewer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(ACK_WAIT / 3).await;
                let Some(store) = weak.upgrade() else { return };
                store.renew().await;
            }
        });
        store
            .tasks
            .lock()
            .expect("nats tasks mutex poisoned")
            .extend([refresher, renewer]);
        Ok(store)
    }

    /// The largest body a call may carry here: the server's `max_payload` less the room kept
    /// for the record's framing and headers.
    pub fn max_body(&self) -> usize {
        self.max_record.saturating_sub(ENVELOPE)
    }

    /// `function`'s consumer, created on first use (two gateways, or two calls, creating it
    /// at once get the same one: creation is idempotent for the same settings).
    async fn consumer(&self, function: &str) -> Result<PullConsumer, StoreError> {
        if let Some(c) = self
            .consumers
            .read()
            .expect("nats consumers lock poisoned")
            .get(function)
        {
            return Ok(c.clone());
        }
        let name = consumer_name(function);
        let c: PullConsumer = self
            .work
            .get_or_create_consumer(
                &name,
                pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: format!("{SUBJECT_PREFIX}{function}"),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    // Retries parked with a NAK delay hold a pending slot each.
                    max_ack_pending: -1,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| backend(&format!("consumer {name}"), e))?;
        self.consumers
            .write()
            .expect("nats consumers lock poisoned")
            .insert(function.to_string(), c.clone());
        Ok(c)
    }

    /// Forgets `function`'s consumer after a failure, so the next use makes it again (an
    /// operator may have deleted it).
    fn forget_consumer(&self, function: &str) {
        self.consumers
            .write()
            .expect("nats consumers lock poisoned")
            .remove(function);
    }

    /// Makes sure `function`'s consumer exists. An enqueue needs no handle on it, and cloning
    /// one (its cached info: config, names, counts) was 1% of a NATS gateway's CPU under
    /// `loadtest/run --async`.
    async fn ensure_consumer(&self, function: &str) -> Result<(), StoreError> {
        if self
            .consumers
            .read()
            .expect("nats consumers lock poisoned")
            .contains_key(function)
        {
            return Ok(());
        }
        self.consumer(function).await.map(drop)
    }

    fn acker(&self, reply: Subject) -> Acker {
        Acker::new(self.js.clone(), Some(reply))
    }

    fn lease(&self, id: u64) -> Option<Lease> {
        self.leases
            .lock()
            .expect("nats lease mutex poisoned")
            .remove(&id)
    }

    /// Renews every lease this gateway holds (`+WPI`).
    async fn renew(&self) {
        let replies: Vec<Subject> = self
            .leases
            .lock()
            .expect("nats lease mutex poisoned")
            .values()
            .map(|l| l.reply.clone())
            .collect();
        for reply in replies {
            if let Err(e) = self.acker(reply).ack_with(AckKind::Progress).await {
                tracing::warn!(error = %e, "async (NATS): cannot renew a lease");
            }
        }
    }

    /// Reads every function's counts from its consumer (one request for all), and every
    /// [`OLDEST_EVERY`]th time its oldest call's age (one request per function with calls).
    async fn refresh(&self) {
        let n = self
            .refreshes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let previous: HashMap<String, u64> = self
            .backlog()
            .into_iter()
            .map(|b| (b.function, b.oldest_unix_ms))
            .collect();
        let here = self.leased_here();
        let mut infos = self.work.consumers();
        let mut out = Vec::new();
        while let Some(info) = infos.next().await {
            let info = match info {
                Ok(i) => i,
                Err(e) => {
                    tracing::debug!(error = %e, "async (NATS): cannot list consumers");
                    return;
                }
            };
            let Some(function) = info.config.filter_subject.strip_prefix(SUBJECT_PREFIX) else {
                continue;
            };
            let leased_here = here.get(function).copied().unwrap_or(0);
            let in_flight = info.num_ack_pending as u64;
            let queued = info.num_pending + in_flight;
            if queued == 0 {
                continue;
            }
            let oldest_unix_ms = match previous.get(function).copied() {
                Some(at) if !n.is_multiple_of(OLDEST_EVERY) => at,
                _ => match self
                    .work
                    .get_first_raw_message_by_subject(&info.config.filter_subject, 0)
                    .await
                {
                    Ok(m) => (m.time.unix_timestamp_nanos() / 1_000_000).max(0) as u64,
                    Err(_) => unix_ms(),
                },
            };
            // Calls delivered and not acked that are not this gateway's are running at
            // another gateway, or parked for a retry whose time the server keeps: look.
            let maybe_due = info.num_pending > 0 || in_flight > leased_here;
            out.push(Backlog {
                function: function.to_string(),
                queued,
                leased: in_flight,
                oldest_unix_ms,
                next_due_unix_ms: maybe_due.then(unix_ms),
            });
        }
        *self.snapshot.lock().expect("nats snapshot mutex poisoned") = out;
        if n.is_multiple_of(OLDEST_EVERY) {
            self.refresh_dead_counts().await;
        }
    }

    /// Counts the dead letters per function (one request: the dead stream's subjects).
    async fn refresh_dead_counts(&self) {
        let mut subjects = match self
            .dead
            .info_with_subjects(format!("{DEAD_PREFIX}>"))
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "async (NATS): cannot count the dead letters");
                return;
            }
        };
        let mut counts = Vec::new();
        while let Some(item) = subjects.next().await {
            match item {
                Ok((subject, n)) => {
                    if let Some(f) = subject.strip_prefix(DEAD_PREFIX) {
                        counts.push((f.to_string(), n as u64));
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "async (NATS): cannot count the dead letters");
                    return;
                }
            }
        }
        counts.sort();
        *self.dead_counts.lock().expect("nats dead mutex poisoned") = counts;
    }

    /// This gateway's leases, per function.
    fn leased_here(&self) -> HashMap<String, u64> {
        let mut out = HashMap::new();
        for l in self
            .leases
            .lock()
            .expect("nats lease mutex poisoned")
            .values()
        {
            *out.entry(l.function.clone()).or_default() += 1;
        }
        out
    }

    /// Notes an enqueue in the snapshot at once (the next refresh replaces it).
    fn note_enqueued(&self, function: &str, arrived_unix_ms: u64) {
        let mut snapshot = self.snapshot.lock().expect("nats snapshot mutex poisoned");
        match snapshot.iter_mut().find(|b| b.function == function) {
            Some(b) => {
                b.queued += 1;
                b.next_due_unix_ms = Some(arrived_unix_ms);
            }
            None => snapshot.push(Backlog {
                function: function.to_string(),
                queued: 1,
                leased: 0,
                oldest_unix_ms: arrived_unix_ms,
                next_due_unix_ms: Some(arrived_unix_ms),
            }),
        }
    }
}

impl Drop for NatsStore {
    fn drop(&mut self) {
        for t in self.tasks.get_mut().map(std::mem::take).unwrap_or_default() {
            t.abort();
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).map_or("", |v| v.as_str())
}

/// A dead letter from its stored message.
fn read_dead_letter(m: &jetstream::message::StreamMessage) -> Option<DeadLetter> {
    let call = QueuedCall::decode(&m.payload).ok()?;
    let h = &m.headers;
    Some(DeadLetter {
        id: m.sequence,
        call_id: call.call_id,
        function: call.function,
        attempts: header_str(h, H_ATTEMPTS).parse().unwrap_or(0),
        arrived_unix_ms: call.arrived_unix_ms,
        failed_unix_ms: header_str(h, H_FAILED).parse().unwrap_or(0),
        status: header_str(h, H_STATUS).parse().unwrap_or(0),
        reason: header_str(h, H_REASON).to_string(),
    })
}

#[async_trait]
impl CallStore for NatsStore {
    async fn enqueue(&self, call: EncodedCall) -> Result<u64, StoreError> {
        let EncodedCall {
            call_id,
            function,
            arrived_unix_ms,
            record,
        } = call;
        if record.len() > self.max_record {
            return Err(StoreError::TooLarge(self.max_record));
        }
        self.ensure_consumer(&function).await?;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", call_id.as_str());
        let ack = self
            .js
            .publish_with_headers(
                format!("{SUBJECT_PREFIX}{}", function),
                headers,
                record.into(),
            )
            .await
            .map_err(|e| backend("publish", e))?
            .await
            .map_err(|e| {
                // `discard: new` at `max_msgs` (or bytes): the queue is full.
                match server_error(&e) {
                    Some(s) if s.error_code().0 == 10077 => StoreError::Full(self.bound),
                    _ => backend("publish", e),
                }
            })?;
        if !ack.duplicate {
            self.note_enqueued(&function, arrived_unix_ms);
        }
        Ok(ack.sequence)
    }

    async fn take(
        &self,
        function: &str,
        max: usize,
        _now_unix_ms: u64,
    ) -> Result<Vec<Taken>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let consumer = self.consumer(function).await?;
        let mut batch = match consumer.fetch().max_messages(max).messages().await {
            Ok(b) => b,
            Err(e) => {
                self.forget_consumer(function);
                return Err(backend("fetch", e));
            }
        };
        let mut out = Vec::new();
        while let Some(m) = batch.next().await {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    if out.is_empty() {
                        self.forget_consumer(function);
                        return Err(backend("fetch", e));
                    }
                    break;
                }
            };
            let (id, delivered) = match m.info() {
                Ok(i) => (i.stream_sequence, i.delivered),
                Err(e) => {
                    tracing::warn!(error = %e, "async (NATS): a delivery without its metadata");
                    continue;
                }
            };
            let Some(reply) = m.reply.clone() else {
                continue;
            };
            match QueuedCall::decode(&m.payload) {
                Ok(call) => {
                    self.leases
                        .lock()
                        .expect("nats lease mutex poisoned")
                        .insert(
                            id,
                            Lease {
                                function: function.to_string(),
                                reply,
                                record: m.payload.clone(),
                            },
                        );
                    out.push(Taken {
                        id,
                        call,
                        attempts: u32::try_from(delivered.saturating_sub(1)).unwrap_or(u32::MAX),
                    });
                }
                Err(e) => {
                    // Not ours to deliver, and never deliverable: drop it.
                    tracing::error!(sequence = id, error = %e, "async (NATS): dropping a malformed message");
                    let _ = m.double_ack_with(AckKind::Term).await;
                }
            }
        }
        Ok(out)
    }

    async fn ack(&self, id: u64) -> Result<(), StoreError> {
        let lease = self.lease(id).ok_or(StoreError::NotFound(id))?;
        self.acker(lease.reply)
            .double_ack()
            .await
            .map_err(|e| backend("ack", e))
    }

    async fn retry(&self, id: u64, _attempts: u32, at_unix_ms: u64) -> Result<(), StoreError> {
        let lease = self.lease(id).ok_or(StoreError::NotFound(id))?;
        let delay = Duration::from_millis(at_unix_ms.saturating_sub(unix_ms()));
        self.acker(lease.reply)
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(|e| backend("nak", e))
    }

    async fn bury(
        &self,
        id: u64,
        attempts: u32,
        status: u16,
        reason: &str,
        now_unix_ms: u64,
    ) -> Result<(), StoreError> {
        let lease = self.lease(id).ok_or(StoreError::NotFound(id))?;
        let mut headers = HeaderMap::new();
        headers.insert(H_ATTEMPTS, attempts.to_string().as_str());
        headers.insert(H_STATUS, status.to_string().as_str());
        // A header value is one line.
        let reason: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(1024)
            .collect();
        headers.insert(H_REASON, reason.as_str());
        headers.insert(H_FAILED, now_unix_ms.to_string().as_str());
        self.js
            .publish_with_headers(
                format!("{DEAD_PREFIX}{}", lease.function),
                headers,
                lease.record.clone(),
            )
            .await
            .map_err(|e| backend("publish a dead letter", e))?
            .await
            .map_err(|e| backend("publish a dead letter", e))?;
        self.acker(lease.reply)
            .double_ack_with(AckKind::Term)
            .await
            .map_err(|e| backend("terminate", e))
    }

    async fn dead_letters(&self, function: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        let subject = match function {
            Some(f) => format!("{DEAD_PREFIX}{f}"),
            None => format!("{DEAD_PREFIX}>"),
        };
        let mut out = Vec::new();
        let mut next = 0;
        while out.len() < MAX_LISTED {
            match self
                .dead
                .get_first_raw_message_by_subject(&subject, next)
                .await
            {
                Ok(m) => {
                    next = m.sequence + 1;
                    if let Some(d) = read_dead_letter(&m) {
                        out.push(d);
                    }
                }
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(backend("read the dead letters", e)),
            }
        }
        Ok(out)
    }

    async fn replay(&self, id: u64) -> Result<(), StoreError> {
        let m = match self.dead.get_raw_message(id).await {
            Ok(m) => m,
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                return Err(StoreError::NotFound(id))
            }
            Err(e) => return Err(backend("read a dead letter", e)),
        };
        let call = QueuedCall::decode(&m.payload).map_err(|e| backend("read a dead letter", e))?;
        let mut headers = HeaderMap::new();
        // Not the call id alone: the original is likely still inside the duplicate window.
        headers.insert(
            "Nats-Msg-Id",
            format!("{}:replay:{id}", call.call_id).as_str(),
        );
        self.ensure_consumer(&call.function).await?;
        self.js
            .publish_with_headers(
                format!("{SUBJECT_PREFIX}{}", call.function),
                headers,
                m.payload.clone(),
            )
            .await
            .map_err(|e| backend("publish", e))?
            .await
            .map_err(|e| backend("publish", e))?;
        self.note_enqueued(&call.function, unix_ms());
        self.discard(id).await
    }

    async fn discard(&self, id: u64) -> Result<(), StoreError> {
        match self.dead.delete_message(id).await {
            Ok(_) => Ok(()),
            Err(e) => match e.kind() {
                // 2.9 answers 10057 ("no message found"); later servers may use 10037.
                stream::DeleteMessageErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::NO_MESSAGE_FOUND
                        || j.to_string().contains("no message found") =>
                {
                    Err(StoreError::NotFound(id))
                }
                _ => Err(backend("drop a dead letter", e)),
            },
        }
    }

    fn dead_counts(&self) -> Vec<(String, u64)> {
        self.dead_counts
            .lock()
            .expect("nats dead mutex poisoned")
            .clone()
    }

    fn backlog(&self) -> Vec<Backlog> {
        self.snapshot
            .lock()
            .expect("nats snapshot mutex poisoned")
            .clone()
    }
}
