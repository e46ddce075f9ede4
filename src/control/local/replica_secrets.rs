//! How a replica process gets its function's secrets, and nothing else.
//!
//! OpenFaaS functions read a secret at `/var/openfaas/secrets/<name>` ([`SECRETS_PATH`]).
//! Replicas here are processes of the gateway's machine and user, so two ways exist:
//!
//! - **Mount namespace** ([`SecretsIsolation::Mount`], chosen by `auto` when the gateway may
//!   create one: root or `CAP_SYS_ADMIN`). The replica is spawned through util-linux's
//!   `unshare --mount --propagation private`, which execs `faasgate secrets-mount`
//!   ([`enter`]): in the new, private mount namespace it mounts a tmpfs at
//!   [`SECRETS_PATH`], copies the function's secrets into it (files 0400, directory 0500),
//!   remounts it read-only, covers the gateway's secret directories (the store, the staging
//!   root) with empty read-only tmpfs mounts, then execs the watchdog with the environment it
//!   was given. Nothing of this is visible outside the replica; another function's replicas
//!   see their own tmpfs. Why this route: the crate denies `unsafe`, and `unshare(2)` has no
//!   safe wrapper in rustix 1.x (`unshare_unsafe`), while `mount(2)` has
//!   (`rustix::mount`). `unshare(1)` does the one unsafe step in its own process and, without
//!   `--fork`, execs in place: the pid, process group and parent-death signal the provider set
//!   stay those of the watchdog.
//! - **Folder** ([`SecretsIsolation::Folder`], `auto` otherwise, or forced): the secrets are
//!   copied into a private per-replica directory (0700, files 0600, owned by the gateway's
//!   user) whose absolute path is in the replica's environment as [`SECRET_MOUNT_PATH_ENV`]
//!   (`secret_mount_path`, the variable OpenFaaS's go-sdk `ReadSecret` reads before falling
//!   back to `/var/openfaas/secrets`). The replica runs as the gateway's user, so this
//!   separates functions by convention only; the mount namespace is the isolation.
//!
//! Staging: each replica's files are first written under `<data_dir>/replica-secrets/<id>`
//! ([`STAGING_DIR`]), removed when the replica ends (folder) or once it listens (mount: the
//! copy is then in its tmpfs). The staging root is emptied at provider start.
//! A replica of a function without secrets is spawned as before (no namespace, no folder).
//!
//! Values are never logged: errors name files and directories, never contents.

use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::control::secrets::local::SECRETS_DIR;
use crate::control::secrets::SecretFile;

/// Where OpenFaaS functions read their secrets.
pub const SECRETS_PATH: &str = "/var/openfaas/secrets";
/// The replica variable naming its secrets folder in [`SecretsIsolation::Folder`] mode.
pub const SECRET_MOUNT_PATH_ENV: &str = "secret_mount_path";
/// Per-replica staging directories live under `<data_dir>/<STAGING_DIR>`.
pub const STAGING_DIR: &str = "replica-secrets";
/// The hidden `faasgate` subcommand that runs [`enter`].
pub const MOUNT_SUBCOMMAND: &str = "secrets-mount";

/// How replicas get their secrets (`--secrets-isolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SecretsIsolation {
    /// A private mount namespace when the gateway may create one, else a folder.
    #[default]
    Auto,
    /// Always a private mount namespace (the provider fails to start if it cannot).
    Mount,
    /// Always a private per-replica folder named by `secret_mount_path`.
    Folder,
}

/// The resolved way, fixed at provider start.
#[derive(Debug, Clone)]
pub(crate) enum Delivery {
    Mount {
        /// util-linux's `unshare`.
        unshare: PathBuf,
        /// The `faasgate` binary (runs [`MOUNT_SUBCOMMAND`]).
        helper: OsString,
        /// Directories covered by an empty tmpfs inside the replica.
        hide: Vec<PathBuf>,
    },
    Folder,
}

/// What a replica's secrets need at spawn time; resolved once per provider.
#[derive(Debug, Clone)]
pub(crate) struct SecretsSetup {
    pub delivery: Delivery,
    /// `<data_dir>/replica-secrets`, absolute.
    pub staging_root: PathBuf,
}

/// One replica's staged copy; the directory is removed on drop.
#[derive(Debug)]
pub(crate) struct Staged {
    dir: PathBuf,
}

// === impl SecretsSetup ===

impl SecretsSetup {
    /// Resolves `mode`: `helper` is the faasgate binary, `data_dir` the provider's.
    /// Empties the staging root. `Mount` that cannot work is an error naming why.
    pub(crate) fn resolve(
        mode: SecretsIsolation,
        helper: &OsStr,
        data_dir: &Path,
    ) -> io::Result<Self> {
        let data_dir = std::path::absolute(data_dir)?;
        let staging_root = data_dir.join(STAGING_DIR);
        match fs::remove_dir_all(&staging_root) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&staging_root)?;
        fs::set_permissions(&staging_root, fs::Permissions::from_mode(0o700))?;
        let mount = || -> io::Result<Delivery> {
            let unshare = find_unshare().ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "util-linux `unshare` not found")
            })?;
            fs::create_dir_all(SECRETS_PATH)?;
            let delivery = Delivery::Mount {
                unshare,
                helper: helper.to_os_string(),
                hide: vec![data_dir.join(SECRETS_DIR), staging_root.clone()],
            };
            probe(&delivery, &staging_root)?;
            Ok(delivery)
        };
        let delivery = match mode {
            SecretsIsolation::Folder => Delivery::Folder,
            SecretsIsolation::Mount => mount()
                .map_err(|e| io::Error::new(e.kind(), format!("--secrets-isolation mount: {e}")))?,
            SecretsIsolation::Auto => match mount() {
                Ok(d) => d,
                Err(e) => {
                    tracing::info!(reason = %e, "replica secrets: no mount namespace, using private folders ({SECRET_MOUNT_PATH_ENV})");
                    Delivery::Folder
                }
            },
        };
        if let Delivery::Mount { .. } = delivery {
            tracing::info!("replica secrets: private mount namespace at {SECRETS_PATH}");
        }
        Ok(Self {
            delivery,
            staging_root,
        })
    }

    /// Writes `secrets` into a new staging directory for instance `id`.
    pub(crate) fn stage(&self, id: &str, secrets: &[SecretFile]) -> io::Result<Staged> {
        let dir = loop {
            let dir = self
                .staging_root
                .join(format!("{id}-{:08x}", fastrand::u32(..)));
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        };
        let staged = Staged { dir };
        for s in secrets {
            let path = staged.dir.join(&s.name);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            f.write_all(s.value.as_bytes())?;
        }
        Ok(staged)
    }

    /// The program, arguments and extra environment that run `program args` with the
    /// secrets of `staged`.
    pub(crate) fn wrap(
        &self,
        program: &OsStr,
        args: &[OsString],
        staged: &Staged,
    ) -> (OsString, Vec<OsString>, Vec<(OsString, OsString)>) {
        match &self.delivery {
            Delivery::Folder => (
                program.to_os_string(),
                args.to_vec(),
                vec![(SECRET_MOUNT_PATH_ENV.into(), staged.dir.clone().into())],
            ),
            Delivery::Mount {
                unshare,
                helper,
                hide,
            } => (
                unshare.clone().into(),
                mount_args(helper, &staged.dir, hide, program, args),
                Vec::new(),
            ),
        }
    }

    /// Whether the staged copy may go once the replica listens (it has its own copy).
    pub(crate) fn copies_at_start(&self) -> bool {
        matches!(self.delivery, Delivery::Mount { .. })
    }
}

// === impl Staged ===

impl Drop for Staged {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), error = %e, "removing a replica's staged secrets");
            }
        }
    }
}

/// `unshare` arguments: a private mount namespace, then `faasgate secrets-mount`.
fn mount_args(
    helper: &OsStr,
    from: &Path,
    hide: &[PathBuf],
    program: &OsStr,
    args: &[OsString],
) -> Vec<OsString> {
    let mut out: Vec<OsString> = vec![
        "--mount".into(),
        "--propagation".into(),
        "private".into(),
        "--".into(),
        helper.into(),
        MOUNT_SUBCOMMAND.into(),
        "--from".into(),
        from.into(),
    ];
    for h in hide {
        out.push("--hide".into());
        out.push(h.into());
    }
    out.push("--".into());
    out.push(program.into());
    out.extend(args.iter().cloned());
    out
}

/// util-linux's `unshare` in the usual places.
fn find_unshare() -> Option<PathBuf> {
    [
        "/usr/bin/unshare",
        "/bin/unshare",
        "/usr/sbin/unshare",
        "/sbin/unshare",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// Runs the whole mount route once with no secrets and `true` as the program.
fn probe(delivery: &Delivery, staging_root: &Path) -> io::Result<()> {
    let Delivery::Mount {
        unshare,
        helper,
        hide,
    } = delivery
    else {
        return Ok(());
    };
    let from = staging_root.join(".probe");
    fs::DirBuilder::new().mode(0o700).create(&from)?;
    let out = std::process::Command::new(unshare)
        .args(mount_args(helper, &from, hide, OsStr::new("true"), &[]))
        .env_clear()
        .env("PATH", super::spec::REPLICA_PATH)
        .stdin(std::process::Stdio::null())
        .output();
    let _ = fs::remove_dir_all(&from);
    let out = out?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{} failed ({}): {}",
            unshare.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// `faasgate secrets-mount --from DIR [--hide DIR]... -- PROGRAM ARGS...`, run by
/// `unshare` inside the replica's new mount namespace: mounts the secrets of `from` at
/// [`SECRETS_PATH`] (see the module doc), hides `hide`, then execs `program`. Returns only
/// on failure.
#[cfg(target_os = "linux")]
pub fn enter(from: &Path, hide: &[PathBuf], program: &OsStr, args: &[OsString]) -> io::Error {
    use rustix::mount::{mount, mount_remount, MountFlags};
    use std::os::unix::process::CommandExt;

    let step = |what: &str, r: io::Result<()>| {
        r.map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))
    };
    let run = || -> io::Result<()> {
        let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
        step(
            "mount tmpfs at /var/openfaas/secrets",
            mount("tmpfs", SECRETS_PATH, "tmpfs", flags, c"mode=0700").map_err(io::Error::from),
        )?;
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            let target = Path::new(SECRETS_PATH).join(entry.file_name());
            let bytes = fs::read(entry.path())?;
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .open(&target)?;
            f.write_all(&bytes)?;
        }
        fs::set_permissions(SECRETS_PATH, fs::Permissions::from_mode(0o500))?;
        step(
            "remount /var/openfaas/secrets read-only",
            mount_remount(SECRETS_PATH, flags | MountFlags::RDONLY, "").map_err(io::Error::from),
        )?;
        for h in hide {
            if !h.is_dir() {
                continue;
            }
            step(
                &format!("hide {}", h.display()),
                mount("tmpfs", h, "tmpfs", flags | MountFlags::RDONLY, c"mode=000")
                    .map_err(io::Error::from),
            )?;
        }
        Ok(())
    };
    if let Err(e) = run() {
        return e;
    }
    std::process::Command::new(program).args(args).exec()
}

/// Mount namespaces are Linux's.
#[cfg(not(target_os = "linux"))]
pub fn enter(_: &Path, _: &[PathBuf], _: &OsStr, _: &[OsString]) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "mount namespaces need Linux")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::secrets::SecretValue;

    #[test]
    fn folder_mode_stages_private_files_and_names_them_in_the_environment() {
        let tmp = tempfile::tempdir().unwrap();
        let setup =
            SecretsSetup::resolve(SecretsIsolation::Folder, OsStr::new("faasgate"), tmp.path())
                .unwrap();
        let staged = setup
            .stage(
                "f-1",
                &[SecretFile {
                    name: "k".into(),
                    value: SecretValue::new(b"v\n".to_vec()),
                }],
            )
            .unwrap();
        let (program, args, env) = setup.wrap(OsStr::new("wd"), &["watchdog".into()], &staged);
        assert_eq!((program.as_os_str(), args.len()), (OsStr::new("wd"), 1));
        assert_eq!(env[0].0, SECRET_MOUNT_PATH_ENV);
        let dir = PathBuf::from(&env[0].1);
        assert!(dir.is_absolute() && dir.starts_with(tmp.path()));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("k")), 0o600);
        assert_eq!(fs::read(dir.join("k")).unwrap(), b"v\n");
        drop(staged);
        assert!(!dir.exists());
    }

    #[test]
    fn mount_mode_runs_the_helper_through_unshare() {
        let args = mount_args(
            OsStr::new("/bin/faasgate"),
            Path::new("/d/s"),
            &[PathBuf::from("/d/secrets")],
            OsStr::new("/bin/faasgate"),
            &["watchdog".into()],
        );
        let args: Vec<_> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "--mount",
                "--propagation",
                "private",
                "--",
                "/bin/faasgate",
                MOUNT_SUBCOMMAND,
                "--from",
                "/d/s",
                "--hide",
                "/d/secrets",
                "--",
                "/bin/faasgate",
                "watchdog"
            ]
        );
    }
}
