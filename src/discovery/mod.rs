//! Replica sets from a service catalog: Nomad's native one or Consul's health catalog.
//!
//! Per function, one watcher ([`watch`]) holds a blocking query on the function's service
//! (`GET /v1/service/{name}` on Nomad, `GET /v1/health/service/{name}?passing` on Consul),
//! and each answer becomes a new replica set for the data plane, published through the
//! function's [`Publisher`] as one [`FunctionState`].
//!
//! Invariants:
//! - **Diffed, never rebuilt.** A replica that is in the new answer with the same address
//!   keeps its `Arc<Replica>` (its keep-alive pool and pending count); only new instances get
//!   a new `Replica`, and gone ones simply leave the set (requests already on them finish).
//! - **Only ready instances are routed.** Nomad's catalog has no health filter and lists a
//!   group service before the task listens, so with [`Catalog::Nomad`] a new instance stays
//!   pending until its `/_/health` answers 200 ([`probe`]). Consul's `?passing` already
//!   filters on every check.
//! - **Unreachable catalog = keep serving.** On an error the watcher backs off (exponential,
//!   jittered) and publishes nothing: the last known replicas keep serving.
//! - **Blocking-query rules** (reference section 4): the index is floored to 1, a smaller
//!   index than the last resets to a non-blocking read, wake-ups without a change are normal
//!   (the body is diffed), and a token bucket bounds the query rate under churn.
//! - The desired count and the ready set are published together, under the publisher's lock,
//!   so a scale call and a catalog change never overwrite each other with stale values.
//! - **Draining instances stay out.** A provider about to stop instances takes them out of
//!   rotation first ([`Publisher::drain`]); while their catalog entries remain, every set the
//!   watcher publishes leaves them out, so discovery never re-adds a replica being stopped.
//!   Once the stop is ordered ([`Publisher::commit_drain`]) an entry is forgotten when the
//!   catalog no longer lists the instance (instance ids are allocation UUIDs, never reused);
//!   if the stop is called off, [`Publisher::undrain`] puts the instances back.
//! - **Canaries stay out until admitted.** An instance registered with the
//!   [`CANARY_TAG`] (a Nomad canary of a function update: `control::nomad::rollout`) is
//!   ready like any other but not in rotation until the rollout admits canaries
//!   ([`Publisher::admit_canaries`]) or Nomad promotes it (its tags then lose the marker).

pub(crate) mod probe;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use thiserror::Error;

use crate::client::{
    ClientError, ConsulClient, ConsulSettings, Indexed, NomadClient, QueryOptions,
};
use crate::dataplane::{FunctionHandle, FunctionState, Replica};
use crate::model::scale::ScaleSettings;

pub use watch::WatchConfig;
pub(crate) use watch::{spawn_watcher, WatchHandle};

/// Which catalog discovery reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DiscoveryKind {
    /// Nomad's native service catalog (`provider = "nomad"` services).
    #[default]
    Nomad,
    /// Consul's health catalog (`provider = "consul"` services), passing instances only.
    Consul,
}

/// The tag a function's canary instances carry (the service's `CanaryTags` hold it, its
/// `Tags` do not).
pub const CANARY_TAG: &str = "faasgate-canary";

/// One instance of a service as the catalog lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Instance {
    /// The allocation ID when known (the replica's name in logs), else the registration ID.
    pub id: String,
    pub addr: SocketAddr,
    /// Registered with [`CANARY_TAG`]: a canary of an update not promoted yet.
    pub canary: bool,
}

/// A service catalog.
pub(crate) enum Catalog {
    Nomad(Arc<NomadClient>),
    Consul(Arc<ConsulClient>),
}

/// `--discovery consul` without the Consul client settings.
#[derive(Debug, Error)]
#[error("--discovery consul needs the Consul settings")]
pub struct NoConsulSettings;

/// Publishes one function's [`FunctionState`]: desired count and ready replicas together.
pub(crate) struct Publisher {
    handle: Arc<FunctionHandle>,
    state: Mutex<Published>,
}

#[derive(Clone)]
struct Published {
    desired: u64,
    scale: ScaleSettings,
    /// Ready replicas as discovery last found them, draining ones included.
    found: Arc<[Arc<Replica>]>,
    /// In rotation: `found` without the draining instances (what the data plane sees).
    replicas: Arc<[Arc<Replica>]>,
    /// Instance ids taken out of rotation ahead of a stop; `true` once the stop is ordered.
    draining: BTreeMap<String, bool>,
    /// Instance ids the catalog lists as canaries ([`CANARY_TAG`]).
    canaries: BTreeSet<String>,
    /// Canaries are in rotation (a rollout switched to them).
    admit_canaries: bool,
}

// === impl Catalog ===

impl Catalog {
    /// The catalog `kind` names: Nomad's through `nomad`, or Consul's through a client built
    /// from `consul`. Every reader of a catalog (replica discovery, cluster membership) builds
    /// it here, so `--discovery` means the same to each.
    pub(crate) fn new(
        kind: DiscoveryKind,
        nomad: Arc<NomadClient>,
        consul: Option<&ConsulSettings>,
    ) -> Result<Self, NoConsulSettings> {
        Ok(match kind {
            DiscoveryKind::Nomad => Catalog::Nomad(nomad),
            DiscoveryKind::Consul => {
                Catalog::Consul(Arc::new(ConsulClient::new(consul.ok_or(NoConsulSettings)?)))
            }
        })
    }

    /// Whether new instances must pass a readiness probe before they are routed.
    pub(crate) fn needs_probe(&self) -> bool {
        matches!(self, Catalog::Nomad(_))
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Catalog::Nomad(_) => "nomad",
            Catalog::Consul(_) => "consul",
        }
    }

    /// The instances of `service`, read with `q` (blocking when `q.index > 0`).
    pub(crate) async fn instances(
        &self,
        service: &str,
        q: QueryOptions,
    ) -> Result<Indexed<Vec<Instance>>, ClientError> {
        match self {
            Catalog::Nomad(c) => {
                let r = c.service(service, q).await?;
                let mut out = Vec::with_capacity(r.value.len());
                for reg in &r.value {
                    match parse_addr(&reg.address, reg.port) {
                        Some(addr) => out.push(Instance {
                            id: if reg.alloc_id.is_empty() {
                                reg.id.clone()
                            } else {
                                reg.alloc_id.clone()
                            },
                            addr,
                            canary: reg.tags.iter().any(|t| t == CANARY_TAG),
                        }),
                        None => tracing::warn!(
                            service,
                            address = %reg.address,
                            port = reg.port,
                            "skipping a registration whose address is not an IP:port"
                        ),
                    }
                }
                Ok(Indexed {
                    value: dedup(out),
                    index: r.index,
                })
            }
            Catalog::Consul(c) => {
                let r = c.health_service(service, true, q).await?;
                let mut out = Vec::with_capacity(r.value.len());
                for e in r.value.iter().filter(|e| e.is_passing()) {
                    match parse_addr(e.address(), e.service.port) {
                        Some(addr) => out.push(Instance {
                            id: alloc_of_consul_id(&e.service.id).to_string(),
                            addr,
                            canary: e.service.tags.iter().any(|t| t == CANARY_TAG),
                        }),
                        None => tracing::warn!(
                            service,
                            address = %e.address(),
                            "skipping an instance whose address is not an IP:port"
                        ),
                    }
                }
                Ok(Indexed {
                    value: dedup(out),
                    index: r.index,
                })
            }
        }
    }
}

/// Sorted, one entry per address (two registrations of one address are one replica).
fn dedup(mut v: Vec<Instance>) -> Vec<Instance> {
    v.sort_by(|a, b| a.addr.cmp(&b.addr).then(a.id.cmp(&b.id)));
    v.dedup_by(|a, b| a.addr == b.addr);
    v
}

fn parse_addr(address: &str, port: u16) -> Option<SocketAddr> {
    let ip: IpAddr = address.trim_matches(['[', ']']).parse().ok()?;
    (port != 0).then_some(SocketAddr::new(ip, port))
}

/// `_nomad-task-<allocID>-<task>-<svc>-<label>` -> the alloc ID; anything else unchanged.
fn alloc_of_consul_id(id: &str) -> &str {
    match id.strip_prefix("_nomad-task-") {
        Some(rest) if rest.len() >= 36 && rest.is_char_boundary(36) => &rest[..36],
        _ => id,
    }
}

// === impl Publisher ===

impl Publisher {
    pub(crate) fn new(handle: Arc<FunctionHandle>, desired: u64, scale: ScaleSettings) -> Self {
        let current = handle.state_full();
        let p = Self {
            handle,
            state: Mutex::new(Published {
                desired,
                scale,
                found: current.replicas.clone(),
                replicas: current.replicas.clone(),
                draining: BTreeMap::new(),
                canaries: BTreeSet::new(),
                admit_canaries: false,
            }),
        };
        p.publish(&p.lock());
        p
    }

    pub(crate) fn handle(&self) -> &Arc<FunctionHandle> {
        &self.handle
    }

    /// Replicas in rotation now.
    pub(crate) fn replicas(&self) -> Arc<[Arc<Replica>]> {
        self.lock().replicas.clone()
    }

    /// Ready replicas now (`availableReplicas`).
    pub(crate) fn available(&self) -> u64 {
        self.lock().replicas.len() as u64
    }

    /// Sets the autoscaler's settings (parsed from the function's labels); publishes when
    /// they changed.
    pub(crate) fn set_scale(&self, scale: ScaleSettings) {
        let mut s = self.lock();
        if s.scale == scale {
            return;
        }
        s.scale = scale;
        self.publish(&s);
    }

    /// Sets the desired count; publishes when it changed.
    pub(crate) fn set_desired(&self, desired: u64) {
        let mut s = self.lock();
        if s.desired == desired {
            return;
        }
        s.desired = desired;
        self.publish(&s);
    }

    /// Replaces the ready set (already diffed by the caller); draining instances stay out.
    pub(crate) fn set_replicas(&self, replicas: Vec<Arc<Replica>>) {
        let mut s = self.lock();
        s.found = replicas.into();
        s.rotate();
        self.publish(&s);
    }

    /// Takes the instances `ids` out of rotation ahead of their stop: publishes the set
    /// without them, then marks their replicas draining (the order the handshake of
    /// [`crate::dataplane::replica`] needs). Returns those replicas, whose
    /// [`Replica::pending`] the caller waits on. Ids not ready yet are kept out when they
    /// become ready.
    pub(crate) fn drain(&self, ids: &[String]) -> Vec<Arc<Replica>> {
        let mut s = self.lock();
        for id in ids {
            s.draining.entry(id.clone()).or_insert(false);
        }
        s.rotate();
        self.publish(&s);
        let drained: Vec<Arc<Replica>> = s
            .found
            .iter()
            .filter(|r| ids.iter().any(|id| id == r.id()))
            .cloned()
            .collect();
        for r in &drained {
            r.drain();
        }
        drained
    }

    /// Records that the stop of the draining instances `ids` was ordered: each is forgotten
    /// once the catalog no longer lists it ([`Publisher::forget_gone`]).
    pub(crate) fn commit_drain(&self, ids: &[String]) {
        let mut s = self.lock();
        for id in ids {
            if let Some(ordered) = s.draining.get_mut(id) {
                *ordered = true;
            }
        }
    }

    /// Puts the draining instances `ids` back in rotation (their stop was called off).
    pub(crate) fn undrain(&self, ids: &[String]) {
        let mut s = self.lock();
        let before = s.draining.len();
        s.draining.retain(|id, _| !ids.contains(id));
        if s.draining.len() == before {
            return;
        }
        for r in s.found.iter().filter(|r| ids.iter().any(|id| id == r.id())) {
            r.undrain();
        }
        s.rotate();
        self.publish(&s);
    }

    /// Records which listed instances are canaries (the catalog's whole answer); publishes
    /// when that changes the rotation.
    pub(crate) fn set_canaries(&self, listed: &[Instance]) {
        let canaries: BTreeSet<String> = listed
            .iter()
            .filter(|i| i.canary)
            .map(|i| i.id.clone())
            .collect();
        let mut s = self.lock();
        if s.canaries == canaries {
            return;
        }
        s.canaries = canaries;
        s.rotate();
        self.publish(&s);
    }

    /// Puts canaries in rotation (`true`) or keeps them out (`false`, the default).
    pub(crate) fn admit_canaries(&self, admit: bool) {
        let mut s = self.lock();
        if s.admit_canaries == admit {
            return;
        }
        s.admit_canaries = admit;
        s.rotate();
        self.publish(&s);
    }

    /// The ready instances: (canaries, the others), by instance id.
    pub(crate) fn ready_split(&self) -> (Vec<String>, Vec<String>) {
        let s = self.lock();
        s.found
            .iter()
            .map(|r| r.id().to_string())
            .partition(|id| s.canaries.contains(id))
    }

    /// Instance ids now out of rotation ahead of a stop, sorted.
    #[cfg(test)]
    pub(crate) fn draining(&self) -> Vec<String> {
        self.lock().draining.keys().cloned().collect()
    }

    /// Forgets the drained instances whose stop was ordered and that the catalog no longer
    /// lists (`listed` is the catalog's whole answer, ready or not). They leave `found` in the
    /// same step: a set rotated later (a canary admission, another drain) must never put a
    /// replica marked draining back in rotation, where every pick of it would be skipped.
    pub(crate) fn forget_gone(&self, listed: &[Instance]) {
        let mut s = self.lock();
        let mut gone = Vec::new();
        s.draining.retain(|id, ordered| {
            let keep = !*ordered || listed.iter().any(|i| &i.id == id);
            if !keep {
                gone.push(id.clone());
            }
            keep
        });
        if gone.is_empty() {
            return;
        }
        s.found = s
            .found
            .iter()
            .filter(|r| !gone.iter().any(|id| id == r.id()))
            .cloned()
            .collect();
        s.rotate();
        self.publish(&s);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Published> {
        self.state.lock().expect("publisher mutex poisoned")
    }

    fn publish(&self, s: &Published) {
        self.handle.publish(FunctionState {
            replicas: s.replicas.clone(),
            desired: s.desired,
            cold_start_replicas: s.scale.cold_start_replicas(),
            scale: s.scale,
        });
    }
}

// === impl Published ===

impl Published {
    /// Recomputes the replicas in rotation: those found, without the draining ones and,
    /// unless admitted, the canaries.
    fn rotate(&mut self) {
        let hold_canaries = !self.admit_canaries && !self.canaries.is_empty();
        self.replicas = if self.draining.is_empty() && !hold_canaries {
            self.found.clone()
        } else {
            self.found
                .iter()
                .filter(|r| !self.draining.contains_key(r.id()))
                .filter(|r| !hold_canaries || !self.canaries.contains(r.id()))
                .cloned()
                .collect()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consul_ids_name_the_allocation() {
        assert_eq!(
            alloc_of_consul_id(
                "_nomad-task-177160af-26f6-619f-9c9f-5e46d1104395-group-fn-fn-x-http"
            ),
            "177160af-26f6-619f-9c9f-5e46d1104395"
        );
        assert_eq!(alloc_of_consul_id("redis"), "redis");
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_addr("10.0.0.5", 27521),
            Some("10.0.0.5:27521".parse().unwrap())
        );
        assert_eq!(parse_addr("::1", 80), Some("[::1]:80".parse().unwrap()));
        assert_eq!(parse_addr("node.local", 80), None);
        assert_eq!(parse_addr("10.0.0.5", 0), None);
    }

    #[test]
    fn publisher_keeps_desired_and_replicas_together() {
        let (handle, p) = publisher(2);
        assert_eq!(handle.state().desired, 2);
        let r = Replica::new("a", "127.0.0.1:1".parse().unwrap());
        p.set_replicas(vec![r.clone()]);
        p.set_desired(3);
        let st = handle.state_full();
        assert_eq!(st.desired, 3);
        assert!(Arc::ptr_eq(&st.replicas[0], &r));
    }

    /// A publisher for function `f` wanting `desired` replicas, and its handle.
    fn publisher(desired: u64) -> (Arc<FunctionHandle>, Publisher) {
        let key = crate::model::names::FunctionKey::new("f", "").unwrap();
        let handle = Arc::new(FunctionHandle::new(key));
        let p = Publisher::new(handle.clone(), desired, ScaleSettings::default());
        (handle, p)
    }

    fn ids(handle: &FunctionHandle) -> Vec<String> {
        let mut v: Vec<String> = handle
            .state()
            .replicas
            .iter()
            .map(|r| r.id().to_string())
            .collect();
        v.sort();
        v
    }

    fn inst(id: &str, port: u16) -> Instance {
        Instance {
            id: id.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            canary: false,
        }
    }

    #[test]
    fn drained_instances_stay_out_until_undrained_or_gone() {
        let (handle, p) = publisher(3);
        let [a, b, c] = ["a", "b", "c"].map(|id| Replica::new(id, "127.0.0.1:1".parse().unwrap()));
        p.set_replicas(vec![a.clone(), b.clone(), c.clone()]);

        // "d" is not ready yet: it stays out when it becomes ready.
        let drained = p.drain(&["c".into(), "d".into()]);
        assert_eq!(drained.len(), 1);
        assert!(Arc::ptr_eq(&drained[0], &c) && c.is_draining());
        assert_eq!(ids(&handle), ["a", "b"]);
        // Discovery republishes while the catalog still lists them: they stay out.
        let d = Replica::new("d", "127.0.0.1:2".parse().unwrap());
        p.set_replicas(vec![a.clone(), b.clone(), c.clone(), d.clone()]);
        assert_eq!(ids(&handle), ["a", "b"]);

        // The stop was called off for "c": back in rotation, no longer draining.
        p.undrain(&["c".into()]);
        assert!(!c.is_draining());
        assert_eq!(ids(&handle), ["a", "b", "c"]);

        // An ordered stop is forgotten once the catalog no longer lists the instance.
        p.commit_drain(&["d".into()]);
        p.forget_gone(&[inst("a", 1), inst("b", 1), inst("c", 1), inst("d", 2)]);
        assert_eq!(p.draining(), ["d"]);
        p.forget_gone(&[inst("a", 1), inst("b", 1), inst("c", 1)]);
        assert!(p.draining().is_empty());
    }

    #[test]
    fn a_forgotten_drain_never_returns_to_rotation() {
        let (handle, p) = publisher(2);
        let [a, b] = ["a", "b"].map(|id| Replica::new(id, "127.0.0.1:1".parse().unwrap()));
        p.set_replicas(vec![a.clone(), b.clone()]);
        p.drain(&["b".into()]);
        p.commit_drain(&["b".into()]);
        // The catalog drops "b"; before discovery publishes its new ready set, something
        // else rotates the set (here a canary admission): "b", still marked draining, must
        // not come back (a request picking it would only be sent elsewhere, up to its limit).
        p.forget_gone(&[inst("a", 1)]);
        p.admit_canaries(true);
        assert_eq!(ids(&handle), ["a"]);
        assert!(b.is_draining());
    }

    #[test]
    fn canaries_stay_out_until_admitted_or_promoted() {
        let (handle, p) = publisher(2);
        let [old, new] = ["old", "new"].map(|id| Replica::new(id, "127.0.0.1:1".parse().unwrap()));
        let mut canary = inst("new", 1);
        canary.canary = true;
        p.set_canaries(&[inst("old", 1), canary.clone()]);
        p.set_replicas(vec![old.clone(), new.clone()]);
        assert_eq!(ids(&handle), ["old"]);
        assert_eq!(
            p.ready_split(),
            (vec!["new".to_string()], vec!["old".to_string()])
        );
        p.admit_canaries(true);
        assert_eq!(ids(&handle), ["new", "old"]);
        p.admit_canaries(false);
        assert_eq!(ids(&handle), ["old"]);
        // Promoted: Nomad registers it with its plain tags.
        p.set_canaries(&[inst("old", 1), inst("new", 1)]);
        assert_eq!(ids(&handle), ["new", "old"]);
    }
}
