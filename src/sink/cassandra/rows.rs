//! Outcomes as Cassandra rows and back. The stored columns are derived from
//! the outcome schema ([`crate::score::outcome::schema`]), so a field added
//! to the record reaches Cassandra without a second list to keep in step.
//!
//! The transaction time is stored once, as `trans_time` (a timestamp, part of
//! the key); `unix_time` and `trans_date_trans_time` are rebuilt from it on
//! the way back.

use std::sync::{Arc, OnceLock};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Float32Builder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int32Type, Int64Type};
use arrow::record_batch::RecordBatch;
use scylla::value::{CqlDate, CqlTimestamp, CqlValue, Row};

use crate::record::column;
use crate::score::outcome::{self, SCORED_AT};

/// The time column every table is clustered by.
pub const TRANS_TIME: &str = "trans_time";
/// The partition key of `alerts`.
pub const DAY: &str = "day";

/// One stored column.
#[derive(Debug, Clone)]
pub struct StoredColumn {
    pub name: String,
    pub cql_type: &'static str,
    /// Index in the outcome schema; None for `trans_time`.
    source: Option<usize>,
}

/// Stored columns in order: the key columns first (`cc_num`, `trans_time`,
/// `trans_num`), then every other outcome column.
pub fn columns() -> &'static [StoredColumn] {
    static COLUMNS: OnceLock<Vec<StoredColumn>> = OnceLock::new();
    COLUMNS.get_or_init(|| {
        let schema = outcome::schema();
        let mut out = vec![
            StoredColumn {
                name: column::cc_num.into(),
                cql_type: "text",
                source: schema.index_of(column::cc_num).ok(),
            },
            StoredColumn { name: TRANS_TIME.into(), cql_type: "timestamp", source: None },
            StoredColumn {
                name: column::trans_num.into(),
                cql_type: "text",
                source: schema.index_of(column::trans_num).ok(),
            },
        ];
        for (i, f) in schema.fields().iter().enumerate() {
            let name = f.name().as_str();
            if [column::cc_num, column::trans_num, column::unix_time, column::trans_date_trans_time].contains(&name) {
                continue;
            }
            let cql_type = match (name, f.data_type()) {
                (SCORED_AT, _) => "timestamp",
                (_, DataType::Utf8) => "text",
                (_, DataType::Float64) => "double",
                (_, DataType::Float32) => "float",
                (_, DataType::Int64) => "bigint",
                (_, DataType::Int32) => "int",
                (_, DataType::Boolean) => "boolean",
                (_, other) => unreachable!("outcome column {name} has type {other}, which has no CQL mapping"),
            };
            out.push(StoredColumn { name: name.into(), cql_type, source: Some(i) });
        }
        out
    })
}

/// Comma-separated column names, for SELECT and INSERT.
pub fn column_list() -> String {
    columns().iter().map(|c| format!("\"{}\"", c.name)).collect::<Vec<_>>().join(", ")
}

/// The CREATE statements for a keyspace: keyspace, `transactions`, `alerts`, `models`, `labels`,
/// `merchant_days`, `transaction_keys`, live quality's `scores` and `model_quality`, and the
/// model line-up's `model_files` and `model_lineup`.
pub fn create_statements(keyspace: &str, replication: &str) -> Vec<String> {
    let mut statements = core_statements(keyspace, replication);
    statements.extend(super::quality::create_statements(keyspace));
    statements.extend(super::lineup::create_statements(keyspace));
    statements
}

fn core_statements(keyspace: &str, replication: &str) -> Vec<String> {
    let defs = columns().iter().map(|c| format!("  \"{}\" {}", c.name, c.cql_type)).collect::<Vec<_>>().join(",\n");
    let order = "WITH CLUSTERING ORDER BY (trans_time DESC, trans_num DESC)";
    vec![
        format!("CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {replication}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.transactions (\n{defs},\n  PRIMARY KEY ((cc_num), trans_time, trans_num)\n) {order}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.alerts (\n  day date,\n{defs},\n  PRIMARY KEY ((day), trans_time, trans_num)\n) {order}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.models (\n  version text PRIMARY KEY,\n  created_at text,\n  deployed_at timestamp,\n  threshold double,\n  metrics text,\n  meta text,\n  role text,\n  evaluation text,\n  decision text\n)"
        ),
        // Confirmed outcomes as they arrive (docs/architecture.md, "History").
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.labels (\n  cc_num text,\n  trans_num text,\n  is_fraud int,\n  reported_at timestamp,\n  received_at timestamp,\n  decided_by text,\n  PRIMARY KEY ((cc_num), trans_num)\n)"
        ),
        // Every report of every transaction (`labels` keeps the newest):
        // which one counts in merchant risk depends on the transaction's
        // day, and a label may come before its transaction
        // (docs/architecture.md, "History").
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.label_reports (\n  cc_num text,\n  trans_num text,\n  version bigint,\n  is_fraud int,\n  reported_at timestamp,\n  decided_by text,\n  PRIMARY KEY ((cc_num), trans_num, version)\n)"
        ),
        // Merchant tiles shared by every instance: a row per transaction
        // (idempotent), `fraud` set by labels on time, the newest report
        // winning by its write timestamp; a partition per merchant and week
        // (`day` / 7), so a month of tiles is a few range reads
        // (docs/architecture.md, "History").
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.merchant_days (\n  merchant text,\n  week bigint,\n  day date,\n  cc_num text,\n  trans_num text,\n  fraud boolean,\n  PRIMARY KEY ((merchant, week), day, cc_num, trans_num)\n)"
        ),
        // Where a label finds its transaction's time and merchant: a read by
        // key, not a scan of the card's partition (docs/architecture.md,
        // "History").
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.transaction_keys (\n  cc_num text,\n  trans_num text,\n  trans_time timestamp,\n  merchant text,\n  PRIMARY KEY ((cc_num, trans_num))\n)"
        ),
    ]
}

/// One row to bind, in [`columns`] order.
pub type Values = Vec<Option<CqlValue>>;

/// Converts outcomes to rows; `day` also returns each row's UTC day (for
/// `alerts`). A None is bound as *unset* when written (no tombstone), so a
/// labelled row without a decider stores `label_by` as "" (read back as
/// null): unset would keep an earlier label's decider.
pub fn to_rows(outcomes: &RecordBatch) -> Vec<(Values, CqlDate)> {
    let unix_time = outcomes.column_by_name(column::unix_time).expect("outcome column").as_primitive::<Int64Type>();
    let at = |name: &str| columns().iter().position(|c| c.name == name).expect("stored column");
    let (reported, by) = (at(outcome::LABEL_REPORTED_AT), at(outcome::LABEL_BY));
    (0..outcomes.num_rows())
        .map(|row| {
            let seconds = unix_time.value(row);
            let mut values: Values = columns()
                .iter()
                .map(|c| match c.source {
                    None => Some(CqlValue::Timestamp(CqlTimestamp(seconds * 1000))),
                    Some(i) => cql_value(outcomes.column(i).as_ref(), row, c.cql_type),
                })
                .collect();
            if values[reported].is_some() && values[by].is_none() {
                values[by] = Some(CqlValue::Text(String::new()));
            }
            (values, day_of(seconds))
        })
        .collect()
}

/// A row's label cells (`is_fraud`, `label_reported_at`, `label_by`) and
/// the write timestamp they go with: the report's order
/// ([`crate::history::card::version`]) when a label came with the outcome,
/// [`RECORD_OWN_LABEL`] for the record's own `is_fraud`. Written apart from
/// the row's other cells, whose timestamp is the clock's: a label then wins
/// by its report time, whichever write lands last (DESIGN.md, "Labels").
#[derive(Debug, Clone, PartialEq)]
pub struct LabelCells {
    pub timestamp: i64,
    pub flag: CqlValue,
    pub reported_at: Option<CqlValue>,
    pub by: Option<CqlValue>,
}

/// The write timestamp of a record's own `is_fraud`: below every label's,
/// so any label reported since 1970 shows over it.
pub const RECORD_OWN_LABEL: i64 = 0;

impl LabelCells {
    /// `SET is_fraud = ?, label_reported_at = ?, label_by = ?` with the
    /// timestamp first, then `key`.
    pub fn values(&self, key: impl IntoIterator<Item = Option<CqlValue>>) -> Values {
        let mut values = vec![
            Some(CqlValue::BigInt(self.timestamp)),
            Some(self.flag.clone()),
            self.reported_at.clone(),
            self.by.clone(),
        ];
        values.extend(key);
        values
    }
}

/// The label cells a stored row holds, with the write timestamp of its
/// `is_fraud` (`writetime`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeldLabel {
    pub flag: Option<i64>,
    pub reported_at: Option<i64>,
    pub by: Option<String>,
    pub written: Option<i64>,
}

impl HeldLabel {
    /// The write timestamp for `cells` (a report of order `ours`) in this
    /// row, or None when the row holds a newer report. Cells this release
    /// wrote carry their report's order (or [`RECORD_OWN_LABEL`]): `ours`
    /// orders them. Cells an earlier release wrote carry the clock's
    /// timestamp, which a report older than that write would never beat:
    /// over those the newer report is written just above the held
    /// timestamp (and the next label compares again, by report order).
    pub fn timestamp_for(&self, ours: i64, cells: &LabelCells) -> Option<i64> {
        let Some(written) = self.written else { return Some(ours) };
        let held = self.reported_at.map(|at| {
            let by = self.by.as_deref().filter(|b| !b.is_empty());
            (crate::history::card::version(at, self.flag == Some(1), by), self.by.clone().unwrap_or_default())
        });
        if written == RECORD_OWN_LABEL || held.as_ref().is_some_and(|(version, _)| *version == written) {
            return Some(ours);
        }
        let by = match &cells.by {
            Some(CqlValue::Text(b)) => b.clone(),
            _ => String::new(),
        };
        match held {
            Some(held) if held >= (ours, by) => None,
            _ => Some(ours.max(written.saturating_add(1))),
        }
    }
}

/// Takes the label cells out of a row from [`to_rows`] (left unset there,
/// so the row's INSERT never writes them); None when it has no `is_fraud`.
pub fn take_label(values: &mut Values) -> Option<LabelCells> {
    static AT: OnceLock<[usize; 3]> = OnceLock::new();
    let [flag, reported, by] = *AT.get_or_init(|| {
        let at = |name: &str| columns().iter().position(|c| c.name == name).expect("stored column");
        [at(column::is_fraud), at(outcome::LABEL_REPORTED_AT), at(outcome::LABEL_BY)]
    });
    let (flag, reported_at, by) = (values[flag].take()?, values[reported].take(), values[by].take());
    let timestamp = match (&flag, &reported_at) {
        (CqlValue::BigInt(fraud), Some(CqlValue::BigInt(at))) => {
            let decider = match &by {
                Some(CqlValue::Text(name)) => Some(name.as_str()),
                _ => None,
            };
            crate::history::card::version(*at, *fraud == 1, decider)
        }
        _ => RECORD_OWN_LABEL,
    };
    Some(LabelCells { timestamp, flag, reported_at, by })
}

/// The CQL `date` of a Unix time (days since the epoch, offset by 2^31).
pub fn day_of(unix_seconds: i64) -> CqlDate {
    CqlDate(((1i64 << 31) + unix_seconds.div_euclid(86_400)) as u32)
}

fn cql_value(array: &dyn Array, row: usize, cql_type: &str) -> Option<CqlValue> {
    if array.is_null(row) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Utf8 => CqlValue::Text(array.as_string::<i32>().value(row).to_string()),
        DataType::Float64 => CqlValue::Double(array.as_primitive::<Float64Type>().value(row)),
        DataType::Float32 => CqlValue::Float(array.as_primitive::<Float32Type>().value(row)),
        DataType::Int64 if cql_type == "timestamp" => {
            CqlValue::Timestamp(CqlTimestamp(array.as_primitive::<Int64Type>().value(row)))
        }
        DataType::Int64 => CqlValue::BigInt(array.as_primitive::<Int64Type>().value(row)),
        DataType::Int32 => CqlValue::Int(array.as_primitive::<Int32Type>().value(row)),
        DataType::Boolean => CqlValue::Boolean(array.as_boolean().value(row)),
        other => unreachable!("no CQL mapping for {other}"),
    })
}

/// Why stored rows could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("stored column `{column}` holds {found}, expected {expected}")]
pub struct RowTypeError {
    column: String,
    found: String,
    expected: &'static str,
}

/// Rebuilds outcomes from rows selected with [`column_list`].
pub fn from_rows(rows: &[Row]) -> Result<RecordBatch, RowTypeError> {
    let schema = outcome::schema();
    let stored = columns();
    let time_at = stored.iter().position(|c| c.source.is_none()).expect("trans_time column");
    let times: Vec<Option<i64>> = rows
        .iter()
        .map(|r| match r.columns.get(time_at) {
            Some(Some(CqlValue::Timestamp(t))) => Some(t.0),
            _ => None,
        })
        .collect();
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (i, field) in schema.fields().iter().enumerate() {
        let name = field.name().as_str();
        let array: ArrayRef = if name == column::unix_time {
            Arc::new(times.iter().map(|t| t.map(|ms| ms.div_euclid(1000))).collect::<arrow::array::Int64Array>())
        } else if name == column::trans_date_trans_time {
            let mut b = StringBuilder::new();
            for t in &times {
                b.append_option(
                    t.and_then(chrono::DateTime::from_timestamp_millis)
                        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string()),
                );
            }
            Arc::new(b.finish())
        } else {
            let at = stored.iter().position(|c| c.source == Some(i)).expect("every other column is stored");
            let values = rows.iter().map(|r| r.columns.get(at).and_then(Option::as_ref));
            // "" is how a label without a decider is stored (see to_rows).
            let no_decider =
                |v: &Option<&CqlValue>| name == outcome::LABEL_BY && *v == Some(&CqlValue::Text(String::new()));
            build_column(field.data_type(), name, values.map(|v| if no_decider(&v) { None } else { v }))?
        };
        arrays.push(array);
    }
    Ok(RecordBatch::try_new(schema, arrays).expect("columns follow the outcome schema"))
}

fn build_column<'a>(
    data_type: &DataType,
    name: &str,
    values: impl Iterator<Item = Option<&'a CqlValue>>,
) -> Result<ArrayRef, RowTypeError> {
    let wrong = |found: &CqlValue, expected: &'static str| RowTypeError {
        column: name.to_string(),
        found: format!("{found:?}").chars().take(60).collect(),
        expected,
    };
    macro_rules! build {
        ($builder:expr, $expected:literal, $($pat:pat => $v:expr),+) => {{
            let mut b = $builder;
            for value in values {
                match value {
                    None => b.append_null(),
                    $( Some($pat) => b.append_value($v), )+
                    Some(other) => return Err(wrong(other, $expected)),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    Ok(match data_type {
        DataType::Utf8 => build!(StringBuilder::new(), "text", CqlValue::Text(s) => s),
        DataType::Float64 => build!(Float64Builder::new(), "double", CqlValue::Double(v) => *v),
        DataType::Float32 => build!(Float32Builder::new(), "float", CqlValue::Float(v) => *v),
        DataType::Int64 => build!(Int64Builder::new(), "bigint or timestamp",
            CqlValue::BigInt(v) => *v, CqlValue::Timestamp(t) => t.0),
        DataType::Int32 => build!(Int32Builder::new(), "int", CqlValue::Int(v) => *v),
        DataType::Boolean => build!(BooleanBuilder::new(), "boolean", CqlValue::Boolean(v) => *v),
        other => unreachable!("no CQL mapping for {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_columns_come_first_and_time_is_stored_once() {
        let names: Vec<_> = columns().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(&names[..3], &["cc_num", "trans_time", "trans_num"]);
        assert!(!names.contains(&"unix_time") && !names.contains(&"trans_date_trans_time"));
        assert!(names.contains(&"fraud_score") && names.contains(&"kafka_offset"));
    }

    #[test]
    fn label_cells_leave_the_row_and_carry_the_report_order() {
        let at = |name: &str| columns().iter().position(|c| c.name == name).unwrap();
        let (flag, reported, by) = (at("is_fraud"), at(outcome::LABEL_REPORTED_AT), at(outcome::LABEL_BY));
        let blank: Values = vec![None; columns().len()];
        // No label at all: nothing to write.
        assert_eq!(take_label(&mut blank.clone()), None);
        // The record's own flag: below every label.
        let mut own = blank.clone();
        own[flag] = Some(CqlValue::BigInt(1));
        let cells = take_label(&mut own).unwrap();
        assert_eq!((cells.timestamp, cells.reported_at), (RECORD_OWN_LABEL, None));
        assert_eq!(own, blank, "the row's INSERT leaves the label cells unset");
        // A label that came with the outcome: its report's order.
        let mut labelled = blank.clone();
        labelled[flag] = Some(CqlValue::BigInt(0));
        labelled[reported] = Some(CqlValue::BigInt(1_700_000_000));
        labelled[by] = Some(CqlValue::Text("ana".into()));
        let cells = take_label(&mut labelled).unwrap();
        assert_eq!(cells.timestamp, crate::history::card::version(1_700_000_000, false, Some("ana")));
        assert!(cells.timestamp > RECORD_OWN_LABEL);
        assert_eq!(labelled, blank);
        let values = cells.values([Some(CqlValue::Text("k".into()))]);
        assert_eq!(values[0], Some(CqlValue::BigInt(cells.timestamp)));
        assert_eq!(values.len(), 5);
    }

    #[test]
    fn a_label_is_ordered_over_what_the_row_holds_whoever_wrote_it() {
        use crate::history::card::version;
        let cells = |at: i64, fraud: bool, by: &str| LabelCells {
            timestamp: version(at, fraud, Some(by).filter(|b| !b.is_empty())),
            flag: CqlValue::BigInt(i64::from(fraud)),
            reported_at: Some(CqlValue::BigInt(at)),
            by: Some(CqlValue::Text(by.into())),
        };
        let newer = cells(2_000, true, "ana");
        let ours = newer.timestamp;
        // Nothing held, the record's own flag, or a label this release
        // wrote: the report's order decides in Cassandra.
        assert_eq!(HeldLabel::default().timestamp_for(ours, &newer), Some(ours));
        let own = HeldLabel { flag: Some(0), written: Some(RECORD_OWN_LABEL), ..Default::default() };
        assert_eq!(own.timestamp_for(ours, &newer), Some(ours));
        let ordered = HeldLabel {
            flag: Some(0),
            reported_at: Some(3_000),
            by: Some(String::new()),
            written: Some(version(3_000, false, None)),
        };
        assert_eq!(ordered.timestamp_for(ours, &newer), Some(ours), "written; Cassandra keeps the newer held one");
        // An earlier release's cells, at the clock's time (far above the
        // report): a newer report goes just above them, an older one not at all.
        let clock = 1_800_000_000_000_000;
        let legacy =
            HeldLabel { flag: Some(0), reported_at: Some(1_000), by: Some("old".into()), written: Some(clock) };
        assert_eq!(legacy.timestamp_for(ours, &newer), Some(clock + 1));
        let legacy_newer = HeldLabel { reported_at: Some(3_000), ..legacy.clone() };
        assert_eq!(legacy_newer.timestamp_for(ours, &newer), None);
        // The record's own flag written by an earlier release: any label wins.
        let legacy_own = HeldLabel { flag: Some(0), reported_at: None, by: None, written: Some(clock) };
        assert_eq!(legacy_own.timestamp_for(ours, &newer), Some(clock + 1));
        // Two deciders whose orders tie (the hash's range is a second's
        // microseconds): the larger name wins, as Cassandra's tie rule.
        assert_eq!(version(2_000, true, Some("analyst4998")), version(2_000, true, Some("analyst5640")));
        let held =
            |by: &str| HeldLabel { flag: Some(1), reported_at: Some(2_000), by: Some(by.into()), written: Some(clock) };
        let (small, large) = (cells(2_000, true, "analyst4998"), cells(2_000, true, "analyst5640"));
        assert_eq!(held("analyst5640").timestamp_for(small.timestamp, &small), None);
        assert_eq!(held("analyst4998").timestamp_for(large.timestamp, &large), Some(clock + 1));
    }

    #[test]
    fn the_shipped_cql_file_matches_the_code_cql_file() {
        let generated = create_statements("fraudflight", "{'class': 'SimpleStrategy', 'replication_factor': 1}")
            .into_iter()
            .map(|s| format!("{s};\n"))
            .collect::<Vec<_>>()
            .join("\n");
        let path = &format!("{}/scripts/schema/cassandra.cql", manifest_dir());
        if std::env::var_os("FRAUDFLIGHT_REGENERATE_SCHEMA").is_some() {
            let header =
                "-- fraudflight's Cassandra schema (docs/architecture.md, \"Contracts\"), generated from the outcome\n\
                -- schema by src/sink/cassandra/rows.rs: the service creates the same tables itself (with its\n\
                -- configured keyspace and replication); compose's init job runs this file.\n\
                -- Regenerate: FRAUDFLIGHT_REGENERATE_SCHEMA=1 cargo test --lib cql_file\n";
            std::fs::write(path, format!("{header}{generated}")).unwrap();
        }
        let file = std::fs::read_to_string(path).unwrap();
        let body: String = file.lines().filter(|l| !l.starts_with("--")).collect::<Vec<_>>().join("\n");
        assert_eq!(body.trim(), generated.trim(), "regenerate scripts/schema/cassandra.cql (see its header)");
    }

    #[test]
    fn outcomes_survive_the_round_trip_through_rows() {
        use crate::simulate::{SimConfig, Simulator};
        let txns: Vec<_> = Simulator::new(SimConfig::default()).take(50).collect();
        let batch = crate::record::to_batch(&txns);
        let features = crate::features::derive(&batch);
        let scores: Vec<f32> = (0..50).map(|i| i as f32 / 50.0).collect();
        let outcomes = outcome::build(&batch, &features, &scores, 0.5, "v1");
        let positions: Vec<(i32, i64)> = (0..50).map(|i| (i % 3, i as i64 * 7)).collect();
        let outcomes = outcome::with_kafka_positions(&outcomes, &positions);
        let rows: Vec<Row> = to_rows(&outcomes).into_iter().map(|(columns, _)| Row { columns }).collect();
        assert_eq!(from_rows(&rows).unwrap(), outcomes);
    }

    #[test]
    fn days_count_from_the_cql_epoch() {
        assert_eq!(day_of(0).0, 1 << 31);
        assert_eq!(day_of(86_399).0, 1 << 31);
        assert_eq!(day_of(-1).0, (1 << 31) - 1);
    }

    /// This clone's directory, read when the test runs (cargo sets it): a test
    /// binary another clone built into the shared target must not read that
    /// clone's files.
    fn manifest_dir() -> String {
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
    }
}
