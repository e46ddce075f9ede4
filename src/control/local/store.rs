//! Persistence of function records under the data dir.
//!
//! Owns `<data_dir>/functions/<namespace>/<name>.json`: one file per function holding its
//! deployment as received, its desired replica count and its `createdAt`.
//!
//! Invariants: a file is replaced atomically (written to a temporary file in the same
//! directory, synced, then renamed over the old one), so a crash leaves either the old or the
//! new record, never half of one. Files are tiny and written only on control operations
//! (deploy, update, scale, delete), so plain blocking I/O is used; nothing here is on the
//! request path. Unreadable files are skipped with a warning on load, never fatal.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::names::FunctionKey;
use crate::model::types::FunctionDeployment;

/// What is persisted of one function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StoredFunction {
    pub deployment: FunctionDeployment,
    /// Desired replica count.
    pub replicas: u64,
    /// RFC 3339.
    pub created_at: String,
}

#[derive(Debug, Error)]
pub(crate) enum StoreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("encode {path}: {source}")]
    Encode {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The directory of function records.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    root: PathBuf,
}

// === impl Store ===

impl Store {
    /// A store under `<data_dir>/functions`, created if missing.
    pub(super) fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let root = data_dir.join("functions");
        fs::create_dir_all(&root).map_err(|source| StoreError::Io {
            op: "create",
            path: root.clone(),
            source,
        })?;
        Ok(Self { root })
    }

    pub(super) fn path(&self, key: &FunctionKey) -> PathBuf {
        self.root
            .join(key.namespace())
            .join(format!("{}.json", key.name()))
    }

    /// Writes the record of `key` atomically.
    pub(super) fn save(
        &self,
        key: &FunctionKey,
        record: &StoredFunction,
    ) -> Result<(), StoreError> {
        let path = self.path(key);
        let io_err = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { op, path, source }
        };
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let body = serde_json::to_vec_pretty(record).map_err(|source| StoreError::Encode {
            path: path.clone(),
            source,
        })?;
        let tmp = dir.join(format!(
            ".{}.json.tmp-{:08x}",
            key.name(),
            fastrand::u32(..)
        ));
        let write = || -> io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            StoreError::Io {
                op: "write",
                path: path.clone(),
                source: e,
            }
        })
    }

    /// Deletes the record of `key`; a missing file is not an error.
    pub(super) fn remove(&self, key: &FunctionKey) -> Result<(), StoreError> {
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io {
                op: "remove",
                path,
                source,
            }),
        }
    }

    /// Every readable record, keyed by the path it was found at, sorted by key.
    pub(crate) fn load_all(&self) -> Result<Vec<(FunctionKey, StoredFunction)>, StoreError> {
        let read_dir = |path: &Path| {
            fs::read_dir(path).map_err(|source| StoreError::Io {
                op: "read",
                path: path.to_path_buf(),
                source,
            })
        };
        let mut out = Vec::new();
        for ns in read_dir(&self.root)? {
            let Ok(ns) = ns else { continue };
            if !ns.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let namespace = ns.file_name().to_string_lossy().into_owned();
            for file in read_dir(&ns.path())? {
                let Ok(file) = file else { continue };
                let file_name = file.file_name().to_string_lossy().into_owned();
                let Some(name) = file_name.strip_suffix(".json") else {
                    continue;
                };
                if name.starts_with('.') && file_name.contains(".tmp-") {
                    continue;
                }
                match load_one(&file.path(), name, &namespace) {
                    Ok(found) => out.push(found),
                    Err(e) => tracing::warn!(path = %file.path().display(), error = %e,
                        "skipping unreadable function record"),
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

fn load_one(
    path: &Path,
    name: &str,
    namespace: &str,
) -> Result<(FunctionKey, StoredFunction), String> {
    let key = FunctionKey::new(name, namespace).map_err(|e| e.to_string())?;
    let body = fs::read(path).map_err(|e| e.to_string())?;
    let record: StoredFunction = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    if record.deployment.service != key.name() {
        return Err(format!(
            "record names function {:?}, file names {:?}",
            record.deployment.service,
            key.name()
        ));
    }
    Ok((key, record))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, replicas: u64) -> StoredFunction {
        StoredFunction {
            deployment: FunctionDeployment {
                service: name.into(),
                image: "functions/alpine:latest".into(),
                env_process: "cat".into(),
                env_vars: Some([("A".to_string(), "1".to_string())].into()),
                ..Default::default()
            },
            replicas,
            created_at: "2024-05-01T10:00:00Z".into(),
        }
    }

    #[test]
    fn round_trip_save_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = FunctionKey::new("a.b", "").unwrap();
        let b = FunctionKey::new("b", "team").unwrap();
        store.save(&a, &record("a.b", 2)).unwrap();
        store.save(&b, &record("b", 0)).unwrap();
        store.save(&a, &record("a.b", 3)).unwrap();
        assert!(dir.path().join("functions/openfaas-fn/a.b.json").is_file());

        let reopened = Store::open(dir.path()).unwrap();
        let all = reopened.load_all().unwrap();
        assert_eq!(
            all,
            vec![(a.clone(), record("a.b", 3)), (b.clone(), record("b", 0))]
        );

        reopened.remove(&a).unwrap();
        reopened.remove(&a).unwrap();
        assert_eq!(reopened.load_all().unwrap(), vec![(b, record("b", 0))]);
    }

    #[test]
    fn skips_garbage_and_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ns = dir.path().join("functions/openfaas-fn");
        fs::create_dir_all(&ns).unwrap();
        fs::write(ns.join("bad.json"), b"{not json").unwrap();
        fs::write(ns.join(".x.json.tmp-1234"), b"{}").unwrap();
        fs::write(ns.join("other.txt"), b"{}").unwrap();
        assert!(store.load_all().unwrap().is_empty());
    }
}
