//! Row validation and derived features.
//!
//! One pass over a conformed batch (see [`crate::record::conform`]) checks every
//! row against the record contract and computes the features both Spark and
//! Rust derive from it: `distance_km` (haversine, home to merchant), `age`
//! (whole years at transaction time) and `hour` (0-23, UTC). The formulas are
//! mirrored in `spark-job/fraudflight_spark/features.py`; the parity vectors
//! shipped with every model check that the two agree.
//!
//! This is the stage that will own per-card state later (docs/architecture.md,
//! "Where state lives"): it sees every valid row of a partition in order.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Float64Builder, Int64Builder};
use arrow::datatypes::{Float64Type, Int64Type};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime};

use crate::record::column;
use crate::record::limits::{self, TimeBound};

/// Earth radius used by both sides, km.
pub const EARTH_RADIUS_KM: f64 = 6371.0;

/// Names of the derived feature columns, as the model and the outcome see them.
pub mod name {
    pub const DISTANCE_KM: &str = "distance_km";
    pub const AGE: &str = "age";
    pub const HOUR: &str = "hour";
}

/// What is wrong with one record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}` is {value}, outside [{min}, {max}]")]
    OutOfRange { field: &'static str, value: f64, min: f64, max: f64 },
    #[error("field `{field}` is not a finite number")]
    NotFinite { field: &'static str },
    #[error("field `{field}` is {value:?}, expected {expected}")]
    BadFormat { field: &'static str, value: String, expected: &'static str },
    #[error("record has neither `unix_time` nor `trans_date_trans_time`")]
    NoTime,
    #[error("field `{field}` is {bytes} bytes, over the limit of {max}")]
    TooLong { field: &'static str, bytes: usize, max: usize },
    #[error("transaction time {value} is later than {latest}, more than limits.max_future_secs ahead of the clock")]
    Future { value: i64, latest: i64 },
}

/// An invalid row of a batch: its index and the first problem found.
#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    pub row: usize,
    pub error: RecordError,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "row {}: {}", self.row, self.error)
    }
}

/// Derived features of a batch, one value per row (null for invalid rows).
#[derive(Debug, Clone)]
pub struct Features {
    /// Transaction time in Unix seconds (from `unix_time` or parsed text).
    pub unix_time: Arc<arrow::array::Int64Array>,
    pub distance_km: Arc<Float64Array>,
    pub age: Arc<arrow::array::Int64Array>,
    pub hour: Arc<arrow::array::Int64Array>,
    /// Rows that failed validation, in row order.
    pub invalid: Vec<RowError>,
    /// Feature columns a later stage adds, by name (the history features,
    /// computed by the history stage for the valid rows).
    pub extra: Vec<(&'static str, ArrayRef)>,
}

impl Features {
    /// The feature column of the given name, if it is a derived one.
    pub fn column(&self, name: &str) -> Option<ArrayRef> {
        match name {
            name::DISTANCE_KM => Some(self.distance_km.clone()),
            name::AGE => Some(self.age.clone()),
            name::HOUR => Some(self.hour.clone()),
            _ => self.extra.iter().find(|(n, _)| *n == name).map(|(_, c)| c.clone()),
        }
    }
}

/// Great-circle distance in km, with the operation order Spark uses.
pub fn haversine_km(lat: f64, long: f64, merch_lat: f64, merch_long: f64) -> f64 {
    let dlat = (merch_lat - lat).to_radians();
    let dlon = (merch_long - long).to_radians();
    let s_lat = (dlat / 2.0).sin();
    let s_lon = (dlon / 2.0).sin();
    let a = s_lat * s_lat + lat.to_radians().cos() * merch_lat.to_radians().cos() * s_lon * s_lon;
    2.0 * EARTH_RADIUS_KM * a.sqrt().asin()
}

/// Whole years between the date of birth and the transaction date.
pub fn age_years(dob: NaiveDate, at: NaiveDate) -> i64 {
    let birthday_passed = (at.month(), at.day()) >= (dob.month(), dob.day());
    (at.year() - dob.year()) as i64 - i64::from(!birthday_passed)
}

/// Hour of the day, UTC.
pub fn hour_of(unix_time: i64) -> i64 {
    unix_time.rem_euclid(86_400) / 3600
}

/// Parses "YYYY-MM-DD" (the `dob` format).
pub fn parse_date(text: &str) -> Option<NaiveDate> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + (c - b'0') as u32))
    };
    NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)
}

/// Parses "YYYY-MM-DD HH:MM:SS" (the `trans_date_trans_time` format), UTC.
pub fn parse_datetime(text: &str) -> Option<i64> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").ok().map(|t| t.and_utc().timestamp())
}

/// Validates every row of a conformed batch and derives its features,
/// whatever its time (rows read back from a store, what is already past).
pub fn derive(batch: &RecordBatch) -> Features {
    derive_within(batch, TimeBound::none())
}

/// Validates every row of a conformed batch, its time within `bound` of
/// the clock, and derives its features.
pub fn derive_within(batch: &RecordBatch, bound: TimeBound) -> Features {
    let latest = bound.latest();
    let texts: Vec<(&'static str, &arrow::array::StringArray)> = limits::TEXT_FIELDS
        .iter()
        .filter_map(|name| Some((*name, batch.column_by_name(name)?.as_string_opt::<i32>()?)))
        .collect();
    let rows = batch.num_rows();
    let f64_col =
        |name: &str| batch.column_by_name(name).expect("conformed batch").as_primitive::<Float64Type>().clone();
    let i64_col = |name: &str| batch.column_by_name(name).expect("conformed batch").as_primitive::<Int64Type>().clone();
    let str_col = |name: &str| batch.column_by_name(name).expect("conformed batch").as_string::<i32>().clone();
    let (amt, lat, long) = (f64_col(column::amt), f64_col(column::lat), f64_col(column::long));
    let (merch_lat, merch_long) = (f64_col(column::merch_lat), f64_col(column::merch_long));
    let (unix, text_time, dob) =
        (i64_col(column::unix_time), str_col(column::trans_date_trans_time), str_col(column::dob));
    let (trans_num, cc_num, category) =
        (str_col(column::trans_num), str_col(column::cc_num), str_col(column::category));

    let mut time_b = Int64Builder::with_capacity(rows);
    let mut dist_b = Float64Builder::with_capacity(rows);
    let mut age_b = Int64Builder::with_capacity(rows);
    let mut hour_b = Int64Builder::with_capacity(rows);
    let mut invalid = Vec::new();

    for row in 0..rows {
        let checked = (|| -> Result<(i64, f64, i64, i64), RecordError> {
            for (name, col) in [(column::trans_num, &trans_num), (column::category, &category)] {
                if col.is_null(row) || col.value(row).is_empty() {
                    return Err(RecordError::Missing(name));
                }
            }
            card_number(&cc_num, row)?;
            for (field, col) in &texts {
                let bytes = if col.is_valid(row) { col.value(row).len() } else { 0 };
                if bytes > limits::MAX_TEXT_BYTES {
                    return Err(RecordError::TooLong { field, bytes, max: limits::MAX_TEXT_BYTES });
                }
            }
            number(&amt, row, column::amt, 0.0, f64::MAX)?;
            let lat = number(&lat, row, column::lat, -90.0, 90.0)?;
            let long = number(&long, row, column::long, -180.0, 180.0)?;
            let mlat = number(&merch_lat, row, column::merch_lat, -90.0, 90.0)?;
            let mlong = number(&merch_long, row, column::merch_long, -180.0, 180.0)?;
            let time = if unix.is_valid(row) {
                unix.value(row)
            } else if text_time.is_valid(row) {
                let text = text_time.value(row);
                parse_datetime(text).ok_or_else(|| RecordError::BadFormat {
                    field: column::trans_date_trans_time,
                    value: truncate(text),
                    expected: "\"YYYY-MM-DD HH:MM:SS\"",
                })?
            } else {
                return Err(RecordError::NoTime);
            };
            if time > latest {
                return Err(RecordError::Future { value: time, latest });
            }
            let at = DateTime::from_timestamp(time, 0)
                .ok_or(RecordError::OutOfRange {
                    field: column::unix_time,
                    value: time as f64,
                    min: -8.2e12,
                    max: 8.2e12,
                })?
                .date_naive();
            if dob.is_null(row) {
                return Err(RecordError::Missing(column::dob));
            }
            let born = parse_date(dob.value(row)).ok_or_else(|| RecordError::BadFormat {
                field: column::dob,
                value: truncate(dob.value(row)),
                expected: "\"YYYY-MM-DD\"",
            })?;
            Ok((time, haversine_km(lat, long, mlat, mlong), age_years(born, at), hour_of(time)))
        })();
        match checked {
            Ok((time, dist, age, hour)) => {
                time_b.append_value(time);
                dist_b.append_value(dist);
                age_b.append_value(age);
                hour_b.append_value(hour);
            }
            Err(error) => {
                invalid.push(RowError { row, error });
                time_b.append_null();
                dist_b.append_null();
                age_b.append_null();
                hour_b.append_null();
            }
        }
    }
    Features {
        unix_time: Arc::new(time_b.finish()),
        distance_km: Arc::new(dist_b.finish()),
        age: Arc::new(age_b.finish()),
        hour: Arc::new(hour_b.finish()),
        invalid,
        extra: Vec::new(),
    }
}

fn number(col: &Float64Array, row: usize, field: &'static str, min: f64, max: f64) -> Result<f64, RecordError> {
    if col.is_null(row) {
        return Err(RecordError::Missing(field));
    }
    let value = col.value(row);
    if !value.is_finite() {
        return Err(RecordError::NotFinite { field });
    }
    if !(min..=max).contains(&value) {
        return Err(RecordError::OutOfRange { field, value, min, max });
    }
    Ok(value)
}

fn card_number(col: &arrow::array::StringArray, row: usize) -> Result<(), RecordError> {
    if col.is_null(row) || col.value(row).is_empty() {
        return Err(RecordError::Missing(column::cc_num));
    }
    let text = col.value(row);
    if text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RecordError::BadFormat {
            field: column::cc_num,
            value: "<redacted>".into(),
            expected: "up to 19 digits",
        });
    }
    Ok(())
}

/// Keeps error messages short when a hostile record carries a huge value.
fn truncate(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{to_batch, Transaction};
    use crate::simulate::{SimConfig, Simulator};

    #[test]
    fn haversine_matches_known_distances() {
        // New York to Los Angeles is about 3936 km on a 6371 km sphere.
        let d = haversine_km(40.7128, -74.0060, 34.0522, -118.2437);
        assert!((d - 3935.7).abs() < 1.0, "{d}");
        assert_eq!(haversine_km(10.0, 20.0, 10.0, 20.0), 0.0);
    }

    #[test]
    fn age_counts_whole_years_and_birthdays() {
        let dob = NaiveDate::from_ymd_opt(1990, 6, 15).unwrap();
        assert_eq!(age_years(dob, NaiveDate::from_ymd_opt(2020, 6, 14).unwrap()), 29);
        assert_eq!(age_years(dob, NaiveDate::from_ymd_opt(2020, 6, 15).unwrap()), 30);
        let leap = NaiveDate::from_ymd_opt(2000, 2, 29).unwrap();
        assert_eq!(age_years(leap, NaiveDate::from_ymd_opt(2021, 2, 28).unwrap()), 20);
        assert_eq!(age_years(leap, NaiveDate::from_ymd_opt(2021, 3, 1).unwrap()), 21);
    }

    #[test]
    fn hour_is_utc_and_handles_times_before_1970() {
        assert_eq!(hour_of(0), 0);
        assert_eq!(hour_of(3600 * 25 + 59), 1);
        assert_eq!(hour_of(-1), 23);
    }

    #[test]
    fn dates_parse_strictly() {
        assert_eq!(parse_date("2001-02-03"), NaiveDate::from_ymd_opt(2001, 2, 3));
        for bad in ["2001-2-03", "2001-02-30", "20010203", "abcd-ef-gh", ""] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
        assert_eq!(parse_datetime("2019-01-01 00:00:18"), Some(1_546_300_818));
        assert_eq!(parse_datetime("2019-01-01T00:00:18"), None);
    }

    fn sample() -> Transaction {
        Simulator::new(SimConfig::default()).next().unwrap()
    }

    fn error_of(t: Transaction) -> Option<RecordError> {
        derive(&to_batch(&[t])).invalid.first().map(|e| e.error.clone())
    }

    #[test]
    fn valid_rows_get_features_invalid_rows_name_their_problem() {
        let ok = sample();
        assert_eq!(error_of(ok.clone()), None);
        assert_eq!(
            error_of(Transaction { lat: 123.0, ..ok.clone() }),
            Some(RecordError::OutOfRange { field: "lat", value: 123.0, min: -90.0, max: 90.0 })
        );
        assert_eq!(
            error_of(Transaction { amt: f64::NAN, ..ok.clone() }),
            Some(RecordError::NotFinite { field: "amt" })
        );
        assert!(matches!(
            error_of(Transaction { amt: -1.0, ..ok.clone() }),
            Some(RecordError::OutOfRange { field: "amt", .. })
        ));
        assert_eq!(
            error_of(Transaction { trans_num: String::new(), ..ok.clone() }),
            Some(RecordError::Missing("trans_num"))
        );
        assert!(matches!(
            error_of(Transaction { dob: "1990-13-01".into(), ..ok.clone() }),
            Some(RecordError::BadFormat { field: "dob", .. })
        ));
        assert!(matches!(
            error_of(Transaction { cc_num: "4111-1111".into(), ..ok.clone() }),
            Some(RecordError::BadFormat { field: "cc_num", .. })
        ));
        let untimed = Transaction { unix_time: None, trans_date_trans_time: None, ..ok.clone() };
        assert_eq!(error_of(untimed), Some(RecordError::NoTime));
    }

    #[test]
    fn oversized_text_and_times_far_ahead_are_refused_by_name() {
        let ok = sample();
        let long = "x".repeat(limits::MAX_TEXT_BYTES + 1);
        assert_eq!(
            error_of(Transaction { trans_num: long.clone(), ..ok.clone() }),
            Some(RecordError::TooLong { field: "trans_num", bytes: long.len(), max: limits::MAX_TEXT_BYTES })
        );
        assert!(matches!(
            error_of(Transaction { merchant: Some(long.clone()), ..ok.clone() }),
            Some(RecordError::TooLong { field: "merchant", .. })
        ));
        let at_limit = Transaction { job: Some("j".repeat(limits::MAX_TEXT_BYTES)), ..ok.clone() };
        assert_eq!(error_of(at_limit), None);

        let bound = TimeBound::default();
        let within = |t: Transaction| derive_within(&to_batch(&[t]), bound).invalid.first().map(|e| e.error.clone());
        let ahead = bound.latest() + 3_600;
        assert!(matches!(
            within(Transaction { unix_time: Some(ahead), ..ok.clone() }),
            Some(RecordError::Future { value, .. }) if value == ahead
        ));
        assert_eq!(within(Transaction { unix_time: Some(bound.latest() - 3_600), ..ok.clone() }), None);
        // Stored rows read back are not judged against the clock.
        assert_eq!(error_of(Transaction { unix_time: Some(ahead), ..ok.clone() }), None);
    }

    #[test]
    fn text_time_is_used_when_unix_time_is_absent() {
        let ok = sample();
        let text_only = Transaction { unix_time: None, ..ok.clone() };
        let f = derive(&to_batch(&[ok.clone(), text_only]));
        assert!(f.invalid.is_empty());
        assert_eq!(f.unix_time.value(0), f.unix_time.value(1));
        assert_eq!(f.unix_time.value(0), ok.unix_time.unwrap());
        assert_eq!(f.hour.value(1), hour_of(ok.unix_time.unwrap()));
    }
}
