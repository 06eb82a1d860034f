//! `evrelay replay`: through a running evrelay, or from a stopped one's journal.

use std::io::Write;
use std::path::Path;

use crate::cli::ReplayArgs;
use crate::config::Settings;
use crate::dump::{Filter, Format};
use crate::metrics::Metrics;
use crate::ship::{Limits, Window};
use crate::shutdown::Shutdown;
use crate::sinks::datadog::{Intake, SINK_NAME};

pub fn run(
    config: Option<&Path>,
    args: ReplayArgs,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(), super::Error> {
    let window = Window {
        since_ms: args.since,
        until_ms: args.until,
    };
    let limits = Limits {
        max_events: args.max_events,
    };
    super::runtime()?.block_on(async {
        let mut out = std::io::stdout().lock();
        if let Some(base) = &args.admin {
            return through_admin(base, window, limits, args.dry_run, &mut out).await;
        }
        let journal = super::open_journal(args.data_dir.clone(), true)?;
        if args.dry_run {
            let lines = crate::dump::lines(&journal, SINK_NAME, &Filter::replayed(window))?;
            crate::dump::print(&lines, Format::Json, &mut out)?;
            return Ok(());
        }
        let settings = Settings::load(config, env)?;
        let intake = Intake::new(&settings.datadog, settings.ship.request_timeout)?;
        let shipper = crate::runtime::shipper(&settings, journal, intake, Metrics::new());
        let shutdown = Shutdown::on_signals().map_err(super::Error::Start)?;
        let token = shutdown.token();
        let report = shutdown
            .abortable(shipper.replay(window, limits, &token))
            .await??;
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
        Ok(())
    })
}

/// Asks a running evrelay's admin endpoint to replay (or list, with `dry_run`,
/// page by page).
async fn through_admin(
    base: &str,
    window: Window,
    limits: Limits,
    dry_run: bool,
    out: &mut impl Write,
) -> Result<(), super::Error> {
    let url = format!("{}/replay", base.trim_end_matches('/'));
    let mut query = vec![("since_ms", window.since_ms.to_string())];
    if let Some(until) = window.until_ms {
        query.push(("until_ms", until.to_string()));
    }
    if let Some(max) = limits.max_events {
        query.push(("max_events", max.to_string()));
    }
    if dry_run {
        query.push(("dry_run", "true".into()));
    }
    let failed = |source| super::Error::Admin {
        url: url.clone(),
        source,
    };
    let client = reqwest::Client::new();
    let mut after: Option<u64> = None;
    loop {
        let mut page = query.clone();
        if let Some(after) = after {
            page.push(("after", after.to_string()));
        }
        let response = client
            .post(&url)
            .header(crate::admin::REQUEST_HEADER, "replay")
            .query(&page)
            .send()
            .await
            .map_err(failed)?;
        let status = response.status();
        let more = response
            .headers()
            .get(crate::dump::MORE)
            .is_some_and(|v| v == "true");
        let scanned = response
            .headers()
            .get(crate::dump::SCANNED_THROUGH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let body = response.bytes().await.map_err(failed)?;
        if !status.is_success() {
            return Err(super::Error::Refused {
                url: url.clone(),
                status: status.as_u16(),
                answer: String::from_utf8_lossy(&body).trim().to_owned(),
            });
        }
        out.write_all(&body)?;
        match scanned {
            Some(seq) if dry_run && more => after = Some(seq),
            _ => return Ok(()),
        }
    }
}
