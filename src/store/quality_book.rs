//! Live quality's durable book, shared by every instance: the interface a
//! store implements to count the days whose scored outcomes or labels
//! changed, save what each day measures, and show what every instance
//! saved (Cassandra: `sink/cassandra/quality.rs`). Without one, live
//! quality keeps its book in memory (`quality::book`)
//! (docs/architecture.md, "Storage" and "Model quality").

use std::collections::HashMap;

use super::reader::ReadError;
use crate::quality::tally::Tally;
use crate::quality::{DayQuality, VersionInfo};

/// What one count of a day did.
#[derive(Debug, Default)]
pub struct Counted {
    /// The day's tally per version after the count (empty if nothing was
    /// counted here).
    pub day: std::collections::BTreeMap<String, Tally>,
    /// The cards of the day's tops (`Tally::cards`) with a transaction of
    /// the day labelled fraud.
    pub fraud_cards: std::collections::HashSet<String>,
    /// Minutes counted again.
    pub minutes: usize,
    /// Score rows read.
    pub rows_read: u64,
    /// Changed minutes left for another call (over the row budget).
    pub more: bool,
    /// The day's revision the tallies are of: the write timestamp of the
    /// measures saved from them ([`QualityBook::save_counted`]).
    pub revision: i64,
    /// The day was measured by an earlier release (before the book was kept
    /// per minute): its saved numbers are kept and it is not counted.
    pub kept_earlier: bool,
}

#[async_trait::async_trait]
pub trait QualityBook: Send + Sync {
    /// Counts again the changed minutes of `day`, reading at most
    /// `budget_rows` score rows, keeping each version's top `card_k` cards.
    async fn count_day(
        &self,
        day: i64,
        versions: &HashMap<String, VersionInfo>,
        budget_rows: u64,
        card_k: u32,
    ) -> Result<Counted, ReadError>;

    /// Saves what `day` measures per version from tallies of `revision`;
    /// `gone`: versions whose tallies are empty now.
    async fn save_counted(
        &self,
        measured: &[DayQuality],
        gone: &[String],
        day: i64,
        revision: i64,
    ) -> Result<(), ReadError>;

    /// The saved measures of the newest `days` days, by every instance.
    async fn saved(&self, days: usize) -> Result<Vec<DayQuality>, ReadError>;

    /// The newest retraining decisions, at most `limit`.
    async fn recent_decisions(&self, limit: usize) -> Result<Vec<serde_json::Value>, ReadError>;
}
