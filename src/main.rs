use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use evrelay::cli::{Cli, Command, LogFormat, ReplayArgs};
use evrelay::config::{Config, ConfigError};
use evrelay::dump::Source;
use evrelay::journal::{Journal, JournalConfig};
use evrelay::ship::replay::Window;

/// Two glibc malloc arenas instead of one per thread (up to 8 per core), unless
/// the operator set `MALLOC_ARENA_MAX`. Blocks freed by the journal and shipping
/// threads stayed in their arenas: with a 1M-record backlog the start-up peak was
/// 94–124 MiB with the default and 84–93 MiB with 2, at the same drain rate
/// (BENCHMARKS.md; jemalloc was worse here, 114–140 MiB).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first in main, before any other thread exists;
        // mallopt only adjusts the allocator's settings.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Exit code for configuration errors, distinct from runtime failures (1).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(config) = e.downcast_ref::<ConfigError>() {
                eprint!("{config}");
                return ExitCode::from(EXIT_CONFIG);
            }
            eprintln!("evrelay: {}", explain(&e));
            ExitCode::FAILURE
        }
    }
}

/// `evrelay replay`: through a running evrelay, or from a stopped one's journal.
async fn replay(config: Option<&std::path::Path>, args: ReplayArgs) -> anyhow::Result<()> {
    let window = Window {
        since_ms: args.since,
        until_ms: args.until,
    };
    let mut out = std::io::stdout().lock();
    if let Some(base) = &args.admin {
        let url = format!("{}/replay", base.trim_end_matches('/'));
        let mut query = vec![("since_ms", window.since_ms.to_string())];
        if let Some(until) = window.until_ms {
            query.push(("until_ms", until.to_string()));
        }
        if args.dry_run {
            query.push(("dry_run", "true".into()));
        }
        let response = reqwest::Client::new()
            .post(&url)
            .query(&query)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("asking {url}"))?;
        out.write_all(&response.bytes().await?)?;
        return Ok(());
    }
    let env = |k: &str| std::env::var(k).ok();
    let journal = open_journal(args.data_dir.clone())?;
    if args.dry_run {
        let filter = evrelay::ship::replay::dry_run_filter(window);
        let lines = evrelay::dump::lines(&journal, &filter)?;
        evrelay::dump::print(&lines, evrelay::dump::Format::Json, &mut out)?;
        return Ok(());
    }
    let config = Config::load(config, env)?;
    let api_key = config
        .datadog
        .api_key
        .clone()
        .context("the API key is missing")?;
    let intake = evrelay::ship::Intake::new(
        &config.datadog,
        api_key,
        std::time::Duration::from_secs(config.ship.request_timeout_seconds),
    )?;
    let shipper = evrelay::ship::Shipper::new(
        journal,
        intake,
        (&config.datadog, &config.events),
        &evrelay::runtime::hostname(&config),
        config.ship.clone(),
        evrelay::metrics::Metrics::new(),
    );
    let shutdown = evrelay::shutdown::on_signals().context("installing signal handlers")?;
    let report = shipper.replay(window, &shutdown).await?;
    serde_json::to_writer_pretty(&mut out, &report)?;
    writeln!(out)?;
    Ok(())
}

/// Opens the journal in `data_dir` (else `EVRELAY_DATA_DIR`, else the default) for
/// a command that needs no API key: only the journal's place.
fn open_journal(data_dir: Option<std::path::PathBuf>) -> anyhow::Result<Journal> {
    let mut config = JournalConfig::default();
    if let Some(dir) = data_dir.or_else(|| std::env::var_os("EVRELAY_DATA_DIR").map(Into::into)) {
        config.data_dir = dir;
    }
    Ok(Journal::open(&config)?)
}

/// The error and its causes on one line, each cause once: many errors (kube's,
/// ours) already print their source, and repeating it buries the message.
fn explain(e: &anyhow::Error) -> String {
    let mut message = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let env = |k: &str| std::env::var(k).ok();
    match cli.command {
        Command::Run { data_dir } => {
            let config = Config::load(cli.config.as_deref(), env)?.with_data_dir(data_dir);
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(async {
                let shutdown =
                    evrelay::shutdown::on_signals().context("installing signal handlers")?;
                evrelay::runtime::run(config, shutdown).await?;
                anyhow::Ok(())
            })
        }
        Command::Dump(args) => {
            let source = match &args.admin {
                Some(url) => Source::Admin(url.clone()),
                None => Source::Journal(open_journal(args.data_dir.clone())?),
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(async {
                let mut out = std::io::stdout().lock();
                if args.meta {
                    let meta = source.meta().await?;
                    serde_json::to_writer_pretty(&mut out, &meta)?;
                    writeln!(out)?;
                } else {
                    evrelay::dump::run(&source, args.filter(), args.format, args.follow, &mut out)
                        .await?;
                }
                anyhow::Ok(())
            })
        }
        Command::Replay(args) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(replay(cli.config.as_deref(), args))
        }
        Command::CheckConfig => {
            Config::load(cli.config.as_deref(), env)?;
            println!("configuration is valid");
            Ok(())
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}
