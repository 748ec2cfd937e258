//! The configuration in force. Module configs (`CONFIG SET okome.*`) are
//! not wired yet; the defaults of `okome_core::config::Config` apply.

use okome_core::config::Config;

/// The configuration for this command.
pub fn current() -> Config {
    Config::default()
}
