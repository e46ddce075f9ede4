//! The leader lock as a Nomad Variable lock (Nomad 1.7+): [`LockBackend`] over
//! [`NomadClient`]'s `?lock-acquire`, `?lock-renew` and `?lock-release`.
//!
//! The variable holds nothing but the lock (an acquire empties it). The gateways' Nomad token
//! needs `write` on its path: a task's workload identity may only read `nomad/jobs/<job>`
//! and three paths below it (docs/nomad.md gives the policy).

use std::sync::Arc;
use std::time::Duration;

use crate::client::nomad::{LockOutcome, RenewOutcome, VarPath};
use crate::client::{ClientError, NomadClient};
use crate::control::cluster::lease::{Acquired, LockBackend, Renewed};

pub(crate) struct NomadLock {
    client: Arc<NomadClient>,
    path: VarPath,
    ttl: Duration,
    lock_delay: Duration,
}

impl NomadLock {
    pub(crate) fn new(
        client: Arc<NomadClient>,
        path: VarPath,
        ttl: Duration,
        lock_delay: Duration,
    ) -> Self {
        Self {
            client,
            path,
            ttl,
            lock_delay,
        }
    }
}

impl LockBackend for NomadLock {
    type Error = ClientError;

    async fn acquire(&self) -> Result<Acquired, ClientError> {
        match self
            .client
            .var_lock_acquire(&self.path, self.ttl, self.lock_delay)
            .await
        {
            Ok(LockOutcome::Acquired { lock, .. }) => Ok(Acquired::Won { id: lock.id }),
            Ok(LockOutcome::Held) => Ok(Acquired::Held),
            Err(e) => {
                if e.status() == Some(403) {
                    tracing::error!(
                        path = self.path.as_str(),
                        "the Nomad token may not write the cluster lock's variable: \
                         grant it `write` on this path (docs/nomad.md)"
                    );
                }
                Err(e)
            }
        }
    }

    async fn renew(&self, id: &str) -> Result<Renewed, ClientError> {
        match self.client.var_lock_renew(&self.path, id).await? {
            RenewOutcome::Renewed(_) => Ok(Renewed::Kept),
            RenewOutcome::Lost { status, reason } => {
                tracing::warn!(
                    status,
                    reason,
                    "cluster lock: the server no longer holds it for us"
                );
                Ok(Renewed::Lost)
            }
        }
    }

    async fn release(&self, id: &str) -> Result<(), ClientError> {
        self.client
            .var_lock_release(&self.path, id)
            .await
            .map(|_| ())
    }
}
