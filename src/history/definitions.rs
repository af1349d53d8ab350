//! The history features as data: one table of names, windows and meanings
//! (`spark-job/fraudflight_spark/history_features.json`) that this crate,
//! the Spark job, the parity vectors and the docs all read. Adding a
//! feature is one entry there, its aggregate here and in
//! `fraudflight_spark/history.py`, and the parity test keeps them equal.

use std::sync::OnceLock;

use serde::Deserialize;

/// Seconds in a day, for windows and UTC days.
pub const DAY: i64 = 86_400;

/// What a feature is computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Entity {
    /// The card's earlier transactions, `unix_time` in `[t - days, t)`.
    Card,
    /// The merchant's whole UTC days `[D - delay - days, D - delay)`.
    Merchant,
}

/// How a feature aggregates its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    Count,
    MeanAmount,
    AmountRatio,
    SecsSincePrev,
    KmFromPrev,
    FraudRate,
}

/// One row of the table.
#[derive(Debug, Clone, Deserialize)]
pub struct Definition {
    pub name: String,
    pub entity: Entity,
    pub aggregate: Aggregate,
    pub days: i64,
    pub meaning: String,
}

/// The whole table.
#[derive(Debug, Clone, Deserialize)]
pub struct Table {
    pub day_seconds: i64,
    /// Merchant windows end this many days before the transaction's day, so
    /// the labels of their transactions have arrived.
    pub label_delay_days: i64,
    pub features: Vec<Definition>,
}

impl Table {
    /// The card windows, in days, longest last, without repeats.
    pub fn card_windows(&self) -> Vec<i64> {
        self.windows(Entity::Card)
    }

    /// The merchant windows, in days.
    pub fn merchant_windows(&self) -> Vec<i64> {
        self.windows(Entity::Merchant)
    }

    fn windows(&self, entity: Entity) -> Vec<i64> {
        let mut days: Vec<i64> = self.features.iter().filter(|d| d.entity == entity).map(|d| d.days).collect();
        days.sort_unstable();
        days.dedup();
        days
    }

    /// The names of the features, in table order (the order of the outcome's
    /// history columns).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.features.iter().map(|d| d.name.as_str())
    }
}

/// The table this build was compiled with.
pub fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let table: Table =
            serde_json::from_str(include_str!("../../spark-job/fraudflight_spark/history_features.json"))
                .expect("history_features.json is valid (checked by the unit tests)");
        assert_eq!(table.day_seconds, DAY, "history_features.json: day_seconds");
        table
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_table_parses_and_names_are_unique() {
        let t = table();
        let mut names: Vec<&str> = t.names().collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "duplicate feature names");
        assert_eq!(t.card_windows(), vec![1, 7, 30]);
        assert_eq!(t.merchant_windows(), vec![1, 7, 30]);
        assert_eq!(t.label_delay_days, 7);
    }

    #[test]
    fn the_previous_transaction_features_use_the_longest_card_window() {
        // The state keeps the longest card window; "previous" and the
        // ratio look no further back than it.
        let t = table();
        let longest = *t.card_windows().last().unwrap();
        for d in &t.features {
            if matches!(d.aggregate, Aggregate::SecsSincePrev | Aggregate::KmFromPrev | Aggregate::AmountRatio) {
                assert_eq!(d.days, longest, "{}", d.name);
            }
        }
    }
}
