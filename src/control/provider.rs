//! The provider contract: what the API asks of whatever runs functions (local processes or
//! Nomad jobs). Providers own function specs and replicas; they publish ready replica sets to
//! the data plane ([`crate::dataplane::Routes`]) and never sit on the request path.

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use thiserror::Error;

use std::collections::BTreeMap;

use crate::control::namespaces::{functions_left, NamespaceError, Namespaces};
use crate::control::secrets::SecretStore;
use crate::model::names::{FunctionKey, DEFAULT_NAMESPACE};
use crate::model::types::{
    FunctionDeployment, FunctionNamespace, FunctionStatus, LogMessage, ProviderInfo,
};

/// Errors a provider reports; the API maps each to one HTTP status in `api::error`.
#[derive(Debug, Error)]
pub enum ProviderError {
    /// The function does not exist (404).
    #[error("function {0} not found")]
    NotFound(FunctionKey),
    /// The function exists already (POST of an existing function: 409 here).
    #[error("function {0} already exists")]
    AlreadyExists(FunctionKey),
    /// The request is invalid for this provider; the message names the field (400).
    #[error("{0}")]
    Invalid(String),
    /// The provider's backend failed (500), e.g. a process could not be spawned.
    #[error("{0}")]
    Backend(String),
    /// The backend answered with an error status and message (passed through, e.g. Nomad).
    #[error("{message}")]
    Upstream { status: u16, message: String },
    /// A namespace operation was refused or failed (`control::namespaces`).
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
}

/// What [`Provider::scale_if`] answers when its decision no longer holds.
pub(crate) fn superseded(key: &FunctionKey, replicas: u64) -> ProviderError {
    ProviderError::Upstream {
        status: 409,
        message: format!("scale of {key} to {replicas} dropped: the decision no longer holds"),
    }
}

/// The provider's namespace records, or the error of a provider that keeps none.
fn store_or_refuse(store: Option<&Namespaces>) -> Result<&Namespaces, ProviderError> {
    store.ok_or_else(|| {
        NamespaceError::Backend("this provider keeps no namespace records".into()).into()
    })
}

/// Query of `GET /system/logs`.
#[derive(Debug, Clone)]
pub struct LogQuery {
    pub function: FunctionKey,
    /// Only this replica, when set.
    pub instance: Option<String>,
    /// Only the last `tail` lines of history (None = all that is kept).
    pub tail: Option<usize>,
    /// Only lines at or after this time.
    pub since: Option<time::OffsetDateTime>,
    /// Keep the stream open for new lines.
    pub follow: bool,
}

pub type LogStream = BoxStream<'static, LogMessage>;

#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Creates a function and starts its initial replicas (`com.openfaas.scale.min`, default 1)
    /// without waiting for them to become ready.
    async fn deploy(&self, spec: FunctionDeployment) -> Result<(), ProviderError>;
    /// Replaces a function's spec, keeping its replica count; `NotFound` when absent.
    async fn update(&self, spec: FunctionDeployment) -> Result<(), ProviderError>;
    /// Stops every replica (draining in-flight requests) and forgets the function.
    async fn delete(&self, key: &FunctionKey) -> Result<(), ProviderError>;
    /// Sets the desired replica count (0 allowed). `replicas` reads back the new value at once.
    async fn scale(&self, key: &FunctionKey, replicas: u64) -> Result<(), ProviderError>;
    /// [`Provider::scale`] for a decision that holds only while `valid()` is true (the
    /// scaler's term as its cluster's leader). A provider that waits before the call that
    /// sets the count (a drain ahead of a scale-down, another scale of the function) checks
    /// `valid()` again right before that call and, when it no longer holds, makes no call and
    /// answers an `Upstream` 409: a leader whose term ended meanwhile must not undo what a newer
    /// leader set.
    async fn scale_if(
        &self,
        key: &FunctionKey,
        replicas: u64,
        valid: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<(), ProviderError> {
        if !valid() {
            return Err(superseded(key, replicas));
        }
        self.scale(key, replicas).await
    }
    /// Functions of one namespace, sorted by name.
    async fn list(&self, namespace: &str) -> Result<Vec<FunctionStatus>, ProviderError>;
    async fn status(&self, key: &FunctionKey) -> Result<FunctionStatus, ProviderError>;
    /// The namespace records this provider keeps (`None`: it keeps none, and its set is the
    /// default plus the namespaces holding functions; create and delete are refused).
    fn namespace_store(&self) -> Option<&Namespaces> {
        None
    }
    /// The namespaces that hold functions, each with its functions' names.
    async fn occupied_namespaces(&self) -> Result<BTreeMap<String, Vec<String>>, ProviderError> {
        Ok(BTreeMap::new())
    }
    /// The managed set (`control::namespaces`): the default first, then the others sorted.
    /// `/system/namespaces` lists exactly this; anything else is not a valid namespace.
    async fn namespaces(&self) -> Result<Vec<String>, ProviderError> {
        let occupied = self.occupied_namespaces().await?;
        match self.namespace_store() {
            Some(store) => Ok(store.names(occupied.into_keys()).await?),
            None => {
                let mut out = vec![DEFAULT_NAMESPACE.to_string()];
                out.extend(occupied.into_keys().filter(|n| n != DEFAULT_NAMESPACE));
                Ok(out)
            }
        }
    }
    /// Whether `name` is in the managed set (cheaper than [`Provider::namespaces`]: the
    /// default answers at once, a stored record with one read).
    async fn namespace_exists(&self, name: &str) -> Result<bool, ProviderError> {
        if name == DEFAULT_NAMESPACE {
            return Ok(true);
        }
        if let Some(store) = self.namespace_store() {
            if store.is_stored(name).await? {
                return Ok(true);
            }
        }
        Ok(self.occupied_namespaces().await?.contains_key(name))
    }
    /// One namespace's record; `NotFound` outside the set.
    async fn namespace(&self, name: &str) -> Result<FunctionNamespace, ProviderError> {
        let occupied = self.occupied_namespaces().await?;
        let in_use = occupied.contains_key(name);
        match self.namespace_store() {
            Some(store) => Ok(store.get(name, in_use).await?),
            None if in_use || name == DEFAULT_NAMESPACE => Ok(Namespaces::implicit(name)),
            None => Err(NamespaceError::NotFound(name.to_string()).into()),
        }
    }
    /// Adds a namespace to the set (the caller has checked its name and marker).
    async fn create_namespace(&self, ns: FunctionNamespace) -> Result<(), ProviderError> {
        let in_use = self.occupied_namespaces().await?.contains_key(&ns.name);
        Ok(store_or_refuse(self.namespace_store())?
            .create(&ns, in_use)
            .await?)
    }
    /// Replaces a namespace's labels and annotations.
    async fn update_namespace(&self, ns: FunctionNamespace) -> Result<(), ProviderError> {
        let in_use = self.occupied_namespaces().await?.contains_key(&ns.name);
        Ok(store_or_refuse(self.namespace_store())?
            .update(&ns, in_use)
            .await?)
    }
    /// Takes a namespace out of the set, refused while it holds functions or anything
    /// `left_elsewhere` names (what other stores, e.g. secrets, still hold in it).
    async fn delete_namespace(
        &self,
        name: &str,
        left_elsewhere: Vec<String>,
    ) -> Result<(), ProviderError> {
        let occupied = self.occupied_namespaces().await?;
        let mut left = functions_left(occupied.get(name).into_iter().flatten().map(String::as_str));
        left.extend(left_elsewhere);
        Ok(store_or_refuse(self.namespace_store())?
            .delete(name, &left)
            .await?)
    }

    async fn logs(&self, query: LogQuery) -> Result<LogStream, ProviderError>;
    fn info(&self) -> ProviderInfo;
    /// Another gateway of the cluster is about to lower `key`'s count and Nomad will stop
    /// `allocations`: take them out of rotation here and wait, at most `bound`, until this
    /// gateway's requests on them are done. Returns the requests still in flight then.
    /// (`control::cluster::drain`; a provider whose gateway is always alone has none.)
    async fn drain_for_peer(
        &self,
        _key: &FunctionKey,
        _allocations: &[String],
        _bound: std::time::Duration,
    ) -> Result<u64, ProviderError> {
        Ok(0)
    }
    /// The scale call `allocations` were drained for (by [`Provider::drain_for_peer`]) will
    /// not happen: put them back in rotation.
    fn cancel_peer_drain(&self, _key: &FunctionKey, _allocations: &[String]) {}
    /// Where this provider keeps function secrets (`/system/secrets`); None: the API answers
    /// 501. Deploy and update check that every secret a function names exists (400
    /// `unable to find secret: <name>` otherwise).
    fn secrets(&self) -> Option<&dyn SecretStore> {
        None
    }
    /// `name` in `namespace` has a new value: make the functions that read it see it (the
    /// local provider rolls their replicas). Called by the API after a successful update.
    async fn secret_updated(&self, _namespace: &str, _name: &str) -> Result<(), ProviderError> {
        Ok(())
    }
    /// Stops everything the provider started (gateway shutdown). Must leave no process behind.
    async fn shutdown(&self);
}
