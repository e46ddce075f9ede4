//! The embedded `local` provider: functions run as `faasgate watchdog` child processes.
//!
//! Owns the function records of this machine (persisted by [`store`]) and, per function, one
//! supervisor task ([`supervisor`]) that owns its replica processes ([`instance`]), probes
//! their health ([`health`]) and publishes the ready ones to the data plane's
//! [`Routes`]. Replica output goes to an in-memory log per function ([`logs`]); a replica's
//! first seconds of stderr also to a bounded tail ([`tail`]) for the warning of a crash at start.
//! Its namespaces are kept in `<data_dir>/namespaces.json` (`control::namespaces`); at start
//! the namespaces of restored functions are stored there too.
//!
//! Invariants:
//! - A control operation answers without waiting for processes: deploy and scale publish the
//!   desired count at once, update persists the new spec and starts a rolling replace in the
//!   background; status shows the new values immediately.
//! - Operations on one function are serialised by its `ops` mutex (tokio, held across the
//!   persist); the function table and records sit behind `std` mutexes held for a few
//!   instructions (or one small file write), never across `.await`.
//! - A record is persisted before the change it describes is applied, so a restart brings
//!   back every accepted function with its replica count.
//! - [`Provider::shutdown`] returns only once every process it started has been reaped; the
//!   [`process`] module makes sure none outlives the gateway even when it is killed.

mod health;
mod instance;
mod logs;
mod process;
pub mod replica_secrets;
mod spec;
mod store;
mod supervisor;
mod tail;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use time::format_description::well_known::Rfc3339;
use tokio::task::JoinHandle;

pub use self::replica_secrets::SecretsIsolation;
pub(crate) use self::store::{StoreError, StoredFunction};

use self::replica_secrets::SecretsSetup;
use self::spec::Counts;
use self::store::Store;
use self::supervisor::{spawn_supervisor, Shared, StopMode, SupervisorConfig};
use crate::control::namespaces::{FileBackend, Namespaces};
use crate::control::provider::{LogQuery, LogStream, Provider, ProviderError};
use crate::control::secrets::local::LocalSecretStore;
use crate::control::secrets::{SecretError, SecretFile, SecretStore};
use crate::dataplane::Routes;
use crate::model::names::FunctionKey;
use crate::model::scale::ScaleSettings;
use crate::model::types::{FunctionDeployment, FunctionStatus, ProviderInfo, VersionInfo};

/// How the local provider runs functions.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Function records live under `<data_dir>/functions`.
    pub data_dir: PathBuf,
    /// Program and arguments of the watchdog, e.g. `[current_exe, "watchdog"]`.
    pub watchdog_command: Vec<OsString>,
    /// Bound on waiting for a stopped replica's in-flight requests.
    pub drain_timeout: Duration,
    /// How replicas get their function's secrets (`replica_secrets`).
    pub secrets_isolation: SecretsIsolation,
}

/// The embedded provider; see the module doc.
pub struct LocalProvider {
    routes: Arc<Routes>,
    store: Store,
    /// Secrets under `<data_dir>/secrets`; replicas get copies (`replica_secrets`).
    secrets: LocalSecretStore,
    cfg: Arc<SupervisorConfig>,
    /// The gateway's `HOME`, read once at start: the one variable of the gateway's that
    /// replicas get (see `spec`'s module doc for their whole environment).
    replica_home: Option<OsString>,
    functions: Mutex<BTreeMap<FunctionKey, Arc<Function>>>,
    /// The managed namespaces, in `<data_dir>/namespaces.json` (`control::namespaces`).
    namespaces: Namespaces,
}

/// One live replica process, for diagnostics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    /// Instance name as shown in logs (`<name>-<random>`).
    pub id: String,
    /// Process id (also its process group id).
    pub pid: u32,
}

struct Function {
    shared: Arc<Shared>,
    record: Mutex<Arc<StoredFunction>>,
    /// Serialises update, scale and delete of this function.
    ops: tokio::sync::Mutex<()>,
    deleted: AtomicBool,
    task: Mutex<Option<JoinHandle<()>>>,
}

// === impl LocalProvider ===

impl LocalProvider {
    /// Opens the data dir and starts every persisted function with its persisted replica count.
    pub async fn start(
        opts: LocalOptions,
        routes: Arc<Routes>,
    ) -> Result<Arc<LocalProvider>, ProviderError> {
        if opts.watchdog_command.is_empty() {
            return Err(ProviderError::Backend(
                "local provider: the watchdog command is empty".into(),
            ));
        }
        let store = Store::open(&opts.data_dir).map_err(backend)?;
        let records = store.load_all().map_err(backend)?;
        let secrets = LocalSecretStore::open(&opts.data_dir).map_err(secret_backend)?;
        let setup = SecretsSetup::resolve(
            opts.secrets_isolation,
            &opts.watchdog_command[0],
            &opts.data_dir,
        )
        .map_err(|e| ProviderError::Backend(format!("replica secrets: {e}")))?;
        let namespaces = Namespaces::new(Box::new(FileBackend::open(&opts.data_dir)?));
        // Namespaces holding restored functions stay managed once they are emptied.
        namespaces
            .adopt(records.iter().map(|(k, _)| k.namespace().to_string()))
            .await?;
        let provider = Arc::new(LocalProvider {
            routes,
            store,
            secrets,
            cfg: Arc::new(SupervisorConfig {
                watchdog_command: opts.watchdog_command.into(),
                drain_timeout: opts.drain_timeout,
                secrets: Arc::new(setup),
            }),
            replica_home: std::env::var_os("HOME"),
            functions: Mutex::new(BTreeMap::new()),
            namespaces,
        });
        for (key, record) in records {
            tracing::info!(function = %key, replicas = record.replicas, "restoring function");
            let files = provider.restored_secrets(&key, &record.deployment).await;
            let f = provider.launch(key.clone(), record, files);
            provider.lock_functions().insert(key, f);
        }
        Ok(provider)
    }

    /// Live processes of a function (starting, serving or draining), sorted by instance id;
    /// `None` when the function does not exist.
    pub fn instances(&self, key: &FunctionKey) -> Option<Vec<InstanceInfo>> {
        let f = self.lock_functions().get(key).cloned()?;
        Some(
            f.shared
                .pids()
                .into_iter()
                .map(|(id, pid)| InstanceInfo { id, pid })
                .collect(),
        )
    }

    fn lock_functions(&self) -> std::sync::MutexGuard<'_, BTreeMap<FunctionKey, Arc<Function>>> {
        self.functions
            .lock()
            .expect("function table mutex poisoned")
    }

    fn get(&self, key: &FunctionKey) -> Result<Arc<Function>, ProviderError> {
        self.lock_functions()
            .get(key)
            .cloned()
            .ok_or_else(|| ProviderError::NotFound(key.clone()))
    }

    /// The values of the secrets `d` names, read from its namespace; a missing one is a 400
    /// naming it (faasd's message), so nothing is deployed without its secrets.
    async fn secret_files(
        &self,
        key: &FunctionKey,
        d: &FunctionDeployment,
    ) -> Result<Vec<SecretFile>, ProviderError> {
        let mut names: Vec<&String> = d.secrets.iter().collect();
        names.sort();
        names.dedup();
        let mut files = Vec::with_capacity(names.len());
        for name in names {
            match self.secrets.read(key.namespace(), name).await {
                Ok(value) => files.push(SecretFile {
                    name: name.clone(),
                    value,
                }),
                Err(SecretError::NotFound { .. } | SecretError::InvalidName(_)) => {
                    return Err(ProviderError::Invalid(format!(
                        "unable to find secret: {name}"
                    )))
                }
                Err(e) => return Err(secret_backend(e)),
            }
        }
        Ok(files)
    }

    /// [`LocalProvider::secret_files`] for a function restored at start: a secret deleted
    /// meanwhile is left out with a warning (its replicas start without that file).
    async fn restored_secrets(&self, key: &FunctionKey, d: &FunctionDeployment) -> Vec<SecretFile> {
        let mut files = Vec::new();
        for name in &d.secrets {
            match self.secrets.read(key.namespace(), name).await {
                Ok(value) => files.push(SecretFile {
                    name: name.clone(),
                    value,
                }),
                Err(e) => {
                    tracing::warn!(function = %key, secret = %name, error = %e, "secret of a restored function is unavailable");
                }
            }
        }
        files
    }

    /// Publishes the function to the route table and starts its supervisor.
    fn launch(
        &self,
        key: FunctionKey,
        record: StoredFunction,
        secrets: Vec<SecretFile>,
    ) -> Arc<Function> {
        let handle = self.routes.upsert(&key);
        let shared = Shared::new(
            key,
            handle,
            record.replicas,
            ScaleSettings::from_deployment(&record.deployment),
            spec::replica_spec(&record.deployment, self.replica_home.as_deref(), secrets),
        );
        let task = spawn_supervisor(shared.clone(), self.cfg.clone());
        Arc::new(Function {
            shared,
            record: Mutex::new(Arc::new(record)),
            ops: tokio::sync::Mutex::new(()),
            deleted: AtomicBool::new(false),
            task: Mutex::new(Some(task)),
        })
    }

    fn status_of(&self, f: &Function) -> FunctionStatus {
        let record = f.record();
        let handle = &f.shared.handle;
        spec::status(
            &f.shared.key,
            &record.deployment,
            &record.created_at,
            Counts {
                desired: f.shared.desired(),
                available: f.shared.available(),
                invocations: handle.metrics.codes.total(),
            },
        )
    }
}

impl Drop for LocalProvider {
    /// Without [`Provider::shutdown`], still stops every process (in the background).
    fn drop(&mut self) {
        if let Ok(functions) = self.functions.lock() {
            for f in functions.values() {
                f.shared.stop(StopMode::Now);
            }
        }
    }
}

#[async_trait]
impl Provider for LocalProvider {
    async fn deploy(&self, deployment: FunctionDeployment) -> Result<(), ProviderError> {
        spec::validate(&deployment)?;
        let key = key_of(&deployment)?;
        let replicas = spec::scale_min(&deployment)?;
        let files = self.secret_files(&key, &deployment).await?;
        let created_at = time::OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .map_err(|e| ProviderError::Backend(format!("format createdAt: {e}")))?;
        let record = StoredFunction {
            deployment,
            replicas,
            created_at,
        };
        let mut functions = self.lock_functions();
        if functions.contains_key(&key) {
            return Err(ProviderError::AlreadyExists(key));
        }
        self.store.save(&key, &record).map_err(backend)?;
        let f = self.launch(key.clone(), record, files);
        functions.insert(key, f);
        Ok(())
    }

    async fn update(&self, deployment: FunctionDeployment) -> Result<(), ProviderError> {
        let key = key_of(&deployment)?;
        let f = self.get(&key)?;
        spec::validate(&deployment)?;
        let _ops = f.ops.lock().await;
        if f.deleted.load(Ordering::Acquire) {
            return Err(ProviderError::NotFound(key));
        }
        let files = self.secret_files(&key, &deployment).await?;
        let current = f.record();
        let replica_spec = spec::replica_spec(&deployment, self.replica_home.as_deref(), files);
        let scale = ScaleSettings::from_deployment(&deployment);
        let record = StoredFunction {
            deployment,
            replicas: f.shared.desired(),
            created_at: current.created_at.clone(),
        };
        self.store.save(&key, &record).map_err(backend)?;
        f.set_record(record);
        f.shared.set_spec(replica_spec, scale);
        Ok(())
    }

    async fn delete(&self, key: &FunctionKey) -> Result<(), ProviderError> {
        let f = self.get(key)?;
        let task = {
            let _ops = f.ops.lock().await;
            if f.deleted.swap(true, Ordering::AcqRel) {
                return Err(ProviderError::NotFound(key.clone()));
            }
            if let Err(e) = self.store.remove(key) {
                f.deleted.store(false, Ordering::Release);
                return Err(backend(e));
            }
            {
                let mut functions = self.lock_functions();
                if functions.get(key).is_some_and(|g| Arc::ptr_eq(g, &f)) {
                    functions.remove(key);
                }
                self.routes.remove(key);
            }
            f.shared.stop(StopMode::Drain);
            f.take_task()
        };
        if let Some(task) = task {
            let _ = task.await;
        }
        Ok(())
    }

    async fn scale(&self, key: &FunctionKey, replicas: u64) -> Result<(), ProviderError> {
        let f = self.get(key)?;
        let _ops = f.ops.lock().await;
        if f.deleted.load(Ordering::Acquire) {
            return Err(ProviderError::NotFound(key.clone()));
        }
        let mut record = StoredFunction::clone(&f.record());
        record.replicas = replicas;
        self.store.save(key, &record).map_err(backend)?;
        f.set_record(record);
        f.shared.set_desired(replicas);
        Ok(())
    }

    async fn list(&self, namespace: &str) -> Result<Vec<FunctionStatus>, ProviderError> {
        let functions: Vec<Arc<Function>> = self
            .lock_functions()
            .iter()
            .filter(|(k, _)| k.namespace() == namespace)
            .map(|(_, f)| f.clone())
            .collect();
        let mut out: Vec<FunctionStatus> = functions.iter().map(|f| self.status_of(f)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn status(&self, key: &FunctionKey) -> Result<FunctionStatus, ProviderError> {
        let f = self.get(key)?;
        Ok(self.status_of(&f))
    }

    fn namespace_store(&self) -> Option<&Namespaces> {
        Some(&self.namespaces)
    }

    async fn occupied_namespaces(&self) -> Result<BTreeMap<String, Vec<String>>, ProviderError> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for key in self.lock_functions().keys() {
            out.entry(key.namespace().to_string())
                .or_default()
                .push(key.name().to_string());
        }
        Ok(out)
    }

    async fn logs(&self, query: LogQuery) -> Result<LogStream, ProviderError> {
        let f = self.get(&query.function)?;
        Ok(f.shared.logs.stream(&query))
    }

    fn secrets(&self) -> Option<&dyn SecretStore> {
        Some(&self.secrets)
    }

    /// Rolls every function of `namespace` that reads `name` onto a spec with the new value
    /// (the same rolling replace as an update: new replicas ready before old ones leave).
    async fn secret_updated(&self, namespace: &str, name: &str) -> Result<(), ProviderError> {
        let users: Vec<Arc<Function>> = self
            .lock_functions()
            .iter()
            .filter(|(k, _)| k.namespace() == namespace)
            .map(|(_, f)| f.clone())
            .filter(|f| f.record().deployment.secrets.iter().any(|s| s == name))
            .collect();
        for f in users {
            let _ops = f.ops.lock().await;
            if f.deleted.load(Ordering::Acquire) {
                continue;
            }
            let record = f.record();
            let files = self.secret_files(&f.shared.key, &record.deployment).await?;
            tracing::info!(function = %f.shared.key, secret = %name, "secret updated: rolling replicas");
            f.shared.set_spec(
                spec::replica_spec(&record.deployment, self.replica_home.as_deref(), files),
                ScaleSettings::from_deployment(&record.deployment),
            );
        }
        Ok(())
    }

    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            provider: "faasgate".into(),
            orchestration: "local".into(),
            version: VersionInfo {
                commit_message: String::new(),
                sha: crate::SHA.into(),
                release: crate::RELEASE.into(),
            },
        }
    }

    async fn shutdown(&self) {
        let functions: Vec<Arc<Function>> = self.lock_functions().values().cloned().collect();
        let mut tasks = Vec::new();
        for f in &functions {
            f.shared.stop(StopMode::Now);
            if let Some(task) = f.take_task() {
                tasks.push(task);
            }
        }
        for result in futures_util::future::join_all(tasks).await {
            if let Err(e) = result {
                tracing::error!(error = %e, "function supervisor failed during shutdown");
            }
        }
    }
}

// === impl Function ===

impl Function {
    fn record(&self) -> Arc<StoredFunction> {
        self.record.lock().expect("record mutex poisoned").clone()
    }

    fn set_record(&self, record: StoredFunction) {
        *self.record.lock().expect("record mutex poisoned") = Arc::new(record);
    }

    fn take_task(&self) -> Option<JoinHandle<()>> {
        self.task.lock().expect("task mutex poisoned").take()
    }
}

fn key_of(d: &FunctionDeployment) -> Result<FunctionKey, ProviderError> {
    FunctionKey::new(&d.service, &d.namespace).map_err(|e| ProviderError::Invalid(e.to_string()))
}

fn backend(e: StoreError) -> ProviderError {
    ProviderError::Backend(e.to_string())
}

fn secret_backend(e: SecretError) -> ProviderError {
    ProviderError::Backend(e.to_string())
}
