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

/// `evrelay dump`.
#[derive(Debug, clap::Args)]
pub struct DumpArgs {
    /// The data directory to read: a stopped evrelay's, or a copy of its PVC.
    #[arg(long, conflicts_with = "admin")]
    pub data_dir: Option<PathBuf>,
    /// Ask a running evrelay instead, through its admin endpoint
    /// (e.g. http://127.0.0.1:8080 after `kubectl port-forward`).
    #[arg(long)]
    pub admin: Option<String>,
    /// Print the journal's bookkeeping instead: schema, tokens, cursors, term,
    /// counts and sizes.
    #[arg(long)]
    pub meta: bool,
    /// json (one object per line) or table.
    #[arg(long, value_enum, default_value = "json")]
    pub format: crate::dump::Format,
    /// Only records not shipped yet.
    #[arg(long)]
    pub pending: bool,
    /// Only records the intake accepted.
    #[arg(long)]
    pub shipped: bool,
    /// Only records the intake refused for good.
    #[arg(long)]
    pub dead: bool,
    /// Only gap markers (where events may be missing).
    #[arg(long)]
    pub gaps: bool,
    /// Records last seen at or after T: RFC 3339 (2026-11-22T10:00:00Z) or a time
    /// ago (15m, 2h, 1d).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<i64>,
    /// Records last seen before T (same forms as --since).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<i64>,
    /// Only events in this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only events with this reason (case-insensitive), or gaps with this cause.
    #[arg(long)]
    pub reason: Option<String>,
    /// At most N records.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Keep printing records as they are journaled (needs --admin for a running
    /// evrelay).
    #[arg(long)]
    pub follow: bool,
}

/// `evrelay replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Events last seen at or after T: RFC 3339 or a time ago (15m, 2h, 1d).
    #[arg(long, value_parser = parse_time)]
    pub since: i64,
    /// Events last seen before T (default: now).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<i64>,
    /// Print what would be sent (as `dump` lines) and send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Send at most N events, the oldest of the window first (the report says
    /// `capped` when it stopped short).
    #[arg(long, value_name = "N")]
    pub max_events: Option<usize>,
    /// Ask a running evrelay (its admin endpoint) to replay from its journal.
    #[arg(long, conflicts_with = "data_dir")]
    pub admin: Option<String>,
    /// Replay from this journal directory (evrelay stopped); needs the API key.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl DumpArgs {
    pub fn filter(&self) -> crate::dump::Filter {
        crate::dump::Filter {
            pending: self.pending,
            shipped: self.shipped,
            dead: self.dead,
            gaps: self.gaps,
            events: false,
            since_ms: self.since,
            until_ms: self.until,
            namespace: self.namespace.clone(),
            reason: self.reason.clone(),
            after: None,
            limit: self.limit,
        }
    }
}

/// A point in time as Unix ms: RFC 3339, or a duration ago (`15m`, `2h`, `1d`).
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    let ago = s
        .parse::<jiff::Span>()
        .ok()
        .and_then(|span| {
            span.to_duration(jiff::SpanRelativeTo::days_are_24_hours())
                .ok()
        })
        .ok_or_else(|| {
            format!(
                "{s:?} is neither RFC 3339 (2026-11-22T10:00:00Z) nor a duration ago (15m, 2h, 1d)"
            )
        })?;
    Ok(jiff::Timestamp::now().as_millisecond() - ago.as_millis() as i64)
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
    /// Print what the journal holds: one JSON object per record, or a table.
    Dump(DumpArgs),
    /// Ship a past window again (after Datadog lost data), tagged
    /// evrelay_replay:<id>; moves no cursor and leaves live shipping alone.
    Replay(ReplayArgs),
    /// Check the configuration and report every problem; exit 2 if there is one.
    CheckConfig,
}
