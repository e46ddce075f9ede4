//! The `faasgate` binary: CLI -> config -> run. The only place `anyhow` is used.
#![allow(clippy::disallowed_types, clippy::disallowed_macros)] // the binary's edge: anyhow here

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use faasgate::config::{self, GatewayConfig, ProviderKind, Timeouts};

#[derive(Parser)]
#[command(
    name = "faasgate",
    version,
    about = "An OpenFaaS-compatible function gateway for HashiCorp Nomad and the local machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: the OpenFaaS API on --listen, functions run by --provider.
    ///
    /// The OpenFaaS gateway variables read_timeout (request headers), write_timeout (bound on
    /// draining at shutdown) and upstream_timeout (waiting for a function's response) are
    /// honoured: seconds or Go durations such as 65s.
    Serve(Box<ServeArgs>),
    /// Run the function-side watchdog, configured like of-watchdog through env vars:
    /// fprocess, mode (streaming|http), upstream_url, port, read_timeout, write_timeout,
    /// exec_timeout, max_inflight, bind_address.
    Watchdog,
    /// Print the release and git commit.
    Version,
    /// Print the Nomad job JSON faasgate would register for a stack file's functions.
    Render(RenderArgs),
    /// (Internal) Run by `unshare` in a replica's new mount namespace: mount its secrets at
    /// /var/openfaas/secrets, then exec the watchdog.
    #[command(name = "secrets-mount", hide = true)]
    SecretsMount(SecretsMountArgs),
}

#[derive(clap::Args)]
struct SecretsMountArgs {
    /// The replica's staged secrets.
    #[arg(long)]
    from: PathBuf,
    /// Directories to cover with an empty tmpfs.
    #[arg(long)]
    hide: Vec<PathBuf>,
    /// The program to exec, and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<std::ffi::OsString>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = config::env::LISTEN, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Who runs functions: `local` runs them as child processes on this machine.
    #[arg(long, env = config::env::PROVIDER, value_enum, default_value = "local")]
    provider: ProviderKind,
    /// Where function specs, logs and generated credentials are kept.
    #[arg(long, env = config::env::DATA_DIR, default_value = "./.faasgate")]
    data_dir: PathBuf,
    /// Deploy (or update) the functions of an OpenFaaS stack.yml at start; may repeat.
    #[arg(long = "stack", value_name = "FILE")]
    stacks: Vec<PathBuf>,
    /// Disable basic auth on /system/* and /ui/api/*.
    #[arg(long)]
    no_auth: bool,
    /// Largest /system/* request body, in bytes (413 beyond).
    #[arg(long, env = config::env::MAX_BODY_BYTES, default_value_t = 4 << 20)]
    max_body_bytes: usize,
    /// How long an invocation may wait for a ready replica (cold start), e.g. 30s.
    #[arg(long, env = config::env::HOLD_TIMEOUT, default_value = "30s")]
    hold_timeout: String,
    /// How many invocations per function may wait for a replica at once (429 beyond).
    #[arg(long, env = config::env::MAX_QUEUE, default_value_t = 10_000)]
    max_queue: u64,
    /// Runtime worker threads serving requests (nginx's worker_processes); 0: one per core.
    /// On a machine whose cores the functions share, fewer workers cost less CPU per request
    /// (docs/performance.md).
    #[arg(long, env = config::env::WORKERS, default_value_t = 0)]
    workers: usize,
    /// Bound on the wait for each next byte of a function's response body once its head has
    /// arrived (nginx's proxy_read_timeout); the client connection is closed beyond it.
    #[arg(long, env = config::env::UPSTREAM_READ_TIMEOUT, default_value = "60s")]
    upstream_read_timeout: String,
    /// An idle keep-alive connection to a replica is closed after this.
    #[arg(long, env = config::env::UPSTREAM_IDLE_TIMEOUT, default_value = "60s")]
    upstream_idle_timeout: String,
    /// Idle keep-alive connections kept per replica (nginx's upstream keepalive); 0: none.
    #[arg(long, env = config::env::UPSTREAM_MAX_IDLE,
          default_value_t = faasgate::http1::pool::DEFAULT_MAX_IDLE)]
    upstream_max_idle: usize,
    /// The other gateways of this cluster, `host:port` as they listen (comma-separated): one
    /// gateway leads (a lock on a Nomad Variable, `--provider nomad`) and scales on the
    /// demand of all. Without it, the Nomad provider finds them in the catalog `--discovery`
    /// names (Nomad's, or Consul's passing instances).
    #[arg(long, env = config::env::PEERS, value_delimiter = ',')]
    peers: Vec<String>,
    /// Without --peers and with --provider nomad, the other gateways are the instances of
    /// this service (the system job's) in the catalog `--discovery` names.
    #[arg(long, env = config::env::CLUSTER_SERVICE, default_value = config::DEFAULT_CLUSTER_SERVICE)]
    cluster_service: String,
    /// The Nomad Variable whose lock elects the cluster's leader (the gateways' Nomad token
    /// needs `write` on it: docs/nomad.md).
    #[arg(long, env = config::env::CLUSTER_LOCK, default_value = config::DEFAULT_CLUSTER_LOCK)]
    cluster_lock: String,
    /// The leader lock's TTL (Nomad accepts 10s to 24h); the leader renews at 0.7 x TTL.
    #[arg(long, env = config::env::CLUSTER_LOCK_TTL, default_value = "10s")]
    cluster_lock_ttl: String,
    /// How long Nomad keeps a dead leader's expired lock before another may take it.
    #[arg(long, env = config::env::CLUSTER_LOCK_DELAY, default_value = "10s")]
    cluster_lock_delay: String,
    /// Client connections served at once; beyond it new connections wait in the listen
    /// backlog until one closes.
    #[arg(long, env = config::env::MAX_CONNECTIONS,
          default_value_t = config::DEFAULT_MAX_CONNECTIONS as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// Forward request headers whose names hold '_' (dropped by default, as nginx does).
    #[arg(long, env = config::env::ALLOW_UNDERSCORE_HEADERS)]
    allow_underscore_headers: bool,
    /// How local replicas get their function's secrets: `mount` = a private mount namespace
    /// with the files at /var/openfaas/secrets (needs root or CAP_SYS_ADMIN and util-linux's
    /// unshare); `folder` = a private per-replica folder named by the replica's
    /// `secret_mount_path` variable; `auto` = mount when possible, else folder.
    #[arg(long, env = config::env::SECRETS_ISOLATION, value_enum, default_value = "auto")]
    secrets_isolation: faasgate::control::local::SecretsIsolation,
    #[command(flatten)]
    nomad: NomadArgs,
    #[command(flatten)]
    scaler: ScalerArgs,
    #[command(flatten)]
    async_calls: AsyncArgs,
}

// `faasgate serve --provider nomad` flags.

/// With `--provider nomad`. The Nomad client itself is configured by NOMAD_ADDR,
/// NOMAD_TOKEN, NOMAD_NAMESPACE, NOMAD_REGION and the TLS variables NOMAD_CACERT,
/// NOMAD_CAPATH, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY, NOMAD_TLS_SERVER_NAME,
/// NOMAD_SKIP_VERIFY (and Consul by CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_HTTP_SSL,
/// CONSUL_CACERT, ... as the consul CLI reads them).
#[derive(clap::Args)]
struct NomadArgs {
    /// Datacenters of function jobs, comma-separated; default: omitted (Nomad's default).
    #[arg(long, env = config::env::NOMAD_DATACENTERS, value_name = "A,B", value_delimiter = ',')]
    datacenters: Vec<String>,
    /// Function job IDs are <PREFIX><name>.<namespace>; faasgate manages only these jobs.
    #[arg(long, env = config::env::NOMAD_JOB_PREFIX, value_name = "PREFIX",
          default_value = faasgate::control::nomad::render::DEFAULT_JOB_PREFIX)]
    job_prefix: String,
    /// A job template replacing nomad/function.job.json (see `faasgate render`).
    #[arg(long, env = config::env::NOMAD_JOB_TEMPLATE, value_name = "FILE")]
    job_template: Option<PathBuf>,
    /// Where replicas are found: Nomad's service catalog, or Consul's (passing instances).
    #[arg(long, env = config::env::DISCOVERY, value_enum, default_value = "nomad")]
    discovery: faasgate::discovery::DiscoveryKind,
    /// The faasgate binary on Nomad clients that exec/raw_exec function jobs run.
    #[arg(long = "nomad-watchdog-path", env = config::env::NOMAD_WATCHDOG_PATH, value_name = "PATH",
          default_value = faasgate::control::nomad::render::DEFAULT_WATCHDOG_PATH)]
    watchdog_path: String,
    /// How long an update's new version has to become ready before it is abandoned (the old
    /// version keeps serving; see docs/nomad.md, Updates).
    #[arg(long = "nomad-update-deadline", env = config::env::NOMAD_UPDATE_DEADLINE,
          value_name = "DURATION", default_value = "5m")]
    update_deadline: String,
}

fn nomad_options(args: NomadArgs) -> anyhow::Result<faasgate::control::nomad::NomadOptions> {
    use faasgate::client::{ConsulSettings, NomadSettings};
    use faasgate::control::nomad::{render, NomadOptions};
    let lookup = |k: &str| std::env::var(k).ok();
    let mut opts = NomadOptions::new(NomadSettings::from_env(lookup)?);
    if args.discovery == faasgate::discovery::DiscoveryKind::Consul {
        opts.consul = Some(ConsulSettings::from_env(lookup)?);
    }
    opts.discovery = args.discovery;
    opts.render.job_prefix = args.job_prefix;
    opts.render.datacenters = args
        .datacenters
        .into_iter()
        .filter(|d| !d.is_empty())
        .collect();
    opts.render.watchdog_path = args.watchdog_path;
    opts.update_deadline =
        config::parse_duration("--nomad-update-deadline", &args.update_deadline)?;
    anyhow::ensure!(
        opts.update_deadline >= std::time::Duration::from_secs(1),
        "--nomad-update-deadline must be at least 1s"
    );
    if let Some(path) = &args.job_template {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --job-template {}", path.display()))?;
        opts.render.template =
            Some(render::parse_template(&text).with_context(|| path.display().to_string())?);
    }
    Ok(opts)
}

// `faasgate render`.

/// Prints `{"Job": {...}}`, the body of `POST /v1/jobs` (and input for `nomad job run -json`),
/// one document per function in name order.
#[derive(clap::Args)]
struct RenderArgs {
    /// The OpenFaaS stack file.
    #[arg(short = 'f', long = "file", value_name = "STACK_YML")]
    file: PathBuf,
    /// Only this function (then the output is exactly one JSON document).
    #[arg(long, value_name = "NAME")]
    function: Option<String>,
    /// Job IDs are <PREFIX><name>.<namespace>.
    #[arg(long, value_name = "P", default_value = faasgate::control::nomad::render::DEFAULT_JOB_PREFIX)]
    job_prefix: String,
    /// Datacenters, comma-separated; default: omitted (Nomad's default).
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    datacenters: Vec<String>,
    /// A job template replacing nomad/function.job.json.
    #[arg(long, value_name = "FILE")]
    job_template: Option<PathBuf>,
    /// The group count; default: each function's com.openfaas.scale.min label, else 1.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// The Nomad namespace of the jobs; default: omitted.
    #[arg(long, value_name = "NS")]
    nomad_namespace: Option<String>,
    /// The Nomad region of the jobs; default: omitted.
    #[arg(long)]
    region: Option<String>,
    /// The faasgate binary exec/raw_exec function jobs run as their watchdog.
    #[arg(long, value_name = "PATH", default_value = faasgate::control::nomad::render::DEFAULT_WATCHDOG_PATH)]
    watchdog_path: String,
}

fn render(args: RenderArgs) -> anyhow::Result<()> {
    use faasgate::control::nomad::render;
    use std::io::Write;

    let template = match &args.job_template {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --job-template {}", path.display()))?;
            Some(render::parse_template(&text).with_context(|| path.display().to_string())?)
        }
        None => None,
    };
    let opts = render::RenderOptions {
        job_prefix: args.job_prefix,
        datacenters: args
            .datacenters
            .into_iter()
            .filter(|d| !d.is_empty())
            .collect(),
        nomad_namespace: args.nomad_namespace,
        region: args.region,
        template,
        watchdog_path: args.watchdog_path,
    };
    let mut functions = faasgate::model::stack::load_stack_file(&args.file)
        .with_context(|| format!("loading {}", args.file.display()))?;
    if let Some(name) = &args.function {
        functions.retain(|f| &f.service == name);
        anyhow::ensure!(
            !functions.is_empty(),
            "function {name:?} is not in {}",
            args.file.display()
        );
    }
    let mut out = std::io::stdout().lock();
    for spec in &functions {
        let count = match args.count {
            Some(n) => n,
            None => render::initial_count(spec)?,
        };
        let job = render::render_job(spec, count, &opts)
            .with_context(|| format!("function {:?}", spec.service))?;
        serde_json::to_writer_pretty(&mut out, &serde_json::json!({ "Job": job }))?;
        writeln!(out)?;
    }
    Ok(())
}

/// Async invocations (`/async-function`).
#[derive(clap::Args)]
struct AsyncArgs {
    /// Where async calls are kept: `embedded` (SQLite under the data dir, this gateway's
    /// own) or `nats://HOST:PORT` (NATS JetStream, shared by every gateway that names it).
    #[arg(long, env = config::env::QUEUE, default_value = "embedded")]
    queue: String,
    /// Largest /async-function request body, in bytes (413 beyond; NATS's default payload).
    #[arg(long, env = config::env::MAX_ASYNC_BODY, default_value_t = 1 << 20)]
    max_async_body: usize,
    /// Async calls queued at most, every function together (429 beyond).
    #[arg(long, env = config::env::MAX_ASYNC_QUEUE, default_value_t = 100_000)]
    max_async_queue: u64,
    /// Async calls of one function delivered at once, at most (fewer while its ready
    /// replicas take fewer at their planned load).
    #[arg(long, env = config::env::ASYNC_MAX_INFLIGHT, default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..))]
    async_max_inflight: u64,
    /// Deliveries of an async call before it goes to the dead letters.
    #[arg(long, env = config::env::ASYNC_MAX_ATTEMPTS, default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    async_max_attempts: u32,
    /// Age after which a failing async call goes to the dead letters.
    #[arg(long, env = config::env::ASYNC_MAX_AGE, default_value = "24h")]
    async_max_age: String,
    /// The first wait before an async call is retried; it doubles per attempt.
    #[arg(long, env = config::env::ASYNC_RETRY_WAIT, default_value = "10s")]
    async_retry_wait: String,
    /// The longest wait between two deliveries of an async call.
    #[arg(long, env = config::env::ASYNC_RETRY_MAX_WAIT, default_value = "120s")]
    async_retry_max_wait: String,
    /// Function statuses after which an async call is retried (comma-separated).
    #[arg(long, env = config::env::ASYNC_RETRY_CODES, value_delimiter = ',',
          default_value = "408,429,500,502,503,504")]
    async_retry_codes: Vec<u16>,
    /// Where async callbacks may go: host names, IP addresses or CIDRs (comma-separated);
    /// none given: anywhere.
    #[arg(long, env = config::env::CALLBACK_ALLOW, value_delimiter = ',')]
    callback_allow: Vec<String>,
}

impl AsyncArgs {
    fn config(&self, call_timeout: std::time::Duration) -> anyhow::Result<config::AsyncConfig> {
        let nats = match self.queue.as_str() {
            "embedded" | "" => None,
            url if url.starts_with("nats://") || url.starts_with("tls://") => Some(url.to_string()),
            other => anyhow::bail!(
                "--queue: {other:?} is neither `embedded` nor a `nats://HOST:PORT` URL"
            ),
        };
        Ok(config::AsyncConfig {
            nats,
            max_body: self.max_async_body,
            max_queued: self.max_async_queue,
            dispatch: faasgate::queue::DispatchConfig {
                max_inflight: usize::try_from(self.async_max_inflight).unwrap_or(usize::MAX),
                max_attempts: self.async_max_attempts,
                max_age: config::parse_duration("--async-max-age", &self.async_max_age)?,
                retry_wait: config::parse_duration("--async-retry-wait", &self.async_retry_wait)?,
                retry_max_wait: config::parse_duration(
                    "--async-retry-max-wait",
                    &self.async_retry_max_wait,
                )?,
                retry_codes: self.async_retry_codes.clone(),
                call_timeout,
            },
            callbacks: faasgate::queue::CallbackConfig {
                allow: self
                    .callback_allow
                    .iter()
                    .filter(|a| !a.trim().is_empty())
                    .map(|a| faasgate::queue::callback::Allowed::parse(a))
                    .collect::<Result<_, _>>()
                    .map_err(anyhow::Error::msg)?,
                ..Default::default()
            },
        })
    }
}

// `faasgate serve` scaler flags.
/// The queue-depth autoscaler (per-function settings are `com.openfaas.scale.*` labels).
#[derive(clap::Args)]
struct ScalerArgs {
    /// Turn the queue-depth autoscaler off (alert scaling and scale from zero still work).
    #[arg(long)]
    no_autoscale: bool,
    /// How often the autoscaler decides (100ms to 500ms is the useful range).
    #[arg(long, env = config::env::SCALER_TICK, default_value = "200ms")]
    scaler_tick: String,
    /// Averaging window of demand for ordinary scaling.
    #[arg(long, env = config::env::SCALE_STABLE_WINDOW, default_value = "60s")]
    scale_stable_window: String,
    /// Averaging window of demand for panic mode (a sudden load).
    #[arg(long, env = config::env::SCALE_PANIC_WINDOW, default_value = "6s")]
    scale_panic_window: String,
    /// How long demand must stay lower, and settled, before a step down (one call to what it
    /// needs).
    #[arg(long, env = config::env::SCALE_DOWN_DELAY, default_value = "30s")]
    scale_down_delay: String,
    /// Deliveries of one firing alert closer than this are replays and do not step again.
    #[arg(long, env = config::env::ALERT_MIN_INTERVAL, default_value = "25s")]
    alert_min_interval: String,
}

impl ScalerArgs {
    fn config(&self) -> anyhow::Result<faasgate::control::scaler::ScalerConfig> {
        let tick = config::parse_duration("--scaler-tick", &self.scaler_tick)?;
        anyhow::ensure!(
            tick >= std::time::Duration::from_millis(10)
                && tick <= std::time::Duration::from_secs(10),
            "--scaler-tick={:?}: must be between 10ms and 10s",
            self.scaler_tick
        );
        Ok(faasgate::control::scaler::ScalerConfig {
            enabled: !self.no_autoscale,
            tick,
            stable_window: config::parse_duration(
                "--scale-stable-window",
                &self.scale_stable_window,
            )?,
            panic_window: config::parse_duration("--scale-panic-window", &self.scale_panic_window)?,
            scale_down_delay: config::parse_duration("--scale-down-delay", &self.scale_down_delay)?,
            alert_min_interval: config::parse_duration(
                "--alert-min-interval",
                &self.alert_min_interval,
            )?,
            ..Default::default()
        })
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("faasgate {} ({})", faasgate::RELEASE, faasgate::SHA);
            Ok(())
        }
        Command::Watchdog => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(faasgate::watchdog::run_from_env())
                .context("watchdog")
        }
        Command::Render(args) => render(args),
        Command::SecretsMount(args) => {
            let (program, rest) = args
                .command
                .split_first()
                .context("secrets-mount: no program")?;
            let e = faasgate::control::local::replica_secrets::enter(
                &args.from, &args.hide, program, rest,
            );
            Err(anyhow::Error::new(e).context("secrets-mount"))
        }
        Command::Serve(args) => {
            init_tracing();
            let timeouts = Timeouts::from_env(|k| std::env::var(k).ok())?;
            let config = GatewayConfig {
                listen: args.listen,
                provider: args.provider,
                data_dir: args.data_dir,
                stacks: args.stacks,
                auth: !args.no_auth,
                timeouts,
                max_body_bytes: args.max_body_bytes,
                hold_timeout: config::parse_duration("--hold-timeout", &args.hold_timeout)?,
                max_queue: args.max_queue,
                nomad: match args.provider {
                    ProviderKind::Nomad => Some(nomad_options(args.nomad)?),
                    ProviderKind::Local => None,
                },
                scaler: args.scaler.config()?,
                wire: config::WireLimits {
                    upstream_read_timeout: config::parse_duration(
                        "--upstream-read-timeout",
                        &args.upstream_read_timeout,
                    )?,
                    upstream_idle_timeout: config::parse_duration(
                        "--upstream-idle-timeout",
                        &args.upstream_idle_timeout,
                    )?,
                    upstream_max_idle: args.upstream_max_idle,
                    max_connections: args.max_connections as usize,
                    allow_underscore_headers: args.allow_underscore_headers,
                },
                async_calls: args.async_calls.config(timeouts.upstream)?,
                secrets_isolation: args.secrets_isolation,
                cluster: config::ClusterConfig {
                    // `--peers ""` (an empty variable) names none.
                    peers: args
                        .peers
                        .iter()
                        .map(|p| p.trim().to_string())
                        .filter(|p| !p.is_empty())
                        .collect(),
                    service: args.cluster_service.clone(),
                    self_alloc: std::env::var(config::env::NOMAD_ALLOC_ID)
                        .ok()
                        .filter(|a| !a.is_empty()),
                    lock_path: args.cluster_lock.clone(),
                    lease: faasgate::control::cluster::LeaseConfig::with_ttl(
                        config::parse_duration("--cluster-lock-ttl", &args.cluster_lock_ttl)?,
                        config::parse_duration("--cluster-lock-delay", &args.cluster_lock_delay)?,
                    ),
                },
            };
            if !config.cluster.peers.is_empty() && config.provider != ProviderKind::Nomad {
                anyhow::bail!(
                    "--peers needs --provider nomad: the cluster's leader is elected with a \
                     lock on a Nomad Variable"
                );
            }
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if args.workers > 0 {
                rt.worker_threads(args.workers);
            }
            let rt = rt.enable_all().build()?;
            rt.block_on(serve(config))
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn serve(config: GatewayConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    faasgate::gateway::run(config, listener, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; use Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
