//! Kafka plumbing shared by the tools that write transactions to a topic
//! (`simulate --brokers`, `replay`) and, later, the streaming source.

pub mod producer;

/// Builds an rdkafka client configuration from bootstrap servers plus any
/// librdkafka properties (`security.protocol`, `sasl.*`, `ssl.*`, ...).
pub fn client_config(brokers: &str, properties: &[(String, String)]) -> rdkafka::ClientConfig {
    let mut config = rdkafka::ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (k, v) in properties {
        config.set(k, v);
    }
    config
}

/// Parses `key=value` command-line properties.
pub fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{text:?} is not a librdkafka property of the form key=value")),
    }
}
