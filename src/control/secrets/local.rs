//! The local provider's secrets: one file per secret under the data dir.
//!
//! Owns `<data_dir>/secrets/functions/<namespace>/<name>`: under the directory that also
//! holds the gateway's own credential files (as `auth` keeps them), which replicas in a mount
//! namespace never see, and in a sub-directory of its own, so no namespace name can meet a
//! credential file's name. Directories are created 0700 and
//! files 0600, so only the gateway's user reads them; a file holds the value's exact bytes.
//!
//! Invariants:
//! - Writes are atomic: the value goes to a temporary file in the same directory (a name
//!   starting with `.`, which no secret name may), which is synced, then linked (create: fails
//!   when the name exists, so a duplicate is detected atomically) or renamed (update) onto the
//!   name, and the directory is synced. A crash leaves the old value or the new, never half.
//! - Mutations are serialised by one mutex, taken inside the blocking task (never across an
//!   `.await`), so an update never resurrects a secret a concurrent delete removed.
//! - Leftover temporary files (a crash between write and link) are removed at open and never
//!   listed.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{validate_name, SecretError, SecretStore, SecretValue};

/// Directory under the data dir that holds the store and the gateway's credential files
/// (hidden from replicas as a whole).
pub const SECRETS_DIR: &str = "secrets";
/// The store's own directory under [`SECRETS_DIR`].
pub const FUNCTIONS_DIR: &str = "functions";

/// The data-dir store; see the module doc.
#[derive(Debug, Clone)]
pub struct LocalSecretStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    write: Mutex<()>,
}

/// How a value reaches its name.
#[derive(Clone, Copy)]
enum Put {
    Create,
    Update,
}

// === impl LocalSecretStore ===

impl LocalSecretStore {
    /// The store under `<data_dir>/secrets/functions`, created (0700) if missing; removes
    /// leftover temporary files.
    pub fn open(data_dir: &Path) -> Result<Self, SecretError> {
        let root = data_dir.join(SECRETS_DIR).join(FUNCTIONS_DIR);
        fs::create_dir_all(data_dir).map_err(|e| io_err("create", data_dir, e))?;
        create_private_dir(&data_dir.join(SECRETS_DIR))?;
        create_private_dir(&root)?;
        if let Ok(namespaces) = fs::read_dir(&root) {
            for ns in namespaces.flatten() {
                if !ns.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                for f in fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                    if f.file_name().as_encoded_bytes().starts_with(b".") {
                        let _ = fs::remove_file(f.path());
                    }
                }
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                write: Mutex::new(()),
            }),
        })
    }

    /// The directory of one namespace.
    fn dir(&self, namespace: &str) -> PathBuf {
        self.inner.root.join(namespace)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, SecretError> + Send + 'static,
    ) -> Result<T, SecretError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| SecretError::Backend(format!("secret store task: {e}")))?
    }

    async fn put(
        &self,
        namespace: &str,
        name: &str,
        value: &SecretValue,
        how: Put,
    ) -> Result<(), SecretError> {
        validate_name(name)?;
        let dir = self.dir(namespace);
        let (namespace, name, value) = (namespace.to_string(), name.to_string(), value.clone());
        self.blocking(move |inner| {
            let _w = inner.write.lock().expect("secret store mutex poisoned");
            create_private_dir(&dir)?;
            let path = dir.join(&name);
            let exists = path.exists();
            match how {
                Put::Create if exists => {
                    return Err(SecretError::AlreadyExists { namespace, name })
                }
                Put::Update if !exists => return Err(SecretError::NotFound { namespace, name }),
                _ => {}
            }
            let tmp = write_temp(&dir, &name, value.as_bytes())?;
            let placed = match how {
                Put::Create => fs::hard_link(&tmp, &path).map_err(|e| {
                    if e.kind() == io::ErrorKind::AlreadyExists {
                        SecretError::AlreadyExists {
                            namespace: namespace.clone(),
                            name: name.clone(),
                        }
                    } else {
                        io_err("link", &path, e)
                    }
                }),
                Put::Update => fs::rename(&tmp, &path).map_err(|e| io_err("rename", &path, e)),
            };
            let _ = fs::remove_file(&tmp);
            placed?;
            sync_dir(&dir)
        })
        .await
    }
}

#[async_trait]
impl SecretStore for LocalSecretStore {
    async fn list(&self, namespace: &str) -> Result<Vec<String>, SecretError> {
        let dir = self.dir(namespace);
        self.blocking(move |_| {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(io_err("read", &dir, e)),
            };
            let mut names = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| io_err("read", &dir, e))?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_file()) {
                    continue;
                }
                names.push(name);
            }
            names.sort();
            Ok(names)
        })
        .await
    }

    async fn create(
        &self,
        namespace: &str,
        name: &str,
        value: &SecretValue,
    ) -> Result<(), SecretError> {
        self.put(namespace, name, value, Put::Create).await
    }

    async fn update(
        &self,
        namespace: &str,
        name: &str,
        value: &SecretValue,
    ) -> Result<(), SecretError> {
        self.put(namespace, name, value, Put::Update).await
    }

    async fn delete(&self, namespace: &str, name: &str) -> Result<(), SecretError> {
        validate_name(name)?;
        let dir = self.dir(namespace);
        let (namespace, name) = (namespace.to_string(), name.to_string());
        self.blocking(move |inner| {
            let _w = inner.write.lock().expect("secret store mutex poisoned");
            let path = dir.join(&name);
            match fs::remove_file(&path) {
                Ok(()) => sync_dir(&dir),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    Err(SecretError::NotFound { namespace, name })
                }
                Err(e) => Err(io_err("remove", &path, e)),
            }
        })
        .await
    }

    async fn read(&self, namespace: &str, name: &str) -> Result<SecretValue, SecretError> {
        validate_name(name)?;
        let path = self.dir(namespace).join(name);
        let (namespace, name) = (namespace.to_string(), name.to_string());
        self.blocking(move |_| match fs::read(&path) {
            Ok(bytes) => Ok(SecretValue::new(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(SecretError::NotFound { namespace, name })
            }
            Err(e) => Err(io_err("read", &path, e)),
        })
        .await
    }
}

fn io_err(op: &str, path: &Path, e: io::Error) -> SecretError {
    SecretError::Backend(format!("{op} {}: {e}", path.display()))
}

/// Creates `dir` with mode 0700 unless it exists (a directory).
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), SecretError> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(io_err("create", dir, e)),
    }
}

/// Writes `bytes` to a new 0600 temporary file of `dir` and syncs it; returns its path.
fn write_temp(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, SecretError> {
    loop {
        let tmp = dir.join(format!(".{name}.tmp-{:016x}", fastrand::u64(..)));
        let mut f = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("create", &tmp, e)),
        };
        let written = f.write_all(bytes).and_then(|()| f.sync_all());
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("write", &tmp, e));
        }
        return Ok(tmp);
    }
}

/// Makes a rename or unlink in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), SecretError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("sync", dir, e))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn v(b: &[u8]) -> SecretValue {
        SecretValue::new(b.to_vec())
    }

    #[tokio::test]
    async fn create_update_delete_with_private_modes_and_exact_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LocalSecretStore::open(tmp.path()).unwrap();
        assert!(store.list("ns").await.unwrap().is_empty());
        let bytes = b"\x00line\n\xff  ";
        store.create("ns", "b", &v(bytes)).await.unwrap();
        store.create("ns", "a", &v(b"x")).await.unwrap();
        assert!(matches!(
            store.create("ns", "a", &v(b"y")).await,
            Err(SecretError::AlreadyExists { .. })
        ));
        assert_eq!(store.list("ns").await.unwrap(), ["a", "b"]);
        assert_eq!(store.read("ns", "b").await.unwrap().as_bytes(), bytes);
        let mode = |p: PathBuf| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(tmp.path().join("secrets")), 0o700);
        assert_eq!(mode(tmp.path().join("secrets/functions")), 0o700);
        assert_eq!(mode(tmp.path().join("secrets/functions/ns")), 0o700);
        assert_eq!(mode(tmp.path().join("secrets/functions/ns/b")), 0o600);

        store.update("ns", "a", &v(b"new")).await.unwrap();
        assert_eq!(store.read("ns", "a").await.unwrap().as_bytes(), b"new");
        assert_eq!(mode(tmp.path().join("secrets/functions/ns/a")), 0o600);
        assert!(matches!(
            store.update("ns", "zz", &v(b"y")).await,
            Err(SecretError::NotFound { .. })
        ));
        store.delete("ns", "a").await.unwrap();
        assert!(matches!(
            store.delete("ns", "a").await,
            Err(SecretError::NotFound { .. })
        ));
        assert!(matches!(
            store.read("ns", "a").await,
            Err(SecretError::NotFound { .. })
        ));
        assert_eq!(store.list("ns").await.unwrap(), ["b"]);
        assert!(store.list("other").await.unwrap().is_empty());
        // Nothing but the secrets themselves is left in the directory.
        let left: Vec<_> = fs::read_dir(tmp.path().join("secrets/functions/ns"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["b"]);
    }

    #[tokio::test]
    async fn leftover_temp_files_are_removed_at_open_and_never_listed() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LocalSecretStore::open(tmp.path()).unwrap();
        store.create("ns", "a", &v(b"x")).await.unwrap();
        let stray = tmp.path().join("secrets/functions/ns/.a.tmp-1");
        fs::write(&stray, b"half").unwrap();
        assert_eq!(store.list("ns").await.unwrap(), ["a"]);
        let store = LocalSecretStore::open(tmp.path()).unwrap();
        assert!(!stray.exists());
        assert_eq!(store.list("ns").await.unwrap(), ["a"]);
    }

    #[tokio::test]
    async fn bad_names_never_touch_the_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LocalSecretStore::open(tmp.path()).unwrap();
        for bad in ["", "../x", ".a"] {
            assert!(matches!(
                store.create("ns", bad, &v(b"x")).await,
                Err(SecretError::InvalidName(_))
            ));
            assert!(matches!(
                store.read("ns", bad).await,
                Err(SecretError::InvalidName(_))
            ));
        }
        assert!(!tmp.path().join("secrets/functions/ns").exists());
    }
}
