//! The namespaces a gateway manages (OpenFaaS `/system/namespaces` and
//! `/system/namespace/{name}`), and where their records live.
//!
//! The managed set is: the default namespace (`openfaas-fn`, always there), every stored
//! namespace, and every namespace that holds a function (so functions deployed before
//! namespaces were managed, restored local records or jobs already in Nomad, stay
//! reachable; providers also store those at start, [`Namespaces::adopt`]). A namespace
//! outside the set is "not valid" to the API: deploys, updates, scales, reads and logs in it
//! answer 400 and change nothing (`api::namespaces::require`).
//!
//! A record is `{name, labels, annotations}` as the API carries it. Stored by a
//! [`NamespaceBackend`]: [`FileBackend`] (the local provider: `<data_dir>/namespaces.json`,
//! mode 0600, replaced atomically) or [`VariablesBackend`] (the Nomad provider: one Nomad
//! Variable per namespace at `faasgate/namespaces/<name>`, items `labels` and `annotations`
//! as JSON text, written with check-and-set so two gateways never overwrite each other's
//! change unseen). Variables rather than Nomad namespaces: creating Nomad namespaces needs a
//! management token (and is an Enterprise-era ACL concern), while all function jobs already
//! share the one Nomad namespace the gateway is configured with (see
//! `control::nomad::provider`); a Variable needs only `variables` write on that path.
//!
//! Rules (OpenFaaS' faasd `pkg/provider/handlers/mutate_namespaces.go`, containerd's
//! namespace store):
//! - create of a name in the set is 409 `namespace <n> already exists`;
//! - get/update/delete of a name outside the set is 404 `namespace <n> not found`; an update
//!   replaces labels and annotations whole (labels not in the body are cleared);
//! - delete of a namespace that still holds something is refused, 409 `namespace <n> is not
//!   empty: it still holds functions a, b` (faasd passes containerd's refusal of a non-empty
//!   namespace on, `must be empty, but it still has containers`, as a 500; Kubernetes would
//!   cascade. Refusing keeps every replica and job under the caller's control). The caller
//!   passes what it knows is left: the provider its functions, the API whatever other stores
//!   hold in the namespace (secrets);
//! - the default namespace cannot be deleted: 403 `namespace openfaas-fn may not be deleted:
//!   it is the default namespace` (as Kubernetes forbids deleting its `default` namespace);
//!   it can be read and its labels updated like any other.
//!
//! Concurrency: the file backend checks and writes under one mutex. Across gateways (Nomad),
//! create uses `cas=0` and update/delete the `ModifyIndex` they read; a lost race answers
//! 409 `namespace <n> changed meanwhile` and writes nothing. A deploy racing the delete of
//! its namespace may leave a function in it; that namespace then stays in the set (it holds
//! a function) and is deleted once emptied.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use thiserror::Error;

use crate::client::nomad::{DeleteOutcome, PutOutcome, VarPath};
use crate::client::wire::variables::Items;
use crate::client::{NomadClient, QueryOptions};
use crate::model::names::DEFAULT_NAMESPACE;
use crate::model::types::FunctionNamespace;

/// Where the Nomad provider keeps namespace records (one Variable per namespace under it).
pub const NAMESPACE_VAR_PREFIX: &str = "faasgate/namespaces/";
/// The local provider's namespace file, under the data dir.
pub const NAMESPACE_FILE: &str = "namespaces.json";
/// Variable item holding the labels (JSON object text).
const LABELS_ITEM: &str = "labels";
/// Variable item holding the annotations (JSON object text).
const ANNOTATIONS_ITEM: &str = "annotations";

#[derive(Debug, Error)]
pub enum NamespaceError {
    /// Not in the managed set (404).
    #[error("namespace {0} not found")]
    NotFound(String),
    /// Create of a name in the set (409).
    #[error("namespace {0} already exists")]
    AlreadyExists(String),
    /// Delete of a namespace that still holds something (409); `left` says what.
    #[error("namespace {name} is not empty: it still holds {left}")]
    NotEmpty { name: String, left: String },
    /// Delete of the default namespace (403).
    #[error("namespace {0} may not be deleted: it is the default namespace")]
    Default(String),
    /// Another writer changed the record between our read and our write (409).
    #[error("namespace {0} changed meanwhile; read it again and retry")]
    Changed(String),
    /// The store failed (500).
    #[error("namespace store: {0}")]
    Backend(String),
}

/// Persistence of namespace records; see the module doc.
#[async_trait]
pub trait NamespaceBackend: Send + Sync + 'static {
    /// Every stored record, by name.
    async fn load(&self) -> Result<BTreeMap<String, FunctionNamespace>, NamespaceError>;
    /// The names of the stored records (a backend may answer without reading each record).
    async fn names(&self) -> Result<Vec<String>, NamespaceError> {
        Ok(self.load().await?.into_keys().collect())
    }
    /// The stored record of `name`, if any.
    async fn get(&self, name: &str) -> Result<Option<FunctionNamespace>, NamespaceError>;
    /// Stores `ns` if no record has its name, else `AlreadyExists`.
    async fn create(&self, ns: &FunctionNamespace) -> Result<(), NamespaceError>;
    /// Stores `ns` over the record of its name, or as a new one.
    async fn put(&self, ns: &FunctionNamespace) -> Result<(), NamespaceError>;
    /// Forgets the record of `name`; `false` when there was none.
    async fn remove(&self, name: &str) -> Result<bool, NamespaceError>;
}

/// The managed set of one provider: its backend, and the rules of the module doc.
pub struct Namespaces {
    backend: Box<dyn NamespaceBackend>,
}

/// [`NamespaceBackend`] in one JSON file (local provider).
pub struct FileBackend {
    path: PathBuf,
    records: Mutex<BTreeMap<String, FunctionNamespace>>,
}

/// [`NamespaceBackend`] in Nomad Variables (Nomad provider).
pub struct VariablesBackend {
    nomad: Arc<NomadClient>,
}

// === impl Namespaces ===

impl Namespaces {
    pub fn new(backend: Box<dyn NamespaceBackend>) -> Self {
        Self { backend }
    }

    /// The record a namespace in the set has when none is stored (the default, or one that
    /// holds functions): marked `openfaas: "1"`.
    pub fn implicit(name: &str) -> FunctionNamespace {
        FunctionNamespace {
            name: name.to_string(),
            labels: [(FunctionNamespace::MARKER.to_string(), "1".to_string())].into(),
            annotations: Default::default(),
        }
    }

    /// The managed set: the default first, then the others sorted. `in_use`: the
    /// namespaces holding functions.
    pub async fn names(
        &self,
        in_use: impl IntoIterator<Item = String>,
    ) -> Result<Vec<String>, NamespaceError> {
        let mut set: std::collections::BTreeSet<String> =
            self.backend.names().await?.into_iter().collect();
        set.extend(in_use);
        set.remove(DEFAULT_NAMESPACE);
        let mut out = vec![DEFAULT_NAMESPACE.to_string()];
        out.extend(set);
        Ok(out)
    }

    /// The record of `name`; `in_use`: whether it holds functions.
    pub async fn get(&self, name: &str, in_use: bool) -> Result<FunctionNamespace, NamespaceError> {
        match self.backend.get(name).await? {
            Some(ns) => Ok(ns),
            None if in_use || name == DEFAULT_NAMESPACE => Ok(Self::implicit(name)),
            None => Err(NamespaceError::NotFound(name.to_string())),
        }
    }

    /// Whether a record of `name` is stored (the default and namespaces holding functions
    /// are in the set without one).
    pub async fn is_stored(&self, name: &str) -> Result<bool, NamespaceError> {
        Ok(self.backend.get(name).await?.is_some())
    }

    /// Adds `ns` to the set; `in_use`: whether its name holds functions already.
    pub async fn create(&self, ns: &FunctionNamespace, in_use: bool) -> Result<(), NamespaceError> {
        if in_use || ns.name == DEFAULT_NAMESPACE {
            return Err(NamespaceError::AlreadyExists(ns.name.clone()));
        }
        self.backend.create(ns).await
    }

    /// Replaces the labels and annotations of a namespace in the set.
    pub async fn update(&self, ns: &FunctionNamespace, in_use: bool) -> Result<(), NamespaceError> {
        self.get(&ns.name, in_use).await?;
        self.backend.put(ns).await
    }

    /// Takes `name` out of the set. `left`: what still lives in it, each item phrased
    /// ("functions a, b"); any makes it a `NotEmpty` refusal.
    pub async fn delete(&self, name: &str, left: &[String]) -> Result<(), NamespaceError> {
        if name == DEFAULT_NAMESPACE {
            return Err(NamespaceError::Default(name.to_string()));
        }
        if !left.is_empty() {
            return Err(NamespaceError::NotEmpty {
                name: name.to_string(),
                left: left.join("; "),
            });
        }
        if self.backend.remove(name).await? {
            Ok(())
        } else {
            Err(NamespaceError::NotFound(name.to_string()))
        }
    }

    /// Stores a record for each of `names` that has none (namespaces found holding functions
    /// at start), so they stay once emptied. The default is never stored.
    pub async fn adopt(
        &self,
        names: impl IntoIterator<Item = String>,
    ) -> Result<(), NamespaceError> {
        let stored: std::collections::BTreeSet<String> =
            self.backend.names().await?.into_iter().collect();
        for name in names {
            if name == DEFAULT_NAMESPACE || stored.contains(&name) {
                continue;
            }
            match self.backend.create(&Self::implicit(&name)).await {
                Ok(()) => {
                    tracing::info!(namespace = %name, "namespace adopted: it holds functions")
                }
                Err(NamespaceError::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// What a function list names as left in a namespace: `["functions a, b"]`, or nothing.
pub fn functions_left<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let names: Vec<&str> = names.into_iter().collect();
    if names.is_empty() {
        Vec::new()
    } else {
        vec![format!("functions {}", names.join(", "))]
    }
}

// === impl FileBackend ===

impl FileBackend {
    /// Opens `<data_dir>/namespaces.json` (absent: no records). An unreadable file is an
    /// error: starting without it would forget namespaces and then refuse their functions.
    pub fn open(data_dir: &Path) -> Result<Self, NamespaceError> {
        let path = data_dir.join(NAMESPACE_FILE);
        let records = match fs::read(&path) {
            Ok(body) => {
                let list: Vec<FunctionNamespace> = serde_json::from_slice(&body).map_err(|e| {
                    NamespaceError::Backend(format!("read {}: {e}", path.display()))
                })?;
                list.into_iter().map(|n| (n.name.clone(), n)).collect()
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(NamespaceError::Backend(format!(
                    "read {}: {e}",
                    path.display()
                )))
            }
        };
        Ok(Self {
            path,
            records: Mutex::new(records),
        })
    }

    /// Applies `change` to a copy of the records and, when it says so, writes the copy
    /// (atomically, 0600) before it becomes the records: a failed write changes nothing.
    fn apply<T>(
        &self,
        change: impl FnOnce(
            &mut BTreeMap<String, FunctionNamespace>,
        ) -> Result<(bool, T), NamespaceError>,
    ) -> Result<T, NamespaceError> {
        let mut records = self
            .records
            .lock()
            .expect("namespace records mutex poisoned");
        let mut next = records.clone();
        let (write, out) = change(&mut next)?;
        if write {
            self.write(&next)?;
            *records = next;
        }
        Ok(out)
    }

    fn write(&self, records: &BTreeMap<String, FunctionNamespace>) -> Result<(), NamespaceError> {
        let list: Vec<&FunctionNamespace> = records.values().collect();
        let body = serde_json::to_vec_pretty(&list)
            .map_err(|e| NamespaceError::Backend(format!("encode namespaces: {e}")))?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(".{NAMESPACE_FILE}.tmp-{:08x}", fastrand::u32(..)));
        let write = || -> io::Result<()> {
            let mut opts = fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            // The rename is durable once the directory is.
            fs::File::open(dir).and_then(|d| d.sync_all())
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            NamespaceError::Backend(format!("write {}: {e}", self.path.display()))
        })
    }
}

#[async_trait]
impl NamespaceBackend for FileBackend {
    async fn load(&self) -> Result<BTreeMap<String, FunctionNamespace>, NamespaceError> {
        Ok(self
            .records
            .lock()
            .expect("namespace records mutex poisoned")
            .clone())
    }

    async fn get(&self, name: &str) -> Result<Option<FunctionNamespace>, NamespaceError> {
        Ok(self
            .records
            .lock()
            .expect("namespace records mutex poisoned")
            .get(name)
            .cloned())
    }

    async fn create(&self, ns: &FunctionNamespace) -> Result<(), NamespaceError> {
        self.apply(|r| {
            if r.contains_key(&ns.name) {
                return Err(NamespaceError::AlreadyExists(ns.name.clone()));
            }
            r.insert(ns.name.clone(), ns.clone());
            Ok((true, ()))
        })
    }

    async fn put(&self, ns: &FunctionNamespace) -> Result<(), NamespaceError> {
        self.apply(|r| {
            let changed = r.get(&ns.name) != Some(ns);
            r.insert(ns.name.clone(), ns.clone());
            Ok((changed, ()))
        })
    }

    async fn remove(&self, name: &str) -> Result<bool, NamespaceError> {
        self.apply(|r| {
            let found = r.remove(name).is_some();
            Ok((found, found))
        })
    }
}

// === impl VariablesBackend ===

impl VariablesBackend {
    pub fn new(nomad: Arc<NomadClient>) -> Self {
        Self { nomad }
    }

    fn path(name: &str) -> Result<VarPath, NamespaceError> {
        VarPath::new(format!("{NAMESPACE_VAR_PREFIX}{name}"))
            .map_err(|e| NamespaceError::Backend(e.to_string()))
    }

    fn items(ns: &FunctionNamespace) -> Result<Items, NamespaceError> {
        let enc = |m| {
            serde_json::to_string(m)
                .map_err(|e| NamespaceError::Backend(format!("encode namespace {}: {e}", ns.name)))
        };
        Ok([
            (LABELS_ITEM.to_string(), enc(&ns.labels)?),
            (ANNOTATIONS_ITEM.to_string(), enc(&ns.annotations)?),
        ]
        .into())
    }

    fn record(name: &str, items: &Items) -> FunctionNamespace {
        let dec = |k: &str| {
            items
                .get(k)
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or_default()
        };
        FunctionNamespace {
            name: name.to_string(),
            labels: dec(LABELS_ITEM),
            annotations: dec(ANNOTATIONS_ITEM),
        }
    }
}

fn nomad_err(e: crate::client::ClientError) -> NamespaceError {
    NamespaceError::Backend(format!("nomad: {e}"))
}

#[async_trait]
impl NamespaceBackend for VariablesBackend {
    /// One list (names), then one read per namespace (items).
    async fn load(&self) -> Result<BTreeMap<String, FunctionNamespace>, NamespaceError> {
        let mut out = BTreeMap::new();
        for name in self.names().await? {
            // Deleted between the list and the read: not in the set any more.
            if let Some(ns) = self.get(&name).await? {
                out.insert(name, ns);
            }
        }
        Ok(out)
    }

    /// One list call: the variables under the prefix, one path segment deep.
    async fn names(&self) -> Result<Vec<String>, NamespaceError> {
        let list = self
            .nomad
            .var_list(NAMESPACE_VAR_PREFIX, QueryOptions::default())
            .await
            .map_err(nomad_err)?
            .value;
        Ok(list
            .into_iter()
            .filter_map(|m| {
                let name = m.path.strip_prefix(NAMESPACE_VAR_PREFIX)?;
                (!name.is_empty() && !name.contains('/')).then(|| name.to_string())
            })
            .collect())
    }

    async fn get(&self, name: &str) -> Result<Option<FunctionNamespace>, NamespaceError> {
        // A name that is no variable path was never stored.
        let Ok(path) = Self::path(name) else {
            return Ok(None);
        };
        Ok(self
            .nomad
            .var_read(&path)
            .await
            .map_err(nomad_err)?
            .map(|v| Self::record(name, &v.items)))
    }

    async fn create(&self, ns: &FunctionNamespace) -> Result<(), NamespaceError> {
        let path = Self::path(&ns.name)?;
        match self
            .nomad
            .var_put(&path, &Self::items(ns)?, Some(0))
            .await
            .map_err(nomad_err)?
        {
            PutOutcome::Written(_) => Ok(()),
            PutOutcome::Conflict(v) if v.meta.modify_index > 0 => {
                Err(NamespaceError::AlreadyExists(ns.name.clone()))
            }
            PutOutcome::Conflict(_) => Err(NamespaceError::Changed(ns.name.clone())),
        }
    }

    /// Read, then write with the index read (0: create only), so a concurrent delete or
    /// update elsewhere is a `Changed`, never silently undone. Unchanged items are not
    /// rewritten (every Nomad write wakes every watcher).
    async fn put(&self, ns: &FunctionNamespace) -> Result<(), NamespaceError> {
        let path = Self::path(&ns.name)?;
        let current = self.nomad.var_read(&path).await.map_err(nomad_err)?;
        let items = Self::items(ns)?;
        let cas = match &current {
            Some(v) if Self::record(&ns.name, &v.items) == *ns => return Ok(()),
            Some(v) => v.meta.modify_index,
            None => 0,
        };
        match self
            .nomad
            .var_put(&path, &items, Some(cas))
            .await
            .map_err(nomad_err)?
        {
            PutOutcome::Written(_) => Ok(()),
            PutOutcome::Conflict(_) => Err(NamespaceError::Changed(ns.name.clone())),
        }
    }

    async fn remove(&self, name: &str) -> Result<bool, NamespaceError> {
        let path = Self::path(name)?;
        let Some(current) = self.nomad.var_read(&path).await.map_err(nomad_err)? else {
            return Ok(false);
        };
        match self
            .nomad
            .var_delete(&path, Some(current.meta.modify_index))
            .await
            .map_err(nomad_err)?
        {
            DeleteOutcome::Deleted => Ok(true),
            DeleteOutcome::Conflict(_) => Err(NamespaceError::Changed(name.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str, label: &str) -> FunctionNamespace {
        FunctionNamespace {
            name: name.into(),
            labels: [
                ("openfaas".to_string(), "1".to_string()),
                ("team".to_string(), label.to_string()),
            ]
            .into(),
            annotations: Default::default(),
        }
    }

    #[tokio::test]
    async fn file_backend_persists_atomically_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let set = Namespaces::new(Box::new(FileBackend::open(dir.path()).unwrap()));
        assert_eq!(set.names([]).await.unwrap(), [DEFAULT_NAMESPACE]);
        set.create(&ns("b", "x"), false).await.unwrap();
        set.create(&ns("a", "y"), false).await.unwrap();
        assert!(matches!(
            set.create(&ns("a", "z"), false).await,
            Err(NamespaceError::AlreadyExists(_))
        ));
        assert!(matches!(
            set.create(&ns("c", "z"), true).await,
            Err(NamespaceError::AlreadyExists(_))
        ));
        set.update(&ns("a", "new"), false).await.unwrap();
        let file = dir.path().join(NAMESPACE_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());

        let reopened = Namespaces::new(Box::new(FileBackend::open(dir.path()).unwrap()));
        assert_eq!(
            reopened.names(["z".to_string()]).await.unwrap(),
            [DEFAULT_NAMESPACE, "a", "b", "z"]
        );
        assert_eq!(reopened.get("a", false).await.unwrap(), ns("a", "new"));
        assert_eq!(
            reopened.get("z", true).await.unwrap(),
            Namespaces::implicit("z")
        );
        assert!(matches!(
            reopened.get("q", false).await,
            Err(NamespaceError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn delete_refuses_the_default_and_what_is_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        let set = Namespaces::new(Box::new(FileBackend::open(dir.path()).unwrap()));
        set.create(&ns("a", "x"), false).await.unwrap();
        let e = set.delete(DEFAULT_NAMESPACE, &[]).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "namespace openfaas-fn may not be deleted: it is the default namespace"
        );
        let e = set
            .delete("a", &functions_left(["f1", "f2"]))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "namespace a is not empty: it still holds functions f1, f2"
        );
        assert_eq!(set.names([]).await.unwrap(), [DEFAULT_NAMESPACE, "a"]);
        set.delete("a", &[]).await.unwrap();
        assert!(matches!(
            set.delete("a", &[]).await,
            Err(NamespaceError::NotFound(_))
        ));
        assert_eq!(set.names([]).await.unwrap(), [DEFAULT_NAMESPACE]);
    }

    #[tokio::test]
    async fn adopt_stores_namespaces_that_hold_functions() {
        let dir = tempfile::tempdir().unwrap();
        let set = Namespaces::new(Box::new(FileBackend::open(dir.path()).unwrap()));
        set.adopt(["team".to_string(), DEFAULT_NAMESPACE.to_string()])
            .await
            .unwrap();
        let reopened = Namespaces::new(Box::new(FileBackend::open(dir.path()).unwrap()));
        assert_eq!(
            reopened.names([]).await.unwrap(),
            [DEFAULT_NAMESPACE, "team"]
        );
    }
}
