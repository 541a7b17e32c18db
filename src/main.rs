//! The `pollcast` binary: parse the command line, load the config, start,
//! reload on SIGHUP, and stop gracefully on SIGTERM or SIGINT. The serving
//! logic lives in the library; what only the command does (the `--demo`
//! upstream, the `--healthcheck` client, `--check`'s rendering) is in `cli/`.

mod cli;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use pollcast::config::{Config, FeedConfig, LogFormat, LogLevel, UpstreamUrl};
use tokio_util::sync::CancellationToken;

/// Settings precedence, lowest first: built-in default, config file,
/// `POLLCAST_<SECTION>__<KEY>` environment variable (the six older
/// `POLLCAST_<TABLE>_<KEY>` names are aliases), command-line flag.
#[derive(Parser, Debug)]
#[command(
    version,
    args_conflicts_with_subcommands = true,
    about = "Turns polling of REST list endpoints into Server-Sent Events",
    after_help = "Environment overrides: any key as POLLCAST_<SECTION>__<KEY> (e.g. POLLCAST_SSE__KEEPALIVE=5s), \
a feed's as POLLCAST_FEEDS__<NAME>__<KEY>; aliases: POLLCAST_SERVER_LISTEN, POLLCAST_UPSTREAM_URL, \
POLLCAST_UPSTREAM_TIMEOUT, POLLCAST_LOG_LEVEL, POLLCAST_LOG_FORMAT, POLLCAST_ADMIN_LISTEN. \
RUST_LOG, when set, is the log filter.\n\
SIGHUP, or a change of the config or TLS files ([reload] watch), reloads: feeds, [log] level \
and the TLS certificate take effect at once."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file.
    #[arg(long, short, default_value = "config.toml", env = "POLLCAST_CONFIG")]
    config: PathBuf,
    /// Run with a built-in demo upstream and feed, ignoring the config file.
    #[arg(long)]
    demo: bool,
    /// Validate the config, print the effective config (secrets redacted) and
    /// exit: 0 when valid, 1 when not.
    #[arg(long)]
    check: bool,
    /// Ask the running pollcast's health endpoint and exit 0 when it answers
    /// 2xx, else 1 (the container HEALTHCHECK; no shell or curl needed).
    /// Without URL: `<admin prefix>/healthz` on the listener the config names.
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    healthcheck: Option<String>,
    /// Print the JSON Schema of config.toml (docs/config.schema.json) and exit.
    #[arg(long)]
    print_schema: bool,
    /// Log format [default: [log] format, else text].
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Log level of pollcast's own messages [default: [log] level, else info].
    #[arg(long, value_enum)]
    log_level: Option<LogLevel>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Write a commented config.toml from the API's OpenAPI 3.0/3.1 or Swagger
    /// 2.0 document (--openapi FILE|URL), or from live GET answers (--probe URL PATH...).
    Init(pollcast::init::InitArgs),
}

impl Cli {
    /// Flags win over the file and the environment.
    fn apply(&self, config: &mut Config) {
        if let Some(f) = self.log_format {
            config.log.format = f;
        }
        if let Some(l) = self.log_level {
            config.log.level = l;
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pollcast: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The runtime pollcast runs on. With one CPU (an affinity mask or a cgroup
/// quota of one, as `available_parallelism` reads them) a current-thread
/// runtime: the multi-thread one would have a single worker anyway and only
/// add its cross-thread queues and wake-ups, about 9% of the CPU of a
/// pass-through request (bench/profiles/README.md). With more, one worker
/// per CPU.
fn runtime() -> std::io::Result<(tokio::runtime::Runtime, &'static str)> {
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let (mut builder, flavor) = if one_cpu {
        (
            tokio::runtime::Builder::new_current_thread(),
            "current-thread",
        )
    } else {
        (tokio::runtime::Builder::new_multi_thread(), "multi-thread")
    };
    Ok((builder.enable_all().build()?, flavor))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let (rt, flavor) = runtime()?;
    rt.block_on(serve(cli, flavor))
}

async fn serve(cli: Cli, flavor: &'static str) -> anyhow::Result<()> {
    if let Some(Command::Init(args)) = &cli.command {
        eprintln!("{}", pollcast::init::run(args).await?);
        return Ok(());
    }
    if cli.print_schema {
        println!(
            "{}",
            serde_json::to_string_pretty(&pollcast::config::schema::schema())?
        );
        return Ok(());
    }
    if let Some(url) = &cli.healthcheck {
        let url = match url.as_str() {
            "" => cli::healthcheck::url_for(&Config::load(&cli.config)?)?,
            url => url.to_owned(),
        };
        let status = cli::healthcheck::probe(&url)
            .await
            .with_context(|| format!("health check of {url} failed"))?;
        println!("{url}: {status}");
        return Ok(());
    }
    let demo_stop = CancellationToken::new();
    let mut config = if cli.demo {
        let addr = cli::demo::start(demo_stop.clone())
            .await
            .context("starting the demo upstream")?;
        let url = UpstreamUrl::parse(&format!("http://{addr}")).map_err(anyhow::Error::msg)?;
        let mut feed = FeedConfig::new("jobs", "/api/jobs");
        feed.interval = std::time::Duration::from_secs(1);
        // The demo API takes no parameters: say so, as a production config
        // should (and the newcomer's first run shows no warning about it).
        feed.query = Some(Vec::new());
        let mut config = Config::new(url, vec![feed]);
        config.apply_env(|k| {
            std::env::var(k)
                .ok()
                .filter(|_| k != "POLLCAST_UPSTREAM_URL")
        })?;
        config
    } else {
        Config::load(&cli.config)?
    };
    cli.apply(&mut config);
    // `--log-level` is the most explicit choice and wins over RUST_LOG.
    let rust_log = match cli.log_level {
        Some(_) => None,
        None => std::env::var("RUST_LOG").ok(),
    };
    let env_filter =
        pollcast::logging::env_filter(rust_log.as_deref()).map_err(anyhow::Error::msg)?;
    if cli.check {
        let source = if cli.demo {
            "--demo".to_owned()
        } else {
            cli.config.display().to_string()
        };
        println!("# {source}: valid. Effective configuration, secrets redacted.");
        let sources = if cli.demo {
            None
        } else {
            Some(sources(&cli, env_filter.is_some())?)
        };
        println!(
            "{}",
            cli::check::render(&config, sources.as_ref())?.trim_end()
        );
        return Ok(());
    }

    // Owns the span exporter's thread; shut down (flushed) after pollcast stops.
    let traces = pollcast::trace::Pipeline::new(&config.trace).context("[trace]")?;
    let log = pollcast::logging::init(
        config.log.format,
        config.log.level,
        env_filter,
        traces.as_ref(),
    );
    tracing::info!(runtime = flavor, "tokio runtime");
    if let Some(t) = &traces {
        tracing::info!(endpoint = %t.settings.endpoint, service = %t.settings.service_name, "exporting traces over OTLP/HTTP");
    }
    // Before anything says "listening": a signal that arrives from then on
    // must find its handler, not the default action (which terminates).
    let mut signals = Signals::new()?;
    if cli.demo {
        tracing::info!(upstream = %config.upstream.url, "demo upstream running");
    }
    let running = pollcast::start(config.clone())
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    if cli.demo {
        tracing::info!("watch it: curl -N http://{}/sse/jobs", running.addr);
    }
    let mut watch = if cli.demo {
        None
    } else {
        watch_files(&cli, &config)
    };
    let mut current = config;
    loop {
        tokio::select! {
            s = signals.next() => {
                if s == Signal::Stop {
                    break;
                }
                if cli.demo {
                    tracing::warn!("SIGHUP: --demo has no config file to reload");
                    continue;
                }
                tracing::info!(trigger = "SIGHUP", "reloading the config");
            }
            Some(files) = next_change(&mut watch) => {
                let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                tracing::info!(trigger = "file change", ?files, "reloading the config");
            }
        }
        match Config::load(&cli.config) {
            Ok(mut new) => {
                cli.apply(&mut new);
                pollcast::reload::apply(&running, &mut current, new, Some(&log));
            }
            Err(e) => {
                tracing::error!(error = %e, "config reload rejected; the running config stays in force");
            }
        }
    }
    drop(watch);
    tracing::info!("shutting down");
    running.stop().await;
    if let Some(t) = traces {
        t.shutdown().await;
    }
    demo_stop.cancel();
    Ok(())
}

/// Where each value of the loaded config came from, for `--check`.
fn sources(cli: &Cli, rust_log: bool) -> anyhow::Result<pollcast::config::Sources> {
    let text = std::fs::read_to_string(&cli.config)
        .with_context(|| format!("cannot read {}", cli.config.display()))?;
    let vars = pollcast::config::overrides::select(std::env::vars());
    let mut s =
        pollcast::config::Sources::collect(&text, &cli.config, &vars, |k| std::env::var(k).ok());
    if rust_log {
        s.set("log.level", "env RUST_LOG (replaces [log] level)".into());
    }
    if cli.log_format.is_some() {
        s.set("log.format", "flag --log-format".into());
    }
    if cli.log_level.is_some() {
        s.set("log.level", "flag --log-level".into());
    }
    Ok(s)
}

/// `[reload] watch`: the config file and the TLS files, watched from now
/// on. A watch that cannot be set up is logged and SIGHUP still reloads.
fn watch_files(cli: &Cli, config: &Config) -> Option<pollcast::watch::Watch> {
    if !config.reload.watch {
        return None;
    }
    let mut files = vec![cli.config.clone()];
    if let Some(tls) = &config.server.tls {
        files.extend([tls.cert.clone(), tls.key.clone()]);
    }
    match pollcast::watch::Watch::start(files.clone(), config.reload.debounce) {
        Ok(w) => {
            tracing::info!(files = ?files, debounce = ?config.reload.debounce, "watching the config files for changes");
            Some(w)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot watch the config files; reload with SIGHUP");
            None
        }
    }
}

/// The next change the watch reports; never, without a watch.
async fn next_change(watch: &mut Option<pollcast::watch::Watch>) -> Option<Vec<PathBuf>> {
    match watch {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Signal {
    Stop,
    Reload,
}

/// SIGTERM/SIGINT stop, SIGHUP reloads.
///
/// Every handler is installed in [`Signals::new`], before pollcast says it
/// listens, and stays installed: a `tokio::signal::ctrl_c()` made in `next`
/// would install SIGINT's only once the main loop first waits (after the
/// config watch is set up: a few ms after "listening", more on a busy machine),
/// leaving SIGINT's default action, an immediate exit without a drain, in
/// force until then; and a SIGINT arriving while a reload runs would find
/// no listener and be lost.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
                int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
                hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => Signal::Stop,
                _ = self.int.recv() => Signal::Stop,
                _ = self.hup.recv() => Signal::Reload,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Stop
        }
    }
}
