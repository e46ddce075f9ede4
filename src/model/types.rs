//! OpenFaaS wire types with the exact JSON names of faas-provider.
//!
//! Invariants the certifier and faas-cli rely on (see the reference, section 2.16):
//! `labels`/`annotations` always serialise as objects, `envVars`, `limits` and `requests` are
//! `null` when none were deployed, resource strings are kept verbatim, and unknown request
//! fields are ignored (no `deny_unknown_fields`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub(crate) type StringMap = BTreeMap<String, String>;

/// `POST/PUT /system/functions` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDeployment {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default)]
    pub env_process: String,
    #[serde(default)]
    pub env_vars: Option<StringMap>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub labels: Option<StringMap>,
    #[serde(default)]
    pub annotations: Option<StringMap>,
    #[serde(default)]
    pub limits: Option<FunctionResources>,
    #[serde(default)]
    pub requests: Option<FunctionResources>,
    #[serde(default)]
    pub read_only_root_filesystem: bool,
}

/// `limits` / `requests`: OpenFaaS resource strings such as `128Mi` or `100m`, kept verbatim.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionResources {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub memory: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cpu: String,
}

/// `GET /system/function/{name}` and the items of `GET /system/functions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionStatus {
    pub name: String,
    pub image: String,
    pub namespace: String,
    pub env_process: String,
    pub env_vars: Option<StringMap>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    pub labels: StringMap,
    pub annotations: StringMap,
    pub limits: Option<FunctionResources>,
    pub requests: Option<FunctionResources>,
    pub read_only_root_filesystem: bool,
    pub(crate) invocation_count: u64,
    pub replicas: u64,
    pub available_replicas: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// faasgate extension: live latency percentiles and demand from the data plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<FunctionStats>,
    /// faasgate extension: an update in progress, or the last update that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateState>,
}

/// The `update` extension of [`FunctionStatus`] (Nomad provider).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateState {
    /// `in-progress` (the previous version serves until the new one is ready) or `failed`
    /// (the new version was abandoned; the previous one serves).
    pub status: String,
    /// What happened (for `failed`: why).
    pub message: String,
    /// When this state began (RFC 3339).
    pub since: String,
}

/// The label every function carries with its own name (as faas-netes adds it).
pub(crate) const LABEL_FUNCTION: &str = "faas_function";

/// Live numbers a provider adds to the echoed deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ReplicaCounts {
    /// `replicas`: the desired count.
    pub desired: u64,
    /// `availableReplicas`: replicas passing their health check.
    pub available: u64,
    pub invocations: u64,
}

impl FunctionStatus {
    /// The status of a function: its deployment echoed exactly (reference section 2.16:
    /// `envVars`/`limits`/`requests` stay null when none were deployed, labels and
    /// annotations are objects, `faas_function=<name>` is added), plus live counts.
    pub(crate) fn from_deployment(
        name: &str,
        namespace: &str,
        d: &FunctionDeployment,
        created_at: Option<String>,
        counts: ReplicaCounts,
    ) -> Self {
        let mut labels = d.labels.clone().unwrap_or_default();
        labels.insert(LABEL_FUNCTION.into(), name.into());
        FunctionStatus {
            name: name.into(),
            image: d.image.clone(),
            namespace: namespace.into(),
            env_process: d.env_process.clone(),
            env_vars: d.env_vars.clone(),
            constraints: d.constraints.clone(),
            secrets: d.secrets.clone(),
            labels,
            annotations: d.annotations.clone().unwrap_or_default(),
            limits: d.limits.clone(),
            requests: d.requests.clone(),
            read_only_root_filesystem: d.read_only_root_filesystem,
            invocation_count: counts.invocations,
            replicas: counts.desired,
            available_replicas: counts.available,
            created_at,
            stats: None,
            update: None,
        }
    }
}

/// The `stats` extension of [`FunctionStatus`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionStats {
    /// Latency percentiles in seconds, over all calls since the function was deployed.
    pub p50: f64,
    pub(crate) p90: f64,
    pub p99: f64,
    pub(crate) p999: f64,
    /// Requests recorded in the percentiles.
    pub count: u64,
    /// Requests being served now.
    pub inflight: u64,
    /// Requests held waiting for a ready replica now.
    pub queued: u64,
}

/// `POST /system/scale-function/{name}` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ScaleServiceRequest {
    #[serde(default)]
    pub service_name: String,
    pub replicas: Option<u64>,
    #[serde(default)]
    pub namespace: String,
}

/// `DELETE /system/functions` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeleteFunctionRequest {
    #[serde(default)]
    pub function_name: String,
    #[serde(default)]
    pub namespace: String,
}

/// A namespace as the namespace routes carry it (faas-provider `FunctionNamespace`):
/// `POST /system/namespace/` and `PUT /system/namespace/{name}` bodies, and the answer of
/// `GET /system/namespace/{name}`. Both maps are always written (`{}` when empty); absent
/// or `null` in a request reads as empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionNamespace {
    #[serde(default)]
    pub name: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub labels: StringMap,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub annotations: StringMap,
}

impl FunctionNamespace {
    /// The label or annotation OpenFaaS requires on a namespace it manages.
    pub const MARKER: &'static str = "openfaas";

    /// Whether `labels` or `annotations` carry `openfaas: "1"` (faasd checks labels,
    /// OpenFaaS for Enterprises annotations; go-sdk sends both).
    pub fn is_marked(&self) -> bool {
        [&self.labels, &self.annotations]
            .iter()
            .any(|m| m.get(Self::MARKER).is_some_and(|v| v == "1"))
    }
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<StringMap, D::Error> {
    Ok(Option::<StringMap>::deserialize(d)?.unwrap_or_default())
}

/// One NDJSON line of `GET /system/logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogMessage {
    pub name: String,
    pub namespace: String,
    pub instance: String,
    /// RFC 3339 with nanoseconds.
    pub timestamp: String,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionInfo {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub commit_message: String,
    pub sha: String,
    pub release: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderInfo {
    pub provider: String,
    pub orchestration: String,
    pub version: VersionInfo,
}

/// `GET /system/info`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GatewayInfo {
    pub provider: ProviderInfo,
    pub version: VersionInfo,
    pub arch: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_ignores_unknown_fields_and_keeps_nulls() {
        let d: FunctionDeployment = serde_json::from_str(
            r#"{"service":"env","image":"functions/alpine:latest","envProcess":"env",
                "network":"func_functions","registryAuth":"x","limits":{"memory":"5Mi","cpu":"100m"}}"#,
        )
        .unwrap();
        assert_eq!(d.service, "env");
        assert!(d.env_vars.is_none());
        assert_eq!(d.limits.unwrap().memory, "5Mi");
        assert!(d.requests.is_none());
    }

    #[test]
    fn status_serialises_exact_names() {
        let s = FunctionStatus {
            name: "env".into(),
            namespace: "openfaas-fn".into(),
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert!(v["envVars"].is_null());
        assert!(v["labels"].is_object());
        assert!(v["annotations"].is_object());
        assert_eq!(v["availableReplicas"], 0);
        assert_eq!(v["replicas"], 0);
        assert_eq!(v["invocationCount"], 0);
        assert!(v["limits"].is_null());
        assert_eq!(v["readOnlyRootFilesystem"], false);
        assert!(v.get("stats").is_none());
    }
}
