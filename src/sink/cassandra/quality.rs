//! Live model quality over Cassandra (docs/architecture.md, "Model
//! quality"), in work bounded by what changed, not by a day's volume:
//! - `quality_rows`, the book: a row per stored outcome, a partition per
//!   (UTC day, minute of the transaction), its label set with the report's
//!   order as write timestamp (the newest report wins, whichever instance
//!   writes last);
//! - `quality_changes`, a partition per day, a row per minute: when its
//!   rows last changed (written after them) and up to when they were counted;
//! - `quality_tallies`, a partition per day: per (minute, version) the
//!   [`Tally`] of the minute's rows, and per version the day's (minute -1),
//!   their sum, all changed together by one lightweight transaction on the
//!   day's `revision`;
//! - `quality_card_labels`, a partition per (day, card), a row per
//!   transaction labelled: the label, newest report winning as in
//!   `quality_rows`; card precision asks it which of the day's top cards
//!   are fraudulent;
//! - `model_quality`, the measured days, a row per version.
//!
//! A round counts again only the minutes changed since they were counted
//! (reading their rows), replaces their old tallies in the day's, and
//! measures the day from the day's tallies: a minute is read when its rows
//! or labels changed, never a whole day. The day's top cards are merged
//! from the minutes' tops; only when a card's score went down are they
//! merged again from every minute's tally (`quality::cards`). Any instance
//! may count any minute;
//! the transaction keeps the sum exact, and a count older than the one
//! stored is dropped, so instances agree.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlDate, CqlTimestamp, CqlValue};
use tokio_util::sync::CancellationToken;

use super::{request, rows, Cassandra, CassandraError};
use crate::quality::tally::{self, Tally};
use crate::quality::{DayQuality, RowLabel, ScoreRow, VersionInfo};
use crate::retry::Abandoned;
use crate::store::reader::ReadError;

/// Rows of one partition written as one unlogged batch, at most.
const BATCH_ROWS: usize = 100;
/// The minute holding a day's sum in `quality_tallies`.
const WHOLE_DAY: i32 = -1;
/// A count is dated this much before its reads began, so that a change
/// stamped by an instance whose clock is behind by less is counted again.
const CLOCK_MARGIN_MICROS: i64 = 10_000_000;
/// Minute tallies one transaction writes at most, in bytes (then the rest
/// of the changed minutes wait for the next call): with the day's sums
/// beside them, well under Cassandra's largest mutation (half a commit log
/// segment, 16 MiB by default), whatever the cards and bins of a minute.
const TRANSACTION_BYTES: usize = 4 << 20;
/// Times a day's transaction is tried again when another instance changed
/// the day in between.
const CONTENDED_TRIES: usize = 20;

/// The CREATE statements of the quality tables.
pub fn create_statements(ks: &str) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.quality_rows (\n  day date,\n  minute int,\n  trans_num text,\n  cc_num text,\n  model_version text,\n  fraud_score float,\n  predicted boolean,\n  shadow_version text,\n  shadow_score float,\n  label boolean,\n  label_reported_at bigint,\n  PRIMARY KEY ((day, minute), trans_num)\n)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.quality_card_labels (\n  day date,\n  cc_num text,\n  trans_num text,\n  label boolean,\n  PRIMARY KEY ((day, cc_num), trans_num)\n)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.quality_changes (\n  day date,\n  minute int,\n  changed_at bigint,\n  counted_at bigint,\n  PRIMARY KEY ((day), minute)\n)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.quality_tallies (\n  day date,\n  minute int,\n  version text,\n  revision bigint static,\n  tally blob,\n  as_of bigint,\n  PRIMARY KEY ((day), minute, version)\n)"
        ),
        // One row per retraining run (spark-job/retrain.py writes it): the
        // challenger, the champion it was judged against, both evaluations
        // and whether it was deployed, and why.
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.model_decisions (\n  day date,\n  decided_at timestamp,\n  challenger text,\n  champion text,\n  deployed boolean,\n  mode text,\n  reason text,\n  champion_evaluation text,\n  challenger_evaluation text,\n  PRIMARY KEY ((day), decided_at, challenger)\n) WITH CLUSTERING ORDER BY (decided_at DESC, challenger ASC)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.model_quality (\n  day date,\n  version text,\n  measures text,\n  computed_at timestamp,\n  PRIMARY KEY ((day), version)\n)"
        ),
    ]
}

/// The quality statements.
pub struct Statements {
    insert_score: PreparedStatement,
    insert_shadowed_score: PreparedStatement,
    label_score: PreparedStatement,
    label_card: PreparedStatement,
    select_card_labels: PreparedStatement,
    mark_changed: PreparedStatement,
    mark_counted: PreparedStatement,
    select_changes: PreparedStatement,
    select_minute: PreparedStatement,
    create_day: PreparedStatement,
    select_revision: PreparedStatement,
    select_tallies: PreparedStatement,
    select_all_tallies: PreparedStatement,
    bump_revision: PreparedStatement,
    insert_tally: PreparedStatement,
    insert_counted_quality: PreparedStatement,
    delete_quality: PreparedStatement,
    select_quality: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare<F, Fut>(ks: &str, prepare: F) -> Result<Self, CassandraError>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<PreparedStatement, CassandraError>>,
    {
        Ok(Self {
            // Without the shadow columns when there is no shadow: a null
            // would be a tombstone per row.
            insert_score: prepare(format!(
                "INSERT INTO {ks}.quality_rows (day, minute, trans_num, cc_num, model_version, fraud_score, predicted) VALUES (?, ?, ?, ?, ?, ?, ?)"
            ))
            .await?,
            insert_shadowed_score: prepare(format!(
                "INSERT INTO {ks}.quality_rows (day, minute, trans_num, cc_num, model_version, fraud_score, predicted, shadow_version, shadow_score) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ))
            .await?,
            label_score: prepare(format!(
                "UPDATE {ks}.quality_rows USING TIMESTAMP ? SET label = ?, label_reported_at = ? WHERE day = ? AND minute = ? AND trans_num = ?"
            ))
            .await?,
            label_card: prepare(format!(
                "INSERT INTO {ks}.quality_card_labels (day, cc_num, trans_num, label) VALUES (?, ?, ?, ?) USING TIMESTAMP ?"
            ))
            .await?,
            select_card_labels: prepare(format!(
                "SELECT cc_num, label FROM {ks}.quality_card_labels WHERE day = ? AND cc_num IN ?"
            ))
            .await?,
            mark_changed: prepare(format!(
                "UPDATE {ks}.quality_changes SET changed_at = ? WHERE day = ? AND minute = ?"
            ))
            .await?,
            mark_counted: prepare(format!(
                "UPDATE {ks}.quality_changes USING TIMESTAMP ? SET counted_at = ? WHERE day = ? AND minute = ?"
            ))
            .await?,
            select_changes: prepare(format!(
                "SELECT minute, changed_at, counted_at FROM {ks}.quality_changes WHERE day = ?"
            ))
            .await?,
            select_minute: prepare(format!(
                "SELECT cc_num, model_version, fraud_score, predicted, shadow_version, shadow_score, label FROM {ks}.quality_rows WHERE day = ? AND minute = ?"
            ))
            .await?,
            create_day: prepare(format!("INSERT INTO {ks}.quality_tallies (day, revision) VALUES (?, 0) IF NOT EXISTS"))
                .await?,
            select_revision: prepare(format!("SELECT revision FROM {ks}.quality_tallies WHERE day = ? LIMIT 1")).await?,
            select_tallies: prepare(format!(
                "SELECT minute, version, tally, as_of FROM {ks}.quality_tallies WHERE day = ? AND minute IN ?"
            ))
            .await?,
            select_all_tallies: prepare(format!(
                "SELECT minute, version, tally, as_of FROM {ks}.quality_tallies WHERE day = ?"
            ))
            .await?,
            bump_revision: prepare(format!(
                "UPDATE {ks}.quality_tallies SET revision = ? WHERE day = ? IF revision = ?"
            ))
            .await?,
            insert_tally: prepare(format!(
                "INSERT INTO {ks}.quality_tallies (day, minute, version, tally, as_of) VALUES (?, ?, ?, ?, ?)"
            ))
            .await?,
            insert_counted_quality: prepare(format!(
                "INSERT INTO {ks}.model_quality (day, version, measures, computed_at) VALUES (?, ?, ?, ?) USING TIMESTAMP ?"
            ))
            .await?,
            delete_quality: prepare(format!(
                "DELETE FROM {ks}.model_quality USING TIMESTAMP ? WHERE day = ? AND version = ?"
            ))
            .await?,
            select_quality: prepare(format!("SELECT measures FROM {ks}.model_quality WHERE day = ?")).await?,
        })
    }
}

fn date(day: i64) -> CqlDate {
    rows::day_of(day * 86_400)
}

fn key(day: i64, minute: i32, trans_num: &str) -> [Option<CqlValue>; 3] {
    [Some(CqlValue::Date(date(day))), Some(CqlValue::Int(minute)), Some(CqlValue::Text(trans_num.to_string()))]
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

pub use crate::store::quality_book::Counted;

/// Live quality's book in Cassandra: per-minute tallies of `scores`, the
/// measures saved per day and version, the retraining decisions.
#[async_trait::async_trait]
impl crate::store::quality_book::QualityBook for Cassandra {
    async fn count_day(
        &self,
        day: i64,
        versions: &HashMap<String, VersionInfo>,
        budget_rows: u64,
        card_k: u32,
    ) -> Result<Counted, ReadError> {
        self.count_quality_day(day, versions, budget_rows, card_k).await.map_err(read)
    }

    async fn save_counted(
        &self,
        measured: &[DayQuality],
        gone: &[String],
        day: i64,
        revision: i64,
    ) -> Result<(), ReadError> {
        Cassandra::save_counted(self, measured, gone, day, revision).await.map_err(read)
    }

    async fn saved(&self, days: usize) -> Result<Vec<DayQuality>, ReadError> {
        self.saved_quality(days).await.map_err(read)
    }

    async fn recent_decisions(&self, limit: usize) -> Result<Vec<serde_json::Value>, ReadError> {
        Cassandra::recent_decisions(self, limit).await.map_err(read)
    }
}

fn read(e: CassandraError) -> ReadError {
    ReadError::new("cassandra", e)
}

type TallyColumns = (i32, String, Option<Vec<u8>>, Option<i64>);
type MinuteColumns =
    (Option<String>, Option<String>, Option<f32>, Option<bool>, Option<String>, Option<f32>, Option<bool>);

impl Cassandra {
    /// Writes the score rows of stored outcomes, a few unlogged batches per
    /// partition, then notes their minutes changed; Ok once Cassandra has
    /// every one.
    pub async fn write_scores(&self, scores: &[ScoreRow], abandon: &CancellationToken) -> Result<(), Abandoned> {
        let mut partitions: HashMap<(i64, i32, bool), Vec<rows::Values>> = HashMap::new();
        for r in scores {
            let mut values: rows::Values = key(r.day, r.minute, &r.trans_num).into();
            values.push(Some(CqlValue::Text(r.cc_num.clone())));
            values.push(Some(CqlValue::Text(r.model_version.clone())));
            values.push(Some(CqlValue::Float(r.fraud_score)));
            values.push(Some(CqlValue::Boolean(r.predicted)));
            if let Some((version, score)) = &r.shadow {
                values.push(Some(CqlValue::Text(version.clone())));
                values.push(Some(CqlValue::Float(*score)));
            }
            partitions.entry((r.day, r.minute, r.shadow.is_some())).or_default().push(values);
        }
        let minutes: BTreeSet<(i64, i32)> = partitions.keys().map(|&(day, minute, _)| (day, minute)).collect();
        let batches: Vec<(bool, Vec<rows::Values>)> = partitions
            .into_iter()
            .flat_map(|((_, _, shadowed), rows)| {
                let chunks: Vec<Vec<rows::Values>> = rows.chunks(BATCH_ROWS).map(<[_]>::to_vec).collect();
                chunks.into_iter().map(move |chunk| (shadowed, chunk))
            })
            .collect();
        let mut writes = futures::stream::iter(batches)
            .map(|(shadowed, chunk)| {
                let q = &self.quality;
                self.execute_batch(if shadowed { &q.insert_shadowed_score } else { &q.insert_score }, chunk, abandon)
            })
            .buffer_unordered(self.concurrency);
        while let Some(result) = writes.next().await {
            result?;
        }
        self.mark_changed(minutes, abandon).await
    }

    /// Sets the labels of score rows and of their cards' days (the newest
    /// report wins), then notes their minutes changed.
    pub async fn write_score_labels(&self, labels: &[RowLabel], abandon: &CancellationToken) -> Result<(), Abandoned> {
        let q = &self.quality;
        // One write each (a card's day is its own partition), both tables'
        // at once; collected first: a lazy map would tie the stream to a
        // borrowed closure.
        // (the card's row?, values): a statement borrowed in the stream's
        // items would not be Send for every lifetime the trait asks.
        let mut writes: Vec<(bool, rows::Values)> = Vec::with_capacity(2 * labels.len());
        for l in labels {
            // Only the flag is kept here: the same winner as the labels'.
            let version = Some(CqlValue::BigInt(crate::history::card::version(l.reported_at, l.is_fraud, None)));
            let mut score: rows::Values =
                vec![version.clone(), Some(CqlValue::Boolean(l.is_fraud)), Some(CqlValue::BigInt(l.reported_at))];
            score.extend(key(l.day, l.minute, &l.trans_num));
            writes.push((false, score));
            let card = vec![
                Some(CqlValue::Date(date(l.day))),
                Some(CqlValue::Text(l.cc_num.clone())),
                Some(CqlValue::Text(l.trans_num.clone())),
                Some(CqlValue::Boolean(l.is_fraud)),
                version,
            ];
            writes.push((true, card));
        }
        let mut writes = futures::stream::iter(writes)
            .map(|(card, values)| self.execute(if card { &q.label_card } else { &q.label_score }, values, abandon))
            .buffer_unordered(self.concurrency);
        while let Some(result) = writes.next().await {
            result?;
        }
        self.mark_changed(labels.iter().map(|l| (l.day, l.minute)).collect(), abandon).await
    }

    /// Notes minutes whose rows changed, after the rows are written: a
    /// count that began before this note may have missed them.
    async fn mark_changed(&self, minutes: BTreeSet<(i64, i32)>, abandon: &CancellationToken) -> Result<(), Abandoned> {
        let now = now_micros();
        let mut per_day: BTreeMap<i64, Vec<rows::Values>> = BTreeMap::new();
        for (day, minute) in minutes {
            per_day.entry(day).or_default().push(vec![
                Some(CqlValue::BigInt(now)),
                Some(CqlValue::Date(date(day))),
                Some(CqlValue::Int(minute)),
            ]);
        }
        let mut writes = futures::stream::iter(
            per_day.into_values().flat_map(|rows| rows.chunks(BATCH_ROWS).map(<[_]>::to_vec).collect::<Vec<_>>()),
        )
        .map(|chunk| self.execute_batch(&self.quality.mark_changed, chunk, abandon))
        .buffer_unordered(self.concurrency);
        while let Some(result) = writes.next().await {
            result?;
        }
        Ok(())
    }

    /// Counts again the minutes of `day` changed since they were counted,
    /// reading at most about `budget_rows` score rows (always one minute at
    /// least), and puts their tallies in place of the old ones in the day's,
    /// in one lightweight transaction. Nothing changed: an empty [`Counted`].
    pub async fn count_quality_day(
        &self,
        day: i64,
        versions: &HashMap<String, crate::quality::VersionInfo>,
        budget_rows: u64,
        card_k: u32,
    ) -> Result<Counted, CassandraError> {
        let changed = self.changed_minutes(day).await?;
        if changed.is_empty() {
            return Ok(Counted::default());
        }
        if self.day_revision(day).await?.is_none() && self.has_saved_quality(day).await? {
            // Measured by an earlier release from its book (`scores`), which
            // is not read: its numbers are kept, not replaced by a count of
            // what came after the upgrade.
            self.mark_counted(day, &changed, now_micros()).await?;
            return Ok(Counted { kept_earlier: true, ..Counted::default() });
        }
        // Rows written before this (by a clock up to the margin behind) are read below.
        let as_of = now_micros() - CLOCK_MARGIN_MICROS;
        let mut counted: BTreeMap<i32, BTreeMap<String, Tally>> = BTreeMap::new();
        let (mut rows_read, mut bytes) = (0, 0);
        for &minute in &changed {
            if (rows_read >= budget_rows || bytes >= TRANSACTION_BYTES) && !counted.is_empty() {
                break;
            }
            let (tallies, n) = self.tally_minute(day, minute, versions, card_k).await?;
            bytes += tallies.values().map(|t| t.encode().len()).sum::<usize>();
            counted.insert(minute, tallies);
            rows_read += n;
        }
        let more = counted.len() < changed.len();
        let (day_tallies, replaced, revision) = self.replace_tallies(day, &counted, as_of).await?;
        self.mark_counted(day, &replaced, as_of).await?;
        let fraud_cards =
            if replaced.is_empty() { HashSet::new() } else { self.fraud_cards(day, &day_tallies).await? };
        Ok(Counted {
            day: day_tallies,
            fraud_cards,
            minutes: replaced.len(),
            rows_read,
            more,
            revision,
            kept_earlier: false,
        })
    }

    /// The cards of the day's tops with a transaction of the day labelled
    /// fraud (their newest label).
    pub async fn fraud_cards(
        &self,
        day: i64,
        tallies: &BTreeMap<String, Tally>,
    ) -> Result<HashSet<String>, CassandraError> {
        let cards: BTreeSet<&str> = tallies
            .values()
            .filter_map(|t| match &t.cards {
                tally::Cards::Kept(top) => Some(top.entries().iter().map(|(card, _)| card.as_str())),
                _ => None,
            })
            .flatten()
            .collect();
        let cards: Vec<&str> = cards.into_iter().collect();
        let mut fraud = HashSet::new();
        for chunk in cards.chunks(BATCH_ROWS) {
            let mut rows = self
                .session
                .execute_iter(self.quality.select_card_labels.clone(), (date(day), chunk.to_vec()))
                .await
                .map_err(request("quality_card_labels"))?
                .rows_stream::<(String, Option<bool>)>()
                .map_err(request("quality_card_labels"))?;
            while let Some((card, label)) = rows.try_next().await.map_err(request("quality_card_labels"))? {
                if label == Some(true) {
                    fraud.insert(card);
                }
            }
        }
        Ok(fraud)
    }

    /// Notes minutes counted up to `as_of`; a later note of another instance
    /// wins. Not retried: a minute not noted is only counted again.
    async fn mark_counted(&self, day: i64, minutes: &[i32], as_of: i64) -> Result<(), CassandraError> {
        let marks: Vec<Vec<CqlValue>> = minutes
            .iter()
            .map(|&minute| {
                vec![CqlValue::BigInt(as_of), CqlValue::BigInt(as_of), CqlValue::Date(date(day)), CqlValue::Int(minute)]
            })
            .collect();
        for chunk in marks.chunks(BATCH_ROWS) {
            let mut batch = scylla::statement::batch::Batch::new(scylla::statement::batch::BatchType::Unlogged);
            for _ in chunk {
                batch.append_statement(self.quality.mark_counted.clone());
            }
            self.session.batch(&batch, chunk.to_vec()).await.map_err(request("quality_changes"))?;
        }
        Ok(())
    }

    /// Whether some version's measures of `day` are saved.
    async fn has_saved_quality(&self, day: i64) -> Result<bool, CassandraError> {
        Ok(!self.saved_measures(date(day)).await?.is_empty())
    }

    /// The saved measures (JSON) of every version of a day.
    async fn saved_measures(&self, day: CqlDate) -> Result<Vec<String>, CassandraError> {
        self.session
            .execute_iter(self.quality.select_quality.clone(), (day,))
            .await
            .map_err(request("model_quality"))?
            .rows_stream::<(String,)>()
            .map_err(request("model_quality"))?
            .map_ok(|(json,)| json)
            .try_collect()
            .await
            .map_err(request("model_quality"))
    }

    /// Minutes of `day` whose rows changed after they were last counted.
    async fn changed_minutes(&self, day: i64) -> Result<Vec<i32>, CassandraError> {
        let rows: Vec<(i32, Option<i64>, Option<i64>)> = self
            .session
            .execute_iter(self.quality.select_changes.clone(), (date(day),))
            .await
            .map_err(request("quality_changes"))?
            .rows_stream::<(i32, Option<i64>, Option<i64>)>()
            .map_err(request("quality_changes"))?
            .try_collect()
            .await
            .map_err(request("quality_changes"))?;
        Ok(rows
            .into_iter()
            .filter(|&(_, changed, counted)| changed.is_some_and(|c| counted.is_none_or(|counted| c > counted)))
            .map(|(minute, _, _)| minute)
            .collect())
    }

    /// The tallies of one minute's rows per version, and how many rows.
    async fn tally_minute(
        &self,
        day: i64,
        minute: i32,
        versions: &HashMap<String, VersionInfo>,
        card_k: u32,
    ) -> Result<(BTreeMap<String, Tally>, u64), CassandraError> {
        let mut rows = self
            .session
            .execute_iter(self.quality.select_minute.clone(), (date(day), minute))
            .await
            .map_err(request("quality_rows"))?
            .rows_stream::<MinuteColumns>()
            .map_err(request("quality_rows"))?;
        let (mut counter, mut n) = (tally::Counter::default(), 0u64);
        while let Some(row) = rows.try_next().await.map_err(request("quality_rows"))? {
            n += 1;
            // A label that came before its outcome leaves a row without a score.
            let (cc_num, Some(version), Some(score), Some(predicted), shadow_version, shadow_score, label) = row else {
                continue;
            };
            let shadow = shadow_version.as_deref().zip(shadow_score);
            let scored = tally::Scored {
                // None: stored by an earlier release, without its card.
                card: cc_num.as_deref(),
                model_version: &version,
                fraud_score: score,
                predicted,
                shadow,
                fraud: label == Some(true),
            };
            counter.count(scored, versions);
        }
        Ok((counter.finish(card_k), n))
    }

    /// Puts the minutes' new tallies in place of their old ones, in the
    /// day's sum too, in one transaction on the day's revision (tried again
    /// while other instances change the day). A minute counted by another
    /// instance from later reads is left as it is. Returns the day's tallies
    /// (a version with nothing left in the day included, empty), the minutes
    /// replaced and the day's revision.
    async fn replace_tallies(
        &self,
        day: i64,
        counted: &BTreeMap<i32, BTreeMap<String, Tally>>,
        as_of: i64,
    ) -> Result<(BTreeMap<String, Tally>, Vec<i32>, i64), CassandraError> {
        let q = &self.quality;
        for _ in 0..CONTENDED_TRIES {
            let revision = match self.day_revision(day).await? {
                Some(revision) => revision,
                None => {
                    self.session
                        .execute_unpaged(&q.create_day, (date(day),))
                        .await
                        .map_err(request("quality_tallies"))?;
                    continue;
                }
            };
            let mut wanted: Vec<i32> = counted.keys().copied().collect();
            wanted.push(WHOLE_DAY);
            let stored = self.stored_tallies(day, wanted).await?;
            let mut day_tallies: BTreeMap<String, Tally> = BTreeMap::new();
            let mut old: BTreeMap<i32, (i64, BTreeMap<String, Tally>)> = BTreeMap::new();
            for (minute, version, t, stored_as_of) in stored {
                if minute == WHOLE_DAY {
                    day_tallies.insert(version, t);
                } else {
                    let entry = old.entry(minute).or_insert((i64::MIN, BTreeMap::new()));
                    entry.0 = entry.0.max(stored_as_of);
                    entry.1.insert(version, t);
                }
            }
            let mut batch = scylla::statement::batch::Batch::new(scylla::statement::batch::BatchType::Logged);
            let mut values: Vec<Vec<CqlValue>> = Vec::new();
            // At least the clock's microseconds: the revision is also the write
            // timestamp of the measures saved from it (`save_counted`), so a
            // later revision's wins whichever instance saves last, and over
            // rows an earlier release saved with the clock.
            let next = (revision + 1).max(now_micros());
            batch.append_statement(q.bump_revision.clone());
            values.push(vec![CqlValue::BigInt(next), CqlValue::Date(date(day)), CqlValue::BigInt(revision)]);
            let mut replaced = Vec::new();
            // Versions whose day's cards must be merged again from every minute's.
            let mut remerge: BTreeSet<String> = BTreeSet::new();
            for (&minute, new) in counted {
                let (old_as_of, old_tallies) = old.remove(&minute).unwrap_or((i64::MIN, BTreeMap::new()));
                if old_as_of >= as_of {
                    continue;
                }
                replaced.push(minute);
                let here: BTreeSet<&String> = old_tallies.keys().chain(new.keys()).collect();
                for version in here {
                    let sum = day_tallies.entry(version.clone()).or_default();
                    let before = sum.transactions();
                    if let Some(t) = old_tallies.get(version) {
                        sum.subtract(t);
                    }
                    if let Some(t) = new.get(version) {
                        sum.merge(t);
                    }
                    if tally::follow_cards(&mut sum.cards, before, old_tallies.get(version), new.get(version)) {
                        remerge.insert(version.clone());
                    }
                }
                // A version gone from the minute keeps an empty row: no tombstone.
                let empty = Tally::default();
                let gone = old_tallies.keys().filter(|v| !new.contains_key(*v)).map(|v| (v, &empty));
                for (version, t) in new.iter().chain(gone) {
                    batch.append_statement(q.insert_tally.clone());
                    values.push(tally_values(day, minute, version, t, as_of));
                }
            }
            if replaced.is_empty() {
                return Ok((day_tallies, replaced, revision));
            }
            if !remerge.is_empty() {
                self.merge_day_cards(day, &mut day_tallies, &remerge, counted, &replaced).await?;
            }
            for (version, t) in &day_tallies {
                batch.append_statement(q.insert_tally.clone());
                values.push(tally_values(day, WHOLE_DAY, version, t, as_of));
            }
            let result = self.session.batch(&batch, values).await.map_err(request("quality_tallies"))?;
            if applied(result)? {
                return Ok((day_tallies, replaced, next));
            }
        }
        Err(CassandraError::Contended { what: "quality_tallies", tries: CONTENDED_TRIES })
    }

    /// Merges the day's cards of `versions` again from every minute's tally:
    /// the stored ones, and for the minutes `replaced`, the ones `counted`.
    async fn merge_day_cards(
        &self,
        day: i64,
        day_tallies: &mut BTreeMap<String, Tally>,
        versions: &BTreeSet<String>,
        counted: &BTreeMap<i32, BTreeMap<String, Tally>>,
        replaced: &[i32],
    ) -> Result<(), CassandraError> {
        let mut minutes: BTreeMap<&String, Vec<Tally>> = BTreeMap::new();
        for (minute, version, t, _) in self.all_tallies(day).await? {
            if minute != WHOLE_DAY && !replaced.contains(&minute) {
                if let Some(v) = versions.get(&version) {
                    minutes.entry(v).or_default().push(t);
                }
            }
        }
        for minute in replaced {
            for (version, t) in counted.get(minute).into_iter().flatten() {
                if let Some(v) = versions.get(version) {
                    minutes.entry(v).or_default().push(t.clone());
                }
            }
        }
        for version in versions {
            let cards = tally::merge_minutes(minutes.get(version).into_iter().flatten());
            day_tallies.entry(version.clone()).or_default().cards = cards;
        }
        Ok(())
    }

    /// Every stored tally of a day.
    async fn all_tallies(&self, day: i64) -> Result<Vec<(i32, String, Tally, i64)>, CassandraError> {
        decode_tallies(self.tally_rows(&self.quality.select_all_tallies, (date(day),)).await?)
    }

    /// Every row `statement` reads from `quality_tallies`.
    async fn tally_rows<T>(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Vec<T>, CassandraError>
    where
        T: for<'frame, 'metadata> scylla::deserialize::row::DeserializeRow<'frame, 'metadata> + 'static,
    {
        self.session
            .execute_iter(statement.clone(), values)
            .await
            .map_err(request("quality_tallies"))?
            .rows_stream::<T>()
            .map_err(request("quality_tallies"))?
            .try_collect()
            .await
            .map_err(request("quality_tallies"))
    }

    /// The day's stored tallies per version (what the last count left).
    pub async fn day_tallies(&self, day: i64) -> Result<BTreeMap<String, Tally>, CassandraError> {
        let stored = self.stored_tallies(day, vec![WHOLE_DAY]).await?;
        Ok(stored.into_iter().map(|(_, version, t, _)| (version, t)).collect())
    }

    async fn day_revision(&self, day: i64) -> Result<Option<i64>, CassandraError> {
        let rows: Vec<(Option<i64>,)> = self.tally_rows(&self.quality.select_revision, (date(day),)).await?;
        Ok(rows.into_iter().next().and_then(|(r,)| r))
    }

    /// The stored tallies of these minutes of a day: (minute, version,
    /// tally, as of). A tally that does not decode is an error: summing
    /// around it would be wrong for ever.
    async fn stored_tallies(
        &self,
        day: i64,
        minutes: Vec<i32>,
    ) -> Result<Vec<(i32, String, Tally, i64)>, CassandraError> {
        decode_tallies(self.tally_rows(&self.quality.select_tallies, (date(day), minutes)).await?)
    }

    /// Saves a day measured from its tallies of `revision` (one row per
    /// version) with the revision as write timestamp, so measures of a later
    /// revision are never replaced by an earlier one's saved after them; and
    /// deletes the rows of `gone`, versions with nothing left in the day (all
    /// their transactions scored again by another version).
    pub async fn save_counted(
        &self,
        measured: &[DayQuality],
        gone: &[String],
        day: i64,
        revision: i64,
    ) -> Result<(), CassandraError> {
        for d in measured {
            let measures = serde_json::to_string(d).expect("quality serialises");
            let values = (date(d.day), d.version.as_str(), measures, CqlTimestamp(d.computed_at_ms), revision);
            self.session
                .execute_unpaged(&self.quality.insert_counted_quality, values)
                .await
                .map_err(request("model_quality"))?;
        }
        for version in gone {
            self.session
                .execute_unpaged(&self.quality.delete_quality, (revision, date(day), version.as_str()))
                .await
                .map_err(request("model_quality"))?;
        }
        Ok(())
    }

    /// The saved quality of the newest `days` days measured, by any
    /// instance. A row that does not parse (written by another release) is
    /// skipped with a warning.
    pub async fn saved_quality(&self, days: usize) -> Result<Vec<DayQuality>, CassandraError> {
        let mut all: Vec<scylla::value::CqlDate> = self
            .session
            .query_iter(format!("SELECT DISTINCT day FROM {}.model_quality", self.keyspace), &[])
            .await
            .map_err(request("model_quality days"))?
            .rows_stream::<(scylla::value::CqlDate,)>()
            .map_err(request("model_quality days"))?
            .map_ok(|(d,)| d)
            .try_collect()
            .await
            .map_err(request("model_quality days"))?;
        all.sort_by_key(|d| std::cmp::Reverse(d.0));
        let mut out = Vec::new();
        for day in all.into_iter().take(days) {
            for json in self.saved_measures(day).await? {
                match serde_json::from_str::<DayQuality>(&json) {
                    Ok(d) => out.push(d),
                    Err(e) => tracing::warn!(error = %e, "a model_quality row does not parse; skipped"),
                }
            }
        }
        Ok(out)
    }
}

type DecisionColumns = (
    CqlTimestamp,
    String,
    Option<String>,
    Option<bool>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

impl Cassandra {
    /// The newest retraining decisions (`model_decisions`, written by
    /// spark-job/retrain.py), newest first, at most `limit`.
    pub async fn recent_decisions(&self, limit: usize) -> Result<Vec<serde_json::Value>, CassandraError> {
        let cql = format!(
            "SELECT decided_at, challenger, champion, deployed, mode, reason, champion_evaluation, challenger_evaluation FROM {}.model_decisions",
            self.keyspace
        );
        let mut rows: Vec<DecisionColumns> = self
            .session
            .query_iter(cql, &[])
            .await
            .map_err(request("model_decisions"))?
            .rows_stream::<DecisionColumns>()
            .map_err(request("model_decisions"))?
            .try_collect()
            .await
            .map_err(request("model_decisions"))?;
        rows.sort_by_key(|r| std::cmp::Reverse(r.0 .0));
        let parsed = |text: Option<String>| {
            text.and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok()).unwrap_or(serde_json::Value::Null)
        };
        Ok(rows
            .into_iter()
            .take(limit)
            .map(|(at, challenger, champion, deployed, mode, reason, champion_eval, challenger_eval)| {
                serde_json::json!({
                    "decided_at_ms": at.0,
                    "challenger": challenger,
                    "champion": champion,
                    "deployed": deployed.unwrap_or(false),
                    "mode": mode,
                    "reason": reason,
                    "champion_evaluation": parsed(champion_eval),
                    "challenger_evaluation": parsed(challenger_eval),
                })
            })
            .collect())
    }
}

/// Stored tally rows as (minute, version, tally, as of). A tally that does
/// not decode is an error: summing around it would be wrong for ever.
fn decode_tallies(rows: Vec<TallyColumns>) -> Result<Vec<(i32, String, Tally, i64)>, CassandraError> {
    rows.into_iter()
        .map(|(minute, version, bytes, as_of)| {
            let t = Tally::decode(bytes.as_deref().unwrap_or_default())
                .map_err(|reason| CassandraError::Corrupt { what: "quality_tallies", reason })?;
            Ok((minute, version, t, as_of.unwrap_or(i64::MIN)))
        })
        .collect()
}

fn tally_values(day: i64, minute: i32, version: &str, t: &Tally, as_of: i64) -> Vec<CqlValue> {
    vec![
        CqlValue::Date(date(day)),
        CqlValue::Int(minute),
        CqlValue::Text(version.to_string()),
        CqlValue::Blob(t.encode()),
        CqlValue::BigInt(as_of),
    ]
}

/// Whether a lightweight transaction applied (its answer's `[applied]`).
fn applied(result: scylla::response::query_result::QueryResult) -> Result<bool, CassandraError> {
    let rows = result.into_rows_result().map_err(request("quality_tallies"))?;
    let mut answers = rows.rows::<scylla::value::Row>().map_err(request("quality_tallies"))?;
    match answers.next() {
        Some(row) => {
            let row = row.map_err(request("quality_tallies"))?;
            Ok(matches!(row.columns.first(), Some(Some(CqlValue::Boolean(true)))))
        }
        None => Ok(false),
    }
}
