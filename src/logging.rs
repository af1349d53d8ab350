//! Logging setup: human-readable `tracing` output on stderr, filtered by
//! `RUST_LOG` (default: `info`, with the Cassandra driver's once-a-second
//! reconnection messages silenced; the sinks log outages and recoveries
//! themselves, once each).

use tracing_subscriber::EnvFilter;

const DEFAULT_FILTER: &str = "info,scylla=warn,scylla::cluster::metadata::cc_establisher=off";

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // A second init (tests that call into the CLI) is harmless.
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
