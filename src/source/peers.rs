//! What the instances of one consumer group tell each other about their
//! partitions' progress in event time (docs/architecture.md, "History":
//! partitions in event time, across instances).
//!
//! Merchant tiles count every partition's transactions of a day, and with N
//! instances each reads only its own partitions. So each instance publishes,
//! for every partition it owns, the earliest event time it may still store
//! ([`super::align::Aligner::published`]), in the metadata of its offset
//! commits (`fraudflight/1 bound=<unix s>` or `bound=none`): Kafka keeps it
//! with the committed offset, every member of the group can read it, and it
//! survives the instance. Each instance reads the others' every commit
//! round and its aligner holds records back until those partitions have
//! stored the days their tiles need.
//!
//! A partition whose committed offset carries no such metadata (never
//! committed, committed by an older version, or by a rebalance's final
//! commit before any bound was published) is waited for while it still has
//! records after its committed offset, at most [`UNKNOWN_WAIT`]: its owner
//! publishes within a commit round of getting it.
//!
//! The same metadata says how far the instance has applied labels (what
//! the others wait for, and, in report order, what a partition's next
//! owner need not look for again) and which process committed it
//! ([`process`]); a partition's next owner reads them first
//! ([`inherited`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

/// The prefix of the metadata this version writes.
const PREFIX: &str = "fraudflight/1 bound=";
/// How often the topic's partitions are listed again.
const LIST_EVERY: Duration = Duration::from_secs(30);
/// How long a partition of another instance that publishes nothing is
/// waited for.
pub const UNKNOWN_WAIT: Duration = Duration::from_secs(60);
/// Longest wait for an answer of the group coordinator or a broker.
const ASK: Duration = Duration::from_secs(2);

/// What follows the bound: how far the instance has applied labels.
const LABELS: &str = " labels=";
/// What follows that: how far it has applied them in report order.
const APPLIED: &str = " applied=";
/// Then which process committed it ([`process`]).
const BY: &str = " by=";

/// This process, as its commits name it: a partition whose last commit it
/// made itself was nobody else's since (`History::forget_cards`).
pub fn process() -> &'static str {
    static PROCESS: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("{}-{:016x}", std::process::id(), rand::random::<u64>()));
    &PROCESS
}

/// How far an instance has applied labels, as it publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelsApplied {
    /// What the other instances wait for (`History::labels_applied_through`:
    /// i64::MAX when there is nothing to wait for).
    pub through: i64,
    /// Where the partitions' next owners look for their pending labels
    /// from (`History::labels_applied_in_order`: i64::MIN when unknown).
    pub in_order: i64,
}

impl LabelsApplied {
    /// An instance that follows no labels stream.
    pub const NONE: Self = Self { through: i64::MAX, in_order: i64::MIN };
}

/// The commit metadata of a partition's bound and of its owner's labels
/// progress.
pub fn encode(bound: Option<i64>, labels: LabelsApplied) -> String {
    let LabelsApplied { through, in_order } = labels;
    match bound {
        // `labels` last: an earlier version reads the number after
        // " labels=" to the end.
        Some(t) => format!("{PREFIX}{t}{APPLIED}{in_order}{BY}{}{LABELS}{through}", process()),
        None => format!("{PREFIX}none{APPLIED}{in_order}{BY}{}{LABELS}{through}", process()),
    }
}

/// The commit metadata of a rebalance's final commit, made where the
/// partition's bound is not at hand: the labels progress alone (the bound
/// reads as none published).
pub fn encode_labels_only(labels: LabelsApplied) -> String {
    let LabelsApplied { through, in_order } = labels;
    format!("{PREFIX}?{APPLIED}{in_order}{BY}{}{LABELS}{through}", process())
}

/// A bound from commit metadata; None when it is not ours.
pub fn decode(metadata: &str) -> Option<Option<i64>> {
    let rest = metadata.strip_prefix(PREFIX)?;
    match rest.split(' ').next()? {
        "none" => Some(None),
        t => t.parse().ok().map(Some),
    }
}

/// The labels progress in commit metadata; None when it says none (an
/// earlier version's: not waited for).
pub fn decode_labels(metadata: &str) -> Option<i64> {
    field(metadata, LABELS)
}

/// The labels progress in report order in commit metadata; None when it
/// says none (an earlier version's).
pub fn decode_applied(metadata: &str) -> Option<i64> {
    field(metadata, APPLIED)
}

/// Which process committed it; None when it does not say (an earlier
/// version's).
pub fn decode_by(metadata: &str) -> Option<&str> {
    metadata.strip_prefix(PREFIX)?.split_once(BY)?.1.split(' ').next()
}

/// The number after `key` in our metadata, up to the next field.
fn field(metadata: &str, key: &str) -> Option<i64> {
    let value = metadata.strip_prefix(PREFIX)?.split_once(key)?.1;
    value.split(' ').next()?.parse().ok()
}

/// The committed offsets (with their metadata) of `partitions` of the group.
fn committed<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: &[i32],
) -> rdkafka::error::KafkaResult<TopicPartitionList> {
    let mut list = TopicPartitionList::new();
    for p in partitions {
        list.add_partition(topic, *p);
    }
    consumer.committed_offsets(list, ASK)
}

/// What the other instances published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Others {
    /// Per partition they own, the earliest event time it may still store
    /// (None: nothing).
    pub bounds: BTreeMap<i32, Option<i64>>,
    /// The least labels progress among them: every label reported before
    /// it is applied by all of them (i64::MAX: nothing to wait for).
    pub labels: i64,
}

/// What the previous owners of partitions just assigned published with
/// their last commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inherited {
    /// Per partition, the earliest event time it may still store: where
    /// its new owner starts from, until it has read its first records
    /// (absent: none published).
    pub bounds: BTreeMap<i32, i64>,
    /// Every label reported before it was applied by whoever stored these
    /// partitions' records (i64::MIN: unknown; i64::MAX: nobody did).
    pub labels: i64,
    /// This process made the last commit of every one of them: nobody
    /// else stored anything of them since (or not committed, and it comes
    /// back to this process).
    pub ours: bool,
}

/// What the previous owners of `partitions` published; asked right after
/// the assignment, before this instance commits over it. Unknown (nothing
/// inherited, labels i64::MIN) when the group coordinator does not answer.
pub fn inherited<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str, partitions: &[i32]) -> Inherited {
    let unknown = Inherited { bounds: BTreeMap::new(), labels: i64::MIN, ours: false };
    if partitions.is_empty() {
        return Inherited { labels: i64::MAX, ours: true, ..unknown };
    }
    let committed = match committed(consumer, topic, partitions) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "committed offsets unknown: every pending label is looked for again");
            return unknown;
        }
    };
    let mut inherited = Inherited { labels: i64::MAX, ours: true, ..unknown };
    for p in partitions {
        let Some(element) = committed.find_partition(topic, *p) else {
            inherited.labels = i64::MIN;
            inherited.ours = false;
            continue;
        };
        inherited.ours &= decode_by(element.metadata()) == Some(process());
        // Never committed (or unknown): its owner may have stored records
        // and died before its first commit, so nothing is known.
        if !matches!(element.offset(), Offset::Offset(_)) {
            inherited.labels = i64::MIN;
            continue;
        }
        let metadata = element.metadata();
        if let Some(Some(bound)) = decode(metadata) {
            inherited.bounds.insert(*p, bound);
        }
        inherited.labels = inherited.labels.min(decode_applied(metadata).unwrap_or(i64::MIN));
    }
    inherited
}

/// This instance's side of the exchange.
#[derive(Debug, Default)]
pub struct Peers {
    /// Every partition of the topic, and when they were listed.
    partitions: Vec<i32>,
    listed: Option<Instant>,
    /// The offset each owned partition's metadata is committed with: the
    /// newest committed, else where it is read from.
    base: HashMap<i32, i64>,
    /// What was last committed per owned partition.
    sent: HashMap<i32, (i64, String)>,
    /// Other instances' partitions without a bound, since when.
    unknown: HashMap<i32, Instant>,
    warned: BTreeSet<i32>,
}

impl Peers {
    /// Partitions were assigned (after every rebalance): each owned one
    /// learns again the offset it is read from, and its bound is sent again
    /// (a rebalance's own commit carries no metadata).
    pub fn assigned(&mut self) {
        self.base.clear();
        self.sent.clear();
    }

    /// Learns where the owned partitions without a base offset are read
    /// from: the committed offset, else the start (auto.offset.reset).
    fn learn<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>, topic: &str, owned: &[i32]) {
        let new: Vec<i32> = owned.iter().copied().filter(|p| !self.base.contains_key(p)).collect();
        if new.is_empty() {
            return;
        }
        let committed = match committed(consumer, topic, &new) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "committed offsets unknown; progress published later");
                return;
            }
        };
        for p in new {
            let offset = match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => consumer.fetch_watermarks(topic, p, ASK).ok().map(|(low, _)| low),
            };
            if let Some(o) = offset {
                self.base.insert(p, o);
            }
        }
    }

    /// Commits `committable` (partition -> next offset, stored) and, with
    /// them, the bound of every owned partition (those in `bounds`) whose
    /// bound changed.
    pub fn publish<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        topic: &str,
        committable: &BTreeMap<i32, i64>,
        bounds: &BTreeMap<i32, Option<i64>>,
        labels: LabelsApplied,
        mode: CommitMode,
    ) {
        let owned: Vec<i32> = bounds.keys().copied().collect();
        self.learn(consumer, topic, &owned);
        for (p, next) in committable {
            self.base.insert(*p, *next);
        }
        let mut list = TopicPartitionList::new();
        let mut sent = Vec::new();
        // A bound back from "nothing" to a time is the one change that
        // makes the others hold back again: it must not be lost with an
        // asynchronous commit the broker refused.
        let mut mode = mode;
        for (p, offset) in &self.base {
            // Only partitions owned now: a revoked one is its new owner's.
            let Some(bound) = bounds.get(p) else { continue };
            let metadata = encode(*bound, labels);
            let changed = self.sent.get(p).is_none_or(|(o, m)| o != offset || *m != metadata);
            if !changed {
                continue;
            }
            if bound.is_some() && self.sent.get(p).is_some_and(|(_, m)| decode(m) == Some(None)) {
                mode = CommitMode::Sync;
            }
            if list.add_partition_offset(topic, *p, Offset::Offset(*offset)).is_err() {
                continue;
            }
            if let Some(mut e) = list.find_partition(topic, *p) {
                e.set_metadata(&metadata);
            }
            sent.push((*p, (*offset, metadata)));
        }
        if list.count() == 0 {
            return;
        }
        match consumer.commit(&list, mode) {
            Ok(()) => self.sent.extend(sent),
            Err(e) => tracing::warn!(error = %e, "offset commit failed; will be retried with the next one"),
        }
    }

    /// The bounds other instances published of the partitions they own;
    /// None while the topic's partitions are not known (then nothing is
    /// known of the others either).
    pub fn others<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        topic: &str,
        owned: &[i32],
    ) -> Option<Others> {
        self.list(consumer, topic);
        if self.partitions.is_empty() {
            return None;
        }
        let others: Vec<i32> = self.partitions.iter().copied().filter(|p| !owned.contains(p)).collect();
        self.unknown.retain(|p, _| others.contains(p));
        if others.is_empty() {
            return Some(Others { bounds: BTreeMap::new(), labels: i64::MAX });
        }
        let committed = match committed(consumer, topic, &others) {
            Ok(c) => c,
            // Nothing known of them this round: everything is held back.
            Err(e) => {
                tracing::debug!(error = %e, "other instances' progress unknown this round");
                return Some(Others {
                    bounds: others.iter().map(|p| (*p, Some(i64::MIN))).collect(),
                    labels: i64::MIN,
                });
            }
        };
        let now = Instant::now();
        let mut labels = i64::MAX;
        let bounds = others
            .into_iter()
            .map(|p| {
                let element = committed.find_partition(topic, p);
                let published = element.as_ref().and_then(|e| decode(e.metadata()));
                if let Some(l) = element.as_ref().and_then(|e| decode_labels(e.metadata())) {
                    labels = labels.min(l);
                }
                let bound = match published {
                    Some(bound) => {
                        self.unknown.remove(&p);
                        bound
                    }
                    None => {
                        let offset = element.and_then(|e| match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        });
                        self.unpublished(consumer, topic, p, offset, now)
                    }
                };
                (p, bound)
            })
            .collect();
        Some(Others { bounds, labels })
    }

    /// A partition of another instance without a published bound: nothing
    /// to wait for if everything in it is stored (its committed offset is
    /// its end), else everything, for at most [`UNKNOWN_WAIT`].
    fn unpublished<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        topic: &str,
        partition: i32,
        committed: Option<i64>,
        now: Instant,
    ) -> Option<i64> {
        let Ok((low, high)) = consumer.fetch_watermarks(topic, partition, ASK) else { return Some(i64::MIN) };
        if committed.unwrap_or(low) >= high {
            self.unknown.remove(&partition);
            return None;
        }
        let since = *self.unknown.entry(partition).or_insert(now);
        if now.duration_since(since) < UNKNOWN_WAIT {
            return Some(i64::MIN);
        }
        if self.warned.insert(partition) {
            tracing::warn!(
                partition,
                "Kafka partition of another instance has published no progress for {} s: not waited for; \
                 merchant risk may miss its transactions until it does",
                UNKNOWN_WAIT.as_secs()
            );
        }
        None
    }

    /// Lists the topic's partitions when due (every round until it worked;
    /// a failed listing keeps the last one).
    fn list<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>, topic: &str) {
        if self.listed.is_some_and(|at| at.elapsed() < LIST_EVERY) {
            return;
        }
        match consumer.fetch_metadata(Some(topic), ASK) {
            Ok(metadata) => {
                if let Some(t) = metadata.topics().iter().find(|t| t.name() == topic && t.error().is_none()) {
                    self.partitions = t.partitions().iter().map(|p| p.id()).collect();
                    self.listed = Some(Instant::now());
                }
            }
            Err(e) => tracing::debug!(error = %e, "topic partitions not listed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_round_trip_through_commit_metadata_and_others_are_not_ours() {
        let labels = |through, in_order| LabelsApplied { through, in_order };
        assert_eq!(decode(&encode(Some(1_700_000_000), labels(7, 5))), Some(Some(1_700_000_000)));
        assert_eq!(decode(&encode(Some(-5), labels(7, 5))), Some(Some(-5)));
        assert_eq!(decode(&encode(None, labels(7, 5))), Some(None));
        assert_eq!(decode_labels(&encode(None, labels(1_700_000_000, 5))), Some(1_700_000_000));
        assert_eq!(decode_applied(&encode(None, labels(1_700_000_000, 5))), Some(5));
        assert_eq!(decode_labels(&encode(Some(3), LabelsApplied::NONE)), Some(i64::MAX));
        assert_eq!(decode_applied(&encode(Some(3), LabelsApplied::NONE)), Some(i64::MIN));
        // An earlier version's metadata: a bound, no labels progress.
        assert_eq!(decode("fraudflight/1 bound=42"), Some(Some(42)));
        assert_eq!(decode_labels("fraudflight/1 bound=42"), None);
        assert_eq!(decode_labels("fraudflight/1 bound=42 labels=9"), Some(9), "before `applied`");
        assert_eq!(decode_applied("fraudflight/1 bound=42 labels=9"), None);
        // What an earlier version reads of ours: the number after " labels=".
        let ours = encode(Some(42), labels(9, 5));
        assert_eq!(ours.split_once(" labels=").unwrap().1.parse::<i64>().ok(), Some(9), "{ours}");
        assert_eq!(decode_by(&ours), Some(process()));
        assert_eq!(decode_by(&encode_labels_only(labels(9, 5))), Some(process()));
        assert_eq!(decode_by("fraudflight/1 bound=42 labels=9"), None);
        assert_eq!(decode(""), None, "a commit without metadata");
        assert_eq!(decode("fraudflight/1 bound=soon"), None);
        assert_eq!(decode("someone else's"), None);
        // A rebalance's final commit: the labels progress, no bound.
        assert_eq!(decode(&encode_labels_only(labels(99, 98))), None);
        assert_eq!(decode_labels(&encode_labels_only(labels(99, 98))), Some(99));
        assert_eq!(decode_applied(&encode_labels_only(labels(99, 98))), Some(98));
    }
}
