//! Who else is in the cluster: a static list (`--peers`), or the instances of the gateways'
//! own service in Nomad's catalog, watched with blocking queries.
//!
//! A member is named by the `host:port` the leader pulls its demand from. This gateway is
//! left out: in the catalog, by its allocation ID (`NOMAD_ALLOC_ID`, set by Nomad in every
//! task) or, when that is not set, by its advertised address.
//!
//! Invariant: the list published is sorted and free of duplicates; the first one is always
//! published (the election waits for it), later ones only when they change, so a blocking
//! query that wakes for another service's change costs nothing downstream.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::client::{NomadClient, QueryOptions};
use crate::discovery::watch::IndexTracker;

/// Where members come from.
pub enum Membership {
    /// A fixed list (`--peers`).
    Static(Vec<String>),
    /// The instances of `service` in Nomad's service catalog.
    NomadCatalog {
        client: Arc<NomadClient>,
        service: String,
        /// This gateway's allocation, left out of the list.
        self_alloc: Option<String>,
        /// This gateway's address, left out of the list (when its allocation is unknown).
        self_addr: Option<String>,
    },
}

/// How long a catalog query blocks, and the pause after a failed one.
const WAIT: Duration = Duration::from_secs(60);
const RETRY: Duration = Duration::from_secs(2);

/// Publishes the members through `tx` until the receivers are gone.
pub async fn watch_members(membership: Membership, tx: watch::Sender<Vec<String>>) {
    match membership {
        Membership::Static(mut peers) => {
            peers.sort();
            peers.dedup();
            tx.send_replace(peers);
            tx.closed().await;
        }
        Membership::NomadCatalog {
            client,
            service,
            self_alloc,
            self_addr,
        } => {
            let mut index = IndexTracker::default();
            let mut first = true;
            loop {
                let q = QueryOptions::blocking(index.last, WAIT);
                let answer = tokio::select! {
                    a = client.service(&service, q) => a,
                    () = tx.closed() => return,
                };
                match answer {
                    Ok(answer) => {
                        index.observe(answer.index);
                        let mut members: Vec<String> = answer
                            .value
                            .iter()
                            .filter(|r| self_alloc.as_deref() != Some(r.alloc_id.as_str()))
                            .map(|r| format!("{}:{}", r.address, r.port))
                            .filter(|a| self_addr.as_deref() != Some(a.as_str()))
                            .collect();
                        members.sort();
                        members.dedup();
                        tx.send_if_modified(|cur| {
                            // The first answer is always published: the election waits for it.
                            let changed = *cur != members || std::mem::take(&mut first);
                            if changed {
                                tracing::info!(members = ?members, "cluster members");
                                *cur = std::mem::take(&mut members);
                            }
                            changed
                        });
                    }
                    Err(e) => {
                        tracing::warn!(service, error = %e, "cluster members: catalog query failed");
                        tokio::select! {
                            () = tokio::time::sleep(RETRY) => {}
                            () = tx.closed() => return,
                        }
                    }
                }
            }
        }
    }
}
