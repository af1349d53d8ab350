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

/// The settings every fraudflight producer shares (idempotent, so a retried
/// send never writes a record twice; lz4; a short linger to fill batches),
/// then `extra` settings of the caller, then the user's properties, which win.
pub fn producer_config(
    brokers: &str,
    extra: &[(&str, &str)],
    properties: &[(String, String)],
) -> rdkafka::ClientConfig {
    let mut config = client_config(brokers, &[]);
    config.set("enable.idempotence", "true").set("linger.ms", "5").set("compression.type", "lz4");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    for (k, v) in properties {
        config.set(k, v);
    }
    config
}

/// Creates topics that do not exist yet, with `partitions` partitions (-1:
/// the broker's default) and the broker's default replication. A topic that exists is left alone; any other
/// failure (no permission, say) is logged, and the first write will say more.
pub async fn ensure_topics(brokers: &str, properties: &[(String, String)], topics: &[String], partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;

    let admin: AdminClient<DefaultClientContext> = match client_config(brokers, properties).create() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "cannot create a Kafka admin client; topics not checked");
            return;
        }
    };
    let new: Vec<NewTopic> = topics.iter().map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(-1))).collect();
    let options = AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(10)));
    match admin.create_topics(&new, &options).await {
        Ok(results) => {
            for result in results {
                match result {
                    Ok(topic) => tracing::info!(topic, "topic created"),
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((topic, code)) => tracing::warn!(topic, error = %code, "cannot create topic"),
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot create topics"),
    }
}

/// librdkafka's client errors, as its default context logs them, except a
/// partition's end: a consumer with `enable.partition.eof` gets that from
/// its poll too, and rust-rdkafka also reports it here as a "global error"
/// (fede1024/rust-rdkafka#820), which is none.
pub fn log_client_error(error: &rdkafka::error::KafkaError, reason: &str) {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    match error {
        KafkaError::Global(RDKafkaErrorCode::PartitionEOF) | KafkaError::PartitionEOF(_) => {
            tracing::trace!(reason, "partition end")
        }
        _ => tracing::error!("librdkafka: {error}: {reason}"),
    }
}

/// The partitions of one topic written to since librdkafka last reported
/// their end, gathered from its statistics (`statistics.interval.ms`) in a
/// consumer context and taken by the thread that polls.
///
/// librdkafka reports a partition's end once, when its fetch reaches it,
/// and nothing when the partition grows afterwards: a consumer that counts
/// a partition at its end and silent as having nothing more would miss
/// records written since (or fetched and queued behind another partition's
/// backlog). A snapshot holds the offset of the last end reported and the
/// partition's end the brokers gave since (its last stable offset, as
/// read_committed, librdkafka's default, reads to it). It comes through the
/// consumer's queue, after the messages queued before it was taken, so
/// what is taken after a poll came before what the poll returned.
///
/// Its limit: "the last end reported" is the fetcher's newest, not the one
/// the consumer has read. An end read late, behind a backlog in the shared
/// queue, with the partition's next records queued behind it and the
/// fetcher at its end again, is not undone. The transactions aligner polls
/// its queue empty into its own buffers, so its ends are read soon after
/// they are reported; the labels consumer, which stores each batch before
/// it polls again, reads each partition from its own queue instead
/// (`source/labels.rs`).
#[derive(Debug, Default)]
pub struct GrownPartitions {
    grown: std::sync::Mutex<Vec<i32>>,
    /// Something to take: checked first, as the poller asks after every poll.
    any: std::sync::atomic::AtomicBool,
}

impl GrownPartitions {
    /// Notes the partitions of `topic` that grew past their last end in
    /// this snapshot.
    pub fn record(&self, statistics: &rdkafka::statistics::Statistics, topic: &str) {
        let Some(topic) = statistics.topics.get(topic) else { return };
        let grown = topic.partitions.values().filter(|p| {
            let end = if p.ls_offset >= 0 { p.ls_offset } else { p.hi_offset };
            p.partition >= 0 && p.eof_offset >= 0 && end > p.eof_offset
        });
        let mut list = self.grown.lock().unwrap_or_else(|p| p.into_inner());
        list.extend(grown.map(|p| p.partition));
        if !list.is_empty() {
            self.any.store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// The partitions noted since the last call.
    pub fn take(&self) -> Vec<i32> {
        if !self.any.swap(false, std::sync::atomic::Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut *self.grown.lock().unwrap_or_else(|p| p.into_inner()))
    }
}
