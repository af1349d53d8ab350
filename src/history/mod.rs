//! History: what the card and the merchant did before a transaction, as
//! model inputs and outcome columns (docs/architecture.md, "History").
//!
//! - [`definitions`]: the feature table shared with Spark (data, not code).
//! - [`card`]: one card's recent transactions, exact windows over them.
//! - [`merchant`]: per (merchant, UTC day) tiles with a label delay.
//!
//! [`History`] keeps both for every card and merchant it has seen, fed in
//! Kafka order (one card's transactions reach one consumer in order) and by
//! labels. Computing features is read-only ([`Use::Read`], what-if scoring
//! by DoExchange); ingest ([`Use::Update`]) records each transaction after
//! computing its features, so a later row of the same batch sees it.
//! Recording is idempotent per `(cc_num, unix_time, trans_num)`: a record
//! delivered twice gets the same features and counts once.

pub mod card;
pub mod definitions;
pub mod labels;
pub mod merchant;
pub mod order;
pub mod progress;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use arrow::datatypes::Float64Type;
use arrow::record_batch::RecordBatch;

use crate::features::Features;
use crate::record::column;
pub use card::Label;
use card::{Card, Current, Event};
use definitions::{table, Aggregate, Entity, Table, DAY};
pub use labels::LabelRecord;
use merchant::{counts, day_of, on_time, read_days, Merchants};
use progress::{LabelsProgress, Seen, Waited};
pub use store::{CardRequest, Found, Store, StoreError, StoredCard, StoredEvent, StoredTile, TileLabel, Wait};

/// Days of merchant tiles kept beyond what the newest transaction reads.
const PRUNE_MARGIN_DAYS: i64 = 3;
/// How far before the previous owners' labels progress the pending labels
/// are looked for again after an assignment ([`History::forget_cards`]).
const RECHECK_MARGIN_SECS: i64 = DAY;

/// How long what-if scoring waits for the store to reload what it needs.
const READ_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether computing features also records the transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// What-if scoring: the state is read, never changed.
    Read,
    /// Ingest: each row is recorded after its features are computed.
    Update,
}

/// What happened to a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Its transaction (made at `unix_time`) is known and this is now its
    /// label; its tile is updated if the label is in time.
    Current { unix_time: i64 },
    /// A later report of the same transaction was applied already.
    Superseded,
    /// Its transaction has not been seen (yet): kept until it is.
    Pending,
}

/// Counters for /metrics.
#[derive(Debug, Default)]
pub struct HistoryStats {
    pub cards: AtomicU64,
    pub events: AtomicU64,
    pub evicted_cards: AtomicU64,
    /// Cards read back from the store with transactions in it (after a
    /// restart, a rebalance or eviction).
    pub loaded_cards: AtomicU64,
    pub merchants: AtomicU64,
    pub labels: AtomicU64,
    pub labels_pending: AtomicU64,
    pub labels_late: AtomicU64,
    /// Pending labels pushed out of memory by newer ones (with a store they
    /// are still stored and found there; without one they are lost).
    pub labels_pending_dropped: AtomicU64,
    /// Pending labels looked for again after partitions were assigned
    /// ([`History::recheck_pending`]).
    pub labels_rechecked: AtomicU64,
    /// Batches that waited for the labels stream ([`progress`]), and how
    /// long in all.
    pub labels_waits: AtomicU64,
    pub labels_wait_ms: AtomicU64,
    /// Times the wait gave up, and 1 while the labels stream is stalled.
    pub labels_stalls: AtomicU64,
    pub labels_stalled: AtomicU64,
    /// Tile fraud marks held until their outcomes are stored
    /// ([`History::settle`]), and those written early because too many
    /// were held (outcomes that are never stored hold theirs).
    pub marks_held: AtomicU64,
    pub marks_early: AtomicU64,
}

/// The history columns of a batch, in [`definitions::table`] order.
#[derive(Debug, Clone)]
pub struct HistoryColumns {
    pub columns: Vec<(&'static str, Arc<Float64Array>)>,
    /// Ingest: each row's label, when one was known as it was recorded (a
    /// label that came first, or a redelivered record already labelled);
    /// the stored outcome's `is_fraud` shows it. Empty for what-if scoring
    /// and carried columns.
    pub labels: Vec<Option<Label>>,
}

impl HistoryColumns {
    /// The columns as feature columns ([`Features::extra`]).
    pub fn into_columns(self) -> Vec<(&'static str, ArrayRef)> {
        self.columns.into_iter().map(|(n, c)| (n, c as ArrayRef)).collect()
    }

    pub fn column(&self, name: &str) -> Option<ArrayRef> {
        self.columns.iter().find(|(n, _)| *n == name).map(|(_, c)| c.clone() as ArrayRef)
    }

    /// The columns a batch carries itself (a Spark backfill sends them): all
    /// of them, as Float64, or None.
    pub fn carried_by(batch: &RecordBatch) -> Option<Self> {
        let columns = table()
            .names()
            .map(|name| {
                let c = batch.column_by_name(name)?.as_primitive_opt::<Float64Type>()?;
                (c.null_count() == 0).then(|| (name, Arc::new(c.clone())))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self { columns, labels: Vec::new() })
    }
}

/// The history of every card and merchant seen, bounded by a card cache.
pub struct History {
    table: &'static Table,
    card_windows: Vec<i64>,
    merchant_windows: Vec<i64>,
    state: Mutex<State>,
    stats: HistoryStats,
    turns: Arc<order::Sequencer>,
    /// Where cards not held are reloaded from and merchant tiles are shared
    /// (`serve` with Cassandra); None = everything in memory (the demo).
    store: Option<Arc<dyn Store>>,
    /// The labels stream that ingest waits for (`serve` with Kafka); unset
    /// = labels are applied as they come (the demo, Flight only).
    labels: OnceLock<LabelsProgress>,
    /// At most this many outcomes on their way (`State::unsettled`) and
    /// fraud marks held for them (`State::held_marks`): 8 x `max_cards`,
    /// room for a DoPut batch of a backfill (up to a million rows by
    /// default, over the card cache) and the Kafka batches in flight.
    max_unsettled: usize,
}

struct State {
    cards: lru::LruCache<Box<str>, Card>,
    merchants: Merchants,
    /// Labels whose transaction has not been seen, by (cc_num, trans_num).
    /// With a store they are also stored, so the cache is bounded.
    pending: lru::LruCache<(Box<str>, Box<str>), card::Reports>,
    /// The newest transaction day seen, for pruning merchant tiles.
    newest_day: i64,
    /// Transactions recorded whose outcomes are not stored yet, by
    /// `trans_num`. A label applied meanwhile may reach the sinks before
    /// the outcome (which carries the label known when it was recorded)
    /// overwrites it; the outcome's writer asks here once it is stored
    /// ([`History::settle`]).
    unsettled: lru::LruCache<Box<str>, Unsettled>,
    /// Partitions were assigned: the pending labels reported at or after
    /// this time (Unix seconds) are looked for again before the next tiles
    /// are read ([`History::recheck_pending`]).
    recheck_from: Option<i64>,
    /// Pending labels found stored since: their outcomes show them once
    /// the next batch is stored ([`History::settle`]).
    found_pending: Vec<Settled>,
    /// Fraud marks of recorded transactions whose outcomes are not stored
    /// yet, by `trans_num`, written once they are ([`History::settle`]).
    /// Written before, the mark (an update) creates the tile's row: an
    /// instance that reads the tile and then records the transaction (its
    /// writer died before storing it, and it is read again) would count it
    /// twice. Not in `unsettled`, whose least recently used entries go: a
    /// mark must not. At most 8 x `max_cards`; past that (outcomes that
    /// are never stored keep theirs) one is written at once.
    held_marks: HashMap<Box<str>, TileLabel>,
}

/// The rows of the tiles a batch read from the store that its own
/// transactions may fall in (their days or later): by (merchant, day),
/// whether each `trans_num` is marked fraud, as read and then as counted.
type TileRows = HashMap<(Arc<str>, i64), HashMap<Box<str>, bool>>;

/// A recorded transaction whose outcome is on its way to the sinks.
struct Unsettled {
    cc_num: Box<str>,
    /// A label was applied since it was recorded.
    relabelled: bool,
}

/// What a stored batch settles ([`History::settle`]).
#[derive(Debug, Default)]
pub struct Settlement {
    /// Labels the stored outcomes may not show.
    pub labels: Vec<Settled>,
    /// Fraud marks of the stored transactions' tiles, held back until now.
    pub tiles: Vec<TileLabel>,
}

/// A label its stored outcome does not show yet: a label applied while
/// the outcome was on its way ([`History::settle`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    pub label: LabelRecord,
    /// The transaction's time (Unix seconds): where its outcome is stored.
    pub unix_time: i64,
}

/// One row's inputs, borrowed from the batch.
struct Row<'a> {
    cc_num: &'a str,
    trans_num: &'a str,
    merchant: Option<&'a str>,
    current: Current,
}

impl History {
    /// A history kept in memory only, holding at most `max_cards` cards.
    pub fn new(max_cards: NonZeroUsize) -> Self {
        Self::build(max_cards, None)
    }

    /// A history over a durable `store`: cards it does not hold are
    /// reloaded, merchant tiles are read from it.
    pub fn with_store(max_cards: NonZeroUsize, store: Arc<dyn Store>) -> Self {
        Self::build(max_cards, Some(store))
    }

    fn build(max_cards: NonZeroUsize, store: Option<Arc<dyn Store>>) -> Self {
        let table = table();
        let pending = match store {
            Some(_) => lru::LruCache::new(max_cards),
            // Nowhere else to find them: kept until their transaction comes,
            // as many as cards are (the oldest pushed out first, counted).
            None => lru::LruCache::new(max_cards),
        };
        Self {
            table,
            card_windows: table.card_windows(),
            merchant_windows: table.merchant_windows(),
            max_unsettled: max_cards.get().saturating_mul(8),
            state: Mutex::new(State {
                cards: lru::LruCache::new(max_cards),
                merchants: Merchants::default(),
                pending,
                newest_day: i64::MIN,
                // Bounded (`max_unsettled`), allocated as it fills.
                unsettled: lru::LruCache::unbounded(),
                recheck_from: None,
                found_pending: Vec::new(),
                held_marks: HashMap::new(),
            }),
            stats: HistoryStats::default(),
            turns: Arc::default(),
            store,
            labels: OnceLock::new(),
        }
    }

    /// From now on ingest waits, at most `max_wait` a batch, for the labels
    /// stream, whose progress the Kafka labels consumer reports through
    /// [`Self::labels_assigned`] and [`Self::labels_seen`]; a partition read
    /// to its end and silent for `idle` has nothing earlier to deliver
    /// ([`progress`]).
    pub fn follow_labels(&self, max_wait: std::time::Duration, idle: std::time::Duration) {
        self.labels.get_or_init(|| LabelsProgress::new(max_wait, idle));
    }

    /// The labels consumer's partitions changed (empty: no labels topic).
    pub fn labels_assigned(&self, partitions: &[i32]) {
        if let Some(progress) = self.labels.get() {
            progress.assigned(partitions);
            self.labels_recovered(progress);
        }
    }

    /// Labels applied and stored, unreadable values and partition ends, in
    /// the order read.
    pub fn labels_seen(&self, seen: &[Seen]) {
        if let Some(progress) = self.labels.get() {
            progress.applied(seen);
            self.labels_recovered(progress);
        }
    }

    /// The labels consumer stopped (shutdown): batches waiting for it give up.
    pub fn labels_stopped(&self) {
        if let Some(progress) = self.labels.get() {
            progress.stop();
        }
    }

    fn labels_recovered(&self, progress: &LabelsProgress) {
        if progress.take_recovered() {
            self.stats.labels_stalled.store(0, Ordering::Relaxed);
            tracing::info!("the labels stream caught up: batches wait for it again");
        }
    }

    /// Every label reported before the returned time (Unix seconds) is
    /// applied here ([`LabelsProgress::applied_through`]); i64::MAX when
    /// this instance does not follow a labels stream.
    pub fn labels_applied_through(&self) -> i64 {
        self.labels.get().map_or(i64::MAX, LabelsProgress::applied_through)
    }

    /// Every label reported before the returned time and published in
    /// report order is applied here ([`LabelsProgress::applied_in_order`]);
    /// i64::MIN when this instance does not follow a labels stream.
    pub fn labels_applied_in_order(&self) -> i64 {
        self.labels.get().map_or(i64::MIN, LabelsProgress::applied_in_order)
    }

    /// Waits, bounded, until the labels stream has delivered every label
    /// that can count in the tiles a transaction at `unix_time` reads:
    /// those reported before its day began (its newest tile's final time).
    fn wait_for_labels(&self, unix_time: i64) -> Result<(), StoreError> {
        let Some(progress) = self.labels.get() else { return Ok(()) };
        let needed = day_of(unix_time) * DAY;
        let waited = progress.wait_for(needed);
        self.labels_recovered(progress);
        match waited {
            Ok(Waited::Delivered { waited }) if !waited.is_zero() => {
                self.stats.labels_waits.fetch_add(1, Ordering::Relaxed);
                let ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
                self.stats.labels_wait_ms.fetch_add(ms, Ordering::Relaxed);
            }
            Ok(Waited::Stalled) => {
                self.stats.labels_stalls.fetch_add(1, Ordering::Relaxed);
                self.stats.labels_stalled.store(1, Ordering::Relaxed);
                tracing::warn!(
                    needed,
                    "the labels stream has not delivered the labels reported before {needed} (Unix s) within \
                     history.labels_wait_ms: scoring goes on without waiting until it catches up, and merchant \
                     risk may miss labels meanwhile"
                );
            }
            Ok(_) => {}
            Err(e) => return Err(StoreError(format!("{e}: shutting down"))),
        }
        Ok(())
    }

    /// The next batch's place in the order of history updates
    /// ([`order`]): take it when the batch is dispatched.
    pub fn turn(&self) -> order::Turn {
        self.turns.turn()
    }

    /// Keeps `label` pending for its transaction, counting one pushed out.
    fn pend(&self, state: &mut State, l: &LabelRecord, label: Label, from_stream: bool) {
        self.note_pending(keep_pending(&mut state.pending, &l.cc_num, &l.trans_num, label, from_stream));
    }

    /// Counts a pending label pushed out of memory ([`keep_pending`]).
    fn note_pending(&self, pushed_out: bool) {
        if pushed_out {
            self.stats.labels_pending_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> &HistoryStats {
        &self.stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the cards held (they are reloaded from the store when next
    /// seen), except those with transactions not stored yet: called when
    /// Kafka assigns partitions, whose cards another instance may have
    /// changed since this one last held them. Their previous owners applied
    /// every label reported before `applied_before` (Unix seconds; i64::MIN
    /// when unknown): the pending labels reported since are looked for
    /// again ([`Self::recheck_pending`]).
    pub fn forget_cards(&self, applied_before: i64) {
        if self.store.is_none() {
            return;
        }
        let mut state = self.lock();
        // A card with transactions still on their way to the store is
        // kept: reloaded now, it would lack them (a batch in flight across
        // a rebalance goes on to its history step and its store).
        let in_flight: HashSet<Box<str>> = state.unsettled.iter().map(|(_, u)| u.cc_num.clone()).collect();
        let forget: Vec<Box<str>> =
            state.cards.iter().map(|(k, _)| k.clone()).filter(|k| !in_flight.contains(k)).collect();
        for cc_num in forget {
            if let Some(card) = state.cards.pop(&cc_num) {
                self.stats.events.fetch_sub(card.len() as u64, Ordering::Relaxed);
            }
        }
        if !state.pending.is_empty() {
            // A day of margin: labels published a little out of report
            // order (a producer's clock, a file of yesterday's reports).
            let from = applied_before.saturating_sub(RECHECK_MARGIN_SECS);
            state.recheck_from = Some(state.recheck_from.map_or(from, |f| f.min(from)));
        }
        self.publish(&state);
    }

    /// After partitions were assigned: a label kept pending here (its
    /// transaction was not stored when it came) may meanwhile have had its
    /// transaction stored by the partition's previous owner, which died
    /// before it got the label. Nobody else would ever mark it in its
    /// merchant tile or show it on the outcome, so such a label is looked
    /// for once more, before the next tiles are read. Only those reported
    /// since the previous owners' labels progress: they applied every
    /// earlier one themselves (on their stored transaction, or on recording
    /// it). Looking for every pending label held ingest for minutes after
    /// a kill -9 under a backlog, when tens of thousands were pending
    /// (docs/performance.md, "The soak").
    fn recheck_pending(&self, store: &dyn Store) -> Result<(), StoreError> {
        let pending: Vec<(String, String, card::Reports)> = {
            let mut state = self.lock();
            let Some(from) = state.recheck_from.take() else { return Ok(()) };
            state
                .pending
                .iter()
                .filter(|(_, r)| r.local || r.newest().is_some_and(|l| l.reported_at >= from))
                .map(|((c, t), r)| (c.to_string(), t.to_string(), r.clone()))
                .collect()
        };
        if pending.is_empty() {
            return Ok(());
        }
        self.stats.labels_rechecked.fetch_add(pending.len() as u64, Ordering::Relaxed);
        let asked: Vec<(&str, &str)> = pending.iter().map(|(c, t, _)| (c.as_str(), t.as_str())).collect();
        let found = store.find(&asked)?;
        let delay = self.table.label_delay_days;
        let mut tile_labels = Vec::new();
        let mut state = self.lock();
        for ((cc_num, trans_num, reports), found) in pending.into_iter().zip(found) {
            let Some(Found { unix_time, merchant }) = found else { continue };
            let Some(label) = reports.newest().cloned() else { continue };
            state.pending.pop(&(cc_num.as_str().into(), trans_num.as_str().into()));
            let day = day_of(unix_time);
            let tile = reports.newest_on_time(day, delay).cloned();
            if let (Some(m), Some(tile)) = (merchant.filter(|m| !m.is_empty()), tile) {
                let merchant = state.merchants.intern(&m);
                tile_labels.push(TileLabel {
                    cc_num: cc_num.clone(),
                    trans_num: trans_num.clone(),
                    merchant,
                    day,
                    label: tile,
                });
            }
            let record = LabelRecord {
                trans_num,
                cc_num,
                is_fraud: label.is_fraud,
                reported_at: Some(label.reported_at),
                decided_by: label.by.as_deref().map(str::to_string),
            };
            state.found_pending.push(Settled { label: record, unix_time });
        }
        self.publish(&state);
        drop(state);
        if !tile_labels.is_empty() {
            store.write_tile_labels(&tile_labels)?;
        }
        Ok(())
    }

    fn longest_card_secs(&self) -> i64 {
        *self.card_windows.last().expect("card windows") * DAY
    }

    fn longest_merchant_days(&self) -> i64 {
        *self.merchant_windows.last().expect("merchant windows")
    }

    /// The history features of every row of a valid, conformed batch.
    /// With a `turn` (the Kafka pipeline), tiles are read once the earlier
    /// batches holding their days are stored ([`order`]).
    pub fn compute(
        &self,
        batch: &RecordBatch,
        features: &Features,
        mode: Use,
        turn: Option<&order::Turn>,
    ) -> Result<HistoryColumns, StoreError> {
        let text = |name| batch.column_by_name(name).expect("conformed batch").as_string::<i32>();
        let number = |name| batch.column_by_name(name).expect("conformed batch").as_primitive::<Float64Type>();
        let (cc_num, trans_num, merchant) = (text(column::cc_num), text(column::trans_num), text(column::merchant));
        let (amt, merch_lat, merch_long) = (number(column::amt), number(column::merch_lat), number(column::merch_long));
        let rows: Vec<Row> = (0..batch.num_rows())
            .map(|i| Row {
                cc_num: cc_num.value(i),
                trans_num: trans_num.value(i),
                merchant: merchant.is_valid(i).then(|| merchant.value(i)).filter(|m| !m.is_empty()),
                current: Current {
                    unix_time: features.unix_time.value(i),
                    amt: amt.value(i),
                    merch_lat: merch_lat.value(i),
                    merch_long: merch_long.value(i),
                },
            })
            .collect();
        if mode == Use::Update {
            if let Some(newest) = rows.iter().map(|r| r.current.unix_time).max() {
                self.wait_for_labels(newest)?;
            }
        }
        // Read mode: cards loaded for this batch only (what-if scoring
        // changes nothing, the cache included).
        let (mut loaded, read_tiles, mut tile_rows) = match &self.store {
            Some(store) => {
                if mode == Use::Update {
                    self.recheck_pending(store.as_ref())?;
                }
                self.load(store.as_ref(), &rows, mode, turn)?
            }
            None => (HashMap::new(), Vec::new(), TileRows::new()),
        };
        let mut values: Vec<Vec<f64>> = vec![Vec::with_capacity(rows.len()); self.table.features.len()];
        let mut tile_labels = Vec::new();
        let mut labels = Vec::new();
        let mut state = self.lock();
        if mode == Use::Update {
            // Under the same lock as the rows: a `forget_cards` in between
            // would leave them without their history.
            for (cc_num, card) in loaded.drain() {
                self.keep_loaded(&mut state, cc_num, card);
            }
        }
        // What-if scoring reads tiles for this batch only: read outside the
        // order of ingest, they may not be final yet, and keeping them
        // would change the history it must leave alone.
        let overlay = (!read_tiles.is_empty()).then(|| state.merchants.overlay(&read_tiles));
        for row in &rows {
            let card = state.cards.peek(row.cc_num).or_else(|| loaded.get(row.cc_num));
            let merchants = match (&overlay, row.merchant) {
                (Some(o), Some(m)) if o.knows(m) => o,
                _ => &state.merchants,
            };
            self.row_features(card, merchants, row, &mut values);
            if mode == Use::Update {
                labels.push(self.record(&mut state, row, &mut tile_labels, &mut tile_rows));
            }
        }
        self.publish(&state);
        drop(state);
        if let (Some(_), Some(turn), Use::Update) = (&self.store, turn, mode) {
            if let Some(oldest) = rows.iter().map(|r| r.current.unix_time).min() {
                turn.recorded(day_of(oldest));
            }
        }
        if let (Some(store), false) = (&self.store, tile_labels.is_empty()) {
            store.write_tile_labels(&tile_labels)?;
        }
        let columns = self.table.names().zip(values).map(|(name, v)| (name, Arc::new(Float64Array::from(v)))).collect();
        Ok(HistoryColumns { columns, labels })
    }

    /// Reads from the store the cards and merchant tiles the rows need and
    /// this process does not hold: the cards are returned; the tiles are
    /// kept for ingest (with the rows of those the rows may fall in),
    /// returned for what-if scoring.
    #[allow(clippy::type_complexity)]
    fn load<'r>(
        &self,
        store: &dyn Store,
        rows: &[Row<'r>],
        mode: Use,
        turn: Option<&order::Turn>,
    ) -> Result<(HashMap<&'r str, Card>, Vec<(Arc<str>, i64, merchant::Tile)>, TileRows), StoreError> {
        let wait = if mode == Use::Read { Wait::For(READ_WAIT) } else { Wait::UntilShutdown };
        let longest = self.longest_card_secs();
        let (cards, tiles) = {
            let state = self.lock();
            // The first transaction time of each card not held.
            let mut cards: HashMap<&str, i64> = HashMap::new();
            let mut tiles: HashSet<(Arc<str>, i64)> = HashSet::new();
            for row in rows {
                if !state.cards.contains(row.cc_num) {
                    let first = cards.entry(row.cc_num).or_insert(i64::MAX);
                    *first = (*first).min(row.current.unix_time);
                }
                let Some(m) = row.merchant else { continue };
                let day = day_of(row.current.unix_time);
                for d in read_days(day, self.longest_merchant_days(), self.table.label_delay_days) {
                    if !state.merchants.holds(m, d) {
                        tiles.insert((m.into(), d));
                    }
                }
            }
            (cards.into_iter().collect::<Vec<_>>(), tiles.into_iter().collect::<Vec<_>>())
        };
        let requests: Vec<CardRequest> =
            cards.iter().map(|(cc_num, first)| CardRequest { cc_num, since: first - longest, first: *first }).collect();
        let stored_cards = if cards.is_empty() { Vec::new() } else { store.cards(&requests, wait)? };
        if let (Some(turn), Some(newest)) = (turn, tiles.iter().map(|(_, day)| *day).max()) {
            turn.wait_stored(newest);
        }
        // Ingest records the rows after reading: those of a day whose tile
        // is read here are counted in it unless it holds them already.
        let rows_from = match mode {
            Use::Update => rows.iter().map(|r| day_of(r.current.unix_time)).min().unwrap_or(i64::MAX),
            Use::Read => i64::MAX,
        };
        let stored_tiles = if tiles.is_empty() { Vec::new() } else { store.tiles(&tiles, rows_from, wait)? };
        let mut state = self.lock();
        let mut read_tiles = Vec::new();
        let mut tile_rows = TileRows::new();
        for ((merchant, day), stored) in tiles.into_iter().zip(stored_tiles) {
            if mode == Use::Read {
                read_tiles.push((merchant, day, stored.tile));
                continue;
            }
            let merchant = state.merchants.intern(&merchant);
            state.merchants.set_tile(&merchant, day, stored.tile);
            if let Some(rows) = stored.rows {
                tile_rows.insert((merchant, day), rows);
            }
        }
        let mut kept = HashMap::new();
        for ((cc_num, _), stored) in cards.into_iter().zip(stored_cards) {
            if !stored.events.is_empty() {
                self.stats.loaded_cards.fetch_add(1, Ordering::Relaxed);
            }
            let card = self.card_from(&mut state, cc_num, stored);
            kept.insert(cc_num, card);
        }
        self.publish(&state);
        Ok((kept, read_tiles, tile_rows))
    }

    /// A card rebuilt from the store: its events with their labels; labels
    /// of transactions not stored yet wait in `pending`.
    fn card_from(&self, state: &mut State, cc_num: &str, stored: StoredCard) -> Card {
        let mut card = Card::default();
        for e in stored.events {
            let merchant = e.merchant.filter(|m| !m.is_empty()).map(|m| state.merchants.intern(&m));
            card.insert(Event {
                unix_time: e.unix_time,
                trans_num: e.trans_num.into(),
                cents: card::cents(e.amt),
                merch_lat: e.merch_lat,
                merch_long: e.merch_long,
                merchant,
                label: None,
                tile: None,
            });
        }
        // Every report the store has (all of them, or only the newest of
        // labels stored before reports were kept): the outcome shows the
        // newest, merchant risk counts the newest on time.
        let delay = self.table.label_delay_days;
        for (trans_num, label) in stored.labels {
            match card.find_mut(&trans_num) {
                Some(event) => {
                    let newer = |held: &Option<Label>| held.as_ref().is_none_or(|h| h.order() < label.order());
                    if on_time(&label, day_of(event.unix_time), delay) && newer(&event.tile) {
                        event.tile = Some(label.clone());
                    }
                    if newer(&event.label) {
                        event.label = Some(label);
                    }
                }
                // Stored, so every instance can read it: as from the stream.
                None => self.note_pending(keep_pending(&mut state.pending, cc_num, &trans_num, label, true)),
            }
        }
        // Not pruned: the store returned what the rows from `first` on need
        // (and events stored later, which later re-read rows need).
        card
    }

    /// Caches a card loaded from the store; one recorded meanwhile (a
    /// concurrent DoPut) gets the loaded events too (inserting is
    /// idempotent).
    fn keep_loaded(&self, state: &mut State, cc_num: &str, card: Card) {
        match state.cards.get_mut(cc_num) {
            Some(held) => {
                let before = held.len();
                for e in card.into_events() {
                    held.insert(e);
                }
                self.stats.events.fetch_add((held.len() - before) as u64, Ordering::Relaxed);
            }
            None => {
                self.stats.events.fetch_add(card.len() as u64, Ordering::Relaxed);
                self.push_card(state, cc_num, card);
            }
        }
    }

    /// Puts a card in the cache, counting the one it evicts.
    fn push_card(&self, state: &mut State, cc_num: &str, card: Card) {
        if let Some((_, evicted)) = state.cards.push(cc_num.into(), card) {
            self.stats.evicted_cards.fetch_add(1, Ordering::Relaxed);
            self.stats.events.fetch_sub(evicted.len() as u64, Ordering::Relaxed);
        }
    }

    fn row_features(&self, card: Option<&Card>, merchants: &Merchants, row: &Row, out: &mut [Vec<f64>]) {
        let empty = Card::default();
        let card = card.unwrap_or(&empty).features(&row.current, &self.card_windows);
        let day = day_of(row.current.unix_time);
        let merchant = merchants.features(row.merchant, day, &self.merchant_windows, self.table.label_delay_days);
        let longest = self.longest_card_secs();
        for (d, out) in self.table.features.iter().zip(out) {
            let value = match (d.entity, d.aggregate) {
                (Entity::Card, Aggregate::Count) => card.windows[self.card_index(d.days)].count as f64,
                (Entity::Card, Aggregate::MeanAmount) => card.windows[self.card_index(d.days)].mean(),
                (Entity::Card, Aggregate::AmountRatio) => {
                    let mean = card.windows[self.card_index(d.days)].mean();
                    if mean > 0.0 {
                        row.current.amt / mean
                    } else {
                        -1.0
                    }
                }
                (Entity::Card, Aggregate::SecsSincePrev) => {
                    card.previous.map_or(longest + 1, |(secs, _)| secs.min(longest)) as f64
                }
                (Entity::Card, Aggregate::KmFromPrev) => card.previous.map_or(-1.0, |(_, km)| km),
                (Entity::Merchant, Aggregate::Count) => merchant[self.merchant_index(d.days)].transactions as f64,
                (Entity::Merchant, Aggregate::FraudRate) => merchant[self.merchant_index(d.days)].fraud_rate(),
                (entity, aggregate) => unreachable!("{entity:?} {aggregate:?}: checked by the table's unit test"),
            };
            out.push(value);
        }
    }

    fn card_index(&self, days: i64) -> usize {
        self.card_windows.binary_search(&days).expect("a card window")
    }

    fn merchant_index(&self, days: i64) -> usize {
        self.merchant_windows.binary_search(&days).expect("a merchant window")
    }

    /// Adds a transaction to its card and, in memory, the first time, to
    /// its merchant's tile (with a store, the stored outcome is the tile's
    /// row: see [`Self::count_in_tile`]); applies a label that was waiting
    /// for it. Returns the transaction's label, if it has one now.
    fn record(
        &self,
        state: &mut State,
        row: &Row,
        tile_labels: &mut Vec<TileLabel>,
        tile_rows: &mut TileRows,
    ) -> Option<Label> {
        let merchant = row.merchant.map(|m| state.merchants.intern(m));
        // Checked first: the key's two allocations are a cost on every
        // record, and labels almost never wait.
        let reports =
            if state.pending.is_empty() { None } else { state.pending.pop(&(row.cc_num.into(), row.trans_num.into())) };
        let day = day_of(row.current.unix_time);
        let delay = self.table.label_delay_days;
        let label = reports.as_ref().and_then(|r| r.newest().cloned());
        let event = Event {
            unix_time: row.current.unix_time,
            trans_num: row.trans_num.into(),
            cents: card::cents(row.current.amt),
            merch_lat: row.current.merch_lat,
            merch_long: row.current.merch_long,
            merchant: merchant.clone(),
            tile: reports.as_ref().and_then(|r| r.newest_on_time(day, delay).cloned()),
            label: label.clone(),
        };
        if !state.cards.contains(row.cc_num) {
            self.push_card(state, row.cc_num, Card::default());
        }
        state
            .unsettled
            .get_or_insert(row.trans_num.into(), || Unsettled { cc_num: row.cc_num.into(), relabelled: false });
        if state.unsettled.len() > self.max_unsettled {
            state.unsettled.pop_lru();
        }
        let card = state.cards.get_mut(row.cc_num).expect("just pushed");
        let before = card.len();
        let tile = event.tile.clone();
        if !card.insert(event) {
            // Redelivered (stored before, by this instance or by a previous
            // owner of its partition): the reports that waited for it apply
            // to the one held, its tile included; then its label is the
            // card's.
            for label in reports.iter().flat_map(card::Reports::iter) {
                let record = LabelRecord {
                    trans_num: row.trans_num.to_string(),
                    cc_num: row.cc_num.to_string(),
                    is_fraud: label.is_fraud,
                    reported_at: Some(label.reported_at),
                    decided_by: label.by.as_deref().map(str::to_string),
                };
                self.apply_held(state, &record, label.clone(), tile_labels);
            }
            let event = state.cards.peek(row.cc_num).expect("held").find(row.trans_num);
            let (label, tile) = event.map(|e| (e.label.clone(), e.tile.clone())).unwrap_or_default();
            if let Some(m) = &merchant {
                self.count_in_tile(state, row, m, tile, false, tile_rows, tile_labels);
            }
            return label;
        }
        card.prune_before(row.current.unix_time - self.longest_card_secs());
        let after = card.len();
        self.stats.events.fetch_add(after as u64, Ordering::Relaxed);
        self.stats.events.fetch_sub(before as u64, Ordering::Relaxed);
        if let Some(m) = &merchant {
            self.count_in_tile(state, row, m, tile, true, tile_rows, tile_labels);
        }
        if day > state.newest_day {
            state.newest_day = day;
            // Kept a little longer than the newest transaction needs: the
            // Kafka source lets partitions run up to a day apart, so the
            // next row may be a day older (source/align.rs).
            state.merchants.prune(day - delay - self.longest_merchant_days() - PRUNE_MARGIN_DAYS);
        }
        label
    }

    /// A recorded transaction in its merchant's tile, with `tile` its
    /// newest label on time; `new`: the card did not hold it.
    ///
    /// In memory the tiles are the history's own: a new transaction counts.
    /// With a store, the transaction's stored row is its place in the tile,
    /// and its fraud mark is written once the outcome is stored
    /// (`State::held_marks`; again for one read again, whose mark a killed
    /// writer may not have written). A tile already read from the store (a
    /// batch spanning over a week, or a late record) counts it here too, so
    /// the rows after it see it, unless the tile as read holds it: a
    /// transaction stored by a writer that died before its commit is read
    /// again, in the tile or not, in its card or not (`tile_rows`, the rows
    /// of the tiles this batch read; for a tile read before, whether the
    /// card held it tells).
    #[allow(clippy::too_many_arguments)] // the row's parts and the batch's two accumulators
    fn count_in_tile(
        &self,
        state: &mut State,
        row: &Row,
        merchant: &Arc<str>,
        tile: Option<Label>,
        new: bool,
        tile_rows: &mut TileRows,
        tile_labels: &mut Vec<TileLabel>,
    ) {
        let (day, delay) = (day_of(row.current.unix_time), self.table.label_delay_days);
        let fraud = counts(tile.as_ref(), day, delay);
        if self.store.is_none() {
            if new {
                state.merchants.add_transaction(merchant, day);
                if fraud {
                    state.merchants.adjust_frauds(merchant, day, 1);
                }
            }
            return;
        }
        if state.merchants.holds(merchant, day) {
            let read = tile_rows.get_mut(&(merchant.clone(), day)).map(|rows| rows.insert(row.trans_num.into(), fraud));
            let counted = match read {
                Some(as_read) => as_read,
                None if new => None,
                None => Some(fraud),
            };
            match counted {
                None => {
                    state.merchants.add_transaction(merchant, day);
                    if fraud {
                        state.merchants.adjust_frauds(merchant, day, 1);
                    }
                }
                Some(was) if was != fraud => state.merchants.adjust_frauds(merchant, day, if fraud { 1 } else { -1 }),
                Some(_) => {}
            }
        }
        if let Some(label) = tile {
            let mark = TileLabel {
                cc_num: row.cc_num.into(),
                trans_num: row.trans_num.into(),
                merchant: merchant.clone(),
                day,
                label,
            };
            if let Some(early) = self.hold_mark(&mut state.held_marks, mark) {
                tile_labels.push(early);
            }
        }
    }

    /// Holds a tile's fraud mark until the outcome is stored; returns it
    /// to write now when too many are held already.
    fn hold_mark(&self, held: &mut HashMap<Box<str>, TileLabel>, mark: TileLabel) -> Option<TileLabel> {
        if held.len() >= self.max_unsettled && !held.contains_key(mark.trans_num.as_str()) {
            self.stats.marks_early.fetch_add(1, Ordering::Relaxed);
            return Some(mark);
        }
        held.insert(mark.trans_num.as_str().into(), mark);
        self.stats.marks_held.store(held.len() as u64, Ordering::Relaxed);
        None
    }

    /// Applies labels in order: the newest report of a transaction wins; a
    /// label counts in merchant risk only when reported before its tile is
    /// final ([`merchant::counts`]). A label without `reported_at` was
    /// reported when `received` (Unix seconds). With a store, the
    /// transaction of a card not held is looked up there. The labels came
    /// to this process only (Flight, HTTP without Kafka).
    pub fn apply_labels(&self, labels: &[LabelRecord], received: i64) -> Result<Vec<Applied>, StoreError> {
        self.apply_labels_from(labels, received, false)
    }

    /// [`Self::apply_labels`] for labels of the stream every instance
    /// reads (the Kafka labels topic).
    pub fn apply_stream_labels(&self, labels: &[LabelRecord], received: i64) -> Result<Vec<Applied>, StoreError> {
        self.apply_labels_from(labels, received, true)
    }

    fn apply_labels_from(
        &self,
        labels: &[LabelRecord],
        received: i64,
        from_stream: bool,
    ) -> Result<Vec<Applied>, StoreError> {
        let delay = self.table.label_delay_days;
        let mut tile_labels = Vec::new();
        // None: the card or its transaction is not held; look it up in the store.
        let mut applied: Vec<Option<Applied>> = {
            let mut state = self.lock();
            labels
                .iter()
                .map(|l| {
                    self.stats.labels.fetch_add(1, Ordering::Relaxed);
                    let label = label_of(l, received);
                    match self.apply_held(&mut state, l, label.clone(), &mut tile_labels) {
                        Some(applied) => Some(applied),
                        // Older than the card's windows (pruned), or not
                        // seen: the store knows the first kind.
                        None if self.store.is_some() => None,
                        None => {
                            self.pend(&mut state, l, label, from_stream);
                            Some(Applied::Pending)
                        }
                    }
                })
                .collect()
        };
        if let Some(store) = &self.store {
            let asked: Vec<(&str, &str)> = labels
                .iter()
                .zip(&applied)
                .filter(|(_, a)| a.is_none())
                .map(|(l, _)| (l.cc_num.as_str(), l.trans_num.as_str()))
                .collect();
            let mut found = if asked.is_empty() { Vec::new() } else { store.find(&asked)? }.into_iter();
            let mut state = self.lock();
            for (l, slot) in labels.iter().zip(&mut applied).filter(|(_, a)| a.is_none()) {
                let label = label_of(l, received);
                let found = found.next().flatten();
                // Recorded while the store was asked (its outcome not stored
                // yet): applied as held, or it would wait for ever.
                if let Some(applied) = self.apply_held(&mut state, l, label.clone(), &mut tile_labels) {
                    *slot = Some(applied);
                    continue;
                }
                *slot = Some(match found {
                    Some(Found { unix_time, merchant }) => {
                        let day = day_of(unix_time);
                        if !on_time(&label, day, delay) {
                            self.stats.labels_late.fetch_add(1, Ordering::Relaxed);
                        }
                        // Reports kept pending here while it was not stored
                        // (its owner stored it since) are older ones: a
                        // partition keeps a card's reports in order. Left
                        // pending, a recheck after a rebalance would show
                        // the older over this one; an on-time one among
                        // them still counts in the tile.
                        let key = (l.cc_num.as_str().into(), l.trans_num.as_str().into());
                        let mut reports = state.pending.pop(&key).unwrap_or_default();
                        reports.add(label);
                        let tile = reports.newest_on_time(day, delay).cloned();
                        if let (Some(m), Some(tile)) = (merchant.filter(|m| !m.is_empty()), tile) {
                            let merchant = state.merchants.intern(&m);
                            tile_labels.push(TileLabel {
                                cc_num: l.cc_num.clone(),
                                trans_num: l.trans_num.clone(),
                                merchant,
                                day,
                                label: tile,
                            });
                        }
                        Applied::Current { unix_time }
                    }
                    None => {
                        self.pend(&mut state, l, label, from_stream);
                        Applied::Pending
                    }
                });
            }
            self.publish(&state);
            drop(state);
            if !tile_labels.is_empty() {
                store.write_tile_labels(&tile_labels)?;
            }
        } else {
            self.publish(&self.lock());
        }
        Ok(applied.into_iter().map(|a| a.expect("every label classified")).collect())
    }

    /// Applies a label to its transaction if this process holds it: the
    /// newest report wins; an on-time one sets its merchant tile (in memory,
    /// or through `tile_labels` for the store). None when not held.
    fn apply_held(
        &self,
        state: &mut State,
        l: &LabelRecord,
        label: Label,
        tile_labels: &mut Vec<TileLabel>,
    ) -> Option<Applied> {
        let delay = self.table.label_delay_days;
        let State { cards, merchants, unsettled, held_marks, .. } = state;
        let event = cards.get_mut(l.cc_num.as_str())?.find_mut(&l.trans_num)?;
        if event.label.as_ref().is_some_and(|old| old.order() > label.order()) {
            return Some(Applied::Superseded);
        }
        event.label = Some(label.clone());
        if let Some(u) = unsettled.peek_mut(l.trans_num.as_str()) {
            u.relabelled = true;
        }
        let day = day_of(event.unix_time);
        if !on_time(&label, day, delay) {
            self.stats.labels_late.fetch_add(1, Ordering::Relaxed);
        } else if event.tile.as_ref().is_none_or(|old| old.order() <= label.order()) {
            let was = counts(event.tile.as_ref(), day, delay);
            event.tile = Some(label.clone());
            match (&event.merchant, &self.store) {
                (Some(m), None) if was != l.is_fraud => {
                    merchants.adjust_frauds(m, day, if l.is_fraud { 1 } else { -1 })
                }
                (Some(m), Some(_)) => {
                    let mark = TileLabel {
                        cc_num: l.cc_num.clone(),
                        trans_num: l.trans_num.clone(),
                        merchant: m.clone(),
                        day,
                        label,
                    };
                    // Not stored yet: marked once it is (`State::held_marks`).
                    let unstored =
                        unsettled.contains(l.trans_num.as_str()) || held_marks.contains_key(l.trans_num.as_str());
                    match unstored {
                        true => tile_labels.extend(self.hold_mark(held_marks, mark)),
                        false => tile_labels.push(mark),
                    }
                }
                _ => {}
            }
        }
        Some(Applied::Current { unix_time: event.unix_time })
    }

    /// The outcomes of these transactions are stored: returns the labels
    /// applied since they were recorded, which the stored outcomes may not
    /// show (a label write that reached a sink before the outcome did is
    /// overwritten by it), and their merchant tiles' fraud marks, held
    /// back until now. The caller writes both, after the outcome
    /// (docs/architecture.md, "History": labels that settle), and before
    /// the batch counts as stored.
    pub fn settle<'a>(&self, trans_nums: impl Iterator<Item = &'a str>) -> Settlement {
        let mut state = self.lock();
        let mut settled = std::mem::take(&mut state.found_pending);
        let mut tiles = Vec::new();
        for trans_num in trans_nums {
            // Popped at the first store: a batch scored again after a
            // failed model recorded its rows twice but is stored once.
            tiles.extend(state.held_marks.remove(trans_num));
            let Some(Unsettled { cc_num, relabelled }) = state.unsettled.pop(trans_num) else { continue };
            if !relabelled {
                continue;
            }
            let event = state.cards.peek(&*cc_num).and_then(|card| card.find(trans_num));
            if let Some((unix_time, Some(label))) = event.map(|e| (e.unix_time, e.label.clone())) {
                settled.push(Settled {
                    label: LabelRecord {
                        trans_num: trans_num.to_string(),
                        cc_num: cc_num.to_string(),
                        is_fraud: label.is_fraud,
                        reported_at: Some(label.reported_at),
                        decided_by: label.by.as_deref().map(str::to_string),
                    },
                    unix_time,
                });
            }
        }
        if !tiles.is_empty() {
            self.publish(&state);
        }
        Settlement { labels: settled, tiles }
    }

    /// Writes merchant tiles' fraud marks held back until their outcomes
    /// were stored ([`Self::settle`]); blocking, like every store call.
    pub fn write_tiles(&self, tiles: &[TileLabel]) -> Result<(), StoreError> {
        match (&self.store, tiles.is_empty()) {
            (Some(store), false) => store.write_tile_labels(tiles),
            _ => Ok(()),
        }
    }

    fn publish(&self, state: &State) {
        self.stats.cards.store(state.cards.len() as u64, Ordering::Relaxed);
        self.stats.merchants.store(state.merchants.len() as u64, Ordering::Relaxed);
        self.stats.labels_pending.store(state.pending.len() as u64, Ordering::Relaxed);
        self.stats.marks_held.store(state.held_marks.len() as u64, Ordering::Relaxed);
    }
}

/// The history's label of a received one (reported when `received`, Unix
/// seconds, if it does not say).
fn label_of(l: &LabelRecord, received: i64) -> Label {
    Label { is_fraud: l.is_fraud, reported_at: l.reported_at_or(received), by: l.decided_by.as_deref().map(Arc::from) }
}

/// Keeps a label for a transaction not seen yet, beside the other reports
/// of it that wait.
/// Returns whether the least recently used one was pushed out for it.
fn keep_pending(
    pending: &mut lru::LruCache<(Box<str>, Box<str>), card::Reports>,
    cc_num: &str,
    trans_num: &str,
    label: Label,
    from_stream: bool,
) -> bool {
    let key: (Box<str>, Box<str>) = (cc_num.into(), trans_num.into());
    let pushed_out = pending.len() == pending.cap().get() && !pending.contains(&key);
    let reports = pending.get_or_insert_mut(key, card::Reports::default);
    reports.add(label);
    reports.local |= !from_stream;
    pushed_out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Transaction;

    /// A card number (digits) named by a letter.
    fn card(name: &str) -> String {
        name.bytes().map(|b| b.to_string()).collect()
    }

    fn tx(name: &str, n: &str, t: i64, amt: f64, merchant: &str) -> Transaction {
        Transaction {
            cc_num: card(name),
            trans_num: n.into(),
            unix_time: Some(t),
            amt,
            merchant: Some(merchant.into()),
            ..crate::simulate::Simulator::new(crate::simulate::SimConfig::default()).next().unwrap()
        }
    }

    fn run(h: &History, txs: &[Transaction], mode: Use) -> HistoryColumns {
        let batch = crate::record::to_batch(txs);
        let batch = crate::record::conform::conform(&batch).unwrap();
        let features = crate::features::derive(&batch);
        assert!(features.invalid.is_empty(), "{:?}", features.invalid);
        h.compute(&batch, &features, mode, None).unwrap()
    }

    fn value(cols: &HistoryColumns, name: &str, row: usize) -> f64 {
        cols.column(name).unwrap().as_primitive::<Float64Type>().value(row)
    }

    fn history() -> History {
        History::new(NonZeroUsize::new(1000).unwrap())
    }

    #[test]
    fn card_features_see_earlier_rows_of_the_same_batch() {
        let h = history();
        let t = 1_700_000_000;
        let cols = run(&h, &[tx("c", "1", t, 10.0, "m"), tx("c", "2", t + 60, 30.0, "m")], Use::Update);
        assert_eq!(value(&cols, "card_tx_1d", 0), 0.0);
        assert_eq!(value(&cols, "card_secs_since_prev", 0), (30 * DAY + 1) as f64);
        assert_eq!(value(&cols, "card_km_from_prev", 0), -1.0);
        assert_eq!(value(&cols, "card_amt_ratio_30d", 0), -1.0);
        assert_eq!(value(&cols, "card_tx_1d", 1), 1.0);
        assert_eq!(value(&cols, "card_amt_mean_7d", 1), 10.0);
        assert_eq!(value(&cols, "card_amt_ratio_30d", 1), 3.0);
        assert_eq!(value(&cols, "card_secs_since_prev", 1), 60.0);
    }

    #[test]
    fn reading_changes_nothing_and_a_redelivery_gets_the_same_features() {
        let h = history();
        let t = 1_700_000_000;
        let first = [tx("c", "1", t, 10.0, "m"), tx("c", "2", t + 60, 30.0, "m")];
        run(&h, &first, Use::Read);
        assert_eq!(h.stats().events.load(Ordering::Relaxed), 0);
        let once = run(&h, &first, Use::Update);
        let twice = run(&h, &first, Use::Update);
        assert_eq!(once.columns, twice.columns);
        assert_eq!(h.stats().events.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn merchant_risk_counts_labels_reported_before_the_tile_is_final() {
        let h = history();
        let d = 20_000;
        let at = |day: i64| day * DAY + 3600;
        // Day d - 8 at the shop: two transactions, both frauds; one label
        // on time, one reported the moment the tile became final (late).
        run(&h, &[tx("a", "a1", at(d - 8), 5.0, "shop"), tx("b", "b1", at(d - 8), 5.0, "shop")], Use::Update);
        let labels = [
            LabelRecord {
                trans_num: "a1".into(),
                cc_num: card("a"),
                is_fraud: true,
                reported_at: Some(at(d - 2)),
                decided_by: None,
            },
            LabelRecord {
                trans_num: "b1".into(),
                cc_num: card("b"),
                is_fraud: true,
                reported_at: Some(d * DAY),
                decided_by: None,
            },
            LabelRecord {
                trans_num: "zz".into(),
                cc_num: card("z"),
                is_fraud: true,
                reported_at: Some(at(d - 2)),
                decided_by: None,
            },
        ];
        let current = |t| Applied::Current { unix_time: t };
        assert_eq!(h.apply_labels(&labels, 0).unwrap(), [current(at(d - 8)), current(at(d - 8)), Applied::Pending]);
        assert_eq!(h.stats().labels_late.load(Ordering::Relaxed), 1);
        let cols = run(&h, &[tx("c", "c1", at(d), 5.0, "shop")], Use::Read);
        assert_eq!(value(&cols, "merch_tx_1d", 0), 2.0);
        assert_eq!(value(&cols, "merch_fraud_rate_1d", 0), 0.5);
        assert_eq!(value(&cols, "merch_fraud_rate_30d", 0), 0.5);
        // A newer report overturns the first: genuine after all.
        let overturn = LabelRecord {
            trans_num: "a1".into(),
            cc_num: card("a"),
            is_fraud: false,
            reported_at: Some(at(d - 1)),
            decided_by: None,
        };
        h.apply_labels(std::slice::from_ref(&overturn), 0).unwrap();
        let older = LabelRecord { reported_at: Some(at(d - 3)), ..overturn };
        assert_eq!(h.apply_labels(&[older], 0).unwrap(), [Applied::Superseded]);
        let cols = run(&h, &[tx("c", "c1", at(d), 5.0, "shop")], Use::Read);
        assert_eq!(value(&cols, "merch_fraud_rate_1d", 0), 0.0);
    }

    #[test]
    fn reports_of_the_same_second_have_one_winner_whatever_their_order() {
        let d = 20_000;
        let at = d * DAY - 100;
        let report = |is_fraud, by: Option<&str>| LabelRecord {
            trans_num: "s1".into(),
            cc_num: card("s"),
            is_fraud,
            reported_at: Some(at + 3_600),
            decided_by: by.map(String::from),
        };
        let reports = [report(false, Some("bob")), report(true, None), report(true, Some("alice"))];
        let mut winners = Vec::new();
        for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2], [2, 0, 1]] {
            let h = history();
            // Before and after the transaction: the pending map decides too.
            h.apply_labels(&[reports[order[0]].clone()], 0).unwrap();
            run(&h, &[tx("s", "s1", at, 5.0, "shop")], Use::Update);
            h.apply_labels(&[reports[order[1]].clone(), reports[order[2]].clone()], 0).unwrap();
            let again = run(&h, &[tx("s", "s1", at, 5.0, "shop")], Use::Update);
            let label = again.labels[0].clone().expect("labelled");
            winners.push((label.is_fraud, label.by.as_deref().map(String::from)));
            let cols = run(&h, &[tx("t", "t1", (d + 7) * DAY, 5.0, "shop")], Use::Read);
            assert_eq!(value(&cols, "merch_fraud_rate_1d", 0), 1.0, "order {order:?}: the tile counts the fraud");
        }
        assert!(winners.windows(2).all(|w| w[0] == w[1]), "{winners:?}");
        assert!(winners[0].0, "within a second a fraud report wins: {winners:?}");
        let v = |l: &LabelRecord| card::version(l.reported_at.unwrap(), l.is_fraud, l.decided_by.as_deref());
        assert!(v(&reports[0]) < v(&reports[1]) && v(&reports[0]) < v(&reports[2]));
        assert!(v(&reports[2]) / 1_000_000 == at + 3_600, "the second stays the report's");
    }

    #[test]
    fn a_late_reversal_before_its_transaction_leaves_the_on_time_fraud_in_merchant_risk() {
        let d = 20_000;
        let at = d * DAY + 3_600;
        let report = |is_fraud, reported_at| LabelRecord {
            trans_num: "r1".into(),
            cc_num: card("r"),
            is_fraud,
            reported_at: Some(reported_at),
            decided_by: None,
        };
        // On time (a day later), then reversed after the tile is final.
        let (fraud, reversal) = (report(true, at + DAY), report(false, at + 10 * DAY));
        for labels_first in [true, false] {
            let h = history();
            if labels_first {
                assert_eq!(h.apply_labels(&[fraud.clone(), reversal.clone()], 0).unwrap(), [Applied::Pending; 2]);
            }
            run(&h, &[tx("r", "r1", at, 5.0, "shop")], Use::Update);
            if !labels_first {
                h.apply_labels(&[fraud.clone(), reversal.clone()], 0).unwrap();
            }
            let shown = run(&h, &[tx("r", "r1", at, 5.0, "shop")], Use::Update).labels[0].clone();
            assert_eq!(shown.map(|l| l.is_fraud), Some(false), "the outcome shows the newest report");
            let cols = run(&h, &[tx("s", "s1", (d + 8) * DAY, 5.0, "shop")], Use::Read);
            assert_eq!(value(&cols, "merch_fraud_rate_1d", 0), 1.0, "labels first: {labels_first}");
        }
    }

    #[test]
    fn pending_labels_without_a_store_are_bounded_and_those_pushed_out_counted() {
        let h = History::new(NonZeroUsize::new(3).unwrap());
        let labels: Vec<LabelRecord> = (0..5)
            .map(|i| LabelRecord {
                trans_num: format!("never-{i}"),
                cc_num: card("c"),
                is_fraud: true,
                reported_at: Some(100),
                decided_by: None,
            })
            .collect();
        h.apply_labels(&labels, 0).unwrap();
        // The same label again pushes nothing out.
        h.apply_labels(&labels[4..], 0).unwrap();
        assert_eq!(h.stats().labels_pending.load(Ordering::Relaxed), 3);
        assert_eq!(h.stats().labels_pending_dropped.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_pending_label_applies_when_its_transaction_arrives() {
        let h = history();
        let d = 20_000;
        let label = LabelRecord {
            trans_num: "x".into(),
            cc_num: card("c"),
            is_fraud: true,
            reported_at: Some(d * DAY),
            decided_by: None,
        };
        assert_eq!(h.apply_labels(&[label], 0).unwrap(), [Applied::Pending]);
        let arrived = [tx("c", "x", d * DAY - 10, 5.0, "shop"), tx("c", "y", d * DAY - 5, 5.0, "shop")];
        let cols = run(&h, &arrived, Use::Update);
        assert_eq!(
            cols.labels.iter().map(|l| l.as_ref().map(|l| l.is_fraud)).collect::<Vec<_>>(),
            [Some(true), None],
            "the outcome shows the label that came first"
        );
        assert_eq!(h.stats().labels_pending.load(Ordering::Relaxed), 0);
        let again = run(&h, &arrived[..1], Use::Update);
        assert_eq!(
            again.labels.iter().map(|l| l.as_ref().map(|l| l.is_fraud)).collect::<Vec<_>>(),
            [Some(true)],
            "a redelivered record keeps its label"
        );
        let cols = run(&h, &[tx("e", "e1", (d + 7) * DAY, 5.0, "shop")], Use::Read);
        assert_eq!(value(&cols, "merch_fraud_rate_1d", 0), 0.5, "one of the shop's two is a fraud");
    }

    #[test]
    fn a_label_applied_while_its_outcome_is_on_its_way_is_settled_once_stored() {
        let h = history();
        let t = 1_700_000_000;
        run(&h, &[tx("c", "1", t, 10.0, "m"), tx("c", "2", t + 60, 30.0, "m")], Use::Update);
        let label = LabelRecord {
            trans_num: "2".into(),
            cc_num: card("c"),
            is_fraud: true,
            reported_at: Some(t + 3_600),
            decided_by: Some("alice".into()),
        };
        // Applied after the history step, before the outcome is stored: the
        // outcome's write may overwrite it.
        assert_eq!(h.apply_labels(std::slice::from_ref(&label), 0).unwrap(), [Applied::Current { unix_time: t + 60 }]);
        let settled = h.settle(["1", "2"].into_iter()).labels;
        assert_eq!(settled, [Settled { label, unix_time: t + 60 }], "written again, decider included");
        assert!(h.settle(["1", "2"].into_iter()).labels.is_empty(), "once");
        // A label after the outcome was stored is written by the label's
        // own path: nothing to settle.
        let later = LabelRecord {
            trans_num: "1".into(),
            cc_num: card("c"),
            is_fraud: false,
            reported_at: Some(t + 7_200),
            decided_by: None,
        };
        h.apply_labels(&[later], 0).unwrap();
        assert!(h.settle(["1"].into_iter()).labels.is_empty());
        // A label that came before its transaction is carried by the
        // outcome itself, with its decider.
        let first = LabelRecord {
            trans_num: "3".into(),
            cc_num: card("c"),
            is_fraud: true,
            reported_at: Some(t + 100),
            decided_by: Some("bob".into()),
        };
        assert_eq!(h.apply_labels(&[first], 0).unwrap(), [Applied::Pending]);
        let cols = run(&h, &[tx("c", "3", t + 90, 5.0, "m")], Use::Update);
        assert_eq!(cols.labels[0].as_ref().and_then(|l| l.by.as_deref()), Some("bob"));
        assert!(h.settle(["3"].into_iter()).labels.is_empty());
    }

    #[test]
    fn the_card_cache_is_bounded() {
        let h = History::new(NonZeroUsize::new(2).unwrap());
        let t = 1_700_000_000;
        run(&h, &[tx("a", "1", t, 1.0, "m"), tx("b", "2", t, 1.0, "m"), tx("c", "3", t, 1.0, "m")], Use::Update);
        assert_eq!(h.stats().cards.load(Ordering::Relaxed), 2);
        assert_eq!(h.stats().evicted_cards.load(Ordering::Relaxed), 1);
        assert_eq!(h.stats().events.load(Ordering::Relaxed), 2);
    }
}
