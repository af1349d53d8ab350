//! Outcomes as OpenSearch / Elasticsearch documents (docs/architecture.md,
//! "Contracts", search index): every outcome field as written by Arrow's JSON writer,
//! plus `@timestamp` (transaction time, ms), `location` (merchant) and `home`
//! (customer) as geo points, and with a label `label_version`, the report's
//! order later label updates compare with (unmapped: in `_source` only).
//! Each document goes to the daily index of its
//! transaction time, with `_id` = `trans_num`, so a redelivered record
//! overwrites itself instead of duplicating.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;

use crate::record::column;
use crate::score::outcome;

/// One document with its bulk action line.
#[derive(Debug, Clone)]
pub struct Doc {
    /// `{"index":{"_index":...,"_id":...}}`
    pub action: Bytes,
    pub source: Bytes,
}

/// The daily index of a transaction time.
pub fn index_name(prefix: &str, unix_seconds: i64) -> String {
    let day = chrono::DateTime::from_timestamp(unix_seconds, 0).unwrap_or_default();
    format!("{prefix}-{}", day.format("%Y.%m.%d"))
}

/// Documents for every outcome row, in row order.
pub fn build(outcomes: &RecordBatch, prefix: &str) -> Vec<Doc> {
    let mut writer = arrow::json::LineDelimitedWriter::new(Vec::with_capacity(outcomes.num_rows() * 700));
    writer.write(outcomes).expect("outcome columns are JSON-encodable");
    writer.finish().expect("in-memory writer");
    let lines = writer.into_inner();
    let f64s = |name| outcomes.column_by_name(name).expect("outcome column").as_primitive::<Float64Type>();
    let (lat, long, merch_lat, merch_long) =
        (f64s(column::lat), f64s(column::long), f64s(column::merch_lat), f64s(column::merch_long));
    let unix_time = outcomes.column_by_name(column::unix_time).expect("outcome column").as_primitive::<Int64Type>();
    let trans_num = outcomes.column_by_name(column::trans_num).expect("outcome column").as_string::<i32>();
    let is_fraud = outcomes.column_by_name(column::is_fraud).expect("outcome column").as_primitive::<Int64Type>();
    let reported =
        outcomes.column_by_name(outcome::LABEL_REPORTED_AT).expect("outcome column").as_primitive::<Int64Type>();
    let by = outcomes.column_by_name(outcome::LABEL_BY).expect("outcome column").as_string::<i32>();

    lines
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(row, line)| {
            let seconds = unix_time.value(row);
            let action = serde_json::json!({"index": {
                "_index": index_name(prefix, seconds),
                "_id": trans_num.value(row),
            }});
            // The writer's object ends with '}': splice the extra fields in.
            let mut source = Vec::with_capacity(line.len() + 150);
            source.extend_from_slice(&line[..line.len() - 1]);
            if reported.is_valid(row) && is_fraud.is_valid(row) {
                let decider = by.is_valid(row).then(|| by.value(row));
                let version = crate::history::card::version(reported.value(row), is_fraud.value(row) == 1, decider);
                source.extend_from_slice(format!(r#","label_version":{version}"#).as_bytes());
            }
            source.extend_from_slice(
                format!(
                    r#","@timestamp":{},"location":{{"lat":{},"lon":{}}},"home":{{"lat":{},"lon":{}}}}}"#,
                    seconds * 1000,
                    merch_lat.value(row),
                    merch_long.value(row),
                    lat.value(row),
                    long.value(row),
                )
                .as_bytes(),
            );
            Doc { action: Bytes::from(serde_json::to_vec(&action).expect("JSON")), source: Bytes::from(source) }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_carry_the_outcome_plus_time_and_geo_points() {
        use crate::score::outcome;
        use crate::simulate::{SimConfig, Simulator};
        let txns: Vec<_> = Simulator::new(SimConfig::default()).take(20).collect();
        let batch = crate::record::to_batch(&txns);
        let features = crate::features::derive(&batch);
        let outcomes = outcome::build(&batch, &features, &[0.25; 20], 0.5, "v1");
        let docs = build(&outcomes, "p");
        assert_eq!(docs.len(), 20);
        for (doc, t) in docs.iter().zip(&txns) {
            let action: serde_json::Value = serde_json::from_slice(&doc.action).unwrap();
            assert_eq!(action["index"]["_id"], t.trans_num.as_str());
            assert_eq!(action["index"]["_index"], index_name("p", t.unix_time.unwrap()).as_str());
            let source: serde_json::Value = serde_json::from_slice(&doc.source).unwrap();
            assert_eq!(source["@timestamp"], t.unix_time.unwrap() * 1000);
            assert_eq!(source["location"]["lat"], t.merch_lat);
            assert_eq!(source["home"]["lon"], t.long);
            assert_eq!(source["fraud_score"], 0.25);
            assert_eq!(source["cc_num"], t.cc_num.as_str());
        }
    }

    #[test]
    fn daily_indices_follow_utc_transaction_time() {
        assert_eq!(index_name("fraudflight-transactions", 0), "fraudflight-transactions-1970.01.01");
        assert_eq!(index_name("p", 1_735_775_999), "p-2025.01.01");
        assert_eq!(index_name("p", 1_735_776_000), "p-2025.01.02");
    }
}
