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
    super::runtime()?.block_on(async {
        let shutdown = Shutdown::on_signals().map_err(super::Error::Start)?;
        let token = shutdown.token();
        shutdown
            .abortable(crate::runtime::run(settings, token))
            .await??;
        Ok(())
    })
}
