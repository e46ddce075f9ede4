//! Delivery: the dispatcher hands every queued call to its function through the gateway's
//! own `/function/{name}` route, so a queued call is balanced, held while the function
//! scales from zero, counted and timed exactly as a synchronous one (OpenFaaS's queue worker
//! also calls the gateway).
//!
//! Rules:
//! - Per function, as many calls at once as its ready replicas take at their planned load
//!   (at least one, at most its `com.openfaas.queue.max-inflight` label or annotation, else
//!   `max_inflight`; per gateway: with a shared NATS queue each gateway keeps its own
//!   bound); a call runs under its store lease
//!   for as long as it takes: no ack deadline, so a call still running is never delivered a
//!   second time (OpenFaaS CE redelivers after its `ack_wait`).
//! - Every attempt carries the call's `X-Call-Id`: a function sees the same id on a retry.
//! - An answer whose status is in `retry_codes` (OpenFaaS Pro's 408, 429, 500, 502, 503,
//!   504 by default), or no answer at all, is retried after an exponential backoff with
//!   jitter (`retry_wait` doubling to `retry_max_wait`, each wait drawn in its upper half)
//!   until `max_attempts` deliveries or `max_age` since arrival; a function's
//!   `com.openfaas.retry.*` labels or annotations (OpenFaaS Pro's) override the codes, the
//!   attempts and the waits for its calls; then the call goes to the
//!   dead-letter list with the last status. Any other answer ends the call.
//! - Delivery is at least once: a gateway that stops mid-call delivers the call again after
//!   a restart.
//! - Once a call is over (delivered, or buried after its last attempt), its answer goes to
//!   its `X-Callback-Url`, if it had one (`callback`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::dataplane::{FunctionHandle, Routes};
use crate::http1::headers::X_CALL_ID;
use crate::model::names::KeyRef;
use crate::queue::callback::{Answer, Callbacks};
use crate::queue::stats::AsyncStats;
use crate::queue::store::{CallStore, Taken};
use crate::sys::clock::unix_ms;

/// How often the dispatcher looks for due calls when nothing wakes it.
const POLL: Duration = Duration::from_millis(100);
/// The most of a function's answer read (for its callback).
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// The dispatcher's settings.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// Calls of one function delivered at once, at most (fewer while its replicas take
    /// fewer).
    pub max_inflight: usize,
    /// Deliveries of one call before it is buried.
    pub max_attempts: u32,
    /// Age after which a failing call is buried.
    pub max_age: Duration,
    /// The first wait before a retry; it doubles up to `retry_max_wait`.
    pub retry_wait: Duration,
    pub retry_max_wait: Duration,
    /// Function statuses that are retried.
    pub retry_codes: Vec<u16>,
    /// Bound on one delivery (the gateway's own upstream timeout bounds it first).
    pub call_timeout: Duration,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            max_inflight: 100,
            max_attempts: 10,
            max_age: Duration::from_secs(24 * 3600),
            retry_wait: Duration::from_secs(10),
            retry_max_wait: Duration::from_secs(120),
            retry_codes: vec![408, 429, 500, 502, 503, 504],
            call_timeout: Duration::from_secs(3600),
        }
    }
}

/// Delivers queued calls to the gateway at `target`.
pub struct Dispatcher {
    store: Arc<dyn CallStore>,
    routes: Arc<Routes>,
    target: SocketAddr,
    cfg: DispatchConfig,
    client: Client<HttpConnector, Full<Bytes>>,
    /// Deliveries of functions no longer deployed (a deployed one's are counted in its
    /// handle's `async_inflight`).
    orphans: AtomicUsize,
    /// Woken by an enqueue, so a new call does not wait for the next poll.
    wake: tokio::sync::Notify,
    callbacks: Arc<Callbacks>,
    stats: Arc<AsyncStats>,
}

/// One delivery's place among its function's (`FunctionHandle::async_inflight`, or the
/// dispatcher's `orphans`): given back, and the dispatcher woken, when the delivery ends,
/// however it ends (a panic in it included).
struct Place {
    dispatcher: Arc<Dispatcher>,
    handle: Option<Arc<FunctionHandle>>,
}

impl Place {
    fn take(dispatcher: &Arc<Dispatcher>, handle: Option<Arc<FunctionHandle>>) -> Self {
        dispatcher
            .counter(handle.as_deref())
            .fetch_add(1, Ordering::SeqCst);
        Place {
            dispatcher: dispatcher.clone(),
            handle,
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.dispatcher
            .counter(self.handle.as_deref())
            .fetch_sub(1, Ordering::SeqCst);
        // A place is free.
        self.dispatcher.wake.notify_one();
    }
}

/// One function's retry rules (see [`Dispatcher::retries`]).
struct Retries {
    max_attempts: u32,
    wait: Duration,
    max_wait: Duration,
    /// None: the gateway's `retry_codes`.
    codes: Option<crate::model::queue::StatusSet>,
}

/// How one delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Done(u16),
    /// Retry (the status, 0 for no answer, and why).
    Failed(u16, String),
}

/// One delivery: how it ended, the function's answer if any, and when it ran.
struct Attempt {
    outcome: Outcome,
    answer: Option<(http::HeaderMap, Bytes)>,
    start_unix_nanos: u128,
    duration: Duration,
}

impl Dispatcher {
    /// A dispatcher for `store`'s calls, delivered to the gateway listening at `target` (an
    /// unspecified address means this host's loopback).
    pub fn new(
        store: Arc<dyn CallStore>,
        routes: Arc<Routes>,
        target: SocketAddr,
        cfg: DispatchConfig,
        callbacks: Arc<Callbacks>,
        stats: Arc<AsyncStats>,
    ) -> Arc<Self> {
        let mut target = target;
        if target.ip().is_unspecified() {
            target.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        Arc::new(Self {
            store,
            routes,
            target,
            cfg,
            client: Client::builder(TokioExecutor::new()).build_http(),
            orphans: AtomicUsize::new(0),
            wake: tokio::sync::Notify::new(),
            callbacks,
            stats,
        })
    }

    /// Where callbacks go, and how.
    pub fn callbacks(&self) -> &Callbacks {
        &self.callbacks
    }

    /// How many calls of `function` may be delivered at once: what its ready replicas
    /// take at their planned load (`target x target-proportion` each), at least one (which
    /// wakes a function at zero), at most its `com.openfaas.queue.max-inflight` or else
    /// `max_inflight`. The scaler counts the calls still waiting as demand, so a backlog
    /// raises the count and with it this limit.
    fn limit(&self, handle: Option<&FunctionHandle>) -> usize {
        let (capacity, cap) = handle.map_or((0.0, None), |h| {
            let state = h.state();
            (
                state.replicas.len() as f64 * state.scale.per_replica(),
                state.scale.queue.max_inflight,
            )
        });
        let cap = cap.map_or(self.cfg.max_inflight, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        });
        (capacity as usize).clamp(1, cap.max(1))
    }

    /// Where the deliveries of a function are counted: its handle's counter, or, for the
    /// functions no longer deployed (their calls are delivered, and answered 404, one at a
    /// time across all of them), the dispatcher's own. A function deleted and deployed again
    /// gets a new handle: deliveries still running under the old one are not counted against
    /// the new one's limit (for as long as they run).
    fn counter<'a>(&'a self, handle: Option<&'a FunctionHandle>) -> &'a AtomicUsize {
        handle.map_or(&self.orphans, |h| &h.async_inflight)
    }

    /// `function`'s settings: the gateway's, with the function's `com.openfaas.retry.*`
    /// overrides.
    fn retries(&self, handle: Option<&FunctionHandle>) -> Retries {
        let q = handle.map(|h| h.state().scale.queue).unwrap_or_default();
        Retries {
            max_attempts: q.attempts.unwrap_or(self.cfg.max_attempts),
            wait: q.min_wait.unwrap_or(self.cfg.retry_wait),
            max_wait: q.max_wait.unwrap_or(self.cfg.retry_max_wait),
            codes: q.codes,
        }
    }

    fn retried(&self, r: &Retries, status: u16) -> bool {
        match &r.codes {
            Some(set) => set.contains(status),
            None => self.cfg.retry_codes.contains(&status),
        }
    }

    /// Says a call was queued.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// A call of `handle`'s function was stored: wakes the dispatcher only if the function
    /// has room for another delivery (one atomic load: no lock on the enqueue path). Without
    /// room the pass would find nothing to do (it cost the enqueue path about a tenth of its
    /// instructions under load): the delivery that ends and frees a place wakes it, and a limit raised by new replicas is seen at the next
    /// poll (`POLL`). No wake-up is lost: the call is in the store before the check, and a
    /// place freed after the check wakes the dispatcher, which then sees the call.
    pub fn notify_enqueued(&self, handle: &FunctionHandle) {
        if handle.async_inflight.load(Ordering::SeqCst) < self.limit(Some(handle)) {
            self.wake.notify_one();
        }
    }

    /// Runs until aborted.
    pub async fn run(self: Arc<Self>) {
        loop {
            let _ = tokio::time::timeout(POLL, self.wake.notified()).await;
            let now = unix_ms();
            for b in self.store.backlog() {
                if b.next_due_unix_ms.is_none_or(|at| at > now) {
                    continue;
                }
                let handle = self.routes.get(KeyRef::parse_segment(&b.function, ""));
                let room = self
                    .limit(handle.as_deref())
                    .saturating_sub(self.counter(handle.as_deref()).load(Ordering::SeqCst));
                if room == 0 {
                    continue;
                }
                let taken = match self.store.take(&b.function, room, now).await {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!(function = %b.function, error = %e, "async: cannot take calls");
                        continue;
                    }
                };
                for t in taken {
                    let place = Place::take(&self, handle.clone());
                    tokio::spawn(self.clone().deliver(t, place));
                }
            }
        }
    }

    /// Delivers `t`, holding its `place` among its function's deliveries until it ends.
    async fn deliver(self: Arc<Self>, t: Taken, place: Place) {
        let function = t.call.function.clone();
        let retries = self.retries(place.handle.as_deref());
        let attempt = self.attempt(&t, &retries).await;
        let status = match &attempt.outcome {
            Outcome::Done(s) | Outcome::Failed(s, _) => *s,
        };
        match self.settle(&t, attempt.outcome, &retries).await {
            Ok(true) => {
                if let Some(url) = &t.call.callback_url {
                    let (headers, body) = attempt.answer.unwrap_or_default();
                    let answer = Answer {
                        call_id: t.call.call_id.clone(),
                        function: function.clone(),
                        status: if status == 0 { 503 } else { status },
                        headers,
                        body,
                        duration: attempt.duration,
                        start_unix_nanos: attempt.start_unix_nanos,
                    };
                    let (callbacks, url) = (self.callbacks.clone(), url.clone());
                    tokio::spawn(async move { callbacks.send(&url, &answer).await });
                }
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(function = %function, call_id = %t.call.call_id, error = %e,
                    "async: cannot record a delivery's outcome (the call will be delivered again)");
            }
        }
        drop(place);
    }

    /// One delivery of `t` through the gateway.
    async fn attempt(&self, t: &Taken, retries: &Retries) -> Attempt {
        let start_unix_nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let start = std::time::Instant::now();
        let (outcome, answer) = self.exchange(t, retries).await;
        Attempt {
            outcome,
            answer,
            start_unix_nanos,
            duration: start.elapsed(),
        }
    }

    async fn exchange(
        &self,
        t: &Taken,
        retries: &Retries,
    ) -> (Outcome, Option<(http::HeaderMap, Bytes)>) {
        let c = &t.call;
        let mut uri = format!("http://{}/function/{}{}", self.target, c.function, c.path);
        if !c.query.is_empty() {
            uri.push('?');
            uri.push_str(&c.query);
        }
        let method = Method::from_bytes(c.method.as_bytes()).unwrap_or(Method::POST);
        let mut req = match Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(c.body.clone()))
        {
            Ok(r) => r,
            Err(e) => return (Outcome::Failed(0, format!("bad request: {e}")), None),
        };
        let headers = req.headers_mut();
        for (name, value) in &c.headers {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value),
            ) else {
                continue;
            };
            // The body's length is this request's; the host is the gateway's.
            if name == http::header::CONTENT_LENGTH
                || name == http::header::TRANSFER_ENCODING
                || name == http::header::HOST
            {
                continue;
            }
            headers.append(name, value);
        }
        if let Ok(id) = HeaderValue::from_str(&c.call_id) {
            headers.insert(X_CALL_ID, id);
        }
        let call = async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let (parts, body) = resp.into_parts();
            let body = http_body_util::Limited::new(body, MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((parts.status.as_u16(), parts.headers, body))
        };
        match tokio::time::timeout(self.cfg.call_timeout, call).await {
            Ok(Ok((status, headers, body))) => {
                let outcome = if self.retried(retries, status) {
                    Outcome::Failed(status, format!("the function answered {status}"))
                } else {
                    Outcome::Done(status)
                };
                (outcome, Some((headers, body)))
            }
            Ok(Err(e)) => (Outcome::Failed(0, e), None),
            Err(_) => (
                Outcome::Failed(0, format!("no answer within {:?}", self.cfg.call_timeout)),
                None,
            ),
        }
    }

    /// Acks, retries or buries `t` after `outcome`; true when the call is over (acked or
    /// buried).
    async fn settle(
        &self,
        t: &Taken,
        outcome: Outcome,
        retries: &Retries,
    ) -> Result<bool, crate::queue::StoreError> {
        let attempts = t.attempts + 1;
        let now = unix_ms();
        match outcome {
            Outcome::Done(status) => {
                tracing::debug!(function = %t.call.function, call_id = %t.call.call_id, status, attempts, "async call delivered");
                self.stats.delivered(&t.call.function, status);
                self.store.ack(t.id).await.map(|()| true)
            }
            Outcome::Failed(status, reason) => {
                let age = Duration::from_millis(now.saturating_sub(t.call.arrived_unix_ms));
                let wait = backoff(retries.wait, retries.max_wait, attempts);
                if attempts >= retries.max_attempts || age + wait > self.cfg.max_age {
                    tracing::warn!(function = %t.call.function, call_id = %t.call.call_id, status, attempts, %reason,
                        "async call failed for good: moved to the dead letters");
                    self.stats.buried(&t.call.function);
                    self.store
                        .bury(t.id, attempts, status, &reason, now)
                        .await
                        .map(|()| true)
                } else {
                    tracing::info!(function = %t.call.function, call_id = %t.call.call_id, status, attempts, ?wait, %reason,
                        "async call failed: retrying");
                    self.stats.retried(&t.call.function);
                    let at = now + u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                    self.store.retry(t.id, attempts, at).await?;
                    self.wake.notify_one();
                    Ok(false)
                }
            }
        }
    }
}

/// The wait before the retry that follows `attempts` deliveries: `wait` doubled per attempt
/// up to `max_wait`, drawn uniformly in its upper half (jitter spreads the retries of calls
/// that failed together, and the wait never drops below half).
fn backoff(wait: Duration, max_wait: Duration, attempts: u32) -> Duration {
    let doubling = 2u32.saturating_pow(attempts.saturating_sub(1).min(30));
    let full = wait.saturating_mul(doubling).min(max_wait);
    full / 2 + full.mul_f64(fastrand::f64() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_in_the_upper_half() {
        let (wait, max_wait) = (Duration::from_secs(1), Duration::from_secs(10));
        for _ in 0..200 {
            for (attempts, full) in [
                (1, 1.0),
                (2, 2.0),
                (3, 4.0),
                (4, 8.0),
                (5, 10.0),
                (40, 10.0),
            ] {
                let w = backoff(wait, max_wait, attempts).as_secs_f64();
                assert!(w >= full / 2.0 && w <= full, "{attempts}: {w}");
            }
        }
    }
}
