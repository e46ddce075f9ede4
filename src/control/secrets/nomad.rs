//! The Nomad provider's secrets: one Nomad Variable per secret, the source of truth.
//!
//! Owns the Variables under [`SECRET_VAR_PREFIX`] in the gateway's own Nomad namespace:
//! `faasgate/secrets/<namespace>/<name>`, where `<name>` has every `.` written as `~`
//! (Variable paths allow `[a-zA-Z0-9-_~/]` only; `~` is in no secret name, so the mapping
//! is one to one). The value is one item: `value` holding the text when the bytes are valid
//! UTF-8, else `base64` holding their standard base64 (Variables items are JSON strings, and
//! Nomad's encoder would replace invalid UTF-8). Reads accept either item.
//!
//! Writes use check-and-set, so two gateways never overwrite each other unseen: create is a
//! put with `cas=0` (an existing Variable answers 409 → [`SecretError::AlreadyExists`]);
//! update reads, then puts with the `ModifyIndex` read (absent → [`SecretError::NotFound`]);
//! delete reads, then deletes with that index. A lost race is a [`SecretError::Backend`]
//! saying the secret changed meanwhile.
//!
//! Invariants: names arrive validated ([`super::validate_name`]); a name whose path would
//! pass Nomad's 128-byte limit is refused as [`SecretError::InvalidName`] before any call.
//! No error carries a value (Nomad's messages about a path or a status only).

use std::sync::Arc;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::{SecretError, SecretStore, SecretValue};
use crate::client::nomad::{DeleteOutcome, PutOutcome, VarPath};
use crate::client::wire::variables::Items;
use crate::client::{NomadClient, QueryOptions};

/// Where secrets live (one Variable per secret under `<prefix><namespace>/`).
pub const SECRET_VAR_PREFIX: &str = "faasgate/secrets/";
/// Item holding a UTF-8 value as is.
const TEXT_ITEM: &str = "value";
/// Item holding a value that is not UTF-8, base64 (standard alphabet, padded).
const BASE64_ITEM: &str = "base64";

/// [`SecretStore`] on Nomad Variables; see the module doc.
pub struct NomadSecretStore {
    nomad: Arc<NomadClient>,
}

impl NomadSecretStore {
    pub fn new(nomad: Arc<NomadClient>) -> Self {
        Self { nomad }
    }

    /// The Variable path of a secret.
    pub fn path(namespace: &str, name: &str) -> Result<VarPath, SecretError> {
        let p = format!("{SECRET_VAR_PREFIX}{namespace}/{}", name.replace('.', "~"));
        VarPath::new(p).map_err(|e| {
            SecretError::InvalidName(format!(
                "secret name {name:?} cannot be stored on Nomad: {}",
                e.rule
            ))
        })
    }

    /// The items holding `value`.
    pub fn items(value: &SecretValue) -> Items {
        match std::str::from_utf8(value.as_bytes()) {
            Ok(text) => [(TEXT_ITEM.to_string(), text.to_string())].into(),
            Err(_) => [(BASE64_ITEM.to_string(), STANDARD.encode(value.as_bytes()))].into(),
        }
    }

    /// The value `items` hold (base64 item first).
    pub fn value(items: &Items) -> Result<SecretValue, SecretError> {
        if let Some(b) = items.get(BASE64_ITEM) {
            return STANDARD
                .decode(b)
                .map(SecretValue::new)
                .map_err(|_| SecretError::Backend(format!("item {BASE64_ITEM} is not base64")));
        }
        Ok(SecretValue::new(
            items
                .get(TEXT_ITEM)
                .cloned()
                .unwrap_or_default()
                .into_bytes(),
        ))
    }
}

fn nomad_err(e: crate::client::ClientError) -> SecretError {
    SecretError::Backend(format!("nomad: {e}"))
}

fn changed(namespace: &str, name: &str) -> SecretError {
    SecretError::Backend(format!(
        "secret {name} in namespace {namespace} changed meanwhile; retry"
    ))
}

#[async_trait]
impl SecretStore for NomadSecretStore {
    async fn list(&self, namespace: &str) -> Result<Vec<String>, SecretError> {
        let prefix = format!("{SECRET_VAR_PREFIX}{namespace}/");
        let list = self
            .nomad
            .var_list(&prefix, QueryOptions::default())
            .await
            .map_err(nomad_err)?
            .value;
        let mut names: Vec<String> = list
            .into_iter()
            .filter_map(|m| {
                let rest = m.path.strip_prefix(&prefix)?;
                (!rest.is_empty() && !rest.contains('/')).then(|| rest.replace('~', "."))
            })
            .collect();
        names.sort();
        Ok(names)
    }

    async fn create(
        &self,
        namespace: &str,
        name: &str,
        value: &SecretValue,
    ) -> Result<(), SecretError> {
        let path = Self::path(namespace, name)?;
        match self
            .nomad
            .var_put(&path, &Self::items(value), Some(0))
            .await
            .map_err(nomad_err)?
        {
            PutOutcome::Written(_) => Ok(()),
            PutOutcome::Conflict(v) if v.meta.modify_index > 0 => {
                Err(SecretError::already_exists(namespace, name))
            }
            PutOutcome::Conflict(_) => Err(changed(namespace, name)),
        }
    }

    async fn update(
        &self,
        namespace: &str,
        name: &str,
        value: &SecretValue,
    ) -> Result<(), SecretError> {
        let path = Self::path(namespace, name)?;
        let Some(current) = self.nomad.var_read(&path).await.map_err(nomad_err)? else {
            return Err(SecretError::not_found(namespace, name));
        };
        let items = Self::items(value);
        if current.items == items {
            // Every write wakes every template watching a copy; nothing changed.
            return Ok(());
        }
        match self
            .nomad
            .var_put(&path, &items, Some(current.meta.modify_index))
            .await
            .map_err(nomad_err)?
        {
            PutOutcome::Written(_) => Ok(()),
            PutOutcome::Conflict(_) => Err(changed(namespace, name)),
        }
    }

    async fn delete(&self, namespace: &str, name: &str) -> Result<(), SecretError> {
        let path = Self::path(namespace, name)?;
        let not_found = || SecretError::not_found(namespace, name);
        let Some(current) = self.nomad.var_read(&path).await.map_err(nomad_err)? else {
            return Err(not_found());
        };
        match self
            .nomad
            .var_delete(&path, Some(current.meta.modify_index))
            .await
            .map_err(nomad_err)?
        {
            DeleteOutcome::Deleted => Ok(()),
            DeleteOutcome::Conflict(_) => Err(changed(namespace, name)),
        }
    }

    async fn read(&self, namespace: &str, name: &str) -> Result<SecretValue, SecretError> {
        let path = Self::path(namespace, name)?;
        match self.nomad.var_read(&path).await.map_err(nomad_err)? {
            Some(v) => Self::value(&v.items),
            None => Err(SecretError::not_found(namespace, name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_escape_dots_and_respect_the_limit() {
        let p = NomadSecretStore::path("openfaas-fn", "db.password").unwrap();
        assert_eq!(p.as_str(), "faasgate/secrets/openfaas-fn/db~password");
        let long = "a".repeat(120);
        let e = NomadSecretStore::path("openfaas-fn", &long).unwrap_err();
        assert!(matches!(e, SecretError::InvalidName(m) if m.contains("128")));
    }

    #[test]
    fn values_round_trip_text_as_is_and_binary_as_base64() {
        let text = SecretValue::new(b"s3cret\n".to_vec());
        let items = NomadSecretStore::items(&text);
        assert_eq!(items.get("value").map(String::as_str), Some("s3cret\n"));
        assert_eq!(NomadSecretStore::value(&items).unwrap(), text);
        let raw = SecretValue::new(vec![0, 1, 2, 0xff]);
        let items = NomadSecretStore::items(&raw);
        assert_eq!(items.get("base64").map(String::as_str), Some("AAEC/w=="));
        assert_eq!(NomadSecretStore::value(&items).unwrap(), raw);
    }
}
