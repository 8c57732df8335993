//! `hookstream serve | api | worker`: configuration, logs and traces, then the application
//! until SIGINT or SIGTERM, then the last spans flushed. `hookstream dlq …` is a client of a running service's HTTP API.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hookstream::app::{App, Role};
use hookstream::config::Config;
use tokio_util::sync::CancellationToken;

// glibc's malloc spent a quarter of the worker's CPU on the delivery path (arena locks
// contended between runtime threads, consolidation); mimalloc's thread-local heaps do not
// (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "hookstream",
    version,
    about = "Webhook delivery on NATS JetStream"
)]
struct Cli {
    /// TOML configuration file (also HOOKSTREAM_CONFIG).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// API and workers in one process.
    Serve,
    /// The HTTP API only.
    Api,
    /// Delivery workers only (health and metrics on the listen address).
    Worker,
    /// Dead letters of a running service: list, replay, purge (through its HTTP API).
    Dlq(hookstream::cli::dlq::DlqArgs),
    /// Send a file to a running service: one event per line (through its HTTP API).
    Upload(hookstream::cli::upload::UploadArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let role = match cli.command {
        Command::Serve => Role::Serve,
        Command::Api => Role::Api,
        Command::Worker => Role::Worker,
        // A client of the HTTP API: no configuration, no logs, no NATS.
        Command::Dlq(args) => return Ok(runtime(0)?.block_on(hookstream::cli::dlq::run(args))?),
        Command::Upload(args) => {
            return Ok(runtime(0)?.block_on(hookstream::cli::upload::run(args))?);
        }
    };
    // The configuration comes first: it says how many threads the runtime has.
    let cfg = Config::load(cli.config.as_deref()).context("invalid configuration")?;
    runtime(cfg.runtime.worker_threads)?.block_on(serve(cfg, role))
}

/// The multi-threaded runtime, `threads` of them (0: one per CPU the process may use).
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if threads > 0 {
        builder.worker_threads(threads);
    }
    builder.build()
}

async fn serve(cfg: Config, role: Role) -> anyhow::Result<()> {
    let telemetry = hookstream::telemetry::logs::init(cfg.log.format)
        .context("invalid OpenTelemetry configuration (OTEL_* variables)")?;
    let app = App::build_with_role(cfg, role)
        .await
        .context("hookstream could not start")?;
    let token = CancellationToken::new();
    let signal_token = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        signal_token.cancel();
    });
    let stopped = app.run_until_stopped(token).await;
    // After the app: the spans of the last deliveries are in the batch exporter's queue.
    telemetry.shutdown().await;
    stopped?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
