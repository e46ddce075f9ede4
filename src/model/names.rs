//! Function names and namespaces, parsed once at the edge.
//!
//! OpenFaaS names match `[-a-zA-Z_0-9.]+`; a path segment `name.namespace` splits on the
//! **last** dot. A [`FunctionKey`] is the validated (name, namespace) pair used everywhere
//! behind the API. [`KeyRef`] is its borrowed twin so the data plane can look a function up
//! from the request path without allocating: both hash the same way (see `Hash` impls).

use std::fmt;
use std::hash::{Hash, Hasher};

use thiserror::Error;

/// The namespace used when a request names none.
pub const DEFAULT_NAMESPACE: &str = "openfaas-fn";
/// Longest accepted function or namespace name (a DNS label, as Kubernetes and Nomad expect).
pub(crate) const MAX_NAME_LEN: usize = 63;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    #[error("{field} is required")]
    Empty { field: &'static str },
    #[error("{field} {value:?} is longer than {MAX_NAME_LEN} characters")]
    TooLong { field: &'static str, value: String },
    #[error("{field} {value:?} must match [-a-zA-Z_0-9.]+")]
    Invalid { field: &'static str, value: String },
    #[error("namespace {value:?} must match [-a-zA-Z_0-9]+ (no dots)")]
    InvalidNamespace { value: String },
    #[error(
        "namespace {value:?} must be a DNS-1123 label: at most 63 characters, lower-case \
         letters, digits and '-', starting and ending with a letter or digit"
    )]
    NotDnsLabel { value: String },
}

/// A validated function identity: name plus namespace.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FunctionKey {
    name: Box<str>,
    namespace: Box<str>,
}

/// Borrowed form of [`FunctionKey`] for allocation-free lookups.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyRef<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
}

// === impl FunctionKey ===

impl FunctionKey {
    /// Validates `name` and `namespace` (empty namespace = default).
    pub fn new(name: &str, namespace: &str) -> Result<Self, NameError> {
        validate_name("function name", name)?;
        let namespace = if namespace.is_empty() {
            DEFAULT_NAMESPACE
        } else {
            namespace
        };
        validate_namespace(namespace)?;
        Ok(Self {
            name: name.into(),
            namespace: namespace.into(),
        })
    }

    /// Parses a path segment `name` or `name.namespace` (split on the last dot). A namespace
    /// given in the segment wins over `fallback_ns` (the `?namespace=` query, or empty).
    pub fn parse_segment(segment: &str, fallback_ns: &str) -> Result<Self, NameError> {
        let r = KeyRef::parse_segment(segment, fallback_ns);
        Self::new(r.name, r.namespace)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn as_ref(&self) -> KeyRef<'_> {
        KeyRef {
            name: &self.name,
            namespace: &self.namespace,
        }
    }
}

impl Hash for FunctionKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state)
    }
}

impl fmt::Display for FunctionKey {
    /// `name.namespace`, the form used in metric labels and URLs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.name, self.namespace)
    }
}

impl fmt::Debug for FunctionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

// === impl KeyRef ===

impl<'a> KeyRef<'a> {
    /// Splits `name[.namespace]` on the last dot without validating or allocating.
    pub fn parse_segment(segment: &'a str, fallback_ns: &'a str) -> Self {
        match segment.rfind('.') {
            Some(i) => KeyRef {
                name: &segment[..i],
                namespace: &segment[i + 1..],
            },
            None => KeyRef {
                name: segment,
                namespace: if fallback_ns.is_empty() {
                    DEFAULT_NAMESPACE
                } else {
                    fallback_ns
                },
            },
        }
    }
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.name.as_bytes());
        state.write_u8(0xff);
        state.write(self.namespace.as_bytes());
    }
}

impl hashbrown::Equivalent<FunctionKey> for KeyRef<'_> {
    fn equivalent(&self, key: &FunctionKey) -> bool {
        self.name == &*key.name && self.namespace == &*key.namespace
    }
}

fn valid_chars(s: &str, allow_dot: bool) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (allow_dot && b == b'.'))
}

/// Validates a function name: non-empty, at most 63 characters, `[-a-zA-Z_0-9.]+`.
pub(crate) fn validate_name(field: &'static str, value: &str) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty { field });
    }
    if value.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            field,
            value: value.to_string(),
        });
    }
    if !valid_chars(value, true) {
        return Err(NameError::Invalid {
            field,
            value: value.to_string(),
        });
    }
    Ok(())
}

/// Validates a namespace: as a name, but without dots (a dot would make `name.ns` ambiguous).
pub(crate) fn validate_namespace(value: &str) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty { field: "namespace" });
    }
    if value.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            field: "namespace",
            value: value.to_string(),
        });
    }
    if !valid_chars(value, false) {
        return Err(NameError::InvalidNamespace {
            value: value.to_string(),
        });
    }
    Ok(())
}

/// Validates the name of a namespace being created: a DNS-1123 label (`[a-z0-9]([-a-z0-9]*
/// [a-z0-9])?`, at most 63 characters), as Kubernetes requires of namespaces. Stricter than
/// [`validate_namespace`], which still accepts the namespaces that existed before names were
/// checked this way (they stay usable; new ones must be labels).
pub fn validate_new_namespace(value: &str) -> Result<(), NameError> {
    validate_namespace(value)?;
    let b = value.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = b.iter().all(inner) && b.first().is_some_and(edge) && b.last().is_some_and(edge);
    if ok {
        Ok(())
    } else {
        Err(NameError::NotDnsLabel {
            value: value.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn h<T: Hash>(t: &T) -> u64 {
        let mut s = DefaultHasher::new();
        t.hash(&mut s);
        s.finish()
    }

    #[test]
    fn splits_on_last_dot() {
        let k = FunctionKey::parse_segment("figlet.openfaas-fn", "").unwrap();
        assert_eq!((k.name(), k.namespace()), ("figlet", "openfaas-fn"));
        let k = FunctionKey::parse_segment("a.b.dev", "").unwrap();
        assert_eq!((k.name(), k.namespace()), ("a.b", "dev"));
        let k = FunctionKey::parse_segment("echo", "").unwrap();
        assert_eq!(k.namespace(), DEFAULT_NAMESPACE);
        let k = FunctionKey::parse_segment("echo", "team").unwrap();
        assert_eq!(k.namespace(), "team");
        assert_eq!(k.to_string(), "echo.team");
    }

    #[test]
    fn rejects_bad_names() {
        assert!(FunctionKey::new("", "").is_err());
        assert!(FunctionKey::new("a b", "").is_err());
        assert!(FunctionKey::new("a/b", "").is_err());
        assert!(FunctionKey::new(&"x".repeat(64), "").is_err());
        assert!(FunctionKey::new(&"x".repeat(63), "").is_ok());
        assert!(FunctionKey::parse_segment(".openfaas-fn", "").is_err());
        assert!(FunctionKey::new("ok", "bad.ns").is_err());
    }

    #[test]
    fn new_namespaces_are_dns_labels() {
        for ok in ["a", "team-a", "0", "a0-b1", &"x".repeat(63)] {
            assert_eq!(validate_new_namespace(ok), Ok(()), "{ok}");
        }
        for bad in ["", "Team", "a_b", "-a", "a-", "a.b", "a b", &"x".repeat(64)] {
            assert!(validate_new_namespace(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn borrowed_key_hashes_like_owned() {
        let k = FunctionKey::new("echo", "openfaas-fn").unwrap();
        assert_eq!(h(&k), h(&k.as_ref()));
        assert_eq!(h(&k), h(&KeyRef::parse_segment("echo", "")));
    }
}
