//! Logging setup: `tracing` output on stderr, filtered by `RUST_LOG`
//! (default: `info`, with the Cassandra driver's once-a-second reconnection
//! messages silenced; the sinks log outages and recoveries themselves, once
//! each). `FRAUDFLIGHT_LOG_FORMAT=json` writes one JSON object per line for
//! log collectors; colours only when stderr is a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

const DEFAULT_FILTER: &str = "info,scylla=warn,scylla::cluster::metadata::cc_establisher=off";

/// Environment variable choosing the format: `text` (default) or `json`.
pub const FORMAT_VAR: &str = "FRAUDFLIGHT_LOG_FORMAT";

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second init (tests that call into the CLI) is harmless.
    let _ = match std::env::var(FORMAT_VAR).as_deref() {
        Ok("json") => builder.json().flatten_event(true).with_current_span(false).try_init(),
        _ => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
}
