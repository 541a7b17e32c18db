//! The `pollcast` binary: parse the command line, load the config, start,
//! and stop gracefully on SIGTERM or SIGINT. All logic lives in the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use pollcast::config::{Config, FeedConfig, UpstreamUrl};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Turns polling of REST list endpoints into Server-Sent Events"
)]
struct Cli {
    /// Config file.
    #[arg(long, short, default_value = "config.toml", env = "POLLCAST_CONFIG")]
    config: PathBuf,
    /// Run with a built-in demo upstream and feed, ignoring the config file.
    #[arg(long)]
    demo: bool,
    /// Validate the config, print it, and exit (0 valid, 1 invalid).
    #[arg(long)]
    check: bool,
    /// Log format.
    #[arg(long, value_enum, default_value = "text", env = "POLLCAST_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pollcast: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("POLLCAST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn run(cli: Cli) -> anyhow::Result<()> {
    let demo_stop = CancellationToken::new();
    let config = if cli.demo {
        let addr = pollcast::demo::start(demo_stop.clone())
            .await
            .context("starting the demo upstream")?;
        let url = UpstreamUrl::parse(&format!("http://{addr}")).map_err(anyhow::Error::msg)?;
        let mut feed = FeedConfig::new("jobs", "/api/jobs");
        feed.interval = std::time::Duration::from_secs(1);
        let mut config = Config::new(url, vec![feed]);
        config.apply_env(|k| {
            std::env::var(k)
                .ok()
                .filter(|_| k != "POLLCAST_UPSTREAM_URL")
        })?;
        tracing::info!(upstream = %addr, "demo upstream running");
        config
    } else {
        Config::load(&cli.config)?
    };
    if cli.check {
        println!("{config:#?}");
        return Ok(());
    }

    let running = pollcast::start(config.clone())
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    if cli.demo {
        tracing::info!("watch it: curl -N http://{}/sse/jobs", running.addr);
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    running.stop().await;
    demo_stop.cancel();
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
