//! `/system/info` and `/system/namespaces`.

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
pub(crate) fn cluster_demand(gw: &Gateway) -> Response<GatewayBody> {
    json(
        StatusCode::OK,
        &crate::control::cluster::demand::Report::local(&gw.routes),
    )
}

pub(crate) async fn namespaces(gw: &Gateway) -> Result<Response<GatewayBody>, ApiError> {
    let ns = gw.provider.namespaces().await?;
    Ok(json(StatusCode::OK, &ns))
}
