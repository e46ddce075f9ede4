//! Function secrets: the [`SecretStore`] contract, secret names and values.
//!
//! Owns what every secret store shares: name validation (faasd's messages first, then the
//! DNS-1123 subdomain rule faas-cli applies on its side), the value type and the store
//! errors. Stores: [`local::LocalSecretStore`] (files under the data dir, the local
//! provider's) and [`nomad::NomadSecretStore`] (one Nomad Variable per secret, the Nomad
//! provider's).
//!
//! Invariants:
//! - A value never leaves a store except through [`SecretStore::read`], to the provider that
//!   hands it to replicas as files. [`SecretValue`] has no `Display`, its `Debug` prints only
//!   the length, and no error of this module carries a value (only names and namespaces).
//! - Names reach a store validated ([`validate_name`]), so a name is always one safe path
//!   component: no `/`, no `..`, no leading dot, at most [`MAX_SECRET_NAME_LEN`] bytes.

pub mod local;
pub mod nomad;

use std::fmt;

use async_trait::async_trait;
use thiserror::Error;

/// Longest secret name (a DNS-1123 subdomain, as Kubernetes and faas-cli require).
pub const MAX_SECRET_NAME_LEN: usize = 253;

/// Errors of a secret store; the API maps each to one status (`api::secrets`).
#[derive(Debug, Error)]
pub enum SecretError {
    /// The name breaks a rule (400); the message is faasd's where faasd has one.
    #[error("{0}")]
    InvalidName(String),
    /// No such secret (404).
    #[error("secret {name} not found in namespace {namespace}")]
    NotFound { namespace: String, name: String },
    /// Create of a name that exists (409: faas-cli's `--replace` relies on it).
    #[error("secret {name} already exists in namespace {namespace}")]
    AlreadyExists { namespace: String, name: String },
    /// The store failed (500). Carries paths and OS errors, never a value.
    #[error("secret store: {0}")]
    Backend(String),
}

impl SecretError {
    pub fn not_found(namespace: &str, name: &str) -> Self {
        Self::NotFound {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn already_exists(namespace: &str, name: &str) -> Self {
        Self::AlreadyExists {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// A secret's bytes. Kept exactly as given (no newline added or trimmed). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Vec<u8>);

/// One secret a function reads: its file name and its value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretFile {
    pub name: String,
    pub value: SecretValue,
}

/// Where secrets are kept. Names are validated by the caller ([`validate_name`]); namespaces
/// are the caller's to check against the provider's managed set.
#[async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// Names of the secrets of `namespace`, sorted (an empty list when it holds none).
    async fn list(&self, namespace: &str) -> Result<Vec<String>, SecretError>;
    /// Creates a secret; [`SecretError::AlreadyExists`] when the name is taken.
    async fn create(
        &self,
        namespace: &str,
        name: &str,
        value: &SecretValue,
    ) -> Result<(), SecretError>;
    /// Replaces a secret's value; [`SecretError::NotFound`] when absent.
    async fn update(
        &self,
        namespace: &str,
        name: &str,
        value: &SecretValue,
    ) -> Result<(), SecretError>;
    /// Deletes a secret; [`SecretError::NotFound`] when absent.
    async fn delete(&self, namespace: &str, name: &str) -> Result<(), SecretError>;
    /// A secret's value, for the provider that hands it to replicas.
    async fn read(&self, namespace: &str, name: &str) -> Result<SecretValue, SecretError>;
}

// === impl SecretValue ===

impl SecretValue {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue(<{} bytes>)", self.0.len())
    }
}

impl fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretFile")
            .field("name", &self.name)
            .field("value", &self.value)
            .finish()
    }
}

/// Checks a secret name: faasd's two rules with faasd's messages (`non-empty name is
/// required`, `directory traversal found in name`), then a DNS-1123 subdomain (lower-case
/// letters, digits, `-` and `.`, starting and ending with a letter or digit, at most
/// [`MAX_SECRET_NAME_LEN`] bytes) as faas-cli and Kubernetes require. The last rule keeps
/// every name a plain file name (no leading dot: the store's temporary files start with one).
pub fn validate_name(name: &str) -> Result<(), SecretError> {
    if name.is_empty() {
        return Err(SecretError::InvalidName(
            "non-empty name is required".into(),
        ));
    }
    if name.contains('/') || name.contains("..") {
        return Err(SecretError::InvalidName(
            "directory traversal found in name".into(),
        ));
    }
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bytes = name.as_bytes();
    let ok = name.len() <= MAX_SECRET_NAME_LEN
        && bytes.iter().all(|&c| alnum(c) || c == b'-' || c == b'.')
        && bytes.first().copied().is_some_and(alnum)
        && bytes.last().copied().is_some_and(alnum);
    if !ok {
        return Err(SecretError::InvalidName(format!(
            "invalid secret name {name:?}: must be a DNS-1123 subdomain (lower-case letters, \
             digits, '-' and '.', starting and ending with a letter or digit, at most \
             {MAX_SECRET_NAME_LEN} characters)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_faasd_then_dns_1123() {
        for good in ["a", "api-key", "db.password", "x1", "0"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        let msg = |n: &str| validate_name(n).unwrap_err().to_string();
        assert_eq!(msg(""), "non-empty name is required");
        for traversal in ["a/b", "..", "../x", "a..b", "/"] {
            assert_eq!(msg(traversal), "directory traversal found in name");
        }
        for bad in [".hidden", "-a", "a-", "A", "a_b", "a b", "a\0b", "é"] {
            assert!(msg(bad).contains("DNS-1123"), "{bad:?}");
        }
        assert!(validate_name(&"a".repeat(MAX_SECRET_NAME_LEN)).is_ok());
        assert!(validate_name(&"a".repeat(MAX_SECRET_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn values_never_print() {
        let v = SecretValue::new(b"hunter2".to_vec());
        let f = SecretFile {
            name: "pw".into(),
            value: v.clone(),
        };
        let shown = format!("{v:?} {f:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("7 bytes") && shown.contains("pw"), "{shown}");
    }
}
