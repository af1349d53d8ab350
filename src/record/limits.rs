//! What one transaction record or label may carry (docs/architecture.md,
//! "Input limits"). Checked where input is decoded, so a value no store can
//! ever take becomes a dead letter with its reason, never a write retried
//! for ever: Cassandra refuses keys over 64 KiB, and one record dated years
//! ahead would prune every merchant tile and win every later correction.

use std::time::{SystemTime, UNIX_EPOCH};

use super::column;

/// Longest text field of a record or label, bytes (a Kaggle `trans_num` is
/// 32, merchant names about 40).
pub const MAX_TEXT_BYTES: usize = 256;
/// Longest `decided_by` (an analyst's name), characters.
pub const MAX_DECIDED_BY_CHARS: usize = 64;
/// Default of `limits.max_future_secs`: a day ahead of the clock.
pub const DEFAULT_MAX_FUTURE_SECS: i64 = 86_400;

/// The text fields of the record, checked against [`MAX_TEXT_BYTES`]
/// (`cc_num` has its own rule: up to 19 digits).
pub const TEXT_FIELDS: [&str; 13] = [
    column::trans_num,
    column::merchant,
    column::category,
    column::first,
    column::last,
    column::gender,
    column::street,
    column::city,
    column::state,
    column::zip,
    column::job,
    column::dob,
    column::trans_date_trans_time,
];

/// How far ahead of the wall clock event and report times may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBound {
    max_future_secs: i64,
}

impl Default for TimeBound {
    fn default() -> Self {
        Self { max_future_secs: DEFAULT_MAX_FUTURE_SECS }
    }
}

impl TimeBound {
    pub fn new(max_future_secs: u64) -> Self {
        Self { max_future_secs: i64::try_from(max_future_secs).unwrap_or(i64::MAX) }
    }

    /// No bound (stored rows read back, tests of old data).
    pub fn none() -> Self {
        Self { max_future_secs: i64::MAX }
    }

    /// The latest Unix second accepted now.
    pub fn latest(&self) -> i64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        self.latest_at(now)
    }

    /// The latest Unix second accepted at Unix second `at`.
    pub fn latest_at(&self, at: i64) -> i64 {
        at.saturating_add(self.max_future_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_the_clock_plus_the_allowed_skew() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let latest = TimeBound::default().latest();
        assert!((latest - now - DEFAULT_MAX_FUTURE_SECS).abs() <= 1, "{latest} vs {now}");
        assert_eq!(TimeBound::none().latest(), i64::MAX);
        assert!((TimeBound::new(0).latest() - now).abs() <= 1);
    }
}
