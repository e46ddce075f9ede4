//! `/ui/api/summary` and `/ui/api/series`: what the UI reads beyond the OpenFaaS API, from
//! the sampler's rings ([`crate::api::metrics::series`]) and the scale-event ring
//! ([`crate::control::events`]). Both are cheap copies; neither touches the provider.
//!
//! - `GET /ui/api/summary?namespace=ns` -> `{"namespace","interval","functions":{name: Sample}}`
//!   with each function's newest sample, its `rate` averaged over the last 10 s and its
//!   `p50`/`p99` from the newest second with calls in those 10 s (null when none).
//! - `GET /ui/api/series?name=f[&namespace=ns]` -> `{"function","name","namespace","interval",
//!   "samples":[Sample...],"events":[ScaleEvent...]}`: up to ten minutes of one-second
//!   samples, oldest first, and the function's newest scaling decisions. 404 when unknown.

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
}

#[derive(Serialize)]
struct SeriesBody<'a> {
    function: String,
    name: &'a str,
    namespace: &'a str,
    interval: u64,
    samples: Vec<Sample>,
    events: Vec<ScaleEvent>,
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
        },
    ))
}
