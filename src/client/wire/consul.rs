//! Consul API bodies (shapes per `../shared/fixtures/consul`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::nd;

/// `GET /v1/health/service/:name` element.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceEntry {
    #[serde(default, deserialize_with = "nd")]
    pub node: Node,
    #[serde(default, deserialize_with = "nd")]
    pub service: AgentService,
    #[serde(default, deserialize_with = "nd")]
    pub checks: Vec<HealthCheck>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    #[serde(rename = "ID", default, deserialize_with = "nd")]
    pub id: String,
    #[serde(default, deserialize_with = "nd")]
    pub node: String,
    #[serde(default, deserialize_with = "nd")]
    pub address: String,
    #[serde(default, deserialize_with = "nd")]
    pub datacenter: String,
    #[serde(default, deserialize_with = "nd")]
    pub tagged_addresses: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nd")]
    pub meta: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentService {
    #[serde(rename = "ID", default, deserialize_with = "nd")]
    pub id: String,
    #[serde(default, deserialize_with = "nd")]
    pub service: String,
    #[serde(default, deserialize_with = "nd")]
    pub tags: Vec<String>,
    /// `""` means the node's address.
    #[serde(default, deserialize_with = "nd")]
    pub address: String,
    #[serde(default, deserialize_with = "nd")]
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    #[serde(default, deserialize_with = "nd")]
    pub meta: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nd")]
    pub port: u16,
    #[serde(default)]
    pub weights: Option<Weights>,
    #[serde(default, deserialize_with = "nd")]
    pub namespace: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceAddress {
    #[serde(default, deserialize_with = "nd")]
    pub address: String,
    #[serde(default, deserialize_with = "nd")]
    pub port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    #[serde(default, deserialize_with = "nd")]
    pub passing: i64,
    #[serde(default, deserialize_with = "nd")]
    pub warning: i64,
}

/// `Checks[]` of a service entry, `GET /v1/health/checks/:service`, `/v1/health/state/:s`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheck {
    #[serde(default, deserialize_with = "nd")]
    pub node: String,
    #[serde(rename = "CheckID", default, deserialize_with = "nd")]
    pub check_id: String,
    #[serde(default, deserialize_with = "nd")]
    pub name: String,
    /// `passing|warning|critical|maintenance`.
    #[serde(default, deserialize_with = "nd")]
    pub status: String,
    #[serde(default, deserialize_with = "nd")]
    pub notes: String,
    #[serde(default, deserialize_with = "nd")]
    pub output: String,
    #[serde(rename = "ServiceID", default, deserialize_with = "nd")]
    pub service_id: String,
    #[serde(default, deserialize_with = "nd")]
    pub service_name: String,
    #[serde(default, deserialize_with = "nd")]
    pub service_tags: Vec<String>,
    #[serde(default, deserialize_with = "nd")]
    pub namespace: String,
}

/// `GET /v1/catalog/service/:name` element (no health).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogService {
    #[serde(rename = "ID", default, deserialize_with = "nd")]
    pub id: String,
    #[serde(default, deserialize_with = "nd")]
    pub node: String,
    #[serde(default, deserialize_with = "nd")]
    pub address: String,
    #[serde(default, deserialize_with = "nd")]
    pub datacenter: String,
    #[serde(default, deserialize_with = "nd")]
    pub node_meta: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nd")]
    pub service_address: String,
    #[serde(rename = "ServiceID", default, deserialize_with = "nd")]
    pub service_id: String,
    #[serde(default, deserialize_with = "nd")]
    pub service_name: String,
    #[serde(default, deserialize_with = "nd")]
    pub service_port: u16,
    #[serde(default, deserialize_with = "nd")]
    pub service_tags: Vec<String>,
    #[serde(default, deserialize_with = "nd")]
    pub service_meta: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nd")]
    pub namespace: String,
    #[serde(default, deserialize_with = "nd")]
    pub create_index: u64,
    #[serde(default, deserialize_with = "nd")]
    pub modify_index: u64,
}

/// `GET /v1/catalog/services`: service name -> tags.
pub type CatalogServices = BTreeMap<String, Vec<String>>;

/// `PUT /v1/agent/service/register` body (durations are strings such as `"10s"` here).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentServiceRegistration {
    #[serde(rename = "ID", default, deserialize_with = "nd")]
    pub id: String,
    #[serde(default, deserialize_with = "nd")]
    pub name: String,
    #[serde(default, deserialize_with = "nd")]
    pub tags: Vec<String>,
    #[serde(default, deserialize_with = "nd")]
    pub address: String,
    #[serde(default, deserialize_with = "nd")]
    pub port: u16,
    #[serde(default, deserialize_with = "nd")]
    pub meta: BTreeMap<String, String>,
    #[serde(default)]
    pub check: Option<Value>,
}

// === impl ServiceEntry ===

impl ServiceEntry {
    /// The address to dial: the service's, else its node's.
    pub fn address(&self) -> &str {
        if self.service.address.is_empty() {
            &self.node.address
        } else {
            &self.service.address
        }
    }

    /// True when every check (node and service) is exactly `passing`.
    pub fn is_passing(&self) -> bool {
        self.checks.iter().all(|c| c.status == "passing")
    }
}
