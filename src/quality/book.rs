//! The quality book kept in memory, when there is no Cassandra to keep it
//! (the demo): the score rows of the last days, keyed by `trans_num` as in
//! Cassandra `quality_rows`, so the two books count alike. Bounded by days
//! and by rows: past the row limit the oldest day goes first, and when the
//! newest day alone fills the book its further rows are not kept (counted:
//! `fraudflight_quality_book_rows_not_kept_total`; that day is measured on
//! the rows kept).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::{RowLabel, ScoreRow};

pub struct MemoryBook {
    days: usize,
    max_rows: usize,
    book: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    rows: BTreeMap<i64, HashMap<String, ScoreRow>>,
    len: usize,
    not_kept: u64,
}

impl MemoryBook {
    pub fn new(days: usize, max_rows: usize) -> Self {
        Self { days, max_rows, book: Mutex::default() }
    }

    /// Adds rows; a row already held keeps its label. A new row over the
    /// limit makes room by dropping older days; if there are none, it is
    /// not kept.
    pub fn record(&self, rows: Vec<ScoreRow>) {
        let mut book = self.book.lock().expect("book lock");
        for row in rows {
            if let Some(held) = book.rows.get_mut(&row.day).and_then(|d| d.get_mut(&row.trans_num)) {
                *held = ScoreRow { label: newest(held.label, row.label), ..row };
                continue;
            }
            while book.len >= self.max_rows {
                match book.rows.first_key_value() {
                    Some((&oldest, _)) if oldest < row.day => {
                        let (_, dropped) = book.rows.pop_first().expect("a first day");
                        book.len -= dropped.len();
                    }
                    _ => break,
                }
            }
            if book.len >= self.max_rows {
                book.not_kept += 1;
                continue;
            }
            book.rows.entry(row.day).or_default().insert(row.trans_num.clone(), row);
            book.len += 1;
        }
        self.prune(&mut book);
    }

    /// Rows held, and rows not kept for want of room since the start.
    pub fn stats(&self) -> (usize, u64) {
        let book = self.book.lock().expect("book lock");
        (book.len, book.not_kept)
    }

    /// Sets labels of rows held; the newest report wins.
    pub fn label(&self, labels: &[RowLabel]) {
        let mut book = self.book.lock().expect("book lock");
        for l in labels {
            if let Some(row) = book.rows.get_mut(&l.day).and_then(|d| d.get_mut(&l.trans_num)) {
                row.label = newest(row.label, Some((l.is_fraud, l.reported_at)));
            }
        }
    }

    /// Every row of a day.
    pub fn rows(&self, day: i64) -> Vec<ScoreRow> {
        let book = self.book.lock().expect("book lock");
        book.rows.get(&day).map(|d| d.values().cloned().collect()).unwrap_or_default()
    }

    fn prune(&self, book: &mut Book) {
        let Some(&newest_day) = book.rows.keys().next_back() else { return };
        while let Some((&oldest, _)) = book.rows.first_key_value() {
            if oldest > newest_day - self.days as i64 {
                break;
            }
            let (_, dropped) = book.rows.pop_first().expect("a first day");
            book.len -= dropped.len();
        }
    }
}

/// The newer of two labels (by report time; the later one on a tie).
fn newest(held: Option<(bool, i64)>, new: Option<(bool, i64)>) -> Option<(bool, i64)> {
    // Within one second a fraud wins, as everywhere (`history::card::version`).
    match (held, new) {
        (Some(h), Some(n)) if (h.1, h.0) > (n.1, n.0) => Some(h),
        (h, None) => h,
        (_, n) => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(trans: &str, day: i64) -> ScoreRow {
        ScoreRow {
            trans_num: trans.into(),
            cc_num: format!("card-{trans}"),
            day,
            minute: 0,
            model_version: "v".into(),
            fraud_score: 0.5,
            predicted: true,
            shadow: None,
            label: None,
        }
    }

    #[test]
    fn rows_count_once_and_the_newest_label_wins() {
        let book = MemoryBook::new(30, 100);
        book.record(vec![row("a", 1), row("b", 1)]);
        book.label(&[RowLabel {
            trans_num: "a".into(),
            cc_num: "card-a".into(),
            day: 1,
            minute: 0,
            is_fraud: true,
            reported_at: 10,
        }]);
        book.label(&[RowLabel {
            trans_num: "a".into(),
            cc_num: "card-a".into(),
            day: 1,
            minute: 0,
            is_fraud: false,
            reported_at: 5,
        }]);
        // Redelivered: counted once, label kept.
        book.record(vec![row("a", 1)]);
        let rows = book.rows(1);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows.iter().find(|r| r.trans_num == "a").unwrap().label, Some((true, 10)));
    }

    #[test]
    fn old_days_and_rows_over_the_limit_go_first() {
        let book = MemoryBook::new(3, 4);
        book.record(vec![row("a", 1), row("b", 2)]);
        book.record(vec![row("c", 4)]);
        assert!(book.rows(1).is_empty(), "day 1 is 3 days before day 4");
        book.record(vec![row("d", 4), row("e", 4), row("f", 4)]);
        assert!(book.rows(2).is_empty(), "over 4 rows: the oldest day goes");
        assert_eq!(book.rows(4).len(), 4);
        book.record(vec![row("g", 4)]);
        assert_eq!(book.rows(4).len(), 4, "the newest day alone fills the book: g is not kept");
        assert_eq!(book.stats(), (4, 1));
        book.record(vec![row("d", 4)]);
        assert_eq!(book.stats(), (4, 1), "a row held is updated, not counted again");
        book.record(vec![row("h", 3)]);
        assert_eq!(book.stats(), (4, 2), "an older day does not push out a newer one");
        book.record(vec![row("i", 5)]);
        assert_eq!((book.rows(4).len(), book.rows(5).len()), (0, 1), "a newer day pushes out the older");
    }
}
