//! Assembling and running a gateway: provider, data plane, cold-start task, autoscaler,
//! stacks, server.
//!
//! [`run`] takes a bound listener and a shutdown future (tests bind `127.0.0.1:0`). Shutdown
//! order: stop accepting, drain in-flight requests (bounded by `write_timeout`), then stop
//! every function replica, so no child process outlives the gateway.

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::api::metrics::exposition::Exposition;
use crate::api::metrics::series::{spawn_sampler, Series};
use crate::api::Gateway;
use crate::auth::{self, CredentialSource};
use crate::config::{GatewayConfig, ProviderKind};
use crate::control::cluster::drain::MemberDrain;
use crate::control::cluster::forward::LeaderForward;
use crate::control::cluster::members::{watch_members, Membership};
use crate::control::cluster::nomad_lock::NomadLock;
use crate::control::cluster::peer::PeerClient;
use crate::control::cluster::pull::{run_puller, PullConfig};
use crate::control::cluster::{run_cluster, Cluster, ClusterDemand, Leadership};
use crate::control::cold_start::spawn_cold_start;
use crate::control::local::{LocalOptions, LocalProvider};
use crate::control::scaler::{spawn_scaler, DemandSource, LocalDemand, Scaling};
use crate::control::{Provider, ProviderError};
use crate::dataplane::forward::{ForwardConfig, Forwarder};
use crate::dataplane::Routes;
use crate::discovery::Catalog;
use crate::model::names::FunctionKey;
use crate::model::types::{FunctionDeployment, FunctionStatus};

#[derive(Debug, Error)]
pub enum GatewayError {
    #[error("auth: {0}")]
    Auth(#[from] auth::AuthError),
    #[error("stack {path}: {source}")]
    Stack {
        path: PathBuf,
        source: crate::model::stack::StackError,
    },
    #[error("deploying {function} from {path}: {source}")]
    StackDeploy {
        path: PathBuf,
        function: String,
        source: ProviderError,
    },
    #[error("provider: {0}")]
    Provider(#[from] ProviderError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Queue(#[from] crate::queue::StoreError),
}

/// Runs the gateway on `listener` until `shutdown` resolves.
pub async fn run(
    config: GatewayConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GatewayError> {
    std::fs::create_dir_all(&config.data_dir)?;
    let credentials = if config.auth {
        let (creds, source) = auth::load_or_create(&config.data_dir, |k| std::env::var(k).ok())?;
        match &source {
            CredentialSource::Env => tracing::info!("basic auth: credentials from the environment"),
            CredentialSource::Files(p) => {
                tracing::info!(path = %p.display(), "basic auth: credentials from files")
            }
            CredentialSource::Generated(p) => tracing::info!(
                path = %p.display(),
                "basic auth: generated a password for user admin; read it from this file"
            ),
        }
        Some(creds)
    } else {
        tracing::warn!("basic auth is disabled (--no-auth)");
        None
    };

    // Before any replica (and so any pool) exists.
    crate::http1::pool::configure(
        config.wire.upstream_max_idle,
        config.wire.upstream_idle_timeout,
    );
    let routes = Arc::new(Routes::new());
    // Alone, or one of several gateways with one leader deciding on the sum of their demand
    // (the Nomad provider tells the others of its scale-downs).
    let (cluster, cluster_tasks) = start_cluster(
        &config,
        &routes,
        credentials.as_ref(),
        listener.local_addr()?,
    )?;
    let provider = start_provider(&config, &routes, &cluster).await;
    let provider = match provider {
        Ok(p) => p,
        Err(e) => {
            if let Some(tasks) = cluster_tasks {
                tasks.stop().await;
            }
            return Err(e);
        }
    };

    let result = serve(
        &config,
        listener,
        routes,
        provider.clone(),
        credentials,
        (cluster, cluster_tasks),
        shutdown,
    )
    .await;
    tracing::info!("stopping functions");
    provider.shutdown().await;
    result
}

async fn start_provider(
    config: &GatewayConfig,
    routes: &Arc<Routes>,
    cluster: &Arc<Cluster>,
) -> Result<Arc<dyn Provider>, GatewayError> {
    Ok(match config.provider {
        ProviderKind::Local => {
            let exe = std::env::current_exe()?;
            LocalProvider::start(
                LocalOptions {
                    data_dir: config.data_dir.clone(),
                    watchdog_command: vec![OsString::from(exe), OsString::from("watchdog")],
                    drain_timeout: config.timeouts.write,
                    secrets_isolation: config.secrets_isolation,
                },
                routes.clone(),
            )
            .await?
        }
        ProviderKind::Nomad => {
            let mut opts = config.nomad.clone().ok_or_else(|| {
                ProviderError::Backend("--provider nomad needs the nomad settings".into())
            })?;
            // A replica leaving on a scale-down gets as long as a request may wait for it.
            opts.drain_timeout = config.timeouts.upstream;
            crate::control::nomad::NomadProvider::start(opts, routes.clone(), cluster.clone())
                .await?
        }
    })
}

async fn serve(
    config: &GatewayConfig,
    listener: TcpListener,
    routes: Arc<Routes>,
    provider: Arc<dyn Provider>,
    auth: Option<auth::Credentials>,
    (cluster, cluster_tasks): (Arc<Cluster>, Option<ClusterTasks>),
    shutdown: impl Future<Output = ()>,
) -> Result<(), GatewayError> {
    for path in &config.stacks {
        // Local replicas run `fprocess` on this machine: its relative program is the stack's.
        let local = config.provider == ProviderKind::Local;
        if let Err(e) = apply_stack(provider.as_ref(), path, local).await {
            if let Some(tasks) = cluster_tasks {
                tasks.stop().await;
            }
            return Err(e);
        }
    }
    // Async calls: stored under the data dir or in NATS JetStream, delivered through this
    // gateway's own listener.
    let (store, max_async_body) = match open_queue(&config.async_calls, &config.data_dir).await {
        Ok(opened) => opened,
        Err(e) => {
            if let Some(tasks) = cluster_tasks {
                tasks.stop().await;
            }
            return Err(e.into());
        }
    };
    if let Some(sum) = &cluster.demand {
        sum.count_backlog(store.clone());
    }
    // The UI: scale decisions and per-function time series, sampled off the request path.
    let scaling = Scaling::with_cluster(config.scaler.clone(), cluster.clone());
    let events = scaling.events.clone();
    let series = Arc::new(Series::new());
    let sampler = spawn_sampler(routes.clone(), series.clone());
    let (cold_tx, cold_rx) = mpsc::unbounded_channel();
    let cold_task = spawn_cold_start(provider.clone(), events.clone(), cluster.clone(), cold_rx);
    // The queue-depth autoscaler, and what alerts and /metrics share with it.
    let scaler_task = config.scaler.enabled.then(|| {
        let source: Arc<dyn DemandSource> = match &cluster.demand {
            Some(sum) => sum.clone(),
            None => Arc::new(LocalDemand::new(routes.clone()).with_backlog(store.clone())),
        };
        spawn_scaler(scaling.clone(), source, provider.clone())
    });
    let exposition = Exposition::new(routes.clone());
    exposition
        .register(Box::new(scaling.stats.collector()))
        .expect("scaler metric names are distinct from the gateway's");
    exposition
        .register(Box::new(cluster.collector()))
        .expect("cluster metric names are distinct from the gateway's");
    let async_stats = Arc::new(crate::queue::AsyncStats::default());
    let dispatcher = crate::queue::Dispatcher::new(
        store.clone(),
        routes.clone(),
        listener.local_addr()?,
        config.async_calls.dispatch.clone(),
        crate::queue::Callbacks::new(config.async_calls.callbacks.clone()),
        async_stats.clone(),
    );
    let dispatch_task = tokio::spawn(dispatcher.clone().run());
    exposition
        .register(Box::new(async_stats.collector(store.clone())))
        .expect("async metric names are distinct from the gateway's");
    let gateway = Arc::new(Gateway {
        routes: routes.clone(),
        forwarder: Forwarder::new(
            ForwardConfig {
                upstream_timeout: config.timeouts.upstream,
                body_timeout: config.wire.upstream_read_timeout,
                client_body_timeout: config.timeouts.read,
                hold_timeout: config.hold_timeout,
                max_queue: config.max_queue,
                allow_underscore_headers: config.wire.allow_underscore_headers,
            },
            cold_tx,
        ),
        provider,
        auth,
        exposition,
        max_body_bytes: config.max_body_bytes,
        series,
        events,
        scaling,
        byte_loop: true,
        async_calls: Some(crate::api::async_call::AsyncCalls {
            store,
            dispatcher,
            max_body: max_async_body,
        }),
    });
    tracing::info!(
        listen = %listener.local_addr()?,
        workers = tokio::runtime::Handle::current().metrics().num_workers(),
        "faasgate is serving"
    );
    let trimmer = spawn_pool_trimmer(routes.clone(), config.wire.upstream_idle_timeout);
    crate::api::server::serve_limited(
        listener,
        gateway,
        config.timeouts.read,
        config.timeouts.write,
        config.wire.max_connections,
        shutdown,
    )
    .await;
    trimmer.abort();
    dispatch_task.abort();
    cold_task.abort();
    sampler.abort();
    if let Some(task) = scaler_task {
        task.abort();
    }
    if let Some(tasks) = cluster_tasks {
        tasks.stop().await;
    }
    Ok(())
}

/// The tasks of a gateway that may have peers: membership, the election, the demand puller.
struct ClusterTasks {
    members: tokio::task::JoinHandle<()>,
    election: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
    puller: tokio::task::JoinHandle<()>,
}

impl ClusterTasks {
    /// Stops pulling and releases the lock if held (so a follower need not wait for it to
    /// expire), bounded by ten seconds.
    async fn stop(self) {
        self.puller.abort();
        let _ = self.stop.send(true);
        let bound = std::time::Duration::from_secs(10);
        if tokio::time::timeout(bound, self.election).await.is_err() {
            tracing::warn!("cluster lock: release did not finish in time");
        }
        self.members.abort();
    }
}

/// A gateway alone (the local provider), or one that finds its peers (`--peers`, else the
/// catalog `--discovery` names: Nomad's or Consul's), elects a leader with them and, while it
/// leads, pulls their demand. With no peer found it leads alone, as a gateway alone always
/// has.
/// The async queue's store, and the largest body it takes.
async fn open_queue(
    config: &crate::config::AsyncConfig,
    data_dir: &std::path::Path,
) -> Result<(Arc<dyn crate::queue::CallStore>, usize), crate::queue::StoreError> {
    let Some(url) = &config.nats else {
        let store = crate::queue::EmbeddedStore::open(&data_dir.join("async"), config.max_queued)?;
        return Ok((store, config.max_body));
    };
    let store = crate::queue::NatsStore::connect(url, config.max_queued).await?;
    let max_body = config.max_body.min(store.max_body());
    if max_body < config.max_body {
        tracing::warn!(
            max_async_body = config.max_body,
            nats_max_payload = store.max_body() + crate::queue::nats::ENVELOPE,
            "the async body limit is lowered to fit NATS's max_payload: {max_body} bytes"
        );
    }
    tracing::info!(%url, "async calls are kept in NATS JetStream");
    Ok((store, max_body))
}

fn start_cluster(
    config: &GatewayConfig,
    routes: &Arc<Routes>,
    auth: Option<&auth::Credentials>,
    listen: std::net::SocketAddr,
) -> Result<(Arc<Cluster>, Option<ClusterTasks>), GatewayError> {
    let Some(nomad) = config.nomad.as_ref() else {
        return Ok((Cluster::alone(), None));
    };
    let path = crate::client::nomad::VarPath::new(config.cluster.lock_path.clone())
        .map_err(|e| ProviderError::Invalid(format!("--cluster-lock: {e}")))?;
    let client = Arc::new(crate::client::NomadClient::new(&nomad.nomad));
    let membership = if config.cluster.peers.is_empty() {
        // The catalog replica discovery reads (`--discovery`): the gateways' service is
        // registered where the functions' services are.
        let catalog = Catalog::new(nomad.discovery, client.clone(), nomad.consul.as_ref())
            .map_err(|e| ProviderError::Backend(format!("cluster membership: {e}")))?;
        Membership::Catalog {
            catalog: Arc::new(catalog),
            service: config.cluster.service.clone(),
            self_alloc: config.cluster.self_alloc.clone(),
            self_addr: Some(listen),
        }
    } else {
        Membership::Static(config.cluster.peers.clone())
    };
    let (members_tx, members_rx) = tokio::sync::watch::channel(Vec::new());
    let members = tokio::spawn(watch_members(membership, members_tx));
    let lease_cfg = config.cluster.lease;
    let (tx, leadership) = Leadership::channel();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    // A member whose report is this old is unknown: three ticks, and at least a second.
    let stale_after = (config.scaler.tick * 3).max(std::time::Duration::from_secs(1));
    let demand = Arc::new(ClusterDemand::new(routes.clone(), stale_after));
    let lock = NomadLock::new(client, path, lease_cfg.ttl, lease_cfg.lock_delay);
    let election = tokio::spawn(run_cluster(
        lock,
        lease_cfg,
        members_rx,
        demand.clone(),
        tx,
        stop_rx,
    ));
    let peers = Arc::new(PeerClient::new(auth.map(auth::Credentials::authorization)));
    let puller = tokio::spawn(run_puller(
        demand.clone(),
        leadership.clone(),
        peers.clone(),
        PullConfig {
            every: config.scaler.tick,
            leader: listen.to_string(),
        },
    ));
    tracing::info!(lock = %config.cluster.lock_path, peers = ?config.cluster.peers,
        service = %config.cluster.service, discovery = ?nomad.discovery,
        "cluster: looking for peers");
    let cluster = Arc::new(Cluster {
        leadership,
        demand: Some(demand),
        lock_path: Some(config.cluster.lock_path.clone()),
        forward: Some(LeaderForward::new(
            peers.clone(),
            std::time::Duration::from_secs(5),
        )),
        drain: Some(MemberDrain::new(peers)),
        reports: Default::default(),
    });
    Ok((
        cluster,
        Some(ClusterTasks {
            members,
            election,
            stop,
            puller,
        }),
    ))
}

/// Closes idle upstream connections past `idle_timeout` in every replica's pool, a few
/// times per timeout (a pool with no traffic is never checked out, so nothing else would).
fn spawn_pool_trimmer(
    routes: Arc<Routes>,
    idle_timeout: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    let every = (idle_timeout / 4).clamp(
        std::time::Duration::from_millis(250),
        std::time::Duration::from_secs(15),
    );
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for handle in routes.snapshot() {
                for replica in handle.state().replicas.iter() {
                    replica.pool().trim();
                }
            }
        }
    })
}

/// Deploys a stack file's functions: new ones are deployed, changed ones updated, unchanged
/// ones (e.g. restored from the data dir after a restart) left alone. With `local` (the
/// provider runs `fprocess` on this machine), a relative program path in `fprocess` is
/// resolved against the stack file's folder first.
pub(crate) async fn apply_stack(
    provider: &dyn Provider,
    path: &Path,
    local: bool,
) -> Result<(), GatewayError> {
    let stack_err = |source| GatewayError::Stack {
        path: path.to_path_buf(),
        source,
    };
    let mut specs = crate::model::stack::load_stack_file(path).map_err(stack_err)?;
    if local {
        crate::model::stack::resolve_programs(&mut specs, path).map_err(stack_err)?;
    }
    for mut spec in specs {
        let key = FunctionKey::new(&spec.service, &spec.namespace).map_err(|e| {
            GatewayError::StackDeploy {
                path: path.to_path_buf(),
                function: spec.service.clone(),
                source: ProviderError::Invalid(e.to_string()),
            }
        })?;
        spec.namespace = key.namespace().to_string();
        // A namespace named in the operator's stack file is one the gateway manages.
        let result = match ensure_namespace(provider, key.namespace()).await {
            Err(e) => Err(e),
            Ok(()) => match provider.status(&key).await {
                Ok(status) if matches(&status, &spec) => Ok(()),
                Ok(_) => provider.update(spec).await,
                Err(ProviderError::NotFound(_)) => provider.deploy(spec).await,
                Err(e) => Err(e),
            },
        };
        result.map_err(|source| GatewayError::StackDeploy {
            path: path.to_path_buf(),
            function: key.to_string(),
            source,
        })?;
        tracing::info!(function = %key, stack = %path.display(), "stack function deployed");
    }
    Ok(())
}

/// Adds `namespace` to the provider's managed set unless it is there already.
async fn ensure_namespace(provider: &dyn Provider, namespace: &str) -> Result<(), ProviderError> {
    use crate::control::namespaces::{NamespaceError, Namespaces};
    if provider.namespace_exists(namespace).await? {
        return Ok(());
    }
    match provider
        .create_namespace(Namespaces::implicit(namespace))
        .await
    {
        Err(ProviderError::Namespace(NamespaceError::AlreadyExists(_))) | Ok(()) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether a running function already has exactly this deployment.
fn matches(status: &FunctionStatus, spec: &FunctionDeployment) -> bool {
    let mut labels = spec.labels.clone().unwrap_or_default();
    labels.insert(
        crate::model::types::LABEL_FUNCTION.into(),
        spec.service.clone(),
    );
    status.image == spec.image
        && status.env_process == spec.env_process
        && status.env_vars == spec.env_vars
        && status.constraints == spec.constraints
        && status.secrets == spec.secrets
        && status.labels == labels
        && status.annotations == spec.annotations.clone().unwrap_or_default()
        && status.limits == spec.limits
        && status.requests == spec.requests
        && status.read_only_root_filesystem == spec.read_only_root_filesystem
}
