//! Live model quality over Cassandra (docs/architecture.md, "Model
//! quality"): the book of scored outcomes, `scores`, a partition per (UTC
//! day, bucket of `trans_num`), a row per outcome, its label set by labels
//! with the report's time as the write timestamp (the newest report wins,
//! whichever instance writes last); and the measured days,
//! `model_quality`, a partition per day, a row per model version.
//!
//! Every instance writes its outcomes and labels into the same book, and
//! any instance measuring a day reads all of it, so instances agree.

use futures::{StreamExt, TryStreamExt};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlTimestamp, CqlValue};
use tokio_util::sync::CancellationToken;

use super::{request, rows, Cassandra, CassandraError};
use crate::quality::{DayQuality, RowLabel, ScoreRow};
use crate::retry::Abandoned;

/// Partitions a day's rows are spread over (a million outcomes a day make
/// partitions of about 60,000 rows).
const BUCKETS: u32 = 16;
/// Rows of one partition written as one unlogged batch, at most.
const BATCH_ROWS: usize = 100;

/// The CREATE statements of the quality tables.
pub fn create_statements(ks: &str) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.scores (\n  day date,\n  bucket int,\n  trans_num text,\n  model_version text,\n  fraud_score float,\n  predicted boolean,\n  shadow_version text,\n  shadow_score float,\n  label boolean,\n  label_reported_at bigint,\n  PRIMARY KEY ((day, bucket), trans_num)\n)"
        ),
        // One row per retraining run (spark-job/retrain.py writes it): the
        // challenger, the champion it was judged against, both evaluations
        // and whether it was deployed, and why.
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.model_decisions (\n  day date,\n  decided_at timestamp,\n  challenger text,\n  champion text,\n  deployed boolean,\n  mode text,\n  reason text,\n  champion_evaluation text,\n  challenger_evaluation text,\n  PRIMARY KEY ((day), decided_at, challenger)\n) WITH CLUSTERING ORDER BY (decided_at DESC, challenger ASC)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.model_quality (\n  day date,\n  version text,\n  measures text,\n  computed_at timestamp,\n  PRIMARY KEY ((day), version)\n)"
        ),
    ]
}

/// The quality statements.
pub struct Statements {
    insert_score: PreparedStatement,
    insert_shadowed_score: PreparedStatement,
    label_score: PreparedStatement,
    select_scores: PreparedStatement,
    insert_quality: PreparedStatement,
    select_quality: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare<F, Fut>(ks: &str, prepare: F) -> Result<Self, CassandraError>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<PreparedStatement, CassandraError>>,
    {
        Ok(Self {
            // Without the shadow columns when there is no shadow: a null
            // would be a tombstone per row.
            insert_score: prepare(format!(
                "INSERT INTO {ks}.scores (day, bucket, trans_num, model_version, fraud_score, predicted) VALUES (?, ?, ?, ?, ?, ?)"
            ))
            .await?,
            insert_shadowed_score: prepare(format!(
                "INSERT INTO {ks}.scores (day, bucket, trans_num, model_version, fraud_score, predicted, shadow_version, shadow_score) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            ))
            .await?,
            label_score: prepare(format!(
                "UPDATE {ks}.scores USING TIMESTAMP ? SET label = ?, label_reported_at = ? WHERE day = ? AND bucket = ? AND trans_num = ?"
            ))
            .await?,
            select_scores: prepare(format!(
                "SELECT trans_num, model_version, fraud_score, predicted, shadow_version, shadow_score, label, label_reported_at FROM {ks}.scores WHERE day = ? AND bucket = ?"
            ))
            .await?,
            insert_quality: prepare(format!(
                "INSERT INTO {ks}.model_quality (day, version, measures, computed_at) VALUES (?, ?, ?, ?)"
            ))
            .await?,
            select_quality: prepare(format!("SELECT measures FROM {ks}.model_quality WHERE day = ?")).await?,
        })
    }
}

/// The bucket of a transaction: FNV-1a of its number, so every instance
/// and every release puts it in the same partition.
fn bucket(trans_num: &str) -> i32 {
    let hash =
        trans_num.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    (hash % u64::from(BUCKETS)) as i32
}

fn key(day: i64, trans_num: &str) -> [Option<CqlValue>; 3] {
    [
        Some(CqlValue::Date(rows::day_of(day * 86_400))),
        Some(CqlValue::Int(bucket(trans_num))),
        Some(CqlValue::Text(trans_num.to_string())),
    ]
}

type ScoreColumns =
    (String, Option<String>, Option<f32>, Option<bool>, Option<String>, Option<f32>, Option<bool>, Option<i64>);

impl Cassandra {
    /// Writes the score rows of stored outcomes, a few unlogged batches per
    /// partition; Ok once Cassandra has every one.
    pub async fn write_scores(&self, scores: &[ScoreRow], abandon: &CancellationToken) -> Result<(), Abandoned> {
        let mut partitions: std::collections::HashMap<(i64, i32, bool), Vec<rows::Values>> =
            std::collections::HashMap::new();
        for r in scores {
            let mut values: rows::Values = key(r.day, &r.trans_num).into();
            values.push(Some(CqlValue::Text(r.model_version.clone())));
            values.push(Some(CqlValue::Float(r.fraud_score)));
            values.push(Some(CqlValue::Boolean(r.predicted)));
            if let Some((version, score)) = &r.shadow {
                values.push(Some(CqlValue::Text(version.clone())));
                values.push(Some(CqlValue::Float(*score)));
            }
            partitions.entry((r.day, bucket(&r.trans_num), r.shadow.is_some())).or_default().push(values);
        }
        let batches: Vec<(bool, Vec<rows::Values>)> = partitions
            .into_iter()
            .flat_map(|((_, _, shadowed), rows)| {
                let chunks: Vec<Vec<rows::Values>> = rows.chunks(BATCH_ROWS).map(<[_]>::to_vec).collect();
                chunks.into_iter().map(move |chunk| (shadowed, chunk))
            })
            .collect();
        let mut writes = futures::stream::iter(batches)
            .map(|(shadowed, chunk)| {
                let q = &self.quality;
                self.execute_batch(if shadowed { &q.insert_shadowed_score } else { &q.insert_score }, chunk, abandon)
            })
            .buffer_unordered(self.concurrency);
        while let Some(result) = writes.next().await {
            result?;
        }
        Ok(())
    }

    /// Sets the labels of score rows; the newest report wins.
    pub async fn write_score_labels(&self, labels: &[RowLabel], abandon: &CancellationToken) -> Result<(), Abandoned> {
        // Collected first: a lazy map would tie the stream to a borrowed closure.
        let statements: Vec<rows::Values> = labels
            .iter()
            .map(|l| {
                let mut values: rows::Values = vec![
                    // Only the flag is kept here: the same winner as the labels'.
                    Some(CqlValue::BigInt(crate::history::card::version(l.reported_at, l.is_fraud, None))),
                    Some(CqlValue::Boolean(l.is_fraud)),
                    Some(CqlValue::BigInt(l.reported_at)),
                ];
                values.extend(key(l.day, &l.trans_num));
                values
            })
            .collect();
        let mut writes = futures::stream::iter(statements)
            .map(|values| self.execute(&self.quality.label_score, values, abandon))
            .buffer_unordered(self.concurrency);
        while let Some(result) = writes.next().await {
            result?;
        }
        Ok(())
    }

    /// Every score row of a day (rows a label created before its outcome
    /// was stored, without a score, are left out).
    pub async fn score_rows(&self, day: i64) -> Result<Vec<ScoreRow>, CassandraError> {
        let date = CqlValue::Date(rows::day_of(day * 86_400));
        let reads = (0..BUCKETS as i32).map(|b| {
            let values = (date.clone(), b);
            async move {
                self.session
                    .execute_iter(self.quality.select_scores.clone(), values)
                    .await
                    .map_err(request("scores"))?
                    .rows_stream::<ScoreColumns>()
                    .map_err(request("scores"))?
                    .try_collect::<Vec<_>>()
                    .await
                    .map_err(request("scores"))
            }
        });
        let parts = futures::future::try_join_all(reads).await?;
        Ok(parts
            .into_iter()
            .flatten()
            .filter_map(|(trans_num, version, score, predicted, shadow_version, shadow_score, label, reported)| {
                Some(ScoreRow {
                    trans_num,
                    day,
                    model_version: version?,
                    fraud_score: score?,
                    predicted: predicted?,
                    shadow: shadow_version.zip(shadow_score),
                    label: label.map(|l| (l, reported.unwrap_or(0))),
                })
            })
            .collect())
    }

    /// Saves a measured day (one row per version).
    pub async fn save_quality(&self, measured: &[DayQuality]) -> Result<(), CassandraError> {
        for d in measured {
            let measures = serde_json::to_string(d).expect("quality serialises");
            let values = (rows::day_of(d.day * 86_400), d.version.as_str(), measures, CqlTimestamp(d.computed_at_ms));
            self.session
                .execute_unpaged(&self.quality.insert_quality, values)
                .await
                .map_err(request("model_quality"))?;
        }
        Ok(())
    }

    /// The saved quality of the newest `days` days measured, by any
    /// instance. A row that does not parse (written by another release) is
    /// skipped with a warning.
    pub async fn saved_quality(&self, days: usize) -> Result<Vec<DayQuality>, CassandraError> {
        let mut all: Vec<scylla::value::CqlDate> = self
            .session
            .query_iter(format!("SELECT DISTINCT day FROM {}.model_quality", self.keyspace), &[])
            .await
            .map_err(request("model_quality days"))?
            .rows_stream::<(scylla::value::CqlDate,)>()
            .map_err(request("model_quality days"))?
            .map_ok(|(d,)| d)
            .try_collect()
            .await
            .map_err(request("model_quality days"))?;
        all.sort_by_key(|d| std::cmp::Reverse(d.0));
        let mut out = Vec::new();
        for day in all.into_iter().take(days) {
            let measured: Vec<(String,)> = self
                .session
                .execute_iter(self.quality.select_quality.clone(), (day,))
                .await
                .map_err(request("model_quality"))?
                .rows_stream::<(String,)>()
                .map_err(request("model_quality"))?
                .try_collect()
                .await
                .map_err(request("model_quality"))?;
            for (json,) in measured {
                match serde_json::from_str::<DayQuality>(&json) {
                    Ok(d) => out.push(d),
                    Err(e) => tracing::warn!(error = %e, "a model_quality row does not parse; skipped"),
                }
            }
        }
        Ok(out)
    }
}

type DecisionColumns = (
    CqlTimestamp,
    String,
    Option<String>,
    Option<bool>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

impl Cassandra {
    /// The newest retraining decisions (`model_decisions`, written by
    /// spark-job/retrain.py), newest first, at most `limit`.
    pub async fn recent_decisions(&self, limit: usize) -> Result<Vec<serde_json::Value>, CassandraError> {
        let cql = format!(
            "SELECT decided_at, challenger, champion, deployed, mode, reason, champion_evaluation, challenger_evaluation FROM {}.model_decisions",
            self.keyspace
        );
        let mut rows: Vec<DecisionColumns> = self
            .session
            .query_iter(cql, &[])
            .await
            .map_err(request("model_decisions"))?
            .rows_stream::<DecisionColumns>()
            .map_err(request("model_decisions"))?
            .try_collect()
            .await
            .map_err(request("model_decisions"))?;
        rows.sort_by_key(|r| std::cmp::Reverse(r.0 .0));
        let parsed = |text: Option<String>| {
            text.and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok()).unwrap_or(serde_json::Value::Null)
        };
        Ok(rows
            .into_iter()
            .take(limit)
            .map(|(at, challenger, champion, deployed, mode, reason, champion_eval, challenger_eval)| {
                serde_json::json!({
                    "decided_at_ms": at.0,
                    "challenger": challenger,
                    "champion": champion,
                    "deployed": deployed.unwrap_or(false),
                    "mode": mode,
                    "reason": reason,
                    "champion_evaluation": parsed(champion_eval),
                    "challenger_evaluation": parsed(challenger_eval),
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_spread() {
        // FNV-1a of "abc" is 0xe71fa2190541574b; these values must never change.
        assert_eq!(bucket("abc"), (0xe71f_a219_0541_574bu64 % 16) as i32);
        let mut seen = [0usize; BUCKETS as usize];
        for i in 0..1600 {
            seen[bucket(&format!("t{i:08x}")) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }
}
