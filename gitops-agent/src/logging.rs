//! Logging on stderr: `--log-format text|json`, the level from `RUST_LOG`.

use tracing_subscriber::EnvFilter;

use crate::args::{LogArgs, LogFormat};

/// Installs the global subscriber: `RUST_LOG` when set, else `default`
/// (`"info"` for a long-lived agent, `"error"` for one-shot runs whose
/// result is on stdout). Does nothing when a subscriber is already set.
pub fn init(args: &LogArgs, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
