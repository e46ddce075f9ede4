//! The `faasgate` binary: CLI -> config -> run. The only place `anyhow` is used.

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
    /// Disable basic auth on /system/* and /ui/.
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
    #[command(flatten)]
    scaler: ScalerArgs,
}

// === scaler branch ===
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
    /// How long demand must stay lower before each step down (at most halving).
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
// === end scaler branch ===

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
        Command::Serve(args) => {
            init_tracing();
            let config = GatewayConfig {
                listen: args.listen,
                provider: args.provider,
                data_dir: args.data_dir,
                stacks: args.stacks,
                auth: !args.no_auth,
                timeouts: Timeouts::from_env(|k| std::env::var(k).ok())?,
                max_body_bytes: args.max_body_bytes,
                hold_timeout: config::parse_duration("--hold-timeout", &args.hold_timeout)?,
                max_queue: args.max_queue,
                scaler: args.scaler.config()?,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
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
