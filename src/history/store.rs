//! Where the history finds what this process does not hold
//! (docs/architecture.md, "History: state that survives").
//!
//! A card's transactions reach one consumer at a time (Kafka key =
//! `cc_num`), but not always the same one: after a restart, a rebalance, or
//! when the card cache evicted it, the card's history is reloaded from the
//! durable store (Cassandra `transactions` and `labels`). Merchant tiles
//! are shared by every instance: each transaction is stored once per
//! (merchant, day), labels on time mark it fraud, and an instance reads a
//! tile once it is final. The calls block (the history runs on the blocking
//! pool) and retry until the store answers; an error means shutdown gave up.

use std::sync::Arc;

use super::card::Label;
use super::merchant::Tile;

/// One stored transaction of a card.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub unix_time: i64,
    pub trans_num: String,
    pub amt: f64,
    pub merch_lat: f64,
    pub merch_long: f64,
    pub merchant: Option<String>,
}

/// A card to reload for transactions from `first` on (Unix seconds),
/// whose windows reach back to `since`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CardRequest<'a> {
    pub cc_num: &'a str,
    pub since: i64,
    pub first: i64,
}

/// What the store holds of one card.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredCard {
    /// Transactions at or after the `since` asked for, and, when none is
    /// before `first`, the newest one before `since` (the "previous" of the
    /// transaction at `first`, however old); any order.
    pub events: Vec<StoredEvent>,
    /// Its labels, by transaction number.
    pub labels: Vec<(String, Label)>,
}

/// A merchant tile as stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredTile {
    pub tile: Tile,
    /// Its transactions, whether each is marked fraud, by `trans_num`:
    /// only for tiles asked with their rows.
    pub rows: Option<std::collections::HashMap<Box<str>, bool>>,
}

/// A stored transaction found for a label.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub unix_time: i64,
    pub merchant: Option<String>,
}

/// A label on time for its transaction's merchant tile: the store marks the
/// transaction fraud (or not) in the tile, the newest report winning.
#[derive(Debug, Clone, PartialEq)]
pub struct TileLabel {
    pub cc_num: String,
    pub trans_num: String,
    pub merchant: Arc<str>,
    pub day: i64,
    pub label: Label,
}

/// How long a read may wait for the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Until it answers or shutdown gives up: ingest, where a record must
    /// get its exact history.
    UntilShutdown,
    /// At most this long: what-if scoring, whose client gets an error
    /// rather than waiting out an outage.
    For(std::time::Duration),
}

/// The store gave up (at shutdown), did not answer in time, or answered
/// something unreadable.
#[derive(Debug, thiserror::Error)]
#[error("history store: {0}")]
pub struct StoreError(pub String);

/// The durable side of the history. Card numbers are the real ones; the
/// store protects them as it stores them.
pub trait Store: Send + Sync {
    /// Each card's stored transactions ([`StoredCard::events`]) and labels;
    /// in the order asked.
    fn cards(&self, cards: &[CardRequest], wait: Wait) -> Result<Vec<StoredCard>, StoreError>;

    /// The tiles of (merchant, UTC day): every transaction stored for it and
    /// those marked fraud; in the order asked. Tiles of `rows_from` (a UTC
    /// day) or later come with their rows.
    fn tiles(&self, keys: &[(Arc<str>, i64)], rows_from: i64, wait: Wait) -> Result<Vec<StoredTile>, StoreError>;

    /// The stored transaction of each `(cc_num, trans_num)`, if any.
    fn find(&self, transactions: &[(&str, &str)]) -> Result<Vec<Option<Found>>, StoreError>;

    /// Marks transactions in their tiles; a report older than the one
    /// stored changes nothing, whatever the order of the calls.
    fn write_tile_labels(&self, labels: &[TileLabel]) -> Result<(), StoreError>;
}
