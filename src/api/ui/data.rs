//! `/ui/api/summary` and `/ui/api/series`: what the UI reads beyond the OpenFaaS API, from
//! the sampler's rings ([`crate::api::metrics::series`]) and the scale-event ring
//! ([`crate::control::events`]). Both are cheap copies; neither touches the provider.
//!
//! - `GET /ui/api/summary?namespace=ns` -> `{"namespace","interval","functions":{name: Sample},
//!   "queues":{name: Queue}}` with each function's newest sample, its `rate` averaged over the
//!   last 10 s and its `p50`/`p99` from the newest second with calls in those 10 s (null when
//!   none), and the async queue of each function that has calls queued.
//! - `GET /ui/api/series?name=f[&namespace=ns]` -> `{"function","name","namespace","interval",
//!   "samples":[Sample...],"events":[ScaleEvent...],"queue":Queue|null}`: up to ten minutes of
//!   one-second samples, oldest first, the function's newest scaling decisions and its async
//!   queue. 404 when unknown.

use std::collections::BTreeMap;

use http::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::api::error::{json, ApiError};
use crate::api::metrics::series::{Sample, INTERVAL};
use crate::api::Gateway;
use crate::control::events::ScaleEvent;
use crate::dataplane::response::GatewayBody;
use crate::model::names::{validate_namespace, FunctionKey, DEFAULT_NAMESPACE};

/// Scale events returned with a series.
pub(crate) const EVENTS_PER_FUNCTION: usize = 50;

#[derive(Debug, Default, Deserialize)]
struct Query {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
}

#[derive(Serialize)]
struct Summary<'a> {
    namespace: &'a str,
    /// Milliseconds between samples.
    interval: u64,
    functions: BTreeMap<String, Sample>,
    /// Whether this gateway leads its cluster, and how many gateways there are.
    cluster: crate::control::cluster::ClusterStatus,
    queues: BTreeMap<String, Queue>,
}

/// One function's async queue (the store's backlog, as `faasgate_async_*` reports it).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Queue {
    /// Accepted and not yet done (those being delivered included).
    queued: u64,
    /// Being delivered now.
    delivering: u64,
    /// Age of the oldest, in seconds.
    oldest_seconds: f64,
}

/// The async queues of namespace `ns`'s functions, by function name.
fn queues(gw: &Gateway, ns: &str) -> BTreeMap<String, Queue> {
    let Some(calls) = &gw.async_calls else {
        return BTreeMap::new();
    };
    let now = crate::sys::clock::unix_ms();
    calls
        .store
        .backlog()
        .into_iter()
        .filter_map(|b| {
            let key = FunctionKey::parse_segment(&b.function, "").ok()?;
            (key.namespace() == ns).then(|| {
                (
                    key.name().to_string(),
                    Queue {
                        queued: b.queued,
                        delivering: b.leased,
                        oldest_seconds: now.saturating_sub(b.oldest_unix_ms) as f64 / 1000.0,
                    },
                )
            })
        })
        .collect()
}

#[derive(Serialize)]
struct SeriesBody<'a> {
    function: String,
    name: &'a str,
    namespace: &'a str,
    interval: u64,
    samples: Vec<Sample>,
    events: Vec<ScaleEvent>,
    queue: Option<Queue>,
}

fn query<B>(req: &Request<B>) -> Result<Query, ApiError> {
    serde_urlencoded::from_str(req.uri().query().unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("invalid query string: {e}")))
}

pub(super) fn summary<B>(
    gw: &Gateway,
    req: &Request<B>,
) -> Result<Response<GatewayBody>, ApiError> {
    let q = query(req)?;
    let ns = if q.namespace.is_empty() {
        DEFAULT_NAMESPACE
    } else {
        q.namespace.as_str()
    };
    validate_namespace(ns)?;
    let functions = gw
        .series
        .latest(ns)
        .into_iter()
        .map(|(k, s)| (k.name().to_string(), s))
        .collect();
    Ok(json(
        StatusCode::OK,
        &Summary {
            namespace: ns,
            interval: INTERVAL.as_millis() as u64,
            functions,
            cluster: gw.scaling.cluster.status(),
            queues: queues(gw, ns),
        },
    ))
}

pub(super) fn series<B>(gw: &Gateway, req: &Request<B>) -> Result<Response<GatewayBody>, ApiError> {
    let q = query(req)?;
    if q.name.is_empty() {
        return Err(ApiError::BadRequest("name is required".into()));
    }
    let key = FunctionKey::parse_segment(&q.name, &q.namespace)?;
    if gw.routes.get(key.as_ref()).is_none() {
        return Err(ApiError::NotFound(format!("function {key} not found")));
    }
    Ok(json(
        StatusCode::OK,
        &SeriesBody {
            function: key.to_string(),
            name: key.name(),
            namespace: key.namespace(),
            interval: INTERVAL.as_millis() as u64,
            samples: gw.series.function(&key),
            events: gw.events.recent(Some(&key), EVENTS_PER_FUNCTION),
            queue: queues(gw, key.namespace()).remove(key.name()),
        },
    ))
}
