//! `/system/functions` (list, deploy, update, delete), `/system/function/{name}` (status) and
//! `/system/scale-function/{name}`.
//!
//! Deploy and update answer 202 (the Airflow hook requires exactly 202); POST of an existing
//! function updates it (an upsert, so re-running a deploy is harmless); PUT of a missing one
//! answers 404 (faas-cli then falls back to POST). Bodies are JSON, or form-encoded as the
//! Airflow hook sends them; unknown JSON fields are ignored. Validation happens before the
//! provider is called, so bad input changes nothing. Every route checks its namespace
//! first: one outside the managed set answers 400 `namespace not valid` (faasd's text;
//! `api::namespaces::require`), for reads as for writes. A scale asks for at most
//! [`MAX_REPLICAS`] replicas (a 400 beyond, as a scale label beyond it is at deploy).

use std::sync::atomic::Ordering;

use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::error::{empty, json, ApiError};
use super::namespaces::require;
use super::{namespace_query, Gateway};
use crate::control::{events, ProviderError};
use crate::dataplane::response::GatewayBody;
use crate::model::names::{validate_namespace, FunctionKey, DEFAULT_NAMESPACE};
use crate::model::scale::{ScaleSettings, MAX_REPLICAS};
use crate::model::types::{
    DeleteFunctionRequest, FunctionDeployment, FunctionStats, FunctionStatus, ScaleServiceRequest,
    StringMap,
};

type ApiResult = Result<Response<GatewayBody>, ApiError>;

/// A deployment sent as `application/x-www-form-urlencoded`. Maps may be sent as JSON text.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FormDeployment {
    #[serde(default)]
    service: String,
    #[serde(default)]
    image: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    env_process: String,
    env_vars: Option<String>,
    labels: Option<String>,
    annotations: Option<String>,
}

pub(crate) async fn list(gw: &Gateway, req: &Request<Incoming>) -> ApiResult {
    let q = namespace_query(req)?;
    let ns = if q.namespace.is_empty() {
        DEFAULT_NAMESPACE
    } else {
        q.namespace.as_str()
    };
    validate_namespace(ns)?;
    require(gw, ns).await?;
    let mut items = gw.provider.list(ns).await?;
    for s in &mut items {
        fill_live(gw, s);
    }
    Ok(json(StatusCode::OK, &items))
}

pub(crate) async fn status(gw: &Gateway, req: &Request<Incoming>, name: &str) -> ApiResult {
    let q = namespace_query(req)?;
    let key = FunctionKey::parse_segment(name, &q.namespace)?;
    require(gw, key.namespace()).await?;
    let mut s = gw.provider.status(&key).await?;
    fill_live(gw, &mut s);
    if let Some(h) = gw.routes.get(key.as_ref()) {
        let p = h.metrics.latency.percentiles();
        s.stats = Some(FunctionStats {
            p50: p.p50,
            p90: p.p90,
            p99: p.p99,
            p999: p.p999,
            count: p.count,
            inflight: h.demand.inflight(),
            queued: h.demand.queued.load(Ordering::Relaxed),
        });
    }
    Ok(json(StatusCode::OK, &s))
}

/// Invocation counts come from the data plane, whatever the provider says.
fn fill_live(gw: &Gateway, s: &mut FunctionStatus) {
    if let Ok(key) = FunctionKey::new(&s.name, &s.namespace) {
        if let Some(h) = gw.routes.get(key.as_ref()) {
            s.invocation_count = h.metrics.codes.total();
        }
    }
}

pub(crate) async fn deploy(gw: &Gateway, req: Request<Incoming>, update: bool) -> ApiResult {
    let q = namespace_query(&req)?;
    let (parts, body) = gw.read_body(req).await?;
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let mut spec = if is_form {
        parse_form(&body)?
    } else {
        if body.is_empty() {
            return Err(ApiError::BadRequest("a JSON body is required".into()));
        }
        serde_json::from_slice::<FunctionDeployment>(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?
    };
    if spec.service.is_empty() {
        return Err(ApiError::BadRequest("service is required".into()));
    }
    let ns = if spec.namespace.is_empty() {
        q.namespace.clone()
    } else {
        spec.namespace.clone()
    };
    let key = FunctionKey::new(&spec.service, &ns)?;
    spec.namespace = key.namespace().to_string();
    // Every provider takes the scale labels through this one rule (`model::scale`).
    ScaleSettings::parse_deployment(&spec).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    require(gw, key.namespace()).await?;
    if update {
        gw.provider.update(spec).await?;
    } else {
        match gw.provider.deploy(spec.clone()).await {
            Err(ProviderError::AlreadyExists(_)) => gw.provider.update(spec).await?,
            other => other?,
        }
    }
    Ok(empty(StatusCode::ACCEPTED))
}

fn parse_form(body: &[u8]) -> Result<FunctionDeployment, ApiError> {
    let f: FormDeployment = serde_urlencoded::from_bytes(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid form body: {e}")))?;
    let map = |field: &str, v: Option<String>| -> Result<Option<StringMap>, ApiError> {
        match v {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) => serde_json::from_str(&s).map(Some).map_err(|e| {
                ApiError::BadRequest(format!("{field} must be a JSON object of strings: {e}"))
            }),
        }
    };
    Ok(FunctionDeployment {
        env_vars: map("envVars", f.env_vars)?,
        labels: map("labels", f.labels)?,
        annotations: map("annotations", f.annotations)?,
        service: f.service,
        image: f.image,
        namespace: f.namespace,
        env_process: f.env_process,
        ..Default::default()
    })
}

pub(crate) async fn delete(gw: &Gateway, req: Request<Incoming>) -> ApiResult {
    let q = namespace_query(&req)?;
    let (_, body) = gw.read_body(req).await?;
    let d: DeleteFunctionRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    if d.function_name.is_empty() {
        return Err(ApiError::BadRequest("functionName is required".into()));
    }
    let ns = if d.namespace.is_empty() {
        q.namespace
    } else {
        d.namespace
    };
    let key = FunctionKey::parse_segment(&d.function_name, &ns)?;
    require(gw, key.namespace()).await?;
    gw.provider.delete(&key).await?;
    Ok(empty(StatusCode::ACCEPTED))
}

pub(crate) async fn scale(gw: &Gateway, req: Request<Incoming>, name: &str) -> ApiResult {
    let q = namespace_query(&req)?;
    let (_, body) = gw.read_body(req).await?;
    let s: ScaleServiceRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    let replicas = s
        .replicas
        .ok_or_else(|| ApiError::BadRequest("replicas is required".into()))?;
    if replicas > MAX_REPLICAS {
        return Err(ApiError::BadRequest(format!(
            "replicas {replicas} is above the maximum of {MAX_REPLICAS}"
        )));
    }
    let name = if name.is_empty() {
        s.service_name.as_str()
    } else {
        name
    };
    let ns = if !q.namespace.is_empty() {
        q.namespace.as_str()
    } else {
        s.namespace.as_str()
    };
    let key = FunctionKey::parse_segment(name, ns)?;
    require(gw, key.namespace()).await?;
    let from = gw.routes.get(key.as_ref()).map(|h| h.state().desired);
    gw.provider.scale(&key, replicas).await?;
    gw.events
        .record(&key, from.unwrap_or(0), replicas, events::reason::API);
    Ok(empty(StatusCode::ACCEPTED))
}
