//! In-memory store of recent outcomes and alerts: two bounded queues of Arrow
//! batches. Old batches fall off the back once the row budget is used, so
//! memory stays bounded however long the demo runs.

use std::collections::VecDeque;
use std::sync::RwLock;

use arrow::array::{AsArray, BooleanArray, RecordBatch, StringArray, UInt32Array};
use arrow::compute::{filter_record_batch, kernels::cmp::eq, take_record_batch};

use super::Query;
use crate::record::column;
use crate::score::outcome::IS_FRAUD_PREDICTED;

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
}

impl Rows {
    fn push(&mut self, batch: RecordBatch, max: usize) {
        if batch.num_rows() == 0 {
            return;
        }
        self.rows += batch.num_rows();
        self.batches.push_back(batch);
        while self.rows - self.batches.front().map_or(0, RecordBatch::num_rows) >= max {
            let old = self.batches.pop_front().expect("non-empty");
            self.rows -= old.num_rows();
        }
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

impl MemoryStore {
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
