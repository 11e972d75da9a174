//! `nodewatch-collector`: receives agents' streams, keeps host state, answers queries.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use nodewatch_collector::app::Collector;
use nodewatch_collector::config::CollectorConfig;
use nodewatch_collector::grpc;
use nodewatch_proto::daemon;
use tracing::{info, warn};

/// nodewatch collector: ingests agents' samples over gRPC and answers queries.
///
/// Serves nodewatch.v1.Ingest, nodewatch.v1.Query, grpc.health.v1.Health and
/// gRPC server reflection (v1 and v1alpha). Settings come from, in order of
/// precedence: flags, NODEWATCH_* environment variables, the TOML config file,
/// built-in defaults.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// TOML configuration file (see docs/collector.example.toml).
    #[arg(long, short = 'c', env = "NODEWATCH_CONFIG")]
    config: Option<PathBuf>,
    /// Address to serve gRPC on [default: 127.0.0.1:7077].
    #[arg(long, env = "NODEWATCH_LISTEN")]
    listen: Option<SocketAddr>,
    /// Allow a non-loopback listen address without TLS (plaintext on the network).
    #[arg(long, env = "NODEWATCH_INSECURE_LISTEN")]
    insecure_listen: bool,
    /// Directory for the collector's data [default: /var/lib/nodewatch].
    #[arg(long, env = "NODEWATCH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Log filter (tracing EnvFilter syntax), e.g. "info" or "nodewatch_collector=debug".
    #[arg(long, env = "NODEWATCH_LOG", default_value = "info")]
    log: String,
}

/// How long open streams may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

fn load(args: &Args) -> anyhow::Result<CollectorConfig> {
    let mut config = match &args.config {
        Some(path) => CollectorConfig::from_file(path)?,
        None => CollectorConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if args.insecure_listen {
        config.insecure_listen = true;
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir.clone_from(dir);
    }
    config.check()?;
    Ok(config)
}

fn main() -> std::process::ExitCode {
    daemon::exit_with(run())
}

#[tokio::main]
async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    daemon::init_logging(&args.log)?;
    let config = load(&args)?;
    if !config.listen.ip().is_loopback() {
        warn!(
            listen = %config.listen,
            "listening on a non-loopback address WITHOUT TLS (--insecure-listen): \
             anyone who can reach this port can send and read data"
        );
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    info!(
        version = env!("CARGO_PKG_VERSION"),
        "nodewatch-collector starting"
    );
    let data_dir = config.data_dir.clone();
    let collector = Collector::open(config)
        .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        daemon::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let mut graceful = stop_rx.clone();
    let mut forced = stop_rx;
    tokio::select! {
        result = grpc::serve(&collector, listener, async move {
            let _ = graceful.wait_for(|stop| *stop).await;
        }) => result?,
        _ = async move {
            let _ = forced.wait_for(|stop| *stop).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => warn!("agent streams still open after {SHUTDOWN_GRACE:?}; closing them"),
    }
    info!("nodewatch-collector stopped");
    Ok(())
}
