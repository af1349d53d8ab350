//! From Kafka records to a scored batch: decode each JSON value, build one
//! Arrow batch, score it, and turn every record that fails along the way
//! (too large, empty, not JSON, missing or out-of-range fields) into a dead
//! letter that carries the original bytes and the reason. Every record read
//! comes out either as an outcome or as a dead letter.

use arrow::record_batch::RecordBatch;

use crate::record::TransactionBatchBuilder;
use crate::score::{outcome, ScoreError, Scored};
use crate::sink::kafka::DeadLetter;

/// One record as read from Kafka.
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// The record's Kafka timestamp, ms.
    pub timestamp_ms: Option<i64>,
}

/// A batch after scoring.
#[derive(Debug)]
pub struct ScoredRecords {
    /// Outcomes with their Kafka positions set.
    pub outcomes: RecordBatch,
    pub dead: Vec<DeadLetter>,
}

/// Decodes, validates and scores `records`. Fails only if the model itself
/// fails (the caller retries the batch).
pub fn score_records(
    records: &[RawRecord],
    max_record_bytes: usize,
    score: impl FnOnce(&RecordBatch) -> Result<Scored, ScoreError>,
) -> Result<ScoredRecords, ScoreError> {
    let mut builder = TransactionBatchBuilder::with_capacity(records.len());
    let mut decoded: Vec<&RawRecord> = Vec::with_capacity(records.len());
    let mut dead = Vec::new();
    for r in records {
        match check_and_append(r, max_record_bytes, &mut builder) {
            Ok(()) => decoded.push(r),
            Err(error) => dead.push(letter(r, error)),
        }
    }
    let batch = builder.finish();
    let scored = score(&batch)?;
    let mut valid = vec![true; decoded.len()];
    for e in &scored.invalid {
        valid[e.row] = false;
        dead.push(letter(decoded[e.row], format!("invalid record: {}", e.error)));
    }
    let positions: Vec<(i32, i64)> =
        decoded.iter().zip(&valid).filter(|(_, ok)| **ok).map(|(r, _)| (r.partition, r.offset)).collect();
    Ok(ScoredRecords { outcomes: outcome::with_kafka_positions(&scored.outcomes, &positions), dead })
}

/// Appends the record's transaction to `builder`, or says why it cannot (and
/// appends nothing).
fn check_and_append(
    r: &RawRecord,
    max_record_bytes: usize,
    builder: &mut TransactionBatchBuilder,
) -> Result<(), String> {
    let value = match r.value.as_deref() {
        None | Some([]) => return Err("empty record value".into()),
        Some(v) => v,
    };
    if value.len() > max_record_bytes {
        return Err(format!(
            "record value is {} bytes, more than kafka.max_record_bytes = {max_record_bytes}",
            value.len()
        ));
    }
    builder.append_json(value).map_err(|e| e.to_string())
}

fn letter(r: &RawRecord, error: String) -> DeadLetter {
    DeadLetter {
        key: r.key.clone(),
        value: r.value.clone().unwrap_or_default(),
        error,
        source: Some((r.partition, r.offset)),
    }
}
