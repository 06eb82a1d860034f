//! The command line: `run`, `dump`, `check-config`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Forwards Kubernetes events to Datadog and never loses one it has seen.
#[derive(Debug, Parser)]
#[command(name = "evrelay", version, about)]
pub struct Cli {
    /// The YAML configuration file. Every key can also be set from the environment.
    #[arg(long, global = true, env = "EVRELAY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Log format: text or json. Levels come from RUST_LOG (default: info).
    #[arg(
        long,
        global = true,
        env = "EVRELAY_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch events, journal them, ship them to Datadog (the daemon).
    Run {
        /// Where the journal lives (overrides journal.data_dir; env EVRELAY_DATA_DIR).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print what the journal holds, one JSON object per record.
    Dump {
        /// The data directory to read (a running evrelay's must be stopped or copied).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Print the journal's bookkeeping instead: schema, resume token, cursors, sizes.
        #[arg(long)]
        meta: bool,
    },
    /// Check the configuration and report every problem; exit 2 if there is one.
    CheckConfig,
}
