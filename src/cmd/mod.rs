//! The commands, one file each; `main` parses the arguments and calls one. They
//! return an [`Error`] that `main` turns into a message and an exit code.

pub mod check_config;
pub mod dump;
pub mod replay;
pub mod run;

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::journal::{Journal, JournalError, JournalSettings};
use crate::shutdown::Aborted;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is wrong (exit 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A second signal came before a graceful end (exit 130).
    #[error(transparent)]
    Aborted(#[from] Aborted),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Run(#[from] crate::runtime::RunError),
    #[error(transparent)]
    Dump(#[from] crate::dump::DumpError),
    #[error(transparent)]
    Ship(#[from] crate::ship::ShipError),
    #[error("building the HTTP client for the intake: {0}")]
    Http(#[from] reqwest::Error),
    #[error("asking {url}: {source}")]
    Admin {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}: {answer}")]
    Refused {
        url: String,
        status: u16,
        answer: String,
    },
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("encoding the output: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("starting: {0}")]
    Start(std::io::Error),
}

/// Opens the journal in `data_dir` (else `EVRELAY_DATA_DIR`, else the default) for
/// a command that needs no API key: only the journal's place. `verified`: refuse
/// a journal that is not what its state file says (`dump` reads it anyway, and
/// says so in `--meta`'s `check`, so a damaged journal set aside can be read).
fn open_journal(data_dir: Option<PathBuf>, verified: bool) -> Result<Journal, JournalError> {
    let mut settings = JournalSettings::default();
    if let Some(dir) = data_dir.or_else(|| std::env::var_os("EVRELAY_DATA_DIR").map(Into::into)) {
        settings.data_dir = dir;
    }
    if verified {
        Journal::open(&settings)
    } else {
        Journal::open_unverified(&settings)
    }
}

/// A multi-threaded runtime for the daemon and replays.
fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Runtime::new().map_err(Error::Start)
}
