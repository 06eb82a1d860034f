//! `evrelay`: parses the command line, sets up logging, runs one command, and maps
//! its outcome to an exit code. Everything else is in the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use evrelay::cli::{Cli, Command, LogFormat};
use evrelay::cmd::{self, Error};

/// Exit code for configuration errors, distinct from runtime failures (1).
const EXIT_CONFIG: u8 = 2;
/// Exit code after a second signal cut a graceful shutdown short (128 + SIGINT).
const EXIT_ABORTED: u8 = 130;

fn main() -> ExitCode {
    tune_malloc();
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let env = |k: &str| std::env::var(k).ok();
    let config = cli.config.as_deref();
    let outcome = match cli.command {
        Command::Run { data_dir } => cmd::run::run(config, data_dir, env),
        Command::Dump(args) => cmd::dump::run(args),
        Command::Replay(args) => cmd::replay::run(config, args, env),
        Command::CheckConfig => cmd::check_config::run(config, env),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Config(e)) => {
            eprint!("{e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Error::Aborted(e)) => {
            eprintln!("evrelay: {e}");
            ExitCode::from(EXIT_ABORTED)
        }
        Err(e) => {
            eprintln!("evrelay: {}", explain(&anyhow::Error::from(e)));
            ExitCode::FAILURE
        }
    }
}

/// Two glibc malloc arenas instead of one per thread (up to 8 per core), unless
/// the operator set `MALLOC_ARENA_MAX`: blocks freed by the journal and shipping
/// threads stayed in their arenas; and a fixed mmap threshold (BENCHMARKS.md has
/// the figures for both).
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first in main, before any other thread exists;
        // mallopt only adjusts the allocator's settings.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
    // A fixed mmap threshold: blocks of 128 KiB and more (large events, LIST
    // pages, request bodies) are mapped and given back when freed. glibc's
    // default raises the threshold to the largest block freed so far, after
    // which such blocks come from the arenas and stay resident.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: as above.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
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

fn init_tracing(format: LogFormat) {
    // kube's client logs every failed request as an error; evrelay says once, in
    // its own words, when the API server becomes unreachable and when it is back.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_client=off"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}
