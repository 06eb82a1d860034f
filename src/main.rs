use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use evrelay::cli::{Cli, Command, LogFormat};
use evrelay::config::{Config, ConfigError};
use evrelay::dump::Source;
use evrelay::journal::{Journal, JournalConfig};

/// Exit code for configuration errors, distinct from runtime failures (1).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
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
                None => {
                    // dump needs no API key: only the journal's place.
                    let mut journal_config = JournalConfig::default();
                    if let Some(dir) = args
                        .data_dir
                        .clone()
                        .or_else(|| env("EVRELAY_DATA_DIR").map(Into::into))
                    {
                        journal_config.data_dir = dir;
                    }
                    Source::Journal(Journal::open(&journal_config)?)
                }
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
