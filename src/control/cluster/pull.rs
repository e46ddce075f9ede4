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
//! every member is pulled concurrently, so one slow member delays nobody else's report. A
//! round runs when the scaler is about to observe ([`ClusterDemand::round_wanted`]), and the
//! scaler waits for it (at most a tick): the leader decides on its own counters and the
//! members' as of the same instant, not on members' reports a tick older than its own
//! (`tests/it/scaler_sim.rs` measured that lag: a first call sized on part of a step, then
//! calls refused during the deployment it started). With the scaler off, rounds run every
//! two ticks.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::control::cluster::demand::{ClusterDemand, Report};
use crate::control::cluster::lease::Leadership;
use crate::control::cluster::peer::PeerClient;

/// Where members serve their report.
pub const REPORT_PATH: &str = "/system/cluster/demand";
/// A report larger than this is refused (a member with ~100,000 active functions).
const MAX_REPORT: usize = 16 * 1024 * 1024;

/// How the leader pulls.
#[derive(Debug, Clone)]
pub struct PullConfig {
    /// How often (the scaler's tick).
    pub every: Duration,
    /// This gateway's name to the members (its listen address): each keeps what it last
    /// reported to each leader, and sends it only what changed since.
    pub leader: String,
}

/// Pulls every member's report after each of the scaler's observations while this gateway
/// leads (the members are those `demand` expects, kept by membership); runs until aborted.
pub async fn run_puller(
    demand: Arc<ClusterDemand>,
    leadership: Leadership,
    peers: Arc<PeerClient>,
    cfg: PullConfig,
) {
    loop {
        demand.round_wanted(cfg.every * 2).await;
        if !leadership.is_leader() {
            demand.round_done();
            continue;
        }
        let members = demand.expected();
        let pulls = members.iter().map(|member| {
            let full = demand.needs_full(member);
            let pull = pull(&peers, member, full, &cfg);
            async move { (member, tokio::time::timeout(cfg.every, pull).await) }
        });
        for (member, got) in futures_util::future::join_all(pulls).await {
            match got {
                Ok(Ok(report)) => demand.apply(member, report),
                Ok(Err(e)) => tracing::debug!(member, error = %e, "demand report failed"),
                Err(_) => tracing::debug!(member, "demand report timed out"),
            }
        }
        demand.round_done();
    }
}

async fn pull(
    peers: &PeerClient,
    member: &str,
    full: bool,
    cfg: &PullConfig,
) -> Result<Report, String> {
    let query = serde_urlencoded::to_string([
        ("full", if full { "1" } else { "0" }),
        ("leader", cfg.leader.as_str()),
    ])
    .map_err(|e| e.to_string())?;
    let (status, body) = peers
        .call(
            member,
            Method::GET,
            &format!("{REPORT_PATH}?{query}"),
            &[],
            Bytes::new(),
            MAX_REPORT,
        )
        .await?;
    if status != StatusCode::OK {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    crate::control::cluster::wire::decode(&body).map_err(|e| e.to_string())
}
