//! `evrelay check-config`: every problem of the configuration at once.

use std::path::Path;

use crate::config::Settings;

pub fn run(
    config: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(), super::Error> {
    Settings::load(config, env)?;
    println!("configuration is valid");
    Ok(())
}
