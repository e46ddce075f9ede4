//! What the local provider reads from a deployment and what it shows back.
//!
//! Owns the provider-specific validation (`envProcess` is required: there is no image to take
//! a default from), the `com.openfaas.scale.min` label, the replica environment
//! ([`ReplicaSpec`]) and the `FunctionStatus` rendering with the echo rules of the reference
//! (section 2.16): `envVars` as deployed (null when none), `labels`/`annotations` always
//! objects, `faas_function=<name>` added, resources verbatim, namespace filled.
//! Pure functions only.
//!
//! # The environment of a replica
//!
//! A replica process (`faasgate watchdog`) starts from an empty environment: nothing of the
//! gateway's is inherited, so its credentials (`FAASGATE_BASIC_AUTH_PASSWORD`, `NOMAD_TOKEN`,
//! `CONSUL_HTTP_TOKEN`, cloud keys, ...) and its own settings (`read_timeout`,
//! `write_timeout`, `RUST_LOG`, ...) never reach a function. It gets exactly this, in order,
//! a later entry of the same name winning:
//!
//! 1. `PATH=`[`REPLICA_PATH`], Docker's default (and the Debian and Alpine images'), so
//!    commands such as `env`, `cat` or `python3` resolve as in a function's container. Not
//!    the gateway's PATH: that often names one user's tool directories (`~/.cargo/bin`, pyenv
//!    shims) a function would come to depend on without saying so.
//! 2. `HOME=` the gateway's `HOME`, when it has one. Replicas run as the gateway's user, whose
//!    home directory is no secret (`/etc/passwd` tells it to any process of that user), and
//!    runtimes expect one for their caches (pip, npm, go, git), as every container has one.
//! 3. The function's `envVars`, in name order: they may replace `PATH` or `HOME` (as an
//!    image's `ENV` does) and set the watchdog's options (`mode`, `exec_timeout`, ...).
//! 4. The watchdog settings the provider fixes: `fprocess` (the `envProcess`), `port=0` and
//!    `bind_address=127.0.0.1`.
//! 5. Per replica, in `mode=http` only ([`instance_env`]): `PORT` and, unless the function
//!    set one, `upstream_url`.
//! 6. Per replica of a function with secrets, when they are delivered as a folder (no mount
//!    namespace: `replica_secrets`): `secret_mount_path`, the folder's absolute path. Secret
//!    values themselves are never in the environment, only in files.
//!
//! No `LANG`, `TZ`, `USER` or `HOSTNAME`: OpenFaaS on Kubernetes gives a function its
//! image's `ENV` and its `envVars`, and a function that needs one of these sets it in
//! `envVars`. The watchdog hands its whole environment on to the function processes it starts
//! (plus the `Http_*` CGI variables of each forked call), as of-watchdog does, so the function
//! sees this same list. `instance::replica_command` applies it with `env_clear`; the test
//! `replicas_never_see_the_gateway_environment` (tests/local_provider.rs) reads
//! `/proc/<pid>/environ` of every replica process to prove it.

use std::ffi::{OsStr, OsString};
use std::sync::Arc;

use crate::control::provider::ProviderError;
use crate::control::secrets::SecretFile;
use crate::model::names::FunctionKey;
use crate::model::scale::ScaleSettings;
use crate::model::types::{FunctionDeployment, FunctionStatus, ReplicaCounts};

/// The PATH of every replica (see the module doc), unless its `envVars` set another.
pub(super) const REPLICA_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything a replica process of one spec version needs: its environment and secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplicaSpec {
    /// The whole environment of the process, in order (later wins); nothing is inherited.
    pub env: Vec<(OsString, OsString)>,
    /// The function's secrets as read when this spec was made: every replica of the spec
    /// gets these files (`replica_secrets`), never in its environment.
    pub secrets: Arc<[SecretFile]>,
}

/// Checks what this provider needs beyond the API's validation.
pub(crate) fn validate(d: &FunctionDeployment) -> Result<(), ProviderError> {
    if d.env_process.trim().is_empty() {
        return Err(ProviderError::Invalid(
            "envProcess is required by the local provider (the command the watchdog runs)".into(),
        ));
    }
    scale_min(d)?;
    Ok(())
}

/// Replicas started on deploy: `com.openfaas.scale.min` (`model::scale`), default 1.
pub(crate) fn scale_min(d: &FunctionDeployment) -> Result<u64, ProviderError> {
    ScaleSettings::parse_deployment(d)
        .map(|s| s.min)
        .map_err(|e| ProviderError::Invalid(e.to_string()))
}

/// The environment of the replicas (items 1 to 4 of the module doc): `PATH`, `HOME` (the
/// gateway's `home`, if any), `envVars`, then the watchdog's settings; with `secrets`.
pub(crate) fn replica_spec(
    d: &FunctionDeployment,
    home: Option<&OsStr>,
    secrets: Vec<SecretFile>,
) -> ReplicaSpec {
    let mut env: Vec<(OsString, OsString)> = vec![("PATH".into(), REPLICA_PATH.into())];
    if let Some(home) = home {
        env.push(("HOME".into(), home.into()));
    }
    env.extend(
        d.env_vars
            .iter()
            .flatten()
            .map(|(k, v)| (k.into(), v.into())),
    );
    env.push(("fprocess".into(), d.env_process.as_str().into()));
    env.push(("port".into(), "0".into()));
    env.push(("bind_address".into(), "127.0.0.1".into()));
    ReplicaSpec {
        env,
        secrets: secrets.into(),
    }
}

/// Settings that differ per replica. In `mode=http` the function process listens on a port
/// of its own: each replica gets a free loopback port in `PORT`, and `upstream_url` pointing
/// at it unless the function set one (a fixed `upstream_url` allows one replica per machine).
pub(crate) fn instance_env(
    env: &[(OsString, OsString)],
) -> std::io::Result<Vec<(OsString, OsString)>> {
    let get = |name: &str| env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v);
    if get("mode").map(|m| m != "http").unwrap_or(true) {
        return Ok(Vec::new());
    }
    // The kernel hands out ephemeral ports round-robin, so the port just released is not
    // reused before the function binds it in practice.
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port();
    let mut out = vec![(OsString::from("PORT"), OsString::from(port.to_string()))];
    if get("upstream_url").is_none() && get("http_upstream_url").is_none() {
        out.push((
            "upstream_url".into(),
            format!("http://127.0.0.1:{port}").into(),
        ));
    }
    Ok(out)
}

/// Live numbers added to the echoed deployment.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Counts {
    pub desired: u64,
    pub available: u64,
    pub invocations: u64,
}

/// The status of a function: the deployment echoed exactly, plus counts.
pub(super) fn status(
    key: &FunctionKey,
    d: &FunctionDeployment,
    created_at: &str,
    counts: Counts,
) -> FunctionStatus {
    FunctionStatus::from_deployment(
        key.name(),
        key.namespace(),
        d,
        Some(created_at.into()),
        ReplicaCounts {
            desired: counts.desired,
            available: counts.available,
            invocations: counts.invocations,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::types::FunctionResources;

    fn with_labels(labels: &[(&str, &str)]) -> FunctionDeployment {
        FunctionDeployment {
            service: "f".into(),
            env_process: "cat".into(),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn scale_min_label() {
        assert_eq!(scale_min(&FunctionDeployment::default()).unwrap(), 1);
        assert_eq!(scale_min(&with_labels(&[])).unwrap(), 1);
        assert_eq!(
            scale_min(&with_labels(&[(crate::model::scale::labels::MIN, "3")])).unwrap(),
            3
        );
        assert_eq!(
            scale_min(&with_labels(&[(crate::model::scale::labels::MIN, "0")])).unwrap(),
            0
        );
        for bad in ["-1", "two", "", "1.5"] {
            let err =
                scale_min(&with_labels(&[(crate::model::scale::labels::MIN, bad)])).unwrap_err();
            assert!(
                matches!(&err, ProviderError::Invalid(m) if m.contains(crate::model::scale::labels::MIN)),
                "{err}"
            );
        }
    }

    #[test]
    fn env_process_is_required() {
        let mut d = with_labels(&[]);
        assert!(validate(&d).is_ok());
        d.env_process = " ".into();
        assert!(matches!(validate(&d), Err(ProviderError::Invalid(m)) if m.contains("envProcess")));
    }

    #[test]
    fn http_mode_replicas_get_their_own_port() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(OsString, OsString)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect()
        };
        assert!(instance_env(&env(&[("fprocess", "cat")]))
            .unwrap()
            .is_empty());
        let a = instance_env(&env(&[("mode", "http")])).unwrap();
        assert_eq!(a[0].0, "PORT");
        assert_eq!(a[1].0, "upstream_url");
        assert!(a[1]
            .1
            .to_string_lossy()
            .ends_with(&*a[0].1.to_string_lossy()));
        let fixed = instance_env(&env(&[
            ("mode", "http"),
            ("upstream_url", "http://127.0.0.1:5000"),
        ]))
        .unwrap();
        assert_eq!(fixed.len(), 1);
    }

    #[test]
    fn replica_env_is_path_home_env_vars_then_watchdog_settings() {
        let mut d = with_labels(&[]);
        d.env_vars = Some([("A".to_string(), "1".to_string())].into());
        let env = replica_spec(&d, Some(OsStr::new("/home/fn")), Vec::new()).env;
        let names: Vec<_> = env.iter().map(|(k, _)| k.to_str().unwrap()).collect();
        assert_eq!(
            names,
            ["PATH", "HOME", "A", "fprocess", "port", "bind_address"]
        );
        assert_eq!(env[0].1, REPLICA_PATH);
        assert_eq!(env[1].1, "/home/fn");
        assert_eq!(env[3].1, "cat");

        // No HOME when the gateway has none.
        let names: Vec<_> = replica_spec(&d, None, Vec::new())
            .env
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(names, ["PATH", "A", "fprocess", "port", "bind_address"]);
    }

    #[test]
    fn env_vars_replace_path_and_home_but_not_the_watchdog_settings() {
        let mut d = with_labels(&[]);
        d.env_vars = Some(
            [("PATH", "/opt/fn/bin"), ("HOME", "/opt/fn"), ("port", "9")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
        );
        let env = replica_spec(&d, Some(OsStr::new("/home/gw")), Vec::new()).env;
        let last = |name: &str| {
            env.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.to_str().unwrap())
        };
        assert_eq!(last("PATH"), Some("/opt/fn/bin"));
        assert_eq!(last("HOME"), Some("/opt/fn"));
        assert_eq!(last("port"), Some("0"));
    }

    #[test]
    fn status_echoes_the_deployment() {
        let key = FunctionKey::new("f", "").unwrap();
        let mut d = with_labels(&[("x", "y")]);
        d.limits = Some(FunctionResources {
            memory: "5Mi".into(),
            cpu: "100m".into(),
        });
        let s = status(
            &key,
            &d,
            "2024-05-01T10:00:00Z",
            Counts {
                desired: 2,
                available: 1,
                invocations: 7,
            },
        );
        assert_eq!(s.namespace, "openfaas-fn");
        assert!(s.env_vars.is_none());
        assert_eq!(s.labels.get("x").unwrap(), "y");
        assert_eq!(
            s.labels.get(crate::model::types::LABEL_FUNCTION).unwrap(),
            "f"
        );
        assert!(s.annotations.is_empty());
        assert_eq!(s.limits.unwrap().memory, "5Mi");
        assert!(s.requests.is_none());
        assert_eq!(
            (s.replicas, s.available_replicas, s.invocation_count),
            (2, 1, 7)
        );
        assert!(s.stats.is_none());
    }
}
