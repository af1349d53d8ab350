//! The outcome of scoring one transaction, as every sink receives it: the
//! input fields, the score and its verdict, the model version, the time of
//! scoring, the derived features and the history features
//! (docs/architecture.md, "Contracts").

use std::sync::{Arc, OnceLock};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float32Array, Int64Array, StringArray};
use arrow::datatypes::Int64Type;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::features::{name, Features};
use crate::record;

pub const FRAUD_SCORE: &str = "fraud_score";
pub const IS_FRAUD_PREDICTED: &str = "is_fraud_predicted";
pub const MODEL_VERSION: &str = "model_version";
pub const SCORED_AT: &str = "scored_at";
pub const KAFKA_PARTITION: &str = "kafka_partition";
pub const KAFKA_OFFSET: &str = "kafka_offset";
pub const LABEL_REPORTED_AT: &str = "label_reported_at";
pub const SHADOW_SCORE: &str = "shadow_score";
pub const SHADOW_VERSION: &str = "shadow_version";
pub const LABEL_BY: &str = "label_by";
pub const TOP_FEATURES: &str = "top_features";
/// Inputs listed in `top_features`, at most.
pub const TOP_FEATURES_SHOWN: usize = 3;

/// The columns scoring adds to the record, in order.
fn added_fields() -> Vec<Field> {
    vec![
        Field::new(FRAUD_SCORE, DataType::Float32, false),
        Field::new(IS_FRAUD_PREDICTED, DataType::Boolean, false),
        Field::new(MODEL_VERSION, DataType::Utf8, false),
        Field::new(SCORED_AT, DataType::Int64, false),
        Field::new(name::DISTANCE_KM, DataType::Float64, false),
        Field::new(name::AGE, DataType::Int64, false),
        Field::new(name::HOUR, DataType::Int64, false),
        // Where the record came from, when it came from Kafka.
        Field::new(KAFKA_PARTITION, DataType::Int32, true),
        Field::new(KAFKA_OFFSET, DataType::Int64, true),
        // When the label in `is_fraud` was reported (Unix s), once one came
        // from the labels stream; null while `is_fraud` is the record's own.
        Field::new(LABEL_REPORTED_AT, DataType::Int64, true),
        // Who decided the label, when an analyst did (the dashboard).
        Field::new(LABEL_BY, DataType::Utf8, true),
        // The challenger's score beside the champion's, in shadow mode.
        Field::new(SHADOW_SCORE, DataType::Float32, true),
        Field::new(SHADOW_VERSION, DataType::Utf8, true),
        // Alerts: the inputs that pushed the score up most, as JSON
        // `[{"feature": name, "contribution": x}, ...]` (tree path
        // contributions, in log-odds for a GBT; score/native/explain.rs).
        Field::new(TOP_FEATURES, DataType::Utf8, true),
    ]
    .into_iter()
    // History features, in the shared table's order; null when scored
    // without history.
    .chain(crate::history::definitions::table().names().map(|n| Field::new(n, DataType::Float64, true)))
    .collect()
}

/// Record fields followed by the scoring columns.
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let mut fields: Vec<Field> = record::schema().fields().iter().map(|f| f.as_ref().clone()).collect();
            fields.extend(added_fields());
            Arc::new(Schema::new(fields))
        })
        .clone()
}

/// What DoExchange returns for every input row.
pub fn exchange_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let full = schema();
            let columns = [record::column::trans_num, FRAUD_SCORE, IS_FRAUD_PREDICTED, MODEL_VERSION];
            Arc::new(Schema::new(
                columns.iter().map(|c| full.field_with_name(c).expect("outcome column").clone()).collect::<Vec<_>>(),
            ))
        })
        .clone()
}

/// Assembles outcomes of a valid, conformed batch. `unix_time` is always
/// set in an outcome (parsed from `trans_date_trans_time` when the record
/// had only that), so sinks can key by transaction time.
pub fn build(batch: &RecordBatch, features: &Features, scores: &[f32], threshold: f64, version: &str) -> RecordBatch {
    let rows = batch.num_rows();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    let unix_time = batch.schema().index_of(record::column::unix_time).expect("record column");
    columns[unix_time] = features.unix_time.clone();
    columns.push(Arc::new(Float32Array::from(scores.to_vec())));
    columns.push(Arc::new(scores.iter().map(|&s| Some(s as f64 >= threshold)).collect::<BooleanArray>()));
    columns.push(Arc::new(StringArray::from_iter_values(std::iter::repeat_n(version, rows))));
    columns.push(Arc::new(Int64Array::from_value(now_ms, rows)));
    columns.push(features.distance_km.clone());
    columns.push(features.age.clone());
    columns.push(features.hour.clone());
    columns.push(arrow::array::new_null_array(&DataType::Int32, rows));
    columns.push(arrow::array::new_null_array(&DataType::Int64, rows));
    columns.push(arrow::array::new_null_array(&DataType::Int64, rows));
    columns.push(arrow::array::new_null_array(&DataType::Utf8, rows));
    columns.push(arrow::array::new_null_array(&DataType::Float32, rows));
    columns.push(arrow::array::new_null_array(&DataType::Utf8, rows));
    columns.push(arrow::array::new_null_array(&DataType::Utf8, rows));
    for name in crate::history::definitions::table().names() {
        columns.push(features.column(name).unwrap_or_else(|| arrow::array::new_null_array(&DataType::Float64, rows)));
    }
    RecordBatch::try_new(schema(), columns).expect("outcome columns follow the outcome schema")
}

/// The DoExchange answer of a valid, conformed batch: the columns
/// [`build`] would give [`exchange_schema`]'s names, and nothing else.
pub fn exchange(batch: &RecordBatch, scores: &[f32], threshold: f64, version: &str) -> RecordBatch {
    let rows = batch.num_rows();
    let columns: Vec<ArrayRef> = vec![
        batch.column_by_name(record::column::trans_num).expect("record column").clone(),
        Arc::new(Float32Array::from(scores.to_vec())),
        Arc::new(scores.iter().map(|&s| Some(s as f64 >= threshold)).collect::<BooleanArray>()),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(version, rows))),
    ];
    RecordBatch::try_new(exchange_schema(), columns).expect("exchange columns follow the exchange schema")
}

/// Sets where each outcome came from in Kafka (one entry per row).
pub fn with_kafka_positions(outcomes: &RecordBatch, positions: &[(i32, i64)]) -> RecordBatch {
    let mut columns = outcomes.columns().to_vec();
    let schema = outcomes.schema();
    let partition = schema.index_of(KAFKA_PARTITION).expect("outcome column");
    let offset = schema.index_of(KAFKA_OFFSET).expect("outcome column");
    columns[partition] = Arc::new(arrow::array::Int32Array::from_iter_values(positions.iter().map(|p| p.0)));
    columns[offset] = Arc::new(Int64Array::from_iter_values(positions.iter().map(|p| p.1)));
    RecordBatch::try_new(schema, columns).expect("same schema, same row count")
}
/// Sets `is_fraud` and `label_reported_at` of the rows the labels stream
/// has labelled (one entry per row; DESIGN.md, "Outcome": `is_fraud` holds
/// the label once one arrives).
pub fn with_labels(outcomes: &RecordBatch, labels: &[Option<crate::history::Label>]) -> RecordBatch {
    if labels.iter().all(Option::is_none) {
        return outcomes.clone();
    }
    let schema = outcomes.schema();
    let is_fraud = schema.index_of(record::column::is_fraud).expect("outcome column");
    let reported = schema.index_of(LABEL_REPORTED_AT).expect("outcome column");
    let by = schema.index_of(LABEL_BY).expect("outcome column");
    let old = outcomes.column(is_fraud).as_primitive::<Int64Type>();
    let mut columns = outcomes.columns().to_vec();
    columns[is_fraud] = Arc::new(
        labels
            .iter()
            .enumerate()
            .map(|(i, l)| l.as_ref().map(|l| i64::from(l.is_fraud)).or(old.is_valid(i).then(|| old.value(i))))
            .collect::<Int64Array>(),
    );
    columns[reported] = Arc::new(labels.iter().map(|l| l.as_ref().map(|l| l.reported_at)).collect::<Int64Array>());
    columns[by] = Arc::new(labels.iter().map(|l| l.as_ref().and_then(|l| l.by.as_deref())).collect::<StringArray>());
    RecordBatch::try_new(schema, columns).expect("same schema, same length")
}

/// Sets the shadow model's scores beside the champion's (one per row).
pub fn with_shadow(outcomes: &RecordBatch, scores: &[f32], version: &str) -> RecordBatch {
    let schema = outcomes.schema();
    let mut columns = outcomes.columns().to_vec();
    columns[schema.index_of(SHADOW_SCORE).expect("outcome column")] = Arc::new(Float32Array::from(scores.to_vec()));
    columns[schema.index_of(SHADOW_VERSION).expect("outcome column")] =
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(version, outcomes.num_rows())));
    RecordBatch::try_new(schema, columns).expect("same schema, same length")
}

/// Sets `top_features` of the explained rows: (row, its contributions).
pub fn with_top_features(outcomes: &RecordBatch, explained: &[(usize, Vec<(String, f64)>)]) -> RecordBatch {
    if explained.is_empty() {
        return outcomes.clone();
    }
    let mut texts: Vec<Option<String>> = vec![None; outcomes.num_rows()];
    for (row, contributions) in explained {
        texts[*row] = Some(top_features(contributions));
    }
    let schema = outcomes.schema();
    let mut columns = outcomes.columns().to_vec();
    columns[schema.index_of(TOP_FEATURES).expect("outcome column")] = Arc::new(StringArray::from(texts));
    RecordBatch::try_new(schema, columns).expect("same schema, same length")
}

/// The inputs that raised a score most, largest first, as JSON.
pub fn top_features(contributions: &[(String, f64)]) -> String {
    let mut up: Vec<&(String, f64)> = contributions.iter().filter(|(_, c)| *c > 0.0).collect();
    up.sort_by(|a, b| b.1.total_cmp(&a.1));
    let shown: Vec<serde_json::Value> = up
        .into_iter()
        .take(TOP_FEATURES_SHOWN)
        .map(|(name, c)| serde_json::json!({"feature": name, "contribution": (c * 1e4).round() / 1e4}))
        .collect();
    serde_json::Value::Array(shown).to_string()
}

/// How many outcomes are predicted frauds.
pub fn count_alerts(outcomes: &RecordBatch) -> usize {
    use arrow::array::AsArray;
    outcomes.column_by_name(IS_FRAUD_PREDICTED).map_or(0, |c| c.as_boolean().true_count())
}
