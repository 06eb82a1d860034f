//! `evrelay dump`: what the journal holds, from a journal directory or a running
//! evrelay's admin endpoint.

use std::io::Write;

use crate::cli::DumpArgs;
use crate::dump::Source;
use crate::sinks::datadog::SINK_NAME;

pub fn run(args: DumpArgs) -> Result<(), super::Error> {
    let source = match &args.admin {
        Some(url) => Source::Admin(url.clone()),
        None => Source::Journal(
            super::open_journal(args.data_dir.clone(), false)?,
            SINK_NAME,
        ),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(super::Error::Start)?;
    runtime.block_on(async {
        let mut out = std::io::stdout().lock();
        if args.meta {
            let meta = source.meta().await?;
            serde_json::to_writer_pretty(&mut out, &meta)?;
            writeln!(out)?;
        } else {
            crate::dump::run(&source, args.filter(), args.format, args.follow, &mut out).await?;
        }
        Ok(())
    })
}
