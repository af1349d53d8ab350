//! Retention (`[retention]`, docs/architecture.md, "Retention"): how long
//! stored data is kept. Cassandra expires rows by each table's default time
//! to live, set at start (rows written before keep the one they had); the
//! search engine's daily outcome indices are deleted once they were created
//! longer ago than `outcomes_days`, and measured quality documents once
//! computed longer ago than `quality_days`, every hour. Both count from
//! when data was written, not from the transaction's date: a replay of last
//! year's transactions is kept as long as today's.

use std::time::Duration;

use serde_json::{json, Value};

use super::cassandra::{Cassandra, CassandraError};
use super::search::{Search, SearchError};
use crate::config::RetentionConfig;

/// How often the search engine's old data is looked for.
pub const EVERY: Duration = Duration::from_secs(3_600);

/// The Cassandra tables that grow with traffic, and their retention.
pub fn tables(retention: &RetentionConfig) -> Vec<(&'static str, u32)> {
    vec![
        ("transactions", retention.outcomes_days),
        ("alerts", retention.outcomes_days),
        ("transaction_keys", retention.outcomes_days),
        ("labels", retention.labels_days),
        ("label_reports", retention.labels_days),
        ("merchant_days", retention.merchant_days),
        ("quality_rows", retention.scores_days),
        ("quality_changes", retention.scores_days),
        ("quality_tallies", retention.scores_days),
        ("quality_card_labels", retention.scores_days),
        ("model_quality", retention.quality_days),
        ("model_decisions", retention.quality_days),
    ]
}

impl Cassandra {
    /// Sets each growing table's default time to live (0 = for ever).
    pub async fn apply_retention(&self, retention: &RetentionConfig) -> Result<(), CassandraError> {
        for (table, days) in tables(retention) {
            let seconds = u64::from(days) * 86_400;
            self.alter(&format!("ALTER TABLE {}.{table} WITH default_time_to_live = {seconds}", self.keyspace()))
                .await?;
        }
        tracing::info!(?retention, "retention applied to Cassandra's tables");
        Ok(())
    }
}

impl Search {
    /// Deletes outcome indices created more than `outcomes_days` ago and
    /// quality documents computed more than `quality_days` ago (0 = keep);
    /// returns the indices deleted.
    pub async fn expire(&self, retention: &RetentionConfig) -> Result<Vec<String>, SearchError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let cutoff = |days: u32| now_ms - i64::from(days) * 86_400_000;
        let mut deleted = Vec::new();
        if retention.outcomes_days > 0 {
            let indices: Value = self.cat_indices().await?;
            for index in indices.as_array().into_iter().flatten() {
                let name = index["index"].as_str().unwrap_or_default();
                let created: i64 = index["creation.date"].as_str().and_then(|c| c.parse().ok()).unwrap_or(i64::MAX);
                if created < cutoff(retention.outcomes_days) {
                    self.delete_index(name).await?;
                    deleted.push(name.to_string());
                }
            }
        }
        if retention.quality_days > 0 {
            let query = json!({"query": {"range": {"computed_at": {"lt": cutoff(retention.quality_days)}}}});
            self.delete_quality(query).await?;
        }
        if !deleted.is_empty() {
            tracing::info!(?deleted, days = retention.outcomes_days, "outcome indices past retention deleted");
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_growing_table_has_a_retention_and_the_line_up_is_kept() {
        let tables = tables(&RetentionConfig::default());
        let statements = super::super::cassandra::all_create_statements("ks", "{}").join("\n");
        for (table, days) in &tables {
            assert!(statements.contains(&format!("ks.{table} (")), "{table} is not one of ours");
            assert!(*days > 0, "{table}: a default retention");
        }
        let named: Vec<&str> = tables.iter().map(|(t, _)| *t).collect();
        for kept in ["models", "model_files", "model_lineup"] {
            assert!(!named.contains(&kept), "{kept}: the line-up must survive");
        }
    }
}
