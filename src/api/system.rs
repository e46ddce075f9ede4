//! `/system/info`, `/system/namespaces` and the `/system/cluster` routes.

use http::{Response, StatusCode};

use super::error::{json, ApiError};
use super::Gateway;
use crate::dataplane::response::GatewayBody;
use crate::model::types::{GatewayInfo, VersionInfo};

pub(crate) fn info(gw: &Gateway) -> Response<GatewayBody> {
    let info = GatewayInfo {
        provider: gw.provider.info(),
        version: VersionInfo {
            commit_message: String::new(),
            sha: crate::SHA.to_string(),
            release: crate::RELEASE.to_string(),
        },
        arch: std::env::consts::ARCH.to_string(),
    };
    json(StatusCode::OK, &info)
}

/// `GET /system/cluster`: whether this gateway leads, its term, the members.
pub(crate) fn cluster(gw: &Gateway) -> Response<GatewayBody> {
    json(StatusCode::OK, &gw.scaling.cluster.status())
}

/// `GET /system/cluster/demand`: this gateway's demand counters, for the leader's pull
/// (`control::cluster::pull`).
pub(crate) fn cluster_demand<B>(gw: &Gateway, req: &http::Request<B>) -> Response<GatewayBody> {
    #[derive(serde::Deserialize, Default)]
    struct Q {
        #[serde(default)]
        full: String,
        #[serde(default)]
        leader: String,
    }
    let q: Q = req
        .uri()
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let report = crate::control::cluster::demand::Report::for_leader(
        &gw.routes,
        &gw.scaling.cluster.reports,
        &q.leader,
        q.full != "0",
    );
    let mut resp = Response::new(GatewayBody::full(crate::control::cluster::wire::encode(
        &report,
    )));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(crate::control::cluster::wire::CONTENT_TYPE),
    );
    resp
}

/// `POST /system/cluster/wake` (body: `name.namespace`): a follower holds requests for a
/// function at zero; the leader scales it from zero, once for every gateway's held requests.
/// 421 from a gateway that does not lead (the follower asks every member).
pub(crate) async fn cluster_wake(
    gw: &Gateway,
    req: http::Request<hyper::body::Incoming>,
) -> Result<Response<GatewayBody>, ApiError> {
    if !gw.scaling.cluster.leadership.is_leader() {
        return Ok(super::error::text(
            crate::control::cluster::forward::NOT_LEADER,
            "this gateway does not lead its cluster",
        ));
    }
    let (_, body) = gw.read_body(req).await?;
    let name = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("the body is a function name".into()))?;
    let key = crate::model::names::FunctionKey::parse_segment(name.trim(), "")?;
    let handle = gw
        .routes
        .get(key.as_ref())
        .ok_or_else(|| ApiError::NotFound(format!("function {key} not found")))?;
    gw.forwarder.wake(&handle);
    Ok(super::error::empty(StatusCode::ACCEPTED))
}

/// `POST /system/cluster/drain`: another gateway is about to lower a function's count and
/// names the allocations Nomad will stop; answers once this gateway's requests on them are
/// done, or the bound passed, with the count still in flight (`control::cluster::drain`).
pub(crate) async fn cluster_drain(
    gw: &Gateway,
    req: http::Request<hyper::body::Incoming>,
) -> Result<Response<GatewayBody>, ApiError> {
    use crate::control::cluster::drain::{DrainAnswer, DrainRequest};
    let (_, body) = gw.read_body(req).await?;
    let r: DrainRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("drain request: {e}")))?;
    let (key, bound) = r.validate().map_err(ApiError::BadRequest)?;
    if r.cancel {
        gw.provider.cancel_peer_drain(&key, &r.allocations);
        return Ok(json(StatusCode::OK, &DrainAnswer::default()));
    }
    let inflight = gw
        .provider
        .drain_for_peer(&key, &r.allocations, bound)
        .await?;
    Ok(json(StatusCode::OK, &DrainAnswer { inflight }))
}

pub(crate) async fn namespaces(gw: &Gateway) -> Result<Response<GatewayBody>, ApiError> {
    let ns = gw.provider.namespaces().await?;
    Ok(json(StatusCode::OK, &ns))
}
