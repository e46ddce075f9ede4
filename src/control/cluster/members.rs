//! Who else is in the cluster: a static list (`--peers`), or the instances of the gateways'
//! own service in the catalog `--discovery` names (Nomad's, or Consul's passing instances),
//! watched with blocking queries through the same `discovery::Catalog` replica discovery
//! reads.
//!
//! A member is named by the `host:port` the leader pulls its demand from. This gateway is
//! left out: by its allocation ID (`NOMAD_ALLOC_ID`, set by Nomad in every task; the
//! catalog's instance IDs are allocation IDs in both catalogs) and by its advertised address
//! (which is what tells it apart when it runs outside an allocation).
//!
//! Invariant: the list published is sorted and free of duplicates; the first one is always
//! published (the election waits for it), later ones only when they change, so a blocking
//! query that wakes for another service's change costs nothing downstream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::client::QueryOptions;
use crate::discovery::watch::IndexTracker;
use crate::discovery::{Catalog, Instance};

/// Where members come from.
pub(crate) enum Membership {
    /// A fixed list (`--peers`).
    Static(Vec<String>),
    /// The instances of `service` in a service catalog.
    Catalog {
        catalog: Arc<Catalog>,
        service: String,
        /// This gateway's allocation, left out of the list.
        self_alloc: Option<String>,
        /// This gateway's address, left out of the list.
        self_addr: Option<SocketAddr>,
    },
}

/// How long a catalog query blocks, and the pause after a failed one.
const WAIT: Duration = Duration::from_secs(60);
const RETRY: Duration = Duration::from_secs(2);

/// Publishes the members through `tx` until the receivers are gone.
pub(crate) async fn watch_members(membership: Membership, tx: watch::Sender<Vec<String>>) {
    let (catalog, service, self_alloc, self_addr) = match membership {
        Membership::Static(mut peers) => {
            peers.sort();
            peers.dedup();
            tx.send_replace(peers);
            tx.closed().await;
            return;
        }
        Membership::Catalog {
            catalog,
            service,
            self_alloc,
            self_addr,
        } => (catalog, service, self_alloc, self_addr),
    };
    let mut index = IndexTracker::default();
    let mut first = true;
    loop {
        let q = QueryOptions::blocking(index.last, WAIT);
        let answer = tokio::select! {
            a = catalog.instances(&service, q) => a,
            () = tx.closed() => return,
        };
        match answer {
            Ok(answer) => {
                index.observe(answer.index);
                let mut members = others(&answer.value, self_alloc.as_deref(), self_addr);
                tx.send_if_modified(|cur| {
                    // The first answer is always published: the election waits for it.
                    let changed = *cur != members || std::mem::take(&mut first);
                    if changed {
                        tracing::info!(members = ?members, catalog = catalog.name(), "cluster members");
                        *cur = std::mem::take(&mut members);
                    }
                    changed
                });
            }
            Err(e) => {
                tracing::warn!(service, catalog = catalog.name(), error = %e,
                    "cluster members: catalog query failed");
                tokio::select! {
                    () = tokio::time::sleep(RETRY) => {}
                    () = tx.closed() => return,
                }
            }
        }
    }
}

/// The members among a catalog's `instances`: every one but this gateway's, as `host:port`,
/// sorted and without duplicates.
fn others(
    instances: &[Instance],
    self_alloc: Option<&str>,
    self_addr: Option<SocketAddr>,
) -> Vec<String> {
    let mut members: Vec<String> = instances
        .iter()
        .filter(|i| self_alloc != Some(i.id.as_str()) && self_addr != Some(i.addr))
        .map(|i| i.addr.to_string())
        .collect();
    members.sort();
    members.dedup();
    members
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, addr: &str) -> Instance {
        Instance {
            id: id.into(),
            addr: addr.parse().unwrap(),
            canary: false,
        }
    }

    #[test]
    fn self_is_left_out_by_allocation_or_address() {
        let list = [
            inst("a", "10.0.0.2:8080"),
            inst("b", "10.0.0.1:8080"),
            inst("c", "[fd00::3]:8080"),
        ];
        assert_eq!(
            others(&list, Some("a"), None),
            ["10.0.0.1:8080", "[fd00::3]:8080"]
        );
        let me = "10.0.0.1:8080".parse().ok();
        assert_eq!(others(&list, None, me), ["10.0.0.2:8080", "[fd00::3]:8080"]);
        assert_eq!(others(&list, Some("zzz"), None).len(), 3);
    }
}
