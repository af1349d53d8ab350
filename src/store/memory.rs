//! In-memory store of recent outcomes and alerts: two bounded queues of Arrow
//! batches. Old batches fall off the back once the row budget is used, so
//! memory stays bounded however long the demo runs.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use arrow::array::{Array, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray, UInt32Array};
use arrow::compute::{filter_record_batch, kernels::cmp::eq, take_record_batch};
use arrow::datatypes::Int64Type;

use super::Query;
use crate::record::column;
use crate::score::outcome::{IS_FRAUD_PREDICTED, LABEL_BY, LABEL_REPORTED_AT};

/// A label as the kept outcomes show it.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldLabel {
    pub is_fraud: bool,
    /// Unix seconds.
    pub reported_at: i64,
    /// Who decided, when an analyst did.
    pub by: Option<String>,
}

impl HeldLabel {
    fn of(label: &crate::history::LabelRecord) -> Self {
        Self {
            is_fraud: label.is_fraud,
            reported_at: label.reported_at.unwrap_or_default(),
            by: label.decided_by.clone(),
        }
    }
}

/// Bounded queues of outcome batches.
pub struct MemoryStore {
    inner: RwLock<Inner>,
    max_recent: usize,
    max_alerts: usize,
}

#[derive(Default)]
struct Inner {
    recent: Rows,
    alerts: Rows,
}

#[derive(Default)]
struct Rows {
    batches: VecDeque<RecordBatch>,
    rows: usize,
    /// Rows ever pushed: the sequence number of the newest row.
    pushed: u64,
}

impl Rows {
    fn push(&mut self, batch: RecordBatch, max: usize) {
        if batch.num_rows() == 0 {
            return;
        }
        self.rows += batch.num_rows();
        self.pushed += batch.num_rows() as u64;
        self.batches.push_back(batch);
        while self.rows - self.batches.front().map_or(0, RecordBatch::num_rows) >= max {
            let old = self.batches.pop_front().expect("non-empty");
            self.rows -= old.num_rows();
        }
    }

    /// Sets `is_fraud` (and, where the batch has them, `label_reported_at`
    /// and `label_by`) of the rows whose `trans_num` has a label.
    fn relabel(&mut self, labels: &HashMap<&str, &HeldLabel>) {
        for batch in &mut self.batches {
            let (Some(trans_num), Ok(at)) =
                (batch.column_by_name(column::trans_num), batch.schema().index_of(column::is_fraud))
            else {
                continue;
            };
            let trans_num = trans_num.as_string::<i32>();
            if !trans_num.iter().any(|t| t.is_some_and(|t| labels.contains_key(t))) {
                continue;
            }
            let label = |r: usize| trans_num.is_valid(r).then(|| labels.get(trans_num.value(r))).flatten();
            let schema = batch.schema();
            let mut columns = batch.columns().to_vec();
            let old = batch.column(at).as_primitive::<Int64Type>();
            columns[at] = Arc::new(
                (0..batch.num_rows())
                    .map(|r| label(r).map_or(old.is_valid(r).then(|| old.value(r)), |l| Some(i64::from(l.is_fraud))))
                    .collect::<Int64Array>(),
            );
            if let Ok(at) = schema.index_of(LABEL_REPORTED_AT) {
                let old = batch.column(at).as_primitive::<Int64Type>();
                columns[at] = Arc::new(
                    (0..batch.num_rows())
                        .map(|r| label(r).map_or(old.is_valid(r).then(|| old.value(r)), |l| Some(l.reported_at)))
                        .collect::<Int64Array>(),
                );
            }
            if let Ok(at) = schema.index_of(LABEL_BY) {
                let old = batch.column(at).as_string::<i32>();
                columns[at] = Arc::new(
                    (0..batch.num_rows())
                        .map(|r| match label(r) {
                            Some(l) => l.by.clone(),
                            None => old.is_valid(r).then(|| old.value(r).to_string()),
                        })
                        .collect::<StringArray>(),
                );
            }
            *batch = RecordBatch::try_new(schema, columns).expect("same schema, same rows");
        }
    }

    /// The newest row with this `trans_num`, if held.
    fn find(&self, trans_num: &str) -> Option<RecordBatch> {
        for batch in self.batches.iter().rev() {
            let Some(ids) = batch.column_by_name(column::trans_num) else { continue };
            let ids = ids.as_string::<i32>();
            if let Some(r) = (0..batch.num_rows()).rev().find(|&r| ids.is_valid(r) && ids.value(r) == trans_num) {
                return Some(batch.slice(r, 1));
            }
        }
        None
    }

    /// Up to `limit` rows matching `keep`, newest first.
    fn newest(&self, limit: usize, keep: impl Fn(&RecordBatch) -> RecordBatch) -> Vec<RecordBatch> {
        let mut out = Vec::new();
        let mut left = limit;
        for batch in self.batches.iter().rev() {
            if left == 0 {
                break;
            }
            let matching = keep(batch);
            let n = matching.num_rows().min(left);
            if n == 0 {
                continue;
            }
            let last = matching.num_rows() as u32;
            let indices = UInt32Array::from_iter_values((last - n as u32..last).rev());
            out.push(take_record_batch(&matching, &indices).expect("indices in range"));
            left -= n;
        }
        out
    }
}

/// Labels against predictions over the outcomes held (the live view's
/// precision of alerts).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Labelled {
    /// Alerts held, those with a label, those labelled fraud.
    pub alerts: usize,
    pub alerts_labelled: usize,
    pub alerts_confirmed: usize,
    /// Outcomes labelled fraud, and of them those not alerted.
    pub frauds: usize,
    pub frauds_missed: usize,
}

/// (rows with a label, rows labelled fraud, rows labelled fraud and not predicted).
fn count_labels(rows: &Rows) -> (usize, usize, usize) {
    let (mut labelled, mut fraud, mut missed) = (0, 0, 0);
    for batch in &rows.batches {
        let Some(flags) = batch.column_by_name(column::is_fraud) else { continue };
        let flags = flags.as_primitive::<Int64Type>();
        let predicted = predicted(batch);
        for (flag, predicted) in flags.iter().zip(predicted.iter()) {
            let Some(flag) = flag else { continue };
            labelled += 1;
            if flag == 1 {
                fraud += 1;
                missed += usize::from(predicted != Some(true));
            }
        }
    }
    (labelled, fraud, missed)
}

impl MemoryStore {
    /// Labels against predictions over the outcomes and alerts held.
    pub fn labelled(&self) -> Labelled {
        let inner = self.inner.read().expect("store lock");
        let (alerts_labelled, alerts_confirmed, _) = count_labels(&inner.alerts);
        let (_, frauds, frauds_missed) = count_labels(&inner.recent);
        Labelled { alerts: inner.alerts.rows, alerts_labelled, alerts_confirmed, frauds, frauds_missed }
    }

    pub fn new(max_recent: usize, max_alerts: usize) -> Self {
        Self { inner: RwLock::new(Inner::default()), max_recent, max_alerts }
    }

    /// Keeps a batch of outcomes (and its predicted frauds as alerts).
    pub fn insert(&self, outcomes: &RecordBatch) {
        let alerts = filter_record_batch(outcomes, predicted(outcomes)).expect("mask matches batch");
        let mut inner = self.inner.write().expect("store lock");
        inner.recent.push(outcomes.clone(), self.max_recent);
        inner.alerts.push(alerts, self.max_alerts);
    }

    /// Shows labels in the kept outcomes and alerts.
    pub fn set_labels(&self, current: &[crate::history::Settled]) {
        let held: Vec<HeldLabel> = current.iter().map(|c| HeldLabel::of(&c.label)).collect();
        let labels: HashMap<&str, &HeldLabel> = current.iter().map(|c| c.label.trans_num.as_str()).zip(&held).collect();
        if labels.is_empty() {
            return;
        }
        let mut inner = self.inner.write().expect("store lock");
        inner.recent.relabel(&labels);
        inner.alerts.relabel(&labels);
    }

    /// The alert held with this `trans_num` (one row), if any.
    pub fn alert(&self, trans_num: &str) -> Option<RecordBatch> {
        self.inner.read().expect("store lock").alerts.find(trans_num)
    }

    /// Answers a query, newest first.
    pub fn query(&self, query: &Query) -> Vec<RecordBatch> {
        let inner = self.inner.read().expect("store lock");
        match query {
            Query::Alerts { limit } => inner.alerts.newest(*limit, Clone::clone),
            Query::Recent { limit } => inner.recent.newest(*limit, Clone::clone),
            Query::Card { cc_num, limit } => inner.recent.newest(*limit, |b| {
                let cards = b.column_by_name(column::cc_num).expect("outcome column");
                let mask = eq(cards, &StringArray::new_scalar(cc_num)).expect("utf8 comparison");
                filter_record_batch(b, &mask).expect("mask matches batch")
            }),
        }
    }

    /// Alerts kept after sequence number `seq` (at most `limit`, newest
    /// first), and the sequence number to ask from next time. A follower
    /// that passes back the returned number sees every alert once.
    pub fn alerts_since(&self, seq: u64, limit: usize) -> (Vec<RecordBatch>, u64) {
        let inner = self.inner.read().expect("store lock");
        let new = inner.alerts.pushed.saturating_sub(seq);
        let limit = limit.min(usize::try_from(new).unwrap_or(usize::MAX));
        (inner.alerts.newest(limit, Clone::clone), inner.alerts.pushed)
    }

    /// Rows currently held (recent, alerts).
    pub fn len(&self) -> (usize, usize) {
        let inner = self.inner.read().expect("store lock");
        (inner.recent.rows, inner.alerts.rows)
    }

    pub fn is_empty(&self) -> bool {
        self.len().0 == 0
    }
}

fn predicted(outcomes: &RecordBatch) -> &BooleanArray {
    outcomes.column_by_name(IS_FRAUD_PREDICTED).expect("outcome column").as_boolean()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{BooleanArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(ids: std::ops::Range<i64>, fraud: impl Fn(i64) -> bool) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(IS_FRAUD_PREDICTED, DataType::Boolean, false),
        ]);
        let predicted: BooleanArray = ids.clone().map(|i| Some(fraud(i))).collect();
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(Int64Array::from_iter_values(ids)), Arc::new(predicted)])
            .unwrap()
    }

    #[test]
    fn labels_show_in_kept_outcomes_and_alerts() {
        let schema = Schema::new(vec![
            Field::new(column::trans_num, DataType::Utf8, false),
            Field::new(column::is_fraud, DataType::Int64, true),
            Field::new(IS_FRAUD_PREDICTED, DataType::Boolean, false),
        ]);
        let outcomes = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(vec!["a", "b", "c"])),
                Arc::new(Int64Array::from(vec![None, Some(0), Some(0)])),
                Arc::new(BooleanArray::from(vec![true, false, true])),
            ],
        )
        .unwrap();
        let store = MemoryStore::new(100, 100);
        store.insert(&outcomes);
        let label = |trans_num: &str, is_fraud| crate::history::Settled {
            label: crate::history::LabelRecord {
                trans_num: trans_num.into(),
                cc_num: "1".into(),
                is_fraud,
                reported_at: Some(7),
                decided_by: None,
            },
            unix_time: 0,
        };
        store.set_labels(&[label("a", true), label("c", false), label("zz", true)]);
        assert_eq!(store.alert("c").map(|b| b.num_rows()), Some(1));
        assert!(store.alert("b").is_none(), "b was not an alert");
        let flags = |q: &Query| {
            let batches = store.query(q);
            batches
                .iter()
                .flat_map(|b| b.column(1).as_primitive::<arrow::datatypes::Int64Type>().iter().collect::<Vec<_>>())
                .collect::<Vec<_>>()
        };
        assert_eq!(flags(&Query::Recent { limit: 10 }), vec![Some(0), Some(0), Some(1)]);
        assert_eq!(flags(&Query::Alerts { limit: 10 }), vec![Some(0), Some(1)]);
        // Alerts a and c are labelled: one confirmed; no labelled fraud missed.
        let want = Labelled { alerts: 2, alerts_labelled: 2, alerts_confirmed: 1, frauds: 1, frauds_missed: 0 };
        assert_eq!(store.labelled(), want);
        store.set_labels(&[label("b", true)]);
        assert_eq!(store.labelled(), Labelled { frauds: 2, frauds_missed: 1, ..want }, "b was not alerted");
    }

    fn ids(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<arrow::datatypes::Int64Type>().values().to_vec())
            .collect()
    }

    #[test]
    fn a_follower_sees_every_alert_once_newest_first() {
        let store = MemoryStore::new(1000, 1000);
        store.insert(&batch(0..10, |i| i % 3 == 0)); // alerts 0, 3, 6, 9
        let (first, seq) = store.alerts_since(0, 100);
        assert_eq!(ids(&first), vec![9, 6, 3, 0]);
        store.insert(&batch(10..20, |i| i % 5 == 0)); // alerts 10, 15
        let (next, seq) = store.alerts_since(seq, 100);
        assert_eq!(ids(&next), vec![15, 10]);
        let (none, _) = store.alerts_since(seq, 100);
        assert!(ids(&none).is_empty());
        // A follower far behind gets only the newest `limit`.
        let (capped, _) = store.alerts_since(0, 3);
        assert_eq!(ids(&capped), vec![15, 10, 9]);
    }
}
