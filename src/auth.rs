//! Basic auth for `/system/*` and `/ui/`: where the credentials come from, and checking an
//! `Authorization` header against them.
//!
//! Owns: resolving the gateway's one user and password, and the secrets files under
//! `<data_dir>/secrets/` (`basic-auth-user`, `basic-auth-password`, as faasd names them).
//!
//! Invariants:
//! - Each value is taken from the environment first ([`env::BASIC_AUTH_USER`],
//!   [`env::BASIC_AUTH_PASSWORD`]), then from its file (trimmed). When no password exists
//!   anywhere, a random one is generated from the OS CSPRNG (`/dev/urandom`, 32 bytes,
//!   base64url: 43 characters) and written with the user to the secrets files. Files are
//!   created `0600` in a `0700` directory, with those modes at creation (no window in which
//!   they are readable by others), and never overwritten.
//! - The password is never logged, never in `Debug` output, and compared in constant time
//!   (`subtle`); a length mismatch still runs a comparison of the same cost. The user is
//!   compared plainly, as OpenFaaS does (reference section 2.2).
//! - Failures answer **401** with [`WWW_AUTHENTICATE`] and [`UNAUTHORIZED_BODY`]; the HTTP edge
//!   (`api`) renders them, this module decides only yes or no.

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use http::HeaderValue;
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::config::env;

/// The `WWW-Authenticate` header value sent with a 401.
pub(crate) const WWW_AUTHENTICATE: &str = "Basic realm=\"Restricted\"";
/// The body of a 401.
pub(crate) const UNAUTHORIZED_BODY: &str = "invalid credentials";
/// The user when none is configured.
pub(crate) const DEFAULT_USER: &str = "admin";
/// Directory under the data dir holding the credential files.
pub(crate) const SECRETS_DIR: &str = "secrets";
/// File holding the user name.
pub(crate) const USER_FILE: &str = "basic-auth-user";
/// File holding the password.
pub(crate) const PASSWORD_FILE: &str = "basic-auth-password";
/// Random bytes in a generated password (43 base64url characters).
const GENERATED_BYTES: usize = 32;
const RANDOM_SOURCE: &str = "/dev/urandom";

/// The gateway's user and password. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    user: String,
    password: String,
}

/// Where the password came from (logged at start so operators can find it, without the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CredentialSource {
    /// [`env::BASIC_AUTH_PASSWORD`].
    Env,
    /// An existing password file (its path).
    Files(PathBuf),
    /// Generated now and written to this password file.
    Generated(PathBuf),
}

#[derive(Debug, Error)]
pub enum AuthError {
    #[error("creating {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("reading random bytes from {RANDOM_SOURCE}: {source}")]
    Random { source: io::Error },
    /// A configured value is empty after trimming; `what` names the variable or file.
    #[error("{what} is empty: set a non-empty value or remove it")]
    Empty { what: String },
    /// A user name with a colon can never match (Basic splits `user:password` at the first colon).
    #[error("{what}: the user name must not contain ':'")]
    ColonInUser { what: String },
}

// === impl Credentials ===

impl Credentials {
    #[cfg(test)]
    pub(crate) fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
        }
    }

    #[cfg(test)]
    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    /// True when `authorization` is `Basic base64(user:password)` with these credentials.
    ///
    /// The scheme is matched case-insensitively; the base64 must be standard and padded, as
    /// Go's `Request.BasicAuth` requires; the password is everything after the first colon.
    pub(crate) fn check(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(decoded) = authorization.and_then(|v| decode_basic(v.as_bytes())) else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return false;
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let user_ok = user == self.user.as_bytes();
        // `&`, not `&&`: the password comparison runs whatever the user was.
        user_ok & password_matches(password, self.password.as_bytes())
    }

    /// The `Authorization` value for these credentials (service-to-service calls, tests).
    /// Marked sensitive so hyper and `Debug` do not show it.
    pub(crate) fn authorization(&self) -> HeaderValue {
        let token = STANDARD.encode(format!("{}:{}", self.user, self.password));
        let mut v = HeaderValue::from_str(&format!("Basic {token}"))
            .expect("\"Basic \" and base64 are visible ASCII");
        v.set_sensitive(true);
        v
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Resolves the credentials: environment, then `<data_dir>/secrets/` files, else generates
/// and writes them. `env` looks variables up (the process environment in `main`).
pub(crate) fn load_or_create(
    data_dir: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(Credentials, CredentialSource), AuthError> {
    let dir = data_dir.join(SECRETS_DIR);
    let user_path = dir.join(USER_FILE);
    let password_path = dir.join(PASSWORD_FILE);

    let env_user = non_empty(env::BASIC_AUTH_USER, env(env::BASIC_AUTH_USER))?;
    validate_user(env::BASIC_AUTH_USER, env_user.as_deref())?;
    let env_password = non_empty(env::BASIC_AUTH_PASSWORD, env(env::BASIC_AUTH_PASSWORD))?;
    let user_what = || user_path.display().to_string();
    let file_user = match &env_user {
        Some(_) => None,
        None => read_secret(&user_path)?,
    };
    validate_user(&user_what(), file_user.as_deref())?;

    let (password, source) = match env_password {
        Some(p) => (p, CredentialSource::Env),
        None => match read_secret(&password_path)? {
            Some(p) => (p, CredentialSource::Files(password_path.clone())),
            None => {
                let user = env_user
                    .clone()
                    .or_else(|| file_user.clone())
                    .unwrap_or_else(|| DEFAULT_USER.to_string());
                create_secrets_dir(&dir)?;
                if file_user.is_none() {
                    ignore_exists(write_secret(&user_path, &user))?;
                }
                let password = generate_password()?;
                match write_secret(&password_path, &password) {
                    Ok(()) => (password, CredentialSource::Generated(password_path.clone())),
                    // Another process generated it first: use theirs.
                    Err(AuthError::Write { source, .. })
                        if source.kind() == io::ErrorKind::AlreadyExists =>
                    {
                        let p = read_secret(&password_path)?.ok_or_else(|| AuthError::Empty {
                            what: password_path.display().to_string(),
                        })?;
                        (p, CredentialSource::Files(password_path.clone()))
                    }
                    Err(e) => return Err(e),
                }
            }
        },
    };

    let user = match (env_user, file_user) {
        (Some(u), _) | (None, Some(u)) => u,
        // Re-read: another process may have written the user file while we generated.
        (None, None) => {
            let u = read_secret(&user_path)?;
            validate_user(&user_what(), u.as_deref())?;
            u.unwrap_or_else(|| DEFAULT_USER.to_string())
        }
    };
    Ok((Credentials { user, password }, source))
}

/// `Basic <base64>` -> decoded bytes; `None` for any other shape.
fn decode_basic(value: &[u8]) -> Option<Vec<u8>> {
    const SCHEME: &[u8] = b"basic ";
    if value.len() < SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let token = value[SCHEME.len()..].trim_ascii();
    STANDARD.decode(token).ok()
}

/// Constant-time equality whose cost does not depend on where the inputs differ, nor (beyond
/// the expected length) on whether the lengths differ.
fn password_matches(given: &[u8], expected: &[u8]) -> bool {
    if given.len() == expected.len() {
        given.ct_eq(expected).into()
    } else {
        // Same work as a comparison of the right length, result discarded.
        let same: bool = std::hint::black_box(expected.ct_eq(expected)).into();
        std::hint::black_box(same);
        false
    }
}

fn validate_user(what: &str, user: Option<&str>) -> Result<(), AuthError> {
    match user {
        Some(u) if u.contains(':') => Err(AuthError::ColonInUser {
            what: what.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Treats "already exists" as success (a concurrent start wrote the same file).
fn ignore_exists(r: Result<(), AuthError>) -> Result<(), AuthError> {
    match r {
        Err(AuthError::Write { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
            Ok(())
        }
        r => r,
    }
}

fn non_empty(name: &str, value: Option<String>) -> Result<Option<String>, AuthError> {
    match value {
        None => Ok(None),
        Some(v) => {
            let t = v.trim();
            if t.is_empty() {
                Err(AuthError::Empty {
                    what: name.to_string(),
                })
            } else {
                Ok(Some(t.to_string()))
            }
        }
    }
}

/// The trimmed content of `path`, `None` when it does not exist.
fn read_secret(path: &Path) -> Result<Option<String>, AuthError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AuthError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "credential file is readable by other users; chmod 600 it");
        }
    }
    non_empty(&path.display().to_string(), Some(text))
}

fn create_secrets_dir(dir: &Path) -> Result<(), AuthError> {
    let err = |source| AuthError::CreateDir {
        path: dir.to_path_buf(),
        source,
    };
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(err)?;
    }
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(err(e)),
    }
}

/// Creates `path` with mode 0600 (failing if it exists) and writes `value` to it.
fn write_secret(path: &Path, value: &str) -> Result<(), AuthError> {
    let err = |source| AuthError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(value.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}

/// 32 bytes from the OS CSPRNG, base64url without padding (43 characters).
fn generate_password() -> Result<String, AuthError> {
    let mut bytes = [0u8; GENERATED_BYTES];
    File::open(RANDOM_SOURCE)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| AuthError::Random { source })?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn header(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    fn basic(user_pass: &str) -> HeaderValue {
        header(&format!("Basic {}", STANDARD.encode(user_pass)))
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn checks_user_and_password() {
        let c = Credentials::new("admin", "s3cret:with:colons");
        assert!(c.check(Some(&basic("admin:s3cret:with:colons"))));
        assert!(c.check(Some(&c.authorization())));
        assert!(c.check(Some(&header(&format!(
            "bAsIc   {}",
            STANDARD.encode("admin:s3cret:with:colons")
        )))));
        assert!(!c.check(Some(&basic("admin:s3cret"))));
        assert!(!c.check(Some(&basic("admin:s3cret:with:colonS"))));
        assert!(!c.check(Some(&basic("admin:s3cret:with:colons "))));
        assert!(!c.check(Some(&basic("Admin:s3cret:with:colons"))));
        assert!(!c.check(Some(&basic("root:s3cret:with:colons"))));
        assert!(!c.check(Some(&basic("admin:"))));
    }

    #[test]
    fn rejects_malformed_headers() {
        let c = Credentials::new("admin", "pw");
        assert!(!c.check(None));
        assert!(!c.check(Some(&header(""))));
        assert!(!c.check(Some(&header("Basic"))));
        assert!(!c.check(Some(&header("Basic "))));
        assert!(!c.check(Some(&header("Bearer YWRtaW46cHc="))));
        assert!(!c.check(Some(&header("YWRtaW46cHc="))));
        assert!(!c.check(Some(&header("Basic !!notbase64!!"))));
        assert!(!c.check(Some(&header("Basic YWRtaW46cHc"))), "unpadded");
        assert!(!c.check(Some(&basic("adminpw"))), "no colon");
        assert!(c.check(Some(&header("Basic YWRtaW46cHc="))));
    }

    #[test]
    fn debug_hides_the_password() {
        let c = Credentials::new("admin", "hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", c.authorization()).contains("aHVudGVyMg"));
    }

    #[test]
    fn generates_private_files_then_reads_them_back() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let (c, source) = load_or_create(&data, no_env).unwrap();
        let dir = data.join(SECRETS_DIR);
        let pw_path = dir.join(PASSWORD_FILE);
        assert_eq!(source, CredentialSource::Generated(pw_path.clone()));
        assert_eq!(c.user(), DEFAULT_USER);
        assert!(c.password.len() >= 32);
        assert!(c
            .password
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));

        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&pw_path), 0o600);
        assert_eq!(mode(&dir.join(USER_FILE)), 0o600);
        assert_eq!(fs::read_to_string(&pw_path).unwrap(), c.password);

        let (again, source) = load_or_create(&data, no_env).unwrap();
        assert_eq!(source, CredentialSource::Files(pw_path));
        assert_eq!(again, c);

        // Two generations differ.
        let other = tempfile::tempdir().unwrap();
        let (c2, _) = load_or_create(other.path(), no_env).unwrap();
        assert_ne!(c2.password, c.password);
    }

    #[test]
    fn files_are_trimmed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(SECRETS_DIR);
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join(USER_FILE), "ops\n").unwrap();
        fs::write(dir.join(PASSWORD_FILE), "  pw from file\n").unwrap();
        let (c, source) = load_or_create(tmp.path(), no_env).unwrap();
        assert_eq!(source, CredentialSource::Files(dir.join(PASSWORD_FILE)));
        assert_eq!(c, Credentials::new("ops", "pw from file"));
    }

    #[test]
    fn env_wins_over_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(SECRETS_DIR);
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join(USER_FILE), "ops").unwrap();
        fs::write(dir.join(PASSWORD_FILE), "filepw").unwrap();
        let vars: HashMap<&str, &str> = [
            (env::BASIC_AUTH_USER, "envuser"),
            (env::BASIC_AUTH_PASSWORD, "envpw"),
        ]
        .into();
        let (c, source) =
            load_or_create(tmp.path(), |k| vars.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(source, CredentialSource::Env);
        assert_eq!(c, Credentials::new("envuser", "envpw"));

        // The password alone from env; the user from its file.
        let (c, source) = load_or_create(tmp.path(), |k| {
            (k == env::BASIC_AUTH_PASSWORD).then(|| "envpw".to_string())
        })
        .unwrap();
        assert_eq!(source, CredentialSource::Env);
        assert_eq!(c, Credentials::new("ops", "envpw"));

        // Env password with no files: default user, nothing written.
        let empty = tempfile::tempdir().unwrap();
        let (c, _) = load_or_create(empty.path(), |k| {
            (k == env::BASIC_AUTH_PASSWORD).then(|| "envpw".to_string())
        })
        .unwrap();
        assert_eq!(c.user(), DEFAULT_USER);
        assert!(!empty.path().join(SECRETS_DIR).exists());
    }

    #[test]
    fn generation_keeps_an_existing_user_file_and_env_user() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(SECRETS_DIR);
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join(USER_FILE), "ops").unwrap();
        let (c, source) = load_or_create(tmp.path(), no_env).unwrap();
        assert!(matches!(source, CredentialSource::Generated(_)));
        assert_eq!(c.user(), "ops");

        let other = tempfile::tempdir().unwrap();
        let (c, _) = load_or_create(other.path(), |k| {
            (k == env::BASIC_AUTH_USER).then(|| "alice".to_string())
        })
        .unwrap();
        assert_eq!(c.user(), "alice");
        let written = fs::read_to_string(other.path().join(SECRETS_DIR).join(USER_FILE)).unwrap();
        assert_eq!(written, "alice");
    }

    #[test]
    fn empty_values_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let e = load_or_create(tmp.path(), |k| {
            (k == env::BASIC_AUTH_PASSWORD).then(|| " ".to_string())
        })
        .unwrap_err();
        assert!(matches!(e, AuthError::Empty { ref what } if what == env::BASIC_AUTH_PASSWORD));

        let dir = tmp.path().join(SECRETS_DIR);
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join(PASSWORD_FILE), "\n").unwrap();
        let e = load_or_create(tmp.path(), no_env).unwrap_err();
        assert!(e.to_string().contains(PASSWORD_FILE), "{e}");

        let clean = tempfile::tempdir().unwrap();
        let e = load_or_create(clean.path(), |k| {
            (k == env::BASIC_AUTH_USER).then(|| "a:b".to_string())
        })
        .unwrap_err();
        assert!(
            matches!(e, AuthError::ColonInUser { ref what } if what == env::BASIC_AUTH_USER),
            "{e}"
        );
        assert!(!clean.path().join(SECRETS_DIR).exists(), "nothing written");
    }
}
