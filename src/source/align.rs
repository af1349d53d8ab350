//! Event-time alignment of the transactions partitions one instance reads
//! (docs/architecture.md, "History": partitions in event time).
//!
//! Merchant risk counts every partition's transactions of a day, and a
//! transaction reads a day's tile 8 days later. Live, every partition is at
//! "now". A backlog read at full speed is not: librdkafka hands over a
//! partition's records in runs (256 KiB a fetch, weeks of a sparse stream),
//! so one partition could be scored past a day another has not delivered
//! yet. The aligner buffers records per partition and lets them out in
//! event-time order, within [`SLACK_SECS`]: a partition's next record goes
//! out only while no other partition that may still send earlier ones is
//! more than the slack behind it. A partition read to its end (EOF) and
//! silent for [`IDLE`] holds nothing back (the end alone does not: a
//! producer may still be writing), until librdkafka's statistics show it
//! grew since ([`Aligner::grown`]); one silent for [`STALLED`] though not at
//! its end is not waited for (its records are late when they come, and a
//! warning says so). After a silence of the whole topic, every partition
//! is waited for again (a burst reaches the partitions unevenly). A
//! partition whose buffer holds [`MAX_BUFFERED`] records is paused until it
//! drains to half. Only the history needs this: with history off, records
//! go out as they come.
//!
//! The event time is the record's `unix_time`, read without decoding the
//! whole value (else `trans_date_trans_time`); a value without either goes
//! out at once (it becomes a dead letter).
//!
//! Partitions other instances own (N instances in one group) are aligned
//! through what their owners publish ([`Aligner::published`], carried in
//! the metadata of their offset commits, `source/progress.rs`): the
//! earliest event time each may still store. A record of day `D` goes out
//! only while every other instance's partition may store nothing before day
//! `D - REMOTE_DAYS`, so the tiles a transaction reads (up to `D - 8`) are
//! complete whichever instance stored their rows. The margin is wider than
//! the local slack: their progress is seen through commits, a fraction of
//! a second late, and a day of it covers records a little out of order
//! within a partition.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use memchr::memmem;

use super::decode::RawRecord;
use crate::history::definitions::DAY;

/// How far ahead of the slowest partition another may run. Less than the
/// label delay's week by a margin for records a little out of order within
/// a partition; live, partitions are seconds apart and nothing waits.
pub const SLACK_SECS: i64 = 86_400;
/// A partition silent this long, not at its end, is not waited for.
pub const IDLE: Duration = Duration::from_secs(5);
/// A partition silent this long though not at its end (its fetches stall:
/// a broker or leader away) is not waited for any more. Silence short of
/// it means nothing: the consumer fetches partitions unevenly, pauses
/// them, and starts them after a rebalance.
pub const STALLED: Duration = Duration::from_secs(60);
/// How many days before a record's own day every other instance's partition
/// must have stored everything: the label delay's week less a day of
/// margin for records out of order within a partition.
pub const REMOTE_DAYS: i64 = 6;
/// Records buffered per partition before it is paused (about 0.5 MB:
/// `serve`'s peak RSS grew 11 MB over 8 partitions with 5,000).
pub const MAX_BUFFERED: usize = 1_000;

#[derive(Debug)]
struct Part {
    /// Records not let out yet, with their event times.
    buffer: VecDeque<(i64, RawRecord)>,
    /// The newest event time let out.
    released: Option<i64>,
    /// The bound its previous owner published: where it stands until its
    /// first record is read (else the others would wait for it from the
    /// start of time: minutes, under a backlog).
    inherited: Option<i64>,
    /// Read to its end, nothing buffered since.
    at_end: bool,
    /// Read to its end, then written to (`Aligner::grown`): its silence
    /// is the fetch's delay, not a stall.
    grown: bool,
    /// When it last delivered a record or its end.
    heard: Instant,
    /// Records let out and not known to be stored yet: (offset, event time).
    unstored: VecDeque<(i64, i64)>,
}

impl Part {
    fn new(now: Instant, inherited: Option<i64>) -> Self {
        Self {
            buffer: VecDeque::new(),
            released: None,
            inherited,
            at_end: false,
            grown: false,
            heard: now,
            unstored: VecDeque::new(),
        }
    }

    /// Delivers nothing though not at its end, for [`STALLED`]: its fetches
    /// stall (a broker or leader away; once, a partition librdkafka did not
    /// fetch after a rebalance).
    fn stalled(&self, now: Instant) -> bool {
        self.buffer.is_empty() && !self.at_end && !self.grown && now.duration_since(self.heard) >= STALLED
    }

    /// The earliest event time its next record may have, as far as known.
    fn next_at_least(&self) -> i64 {
        self.released.or(self.inherited).unwrap_or(i64::MIN)
    }

    /// The earliest event time it may still send, or None when it holds
    /// nothing back (at its end, or idle).
    fn bound(&self, now: Instant) -> Option<i64> {
        match self.buffer.front() {
            Some((t, _)) => Some(*t),
            // Read to its end proves nothing while a producer is still
            // writing (and a pause leaves the flag stale): only silence.
            None if self.silent(now) => None,
            None => Some(self.next_at_least()),
        }
    }

    /// Nothing more to wait for: read to its end and silent for [`IDLE`],
    /// or silent for [`STALLED`].
    fn silent(&self, now: Instant) -> bool {
        let silence = now.duration_since(self.heard);
        (self.at_end && silence >= IDLE) || silence >= STALLED
    }

    /// The earliest event time it may still store: what it let out and is
    /// not stored yet, what it holds, and (unless read to its end and
    /// silent since) what comes after its newest record. None: nothing.
    /// Silence alone is no proof here while this instance is `paused` (its
    /// partitions are silent then, and the other instances would run ahead
    /// of them); otherwise a stalled partition is not waited for, here nor
    /// there (else the others wait at its bound for as long as it stalls).
    fn unstored_bound(&self, now: Instant, paused: bool) -> Option<i64> {
        let unstored = self.unstored.iter().map(|(_, t)| *t).min();
        let rest = match self.buffer.front() {
            Some((t, _)) => Some(*t),
            None if self.at_end && now.duration_since(self.heard) >= IDLE => None,
            None if !paused && self.stalled(now) => None,
            None => Some(self.next_at_least()),
        };
        match (unstored, rest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The buffers of the partitions assigned to this instance.
#[derive(Debug, Default)]
pub struct Aligner {
    parts: BTreeMap<i32, Part>,
    /// Records buffered in all.
    len: usize,
    /// Partitions skipped as idle (warned about once).
    idle: BTreeSet<i32>,
    /// Partitions other instances own: the earliest event time each may
    /// still store (None: nothing), as their owners published it.
    remote: BTreeMap<i32, Option<i64>>,
    /// The least labels progress of the other instances: a record of day
    /// `D` reads tiles whose fraud marks they may still write until they
    /// have applied every label reported before `D` began. None: nothing
    /// to wait for.
    remote_labels: Option<i64>,
    /// Whether `remote` has been read since the partitions were assigned:
    /// until then, nothing goes out (the others may be weeks behind).
    remote_known: bool,
    /// When a record last came in from any partition.
    last_push: Option<Instant>,
}

impl Aligner {
    /// The partitions assigned now: new ones start empty, from the bound
    /// their previous owner published (`inherited`); gone ones lose their
    /// buffers (not committed: their next owner reads them).
    pub fn assign(&mut self, partitions: &[i32], inherited: &BTreeMap<i32, i64>, now: Instant) {
        self.parts.retain(|p, _| partitions.contains(p));
        self.len = self.parts.values().map(|p| p.buffer.len()).sum();
        for p in partitions {
            self.parts.entry(*p).or_insert_with(|| Part::new(now, inherited.get(p).copied()));
        }
        self.idle.retain(|p| partitions.contains(p));
        self.remote.clear();
        self.remote_known = false;
    }

    /// Partitions taken away: their records are their next owner's.
    pub fn revoke(&mut self, partitions: &[i32]) {
        self.parts.retain(|p, _| !partitions.contains(p));
        self.len = self.parts.values().map(|p| p.buffer.len()).sum();
        self.idle.retain(|p| !partitions.contains(p));
    }

    pub fn push(&mut self, record: RawRecord, now: Instant) {
        // The first record after the whole topic was silent: the other
        // partitions' silence meant nothing (nobody was writing), so they
        // are waited for again; else one partition of a burst would run
        // ahead of the others' first records. Not one that had stalled: its
        // silence is its own (restarted with the others, a partition
        // librdkafka did not fetch held them back a minute at a time, the
        // other instance waiting behind them: docs/performance.md, "After
        // the kill").
        if self.last_push.is_none_or(|at| now.duration_since(at) >= IDLE) {
            for part in self.parts.values_mut().filter(|part| !part.stalled(now)) {
                part.heard = now;
            }
        }
        self.last_push = Some(now);
        let part = self.parts.entry(record.partition).or_insert_with(|| Part::new(now, None));
        // A value without a time goes out at once, in its partition's order.
        let at = record.value.as_deref().and_then(event_time).unwrap_or(i64::MIN);
        part.buffer.push_back((at, record));
        self.len += 1;
        part.at_end = false;
        part.grown = false;
        part.heard = now;
    }

    /// The partition was read to its end.
    pub fn end(&mut self, partition: i32, now: Instant) {
        if let Some(part) = self.parts.get_mut(&partition) {
            // What it buffered still bounds it (Part::bound looks there first).
            part.at_end = true;
            part.grown = false;
            part.heard = now;
        }
    }

    /// The partition was written to since its end was read
    /// ([`crate::kafka::GrownPartitions`]): not at its end any more.
    pub fn grown(&mut self, partition: i32) {
        if let Some(part) = self.parts.get_mut(&partition) {
            part.grown |= part.at_end;
            part.at_end = false;
        }
    }

    /// Restarts every partition's silence clock (after consumption was
    /// paused as a whole, when silence meant nothing).
    pub fn heard_all(&mut self, now: Instant) {
        for part in self.parts.values_mut() {
            part.heard = now;
        }
    }

    /// Moves up to `max` records into `out`, in event-time order within the
    /// slack, as far as every partition allows.
    pub fn release(&mut self, out: &mut Vec<RawRecord>, max: usize, now: Instant) {
        if !self.remote_known {
            return;
        }
        let mut left = max;
        while left > 0 {
            // The partition with the earliest record waiting...
            let Some((p, head)) = self
                .parts
                .iter()
                .filter_map(|(p, part)| part.buffer.front().map(|(t, _)| (*p, *t)))
                .min_by_key(|x| x.1)
            else {
                break;
            };
            // ... may run up to the slack past every other one.
            let floor = self.parts.iter().filter(|(q, _)| **q != p).filter_map(|(_, part)| part.bound(now)).min();
            let limit = floor.map_or(i64::MAX, |f| f.saturating_add(SLACK_SECS)).min(self.remote_limit());
            if head > limit {
                self.warn_idle(now);
                break;
            }
            let part = self.parts.get_mut(&p).expect("picked from parts");
            while left > 0 && part.buffer.front().is_some_and(|(t, _)| *t <= limit) {
                let (t, record) = part.buffer.pop_front().expect("front checked");
                part.released = Some(part.released.map_or(t, |r| r.max(t)));
                part.unstored.push_back((record.offset, t));
                out.push(record);
                left -= 1;
                self.len -= 1;
            }
        }
        self.warn_idle(now);
    }

    /// The newest event time a record may have to go out while other
    /// instances' partitions may still store what its tiles count.
    fn remote_limit(&self) -> i64 {
        let labels = self
            .remote_labels
            .map_or(i64::MAX, |l| l.div_euclid(DAY).saturating_add(1).saturating_mul(DAY).saturating_sub(1));
        self.remote
            .values()
            .flatten()
            .map(|b| b.div_euclid(DAY).saturating_add(REMOTE_DAYS + 1).saturating_mul(DAY).saturating_sub(1))
            .min()
            .unwrap_or(i64::MAX)
            .min(labels)
    }

    /// The least labels progress other instances published (i64::MAX when
    /// there are none, or they follow no labels).
    pub fn set_remote_labels(&mut self, labels: i64) {
        self.remote_labels = (labels != i64::MAX).then_some(labels);
    }

    /// What other instances published of the partitions they own (any of
    /// this instance's own are ignored).
    pub fn set_remote(&mut self, remote: BTreeMap<i32, Option<i64>>) {
        self.remote = remote.into_iter().filter(|(p, _)| !self.parts.contains_key(p)).collect();
        self.remote_known = true;
    }

    /// Everything of `partition` before offset `next` is stored.
    pub fn stored(&mut self, partition: i32, next: i64) {
        if let Some(part) = self.parts.get_mut(&partition) {
            while part.unstored.front().is_some_and(|(offset, _)| *offset < next) {
                part.unstored.pop_front();
            }
        }
    }

    /// For the other instances: the earliest event time each partition of
    /// this one may still store (None: nothing); `paused`: consumption is
    /// paused as a whole (for the sinks).
    pub fn published(&self, now: Instant, paused: bool) -> BTreeMap<i32, Option<i64>> {
        self.parts.iter().map(|(p, part)| (*p, part.unstored_bound(now, paused))).collect()
    }

    /// Says once when a partition is not waited for any more.
    fn warn_idle(&mut self, now: Instant) {
        for (p, part) in &self.parts {
            let idle = part.buffer.is_empty() && !part.at_end && now.duration_since(part.heard) >= STALLED;
            if idle && self.idle.insert(*p) {
                tracing::warn!(
                    partition = p,
                    "Kafka partition silent for {} s and not at its end: the others go on without it; its \
                     transactions count as late in merchant risk when they come",
                    STALLED.as_secs()
                );
            } else if !idle {
                self.idle.remove(p);
            }
        }
    }

    /// Partitions whose buffers are full (to pause), and those drained to
    /// half or less (to resume if paused).
    pub fn full(&self) -> (Vec<i32>, Vec<i32>) {
        let full = self.parts.iter().filter(|(_, part)| part.buffer.len() >= MAX_BUFFERED).map(|(p, _)| *p).collect();
        let drained =
            self.parts.iter().filter(|(_, part)| part.buffer.len() <= MAX_BUFFERED / 2).map(|(p, _)| *p).collect();
        (full, drained)
    }

    /// The partitions assigned to this instance.
    pub fn partitions(&self) -> Vec<i32> {
        self.parts.keys().copied().collect()
    }

    /// Records buffered in all.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// A JSON record's transaction time, Unix seconds: `unix_time` found by
/// its key (no full decode: this runs on the source thread for every
/// record), else the whole value decoded for either time field.
pub fn event_time(value: &[u8]) -> Option<i64> {
    static KEY: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"\"unix_time\""));
    if let Some(at) = KEY.find(value) {
        if let Some(t) = integer_after_colon(&value[at + KEY.needle().len()..]) {
            return Some(t);
        }
    }
    #[derive(serde::Deserialize)]
    struct Times {
        unix_time: Option<f64>,
        trans_date_trans_time: Option<String>,
    }
    let times: Times = serde_json::from_slice(value).ok()?;
    match (times.unix_time, times.trans_date_trans_time) {
        (Some(t), _) if t.is_finite() => Some(t as i64),
        (_, Some(text)) => crate::features::parse_datetime(&text),
        _ => None,
    }
}

/// `: 123` -> 123; None for anything else (a float, a string, null).
fn integer_after_colon(rest: &[u8]) -> Option<i64> {
    let mut i = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    if rest[i] != b':' {
        return None;
    }
    i += 1;
    i += rest[i..].iter().position(|b| !b.is_ascii_whitespace())?;
    let negative = rest[i] == b'-';
    if negative {
        i += 1;
    }
    let digits = rest[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 18 || matches!(rest.get(i + digits), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    let n = rest[i..i + digits].iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
    Some(if negative { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: i32, offset: i64, unix_time: i64) -> RawRecord {
        RawRecord {
            partition,
            offset,
            key: None,
            value: Some(format!(r#"{{"trans_num":"t{offset}","unix_time":{unix_time},"amt":1.5}}"#).into_bytes()),
            timestamp_ms: None,
        }
    }

    /// An aligner owning `partitions`, with no other instance.
    fn alone(partitions: &[i32], now: Instant) -> Aligner {
        let mut a = Aligner::default();
        a.assign(partitions, &BTreeMap::new(), now);
        a.set_remote(BTreeMap::new());
        a
    }

    fn released(out: &[RawRecord]) -> Vec<(i32, i64)> {
        out.iter().map(|r| (r.partition, r.offset)).collect()
    }

    #[test]
    fn event_times_are_read_fast_and_otherwise_decoded() {
        assert_eq!(event_time(br#"{"a":1,"unix_time" : 1700000000,"b":"x"}"#), Some(1_700_000_000));
        assert_eq!(event_time(br#"{"unix_time":1.7e9}"#), Some(1_700_000_000));
        assert_eq!(event_time(br#"{"trans_date_trans_time":"2019-01-01 00:00:18"}"#), Some(1_546_300_818));
        assert_eq!(event_time(br#"{"unix_time":null}"#), None);
        assert_eq!(event_time(b"not json"), None);
    }

    #[test]
    fn a_partition_ahead_waits_for_one_behind_until_it_delivers_or_ends() {
        let now = Instant::now();
        let mut a = alone(&[0, 1], now);
        // Partition 0 delivers ten days at once; 1 has said nothing yet.
        for day in 0..10 {
            a.push(record(0, day, day * DAY), now);
        }
        let mut out = Vec::new();
        a.release(&mut out, 100, now);
        assert!(out.is_empty(), "partition 1 may still send day 0");
        a.push(record(1, 0, 0), now);
        a.release(&mut out, 100, now);
        // Up to a day past partition 1's last record (day 0).
        assert_eq!(released(&out), [(0, 0), (0, 1), (1, 0)]);
        out.clear();
        a.end(1, now);
        a.release(&mut out, 100, now);
        assert!(out.is_empty(), "the end alone proves nothing while a producer may still write");
        a.release(&mut out, 100, now + IDLE);
        assert_eq!(out.len(), 8, "partition 1 is at its end and silent: 0 goes on");
    }

    #[test]
    fn a_partition_grown_since_its_end_holds_the_others_back_again() {
        let now = Instant::now();
        let mut a = alone(&[0, 1], now);
        a.push(record(1, 0, 0), now);
        a.end(1, now);
        a.push(record(0, 0, 0), now);
        let mut out = Vec::new();
        a.release(&mut out, 100, now);
        assert_eq!(out.len(), 2);
        out.clear();
        // Partition 1 grew (its records queued behind 0's backlog, say):
        // however long it has been silent, 0 waits for it.
        a.grown(1);
        for day in 2..10 {
            a.push(record(0, day, day * DAY), now);
        }
        a.release(&mut out, 100, now + IDLE);
        assert!(out.is_empty(), "partition 1 may still send day 1: {:?}", released(&out));
        a.release(&mut out, 100, now + IDLE * 4);
        assert!(out.is_empty(), "partition 1 may still send day 1: {:?}", released(&out));
        a.push(record(1, 1, 9 * DAY), now + IDLE * 4);
        a.release(&mut out, 100, now + IDLE * 4);
        assert_eq!(out.iter().filter(|r| r.partition == 0).count(), 8, "partition 1 is past them");
    }

    #[test]
    fn records_go_out_in_event_time_order_within_the_slack() {
        let now = Instant::now();
        let mut a = alone(&[0, 1, 2], now);
        for i in 0..20 {
            a.push(record(i % 3, i as i64, i as i64 * DAY / 2), now);
        }
        for p in 0..3 {
            a.end(p, now);
        }
        let mut out = Vec::new();
        a.release(&mut out, 7, now);
        assert_eq!(out.len(), 7, "at most max");
        a.release(&mut out, 100, now);
        assert_eq!(out.len(), 20);
        let times: Vec<i64> = out.iter().map(|r| event_time(r.value.as_deref().unwrap()).unwrap()).collect();
        for (i, t) in times.iter().enumerate() {
            let newest_before = times[..i].iter().max().copied().unwrap_or(i64::MIN);
            assert!(*t >= newest_before.saturating_sub(SLACK_SECS), "record {i} at {t} after {newest_before}");
        }
    }

    #[test]
    fn a_silent_partition_is_not_waited_for_and_a_revoked_one_is_dropped() {
        let start = Instant::now();
        let mut a = alone(&[0, 1], start);
        a.push(record(0, 0, 10 * DAY), start);
        let mut out = Vec::new();
        a.release(&mut out, 10, start + IDLE);
        assert!(out.is_empty(), "silent, but not at its end: its fetches may just be slow");
        a.end(1, start);
        a.release(&mut out, 10, start + IDLE);
        assert_eq!(out.len(), 1, "partition 1 at its end and silent for IDLE");

        a.push(record(0, 1, 11 * DAY), start + IDLE);
        a.assign(&[1], &BTreeMap::new(), start + IDLE);
        a.set_remote(BTreeMap::new());
        assert_eq!(a.len(), 0, "partition 0 revoked: its records are its next owner's");
    }

    #[test]
    fn a_record_waits_until_the_others_applied_the_labels_its_tiles_count() {
        let now = Instant::now();
        let mut a = alone(&[0], now);
        for (offset, day) in [0, 3, 9].into_iter().enumerate() {
            a.push(record(0, offset as i64, day * DAY + 3_600), now);
        }
        a.end(0, now);
        // Another instance has applied labels reported before day 3, noon.
        a.set_remote_labels(3 * DAY + 43_200);
        let mut out = Vec::new();
        a.release(&mut out, 100, now);
        assert_eq!(out.len(), 2, "days 0 and 3 read tiles final by then; day 9's are not");
        a.set_remote_labels(i64::MAX);
        a.release(&mut out, 100, now);
        assert_eq!(out.len(), 3, "nothing to wait for");
    }

    #[test]
    fn other_instances_partitions_hold_records_back_until_their_week_is_stored() {
        let now = Instant::now();
        let mut a = alone(&[0], now);
        for (offset, day) in [0, 5, 6, 7, 30].into_iter().enumerate() {
            a.push(record(0, offset as i64, day * DAY + 3_600), now);
        }
        a.end(0, now);
        // Partition 1 is another instance's: it may still store day 0.
        a.set_remote(BTreeMap::from([(1, Some(100)), (0, Some(0))]));
        let mut out = Vec::new();
        a.release(&mut out, 100, now);
        assert_eq!(released(&out), [(0, 0), (0, 1), (0, 2)], "up to day 0 + REMOTE_DAYS");
        assert_eq!(a.published(now, false)[&0], Some(3_600), "the records let out are not stored yet");
        a.stored(0, 2);
        assert_eq!(a.published(now, false)[&0], Some(6 * DAY + 3_600));
        a.stored(0, 3);
        assert_eq!(a.published(now, false)[&0], Some(7 * DAY + 3_600), "what it still holds");
        // The other instance moved on, then has nothing left to store.
        a.set_remote(BTreeMap::from([(1, Some(DAY))]));
        a.release(&mut out, 100, now);
        assert_eq!(out.len(), 4);
        a.set_remote(BTreeMap::from([(1, None)]));
        a.release(&mut out, 100, now);
        assert_eq!(out.len(), 5);
        a.stored(0, 31);
        assert_eq!(a.published(now, false)[&0], Some(30 * DAY + 3_600), "at its end: a producer may still write");
        assert_eq!(a.published(now + IDLE, false)[&0], None, "at its end and silent, everything stored");
    }

    #[test]
    fn a_partition_just_assigned_stands_where_its_previous_owner_left_it() {
        let now = Instant::now();
        let mut a = Aligner::default();
        a.assign(&[0, 1], &BTreeMap::from([(0, 20 * DAY)]), now);
        a.set_remote(BTreeMap::new());
        // Not MIN: the other instances must not stop until it reads its
        // first record (they did, for minutes, under a backlog).
        assert_eq!(a.published(now, false)[&0], Some(20 * DAY), "the previous owner's bound");
        assert_eq!(a.published(now, false)[&1], Some(i64::MIN), "nothing published: anything may come");
        a.push(record(0, 0, 20 * DAY + 60), now);
        a.push(record(1, 0, 21 * DAY), now);
        let mut out = Vec::new();
        a.release(&mut out, 10, now);
        assert_eq!(released(&out), [(0, 0), (1, 0)]);
        assert_eq!(a.published(now, false)[&0], Some(20 * DAY + 60), "its own records from then on");
    }

    #[test]
    fn a_stalled_partition_is_not_waited_for_again_when_the_others_resume() {
        let start = Instant::now();
        // Partition 1 never delivers (librdkafka did not fetch it once,
        // after a rebalance); partition 0 fills its buffer and is paused.
        let mut a = alone(&[0, 1], start);
        for i in 0..MAX_BUFFERED as i64 {
            a.push(record(0, i, 2 * DAY + i), start);
        }
        let mut out = Vec::new();
        a.release(&mut out, 10_000, start);
        assert!(out.is_empty(), "partition 1 may still send day 0");
        assert_eq!(a.published(start, false)[&1], Some(i64::MIN));
        a.release(&mut out, 10_000, start + STALLED);
        assert_eq!(out.len(), MAX_BUFFERED, "partition 1 stalled: not waited for");
        // Partition 0 resumes after the topic's silence: partition 1's
        // silence is its own, so it is not waited for another minute.
        let later = start + STALLED + Duration::from_millis(200);
        a.push(record(0, 1_000, 3 * DAY), later);
        out.clear();
        a.release(&mut out, 10_000, later);
        assert_eq!(out.len(), 1, "partition 1's silence was its own");
        // Nor by the other instances, unless this one is paused.
        assert_eq!(a.published(later, false)[&1], None);
        assert_eq!(a.published(later, true)[&1], Some(i64::MIN), "paused: its silence means nothing");
        // A partition read to its end and written to since is not stalled:
        // the burst after a silence reaches it late.
        let mut b = alone(&[0, 1], start);
        b.end(1, start);
        b.grown(1);
        b.push(record(0, 0, 3 * DAY), start + STALLED * 2);
        b.release(&mut out, 10, start + STALLED * 2);
        assert_eq!(b.len(), 1, "partition 1 grew: waited for");
    }

    #[test]
    fn after_a_silence_of_the_whole_topic_the_first_records_wait_for_the_others() {
        let start = Instant::now();
        let mut a = alone(&[0, 1], start);
        // Long after anything was heard, partition 0 gets a burst first.
        let later = start + IDLE * 10;
        for i in 0..5 {
            a.push(record(0, i, i * DAY), later);
        }
        let mut out = Vec::new();
        a.release(&mut out, 100, later);
        assert!(out.is_empty(), "partition 1 may still send anything: its silence was everyone's");
        a.push(record(1, 0, 3 * DAY), later);
        a.release(&mut out, 100, later);
        assert_eq!(out.len(), 6);
    }

    #[test]
    fn full_buffers_are_reported_for_pausing() {
        let now = Instant::now();
        let mut a = alone(&[0, 1], now);
        for i in 0..MAX_BUFFERED as i64 {
            a.push(record(0, i, DAY * 100 + i), now);
        }
        let (full, drained) = a.full();
        assert_eq!(full, [0]);
        assert_eq!(drained, [1]);
    }
}
