//! Several gateways acting as one: who the others are ([`members`]: `--peers`, or the
//! catalog `--discovery` names), which gateway leads (makes scale decisions), through a
//! lock on a Nomad Variable ([`lease`]), and the demand the leader decides on, summed over
//! every gateway ([`demand`], pulled by [`pull`]).
//!
//! A gateway alone (no `--peers`) is always leader, runs no lease and no puller, and decides
//! on its own demand: exactly what it did before clustering existed.

pub mod demand;
pub mod drain;
pub mod forward;
pub mod lease;
pub mod members;
pub(crate) mod nomad_lock;
pub mod peer;
pub mod pull;
pub mod wire;

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{MetricFamily, MetricType};
use serde::Serialize;

pub use demand::ClusterDemand;
pub use lease::{Leadership, LeaseConfig};

use crate::control::cluster::lease::{run_lease, LockBackend, Term};
use crate::metrics::families::{families, gauge};

/// Follows membership: alone (no other member) this gateway leads with no lock, as a gateway
/// alone always has; with others it takes part in the election through `lock` until the
/// others are gone or `shutdown` turns true, and then releases the lock. Members are handed
/// to `demand` as they change, so the leader pulls exactly the current ones.
pub async fn run_cluster<B: LockBackend>(
    lock: B,
    cfg: LeaseConfig,
    mut members: tokio::sync::watch::Receiver<Vec<String>>,
    demand: Arc<ClusterDemand>,
    tx: tokio::sync::watch::Sender<Term>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut number = 0u64;
    // Nothing is decided before membership's first answer: a gateway that has peers must not
    // lead alone while it has not looked for them.
    tokio::select! {
        r = members.changed() => if r.is_err() { return },
        _ = shutdown.changed() => return,
    }
    loop {
        if *shutdown.borrow() {
            return;
        }
        let peers = members.borrow_and_update().clone();
        demand.set_members(peers.iter().cloned());
        if peers.is_empty() {
            // Alone: lead without a lock (the overlap with a member not yet in the catalog
            // lasts as long as a blocking query takes to wake).
            number += 1;
            tx.send_replace(Term {
                number,
                until: None,
                leader: true,
            });
            tracing::info!("cluster: no other gateway; this one decides alone");
            tokio::select! {
                r = members.changed() => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
            continue;
        }
        tx.send_replace(Term {
            number,
            until: None,
            leader: false,
        });
        let (members_ref, shutdown_ref, demand_ref) = (&mut members, &mut shutdown, &demand);
        let stop = async move {
            loop {
                tokio::select! {
                    r = members_ref.changed() => {
                        if r.is_err() {
                            return;
                        }
                        let now = members_ref.borrow().clone();
                        if now.is_empty() {
                            return;
                        }
                        demand_ref.set_members(now);
                    }
                    _ = shutdown_ref.changed() => return,
                }
            }
        };
        run_lease(&lock, cfg, &tx, &mut number, stop).await;
    }
}

/// This gateway's place in its cluster.
pub struct Cluster {
    /// Whether this gateway makes scale decisions now.
    pub leadership: Leadership,
    /// The members' demand (`None`: a gateway alone).
    pub demand: Option<Arc<ClusterDemand>>,
    /// The Nomad Variable whose lock elects the leader (`None`: no lock, a gateway alone).
    pub lock_path: Option<String>,
    /// A follower's way to the leader (`None`: a gateway alone).
    pub forward: Option<forward::LeaderForward>,
    /// Scale-down drains announced to the members (`None`: a gateway alone).
    pub drain: Option<drain::MemberDrain>,
    /// What this gateway last reported to each leader.
    pub reports: demand::ReportBook,
}

/// `GET /system/cluster`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub leader: bool,
    /// The term this gateway leads in (0 when it does not lead).
    pub term: u64,
    pub lock_path: Option<String>,
    /// Gateways in the cluster, this one included.
    pub members: usize,
    /// Other gateways whose demand reports are current (when this gateway leads).
    pub members_known: usize,
}

impl Cluster {
    /// A gateway alone.
    pub fn alone() -> Arc<Self> {
        Arc::new(Self {
            leadership: Leadership::alone(),
            demand: None,
            lock_path: None,
            forward: None,
            drain: None,
            reports: Default::default(),
        })
    }

    /// Takes `allocations` of `function` out of rotation at every member and waits for their
    /// requests there, at most `bound` (see [`drain`]); `None` for a gateway alone.
    pub async fn drain_at_members(
        &self,
        function: &crate::model::names::FunctionKey,
        allocations: &[String],
        bound: std::time::Duration,
    ) -> Option<drain::MembersDrained> {
        let (members, drain) = (self.demand.as_ref()?.expected(), self.drain.as_ref()?);
        if members.is_empty() {
            return None;
        }
        Some(drain.drain(&members, function, allocations, bound).await)
    }

    /// Puts `allocations` back in rotation at every member: the scale call they were drained
    /// for will not happen.
    pub async fn cancel_at_members(
        &self,
        function: &crate::model::names::FunctionKey,
        allocations: &[String],
    ) {
        if let (Some(demand), Some(drain)) = (&self.demand, &self.drain) {
            drain
                .cancel(&demand.expected(), function, allocations)
                .await;
        }
    }

    /// The other members, when this gateway does not lead and has someone to ask: what the
    /// leader must decide is sent to them ([`forward`]).
    pub fn leader_elsewhere(&self) -> Option<(Vec<String>, &forward::LeaderForward)> {
        if self.leadership.is_leader() {
            return None;
        }
        let members = self.demand.as_ref()?.expected();
        Some((members, self.forward.as_ref()?))
    }

    pub fn status(&self) -> ClusterStatus {
        let (expected, known) = self.demand.as_ref().map_or((0, 0), |d| d.members());
        ClusterStatus {
            leader: self.leadership.is_leader(),
            term: self.leadership.term().unwrap_or(0),
            lock_path: self.lock_path.clone(),
            members: expected + 1,
            members_known: known,
        }
    }

    pub(crate) fn collector(self: &Arc<Self>) -> ClusterCollector {
        let descs = crate::metrics::families::descs(&FAMILIES);
        ClusterCollector {
            cluster: self.clone(),
            descs,
        }
    }
}

pub(crate) mod names {
    pub(crate) const LEADER: &str = "faasgate_cluster_leader";
    pub(crate) const MEMBERS: &str = "faasgate_cluster_members";
    pub(crate) const MEMBERS_KNOWN: &str = "faasgate_cluster_members_known";
}

const FAMILIES: [(&str, &str, &[&str], MetricType); 3] = [
    (
        names::LEADER,
        "1 while this gateway leads its cluster (makes the scale decisions).",
        &[],
        MetricType::GAUGE,
    ),
    (
        names::MEMBERS,
        "Gateways in the cluster, this one included.",
        &[],
        MetricType::GAUGE,
    ),
    (
        names::MEMBERS_KNOWN,
        "Other gateways whose demand reports are current.",
        &[],
        MetricType::GAUGE,
    ),
];

/// Exports [`ClusterStatus`] at scrape time.
pub(crate) struct ClusterCollector {
    cluster: Arc<Cluster>,
    descs: Vec<Desc>,
}

impl Collector for ClusterCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = self.cluster.status();
        families(
            &FAMILIES,
            [
                vec![gauge(Vec::new(), if s.leader { 1.0 } else { 0.0 })],
                vec![gauge(Vec::new(), s.members as f64)],
                vec![gauge(Vec::new(), s.members_known as f64)],
            ],
        )
    }
}
