//! The leader's pull of every member's demand [`Report`], once a tick.
//!
//! Pull, not push: the leader already knows the members (membership), so a member needs to
//! know nothing of who leads, a member that does not answer is noticed where it matters (its
//! reports go stale in [`ClusterDemand`], which then holds scale-downs back), and a follower
//! does no work at all. Each member serves its report at `GET /system/cluster/demand`, behind
//! the gateway's basic auth like every `/system` route (never reachable from `/function/*`);
//! the leader sends the same credentials.
//!
//! Invariants: pulls run only while this gateway leads; each is bounded by the tick, and
//! every member is pulled concurrently, so one slow member delays nobody else's report.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::control::cluster::demand::{ClusterDemand, Report};
use crate::control::cluster::lease::Leadership;

/// Where members serve their report.
pub const REPORT_PATH: &str = "/system/cluster/demand";
/// A report larger than this is refused (a member with ~100,000 active functions).
const MAX_REPORT: usize = 16 * 1024 * 1024;

/// How the leader pulls.
#[derive(Debug, Clone)]
pub struct PullConfig {
    /// How often (the scaler's tick).
    pub every: Duration,
    /// `Authorization` sent to members (the gateway's basic-auth credentials), if auth is on.
    pub authorization: Option<HeaderValue>,
    /// This gateway's name to the members (its listen address): each keeps what it last
    /// reported to each leader, and sends it only what changed since.
    pub leader: String,
}

/// Pulls every member's report each tick while this gateway leads (the members are those
/// `demand` expects, kept by membership); runs until aborted.
pub async fn run_puller(demand: Arc<ClusterDemand>, leadership: Leadership, cfg: PullConfig) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut interval = tokio::time::interval(cfg.every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if !leadership.is_leader() {
            continue;
        }
        let members = demand.expected();
        let pulls = members.iter().map(|member| {
            let (client, cfg, demand) = (&client, &cfg, &demand);
            async move {
                let full = demand.needs_full(member);
                let got = tokio::time::timeout(cfg.every, pull(client, member, full, cfg)).await;
                (member, got)
            }
        });
        for (member, got) in futures_util::future::join_all(pulls).await {
            match got {
                Ok(Ok(report)) => demand.apply(member, report),
                Ok(Err(e)) => tracing::debug!(member, error = %e, "demand report failed"),
                Err(_) => tracing::debug!(member, "demand report timed out"),
            }
        }
    }
}

async fn pull(
    client: &Client<HttpConnector, Empty<Bytes>>,
    member: &str,
    full: bool,
    cfg: &PullConfig,
) -> Result<Report, String> {
    let query = serde_urlencoded::to_string([
        ("full", if full { "1" } else { "0" }),
        ("leader", cfg.leader.as_str()),
    ])
    .map_err(|e| e.to_string())?;
    let mut req = Request::get(format!("http://{member}{REPORT_PATH}?{query}"))
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    if let Some(auth) = &cfg.authorization {
        req.headers_mut()
            .insert(header::AUTHORIZATION, auth.clone());
    }
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_REPORT)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if status != StatusCode::OK {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    crate::control::cluster::wire::decode(&body).map_err(|e| e.to_string())
}
