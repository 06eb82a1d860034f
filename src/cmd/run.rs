//! `evrelay run`: the daemon.

use std::path::{Path, PathBuf};

use crate::config::Settings;
use crate::shutdown::Shutdown;

pub fn run(
    config: Option<&Path>,
    data_dir: Option<PathBuf>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(), super::Error> {
    let settings = Settings::load(config, env)?.with_data_dir(data_dir);
    // The daemon runs as a task on the runtime's workers, not in `block_on`'s
    // thread: a future polled by `block_on` is woken across threads for every
    // socket it reads (the workers drive the I/O), a futex wake and a context
    // switch each time; spawned, it is polled where the I/O is.
    let runtime = super::runtime()?;
    runtime.block_on(async {
        let daemon = tokio::spawn(async {
            let shutdown = Shutdown::on_signals().map_err(super::Error::Start)?;
            let token = shutdown.token();
            shutdown
                .abortable(crate::runtime::run(settings, token))
                .await??;
            Ok(())
        });
        match daemon.await {
            Ok(result) => result,
            // A panic stays a panic, as it was when `block_on` polled the daemon.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    })
}
