//! Labels: confirmed outcomes of transactions (chargebacks, analyst
//! decisions), as they arrive in an Arrow batch (Flight DoPut `["labels"]`)
//! or a JSON value (Kafka `<topic>.labels`, docs/architecture.md,
//! "History"). A bad label is refused with the column or field that is
//! wrong; nothing else in its batch is applied.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int32Type, Int64Type};
use arrow::record_batch::RecordBatch;
use serde::Deserialize;

use crate::record::limits::{MAX_DECIDED_BY_CHARS, MAX_TEXT_BYTES};

/// One label.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LabelRecord {
    #[serde(deserialize_with = "text_or_integer")]
    pub trans_num: String,
    /// Text or a JSON integer, as the transaction record carries it.
    #[serde(deserialize_with = "text_or_integer")]
    pub cc_num: String,
    #[serde(deserialize_with = "flag")]
    pub is_fraud: bool,
    /// Unix seconds; when absent, the time it was received.
    #[serde(default)]
    pub reported_at: Option<i64>,
    /// Who decided, when an analyst did (the dashboard sets it).
    #[serde(default)]
    pub decided_by: Option<String>,
}

impl LabelRecord {
    /// When it was reported, or `received` (Unix seconds) if it does not say.
    pub fn reported_at_or(&self, received: i64) -> i64 {
        self.reported_at.unwrap_or(received)
    }

    /// Whether every store can take it (docs/architecture.md, "Input
    /// limits"): keys within the text limit, a card number as transactions
    /// carry it, a report time from 1970 to `latest` (Unix seconds), a short
    /// printable `decided_by`. A label that fails can never be stored: it
    /// is refused (a dead letter on Kafka), never retried.
    pub fn check(&self, latest: i64) -> Result<(), LabelProblem> {
        if self.trans_num.len() > MAX_TEXT_BYTES {
            return Err(LabelProblem::TooLong { column: "trans_num", bytes: self.trans_num.len() });
        }
        if self.cc_num.len() > 19 || !self.cc_num.bytes().all(|b| b.is_ascii_digit()) {
            return Err(LabelProblem::NotACard { bytes: self.cc_num.len() });
        }
        if let Some(at) = self.reported_at {
            if at < 0 || at > latest {
                return Err(LabelProblem::ReportedAt { at, latest });
            }
        }
        if let Some(by) = &self.decided_by {
            if by.chars().count() > MAX_DECIDED_BY_CHARS || by.chars().any(char::is_control) {
                return Err(LabelProblem::DecidedBy { chars: by.chars().count() });
            }
        }
        Ok(())
    }
}

/// Why one label can never be stored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LabelProblem {
    #[error("`{column}` is {bytes} bytes, over the limit of 256")]
    TooLong { column: &'static str, bytes: usize },
    #[error("`cc_num` ({bytes} bytes) is not a card number: up to 19 digits")]
    NotACard { bytes: usize },
    #[error("`reported_at` {at} is not between 0 and {latest} (limits.max_future_secs ahead of the clock)")]
    ReportedAt { at: i64, latest: i64 },
    #[error("`decided_by` ({chars} characters) must be at most 64 printable characters")]
    DecidedBy { chars: usize },
}

/// What is wrong with a batch or value of labels.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LabelError {
    #[error("labels need a column `{0}`")]
    Missing(&'static str),
    #[error("labels column `{column}` is {found}, expected {expected}")]
    Type { column: &'static str, found: DataType, expected: &'static str },
    #[error("label row {row}: `{column}` is null")]
    Null { row: usize, column: &'static str },
    #[error("label row {row}: `is_fraud` is {value}, expected 0 or 1")]
    NotAFlag { row: usize, value: i64 },
    #[error("label row {row}: `{column}` is empty")]
    Empty { row: usize, column: &'static str },
    #[error("label row {row}: {problem}")]
    Refused { row: usize, problem: LabelProblem },
    #[error("label is not valid JSON {{\"trans_num\", \"cc_num\", \"is_fraud\": 0|1, \"reported_at\"?}}: {0}")]
    Json(String),
}

/// A key field as text, or an integer as its decimal digits (the
/// transaction record's `cc_num` is a JSON number in the Kaggle layout;
/// DoPut accepts Int64 columns the same way).
fn text_or_integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!("{other} is neither text nor an integer"))),
    }
}

fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Bool(b) => Ok(b),
        serde_json::Value::Number(n) if n.as_i64() == Some(0) => Ok(false),
        serde_json::Value::Number(n) if n.as_i64() == Some(1) => Ok(true),
        other => Err(serde::de::Error::custom(format!("`is_fraud` is {other}, expected 0 or 1"))),
    }
}

/// A label from a Kafka value.
pub fn from_json(value: &[u8]) -> Result<LabelRecord, LabelError> {
    let label: LabelRecord = serde_json::from_slice(value).map_err(|e| LabelError::Json(e.to_string()))?;
    if label.trans_num.is_empty() || label.cc_num.is_empty() {
        return Err(LabelError::Json("`trans_num` and `cc_num` must not be empty".into()));
    }
    Ok(label)
}

/// The labels of a batch: `trans_num` and `cc_num` text (or integer card
/// numbers), `is_fraud` 0/1 or boolean, optional `reported_at` Unix seconds
/// up to `latest`; every row within the limits ([`LabelRecord::check`]).
pub fn from_batch(batch: &RecordBatch, latest: i64) -> Result<Vec<LabelRecord>, LabelError> {
    let labels = decode_batch(batch)?;
    for (row, label) in labels.iter().enumerate() {
        label.check(latest).map_err(|problem| LabelError::Refused { row, problem })?;
    }
    Ok(labels)
}

fn decode_batch(batch: &RecordBatch) -> Result<Vec<LabelRecord>, LabelError> {
    let rows = batch.num_rows();
    let column = |name: &'static str| batch.column_by_name(name).ok_or(LabelError::Missing(name));
    let text = |name: &'static str| -> Result<Vec<String>, LabelError> {
        let c = column(name)?;
        let value = |row: usize| -> Result<String, LabelError> {
            if c.is_null(row) {
                return Err(LabelError::Null { row, column: name });
            }
            let v = match c.data_type() {
                DataType::Utf8 => c.as_string::<i32>().value(row).to_string(),
                DataType::LargeUtf8 => c.as_string::<i64>().value(row).to_string(),
                DataType::Int64 => c.as_primitive::<Int64Type>().value(row).to_string(),
                other => return Err(LabelError::Type { column: name, found: other.clone(), expected: "Utf8" }),
            };
            if v.is_empty() {
                return Err(LabelError::Empty { row, column: name });
            }
            Ok(v)
        };
        (0..rows).map(value).collect()
    };
    let (trans_num, cc_num) = (text("trans_num")?, text("cc_num")?);
    let fraud = column("is_fraud")?;
    let is_fraud = (0..rows)
        .map(|row| {
            if fraud.is_null(row) {
                return Err(LabelError::Null { row, column: "is_fraud" });
            }
            let v = match fraud.data_type() {
                DataType::Boolean => return Ok(fraud.as_boolean().value(row)),
                DataType::Int64 => fraud.as_primitive::<Int64Type>().value(row),
                DataType::Int32 => fraud.as_primitive::<Int32Type>().value(row) as i64,
                other => {
                    return Err(LabelError::Type {
                        column: "is_fraud",
                        found: other.clone(),
                        expected: "Int64 0/1 or Boolean",
                    })
                }
            };
            match v {
                0 => Ok(false),
                1 => Ok(true),
                value => Err(LabelError::NotAFlag { row, value }),
            }
        })
        .collect::<Result<Vec<bool>, _>>()?;
    let reported_at = match batch.column_by_name("reported_at") {
        None => vec![None; rows],
        Some(c) if c.data_type() == &DataType::Int64 => {
            let c = c.as_primitive::<Int64Type>();
            (0..rows).map(|row| c.is_valid(row).then(|| c.value(row))).collect()
        }
        Some(c) => {
            return Err(LabelError::Type { column: "reported_at", found: c.data_type().clone(), expected: "Int64" })
        }
    };
    // Optional: who decided (text), as the dashboard's labels carry it.
    let decided_by: Vec<Option<String>> = match batch.column_by_name("decided_by") {
        None => vec![None; rows],
        Some(c) if c.data_type() == &DataType::Utf8 => {
            let c = c.as_string::<i32>();
            (0..rows).map(|row| c.is_valid(row).then(|| c.value(row).to_string())).collect()
        }
        Some(c) => {
            return Err(LabelError::Type { column: "decided_by", found: c.data_type().clone(), expected: "Utf8" })
        }
    };
    Ok(trans_num
        .into_iter()
        .zip(cc_num)
        .zip(is_fraud)
        .zip(reported_at)
        .zip(decided_by)
        .map(|((((trans_num, cc_num), is_fraud), reported_at), decided_by)| LabelRecord {
            trans_num,
            cc_num,
            is_fraud,
            reported_at,
            decided_by,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, StringArray};

    use super::*;

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).unwrap()
    }

    #[test]
    fn a_batch_of_labels_decodes_and_bad_ones_name_the_column() {
        let ok = batch(vec![
            ("trans_num", Arc::new(StringArray::from(vec!["t1", "t2"])) as ArrayRef),
            ("cc_num", Arc::new(Int64Array::from(vec![4111, 4222]))),
            ("is_fraud", Arc::new(Int64Array::from(vec![1, 0]))),
            ("reported_at", Arc::new(Int64Array::from(vec![Some(100), None]))),
        ]);
        let labels = from_batch(&ok, i64::MAX).unwrap();
        assert_eq!(
            labels[0],
            LabelRecord {
                trans_num: "t1".into(),
                cc_num: "4111".into(),
                is_fraud: true,
                reported_at: Some(100),
                decided_by: None
            }
        );
        assert_eq!(labels[1].reported_at_or(7), 7);

        let no_flag = batch(vec![
            ("trans_num", Arc::new(StringArray::from(vec!["t1"])) as ArrayRef),
            ("cc_num", Arc::new(StringArray::from(vec!["4111"]))),
        ]);
        assert_eq!(from_batch(&no_flag, i64::MAX), Err(LabelError::Missing("is_fraud")));
        let two = batch(vec![
            ("trans_num", Arc::new(StringArray::from(vec!["t1"])) as ArrayRef),
            ("cc_num", Arc::new(StringArray::from(vec!["4111"]))),
            ("is_fraud", Arc::new(Int64Array::from(vec![2]))),
        ]);
        assert_eq!(from_batch(&two, i64::MAX), Err(LabelError::NotAFlag { row: 0, value: 2 }));
        let future = batch(vec![
            ("trans_num", Arc::new(StringArray::from(vec!["t1", "t2"])) as ArrayRef),
            ("cc_num", Arc::new(StringArray::from(vec!["4111", "4222"]))),
            ("is_fraud", Arc::new(Int64Array::from(vec![1, 0]))),
            ("reported_at", Arc::new(Int64Array::from(vec![100, 4_000_000_000_000]))),
        ]);
        assert_eq!(
            from_batch(&future, 1_000),
            Err(LabelError::Refused {
                row: 1,
                problem: LabelProblem::ReportedAt { at: 4_000_000_000_000, latest: 1_000 }
            })
        );
    }

    #[test]
    fn a_json_label_decodes_and_a_bad_one_says_why() {
        let l = from_json(br#"{"trans_num":"t","cc_num":"4111","is_fraud":1,"reported_at":5}"#).unwrap();
        assert!(l.is_fraud);
        assert_eq!(l.reported_at, Some(5));
        let e = from_json(br#"{"trans_num":"t","cc_num":"4111","is_fraud":3}"#).unwrap_err();
        assert!(e.to_string().contains("expected 0 or 1"), "{e}");
        assert!(from_json(br#"{"trans_num":"","cc_num":"4111","is_fraud":0}"#).is_err());
        // The card number in the record's own type: a JSON integer.
        let n = from_json(br#"{"trans_num":"t","cc_num":4111111111111111,"is_fraud":true}"#).unwrap();
        assert_eq!(n.cc_num, "4111111111111111");
        let e = from_json(br#"{"trans_num":"t","cc_num":4.5,"is_fraud":1}"#).unwrap_err();
        assert!(e.to_string().contains("neither text nor an integer"), "{e}");
    }

    #[test]
    fn a_label_no_store_can_take_is_refused_with_the_reason() {
        let ok = LabelRecord {
            trans_num: "t".into(),
            cc_num: "4111111111111111".into(),
            is_fraud: true,
            reported_at: Some(1_000),
            decided_by: Some("alice".into()),
        };
        assert_eq!(ok.check(1_000), Ok(()));
        let long = "9".repeat(70_000);
        let problem = |l: LabelRecord| l.check(1_000).unwrap_err().to_string();
        assert!(problem(LabelRecord { trans_num: long.clone(), ..ok.clone() }).contains("`trans_num` is 70000 bytes"));
        assert!(problem(LabelRecord { cc_num: long, ..ok.clone() }).contains("not a card number"));
        assert!(problem(LabelRecord { cc_num: "4111-1111".into(), ..ok.clone() }).contains("not a card number"));
        assert!(problem(LabelRecord { reported_at: Some(1_001), ..ok.clone() }).contains("`reported_at` 1001"));
        assert!(problem(LabelRecord { reported_at: Some(-1), ..ok.clone() }).contains("not between 0"));
        assert!(problem(LabelRecord { decided_by: Some("a".repeat(65)), ..ok.clone() }).contains("`decided_by`"));
        assert!(problem(LabelRecord { decided_by: Some("a\nb".into()), ..ok.clone() }).contains("printable"));
        assert_eq!(LabelRecord { reported_at: None, ..ok }.check(1_000), Ok(()), "reported when received");
    }
}
