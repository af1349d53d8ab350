//! A part of a day's scores as live quality keeps it in Cassandra: per
//! model version, the confusion counts at its threshold (exact) and the
//! frauds and genuine transactions per fine score bin ([`super::bins`]).
//! Tallies add and subtract exactly, so a day's tally is kept as the sum of
//! its minutes' and a minute counted again replaces what it added
//! (docs/architecture.md, "Model quality"). A tally also carries the top
//! cards of its transactions ([`super::cards`]), which merge but do not
//! subtract: the book keeps the day's apart. Stored as a protobuf message
//! (prost): about 11 bytes a bin in use, and a card's number plus 6.

use std::collections::{BTreeMap, HashMap};

use super::bins::Histogram;
use super::cards::{self, Top};
use super::measure::{psi_of_counts, Confusion, Measures, Reference};
use super::VersionInfo;

/// One version's counts over some transactions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub histogram: Histogram,
    pub confusion: Confusion,
    /// The cards with the highest scores; not touched by [`Tally::merge`]
    /// and [`Tally::subtract`].
    pub cards: Cards,
}

/// What a tally knows of its transactions' cards.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Cards {
    /// Not recorded: a tally an earlier release wrote, or an empty one.
    #[default]
    NotKept,
    /// Some of its transactions were stored without their card (by an
    /// earlier release): no card precision.
    Unknown,
    /// The top cards of its transactions.
    Kept(Top),
}

/// A tally as stored: bins in ascending order, their keys as steps from
/// the previous one (small numbers, short varints).
#[derive(Clone, PartialEq, prost::Message)]
struct Stored {
    #[prost(uint32, repeated, tag = "1")]
    key_steps: Vec<u32>,
    #[prost(uint64, repeated, tag = "2")]
    frauds: Vec<u64>,
    #[prost(uint64, repeated, tag = "3")]
    genuine: Vec<u64>,
    #[prost(float, repeated, tag = "4")]
    low: Vec<f32>,
    #[prost(float, repeated, tag = "5")]
    high: Vec<f32>,
    #[prost(uint64, tag = "6")]
    tp: u64,
    #[prost(uint64, tag = "7")]
    fp: u64,
    #[prost(uint64, tag = "8")]
    tn: u64,
    #[prost(uint64, tag = "9")]
    fn_: u64,
    /// The cards' k; 0 when none are kept ([`Cards::NotKept`]).
    #[prost(uint32, tag = "10")]
    card_k: u32,
    /// The score of cards cut from the top (`cards::TIES_KEPT`).
    #[prost(float, optional, tag = "11")]
    cards_cut_at: Option<f32>,
    #[prost(string, repeated, tag = "12")]
    cards: Vec<String>,
    #[prost(float, repeated, tag = "13")]
    card_scores: Vec<f32>,
    #[prost(bool, tag = "14")]
    cards_unknown: bool,
}

impl Tally {
    /// Counts one scored transaction.
    pub fn add(&mut self, score: f32, predicted: bool, fraud: bool) {
        self.histogram.add(score, fraud);
        let c = &mut self.confusion;
        match (predicted, fraud) {
            (true, true) => c.tp += 1,
            (true, false) => c.fp += 1,
            (false, false) => c.tn += 1,
            (false, true) => c.fn_ += 1,
        }
    }

    pub fn merge(&mut self, other: &Tally) {
        self.histogram.merge(&other.histogram);
        let (c, o) = (&mut self.confusion, &other.confusion);
        (c.tp, c.fp, c.tn, c.fn_) = (c.tp + o.tp, c.fp + o.fp, c.tn + o.tn, c.fn_ + o.fn_);
    }

    /// Takes out what `other` added (it was counted into this one before).
    pub fn subtract(&mut self, other: &Tally) {
        self.histogram.subtract(&other.histogram);
        let (c, o) = (&mut self.confusion, &other.confusion);
        c.tp = c.tp.saturating_sub(o.tp);
        c.fp = c.fp.saturating_sub(o.fp);
        c.tn = c.tn.saturating_sub(o.tn);
        c.fn_ = c.fn_.saturating_sub(o.fn_);
    }

    pub fn transactions(&self) -> u64 {
        let c = &self.confusion;
        c.tp + c.fp + c.tn + c.fn_
    }

    /// The day's measures from these counts: confusion, precision and recall
    /// exact; AP and ROC AUC from the bins with their error bounds; the PSI
    /// with each bin counted where its lowest score falls.
    pub fn measures(&self, reference: Option<&Reference>) -> Measures {
        let c = self.confusion;
        let (transactions, frauds) = (self.transactions(), c.tp + c.fn_);
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        let ap = self.histogram.average_precision();
        let auc = self.histogram.roc_auc();
        let score_psi = reference.filter(|_| transactions > 0).map(|r| {
            let mut counts = vec![0u64; r.score_shares.len()];
            for (_, f, g, low, _) in self.histogram.bins() {
                counts[r.bin(f64::from(low))] += f + g;
            }
            psi_of_counts(&counts, r)
        });
        Measures {
            transactions,
            frauds,
            confusion: c,
            precision: ratio(c.tp, c.tp + c.fp),
            recall: ratio(c.tp, frauds),
            average_precision: ap.map(|e| e.value),
            average_precision_error: ap.map(|e| e.error),
            roc_auc: auc.map(|e| e.value),
            roc_auc_error: auc.map(|e| e.error),
            fraud_rate: ratio(frauds, transactions).unwrap_or(0.0),
            score_psi,
            card_precision: None,
            card_precision_k: None,
            card_precision_estimated: false,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        use prost::Message;
        let mut stored = Stored {
            tp: self.confusion.tp,
            fp: self.confusion.fp,
            tn: self.confusion.tn,
            fn_: self.confusion.fn_,
            ..Stored::default()
        };
        match &self.cards {
            Cards::NotKept => {}
            Cards::Unknown => stored.cards_unknown = true,
            Cards::Kept(top) => {
                (stored.card_k, stored.cards_cut_at, stored.cards, stored.card_scores) = top.to_parts();
            }
        }
        let mut previous = 0;
        for (key, frauds, genuine, low, high) in self.histogram.bins() {
            stored.key_steps.push(key - previous);
            previous = key;
            stored.frauds.push(frauds);
            stored.genuine.push(genuine);
            stored.low.push(low);
            stored.high.push(high);
        }
        stored.encode_to_vec()
    }

    /// A stored tally; an error names what is wrong with it.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        use prost::Message;
        let s = Stored::decode(bytes).map_err(|e| format!("a stored quality tally does not decode: {e}"))?;
        let n = s.key_steps.len();
        if [s.frauds.len(), s.genuine.len(), s.low.len(), s.high.len()].iter().any(|&len| len != n) {
            return Err("a stored quality tally has columns of different lengths".into());
        }
        let mut key = 0u32;
        let mut bins = Vec::with_capacity(n);
        for i in 0..n {
            key = key.checked_add(s.key_steps[i]).ok_or("a stored quality tally's bins overflow")?;
            bins.push((key, s.frauds[i], s.genuine[i], s.low[i], s.high[i]));
        }
        let cards = match (s.cards_unknown, s.card_k) {
            (true, _) => Cards::Unknown,
            (false, 0) => Cards::NotKept,
            (false, k) => Cards::Kept(
                Top::from_parts(k, s.cards_cut_at, s.cards, s.card_scores)
                    .map_err(|e| format!("a stored quality tally: {e}"))?,
            ),
        };
        Ok(Self {
            histogram: Histogram::from_bins(bins),
            confusion: Confusion { tp: s.tp, fp: s.fp, tn: s.tn, fn_: s.fn_ },
            cards,
        })
    }
}

/// One stored score row as a tally counts it.
pub struct Scored<'a> {
    /// None for a row an earlier release stored.
    pub card: Option<&'a str>,
    pub model_version: &'a str,
    pub fraud_score: f32,
    pub predicted: bool,
    pub shadow: Option<(&'a str, f32)>,
    pub fraud: bool,
}

/// Counts rows into the tallies of their champions and shadows, with
/// each version's top cards.
#[derive(Default)]
pub struct Counter {
    tallies: BTreeMap<String, Tally>,
    highest: HashMap<String, HashMap<String, f32>>,
    /// Versions that scored a row stored without its card.
    unknown: std::collections::BTreeSet<String>,
}

impl Counter {
    /// Counts a row into the tallies of its champion and its shadow (whose
    /// verdict is its score at its own threshold, 0.5 for a version unknown).
    pub fn count(&mut self, row: Scored<'_>, versions: &HashMap<String, VersionInfo>) {
        self.add(row.model_version, row.card, row.fraud_score, row.predicted, row.fraud);
        if let Some((version, score)) = row.shadow {
            let threshold = versions.get(version).map_or(0.5, |v| v.threshold);
            self.add(version, row.card, score, f64::from(score) >= threshold, row.fraud);
        }
    }

    fn add(&mut self, version: &str, card: Option<&str>, score: f32, predicted: bool, fraud: bool) {
        match self.tallies.get_mut(version) {
            Some(t) => t.add(score, predicted, fraud),
            None => self.tallies.entry(version.to_string()).or_default().add(score, predicted, fraud),
        }
        match card {
            Some(card) => match self.highest.get_mut(version) {
                Some(h) => cards::note_highest(h, card, score),
                None => cards::note_highest(self.highest.entry(version.to_string()).or_default(), card, score),
            },
            None => {
                self.unknown.insert(version.to_string());
            }
        }
    }

    /// The tallies, each with its top `card_k` cards.
    pub fn finish(mut self, card_k: u32) -> BTreeMap<String, Tally> {
        for (version, t) in &mut self.tallies {
            t.cards = if self.unknown.contains(version) {
                Cards::Unknown
            } else {
                Cards::Kept(Top::of(card_k, self.highest.remove(version).unwrap_or_default()))
            };
        }
        self.tallies
    }
}

/// Follows a minute counted again (`old` its tally before, `new` after;
/// None: the version had none) in the day's cards, whose tally counted
/// `day_before` transactions before. Returns true when they cannot follow
/// in place and must be merged again from every minute's tally
/// ([`merge_minutes`]): a card's score may have gone down, or the day's
/// cards were never kept.
pub fn follow_cards(day: &mut Cards, day_before: u64, old: Option<&Tally>, new: Option<&Tally>) -> bool {
    let empty = Top::default();
    let (old, new) = (MinuteCards::of(old, &empty), MinuteCards::of(new, &empty));
    if matches!(day, Cards::NotKept) {
        if day_before > 0 {
            return true;
        }
        *day = Cards::Kept(Top::default());
    }
    match (day, old, new) {
        // Rows without cards (an earlier release's) stay so: the day too.
        (day, _, MinuteCards::Unknown) => {
            *day = Cards::Unknown;
            false
        }
        // Unknown for another minute's sake.
        (Cards::Unknown, MinuteCards::Top(_), _) => false,
        (Cards::Kept(top), MinuteCards::Top(old), MinuteCards::Top(new)) => {
            if top.loses(old, new) {
                return true;
            }
            top.merge(new);
            false
        }
        // The minute's old cards are not known: what it held cannot be taken out.
        _ => true,
    }
}

/// A minute's top as [`follow_cards`] sees it.
enum MinuteCards<'a> {
    /// Kept (empty when the minute counted nothing).
    Top(&'a Top),
    /// Some rows had no card.
    Unknown,
    /// Not recorded (an earlier release's tally).
    NotKept,
}

impl<'a> MinuteCards<'a> {
    fn of(t: Option<&'a Tally>, empty: &'a Top) -> Self {
        match t {
            None => Self::Top(empty),
            Some(t) if t.transactions() == 0 => Self::Top(empty),
            Some(Tally { cards: Cards::Kept(top), .. }) => Self::Top(top),
            Some(Tally { cards: Cards::Unknown, .. }) => Self::Unknown,
            Some(Tally { cards: Cards::NotKept, .. }) => Self::NotKept,
        }
    }
}

/// The day's cards of one version from every minute's tally.
pub fn merge_minutes<'a>(minutes: impl IntoIterator<Item = &'a Tally>) -> Cards {
    let mut top = Top::default();
    for t in minutes.into_iter().filter(|t| t.transactions() > 0) {
        match &t.cards {
            Cards::Kept(minute) => top.merge(minute),
            Cards::Unknown | Cards::NotKept => return Cards::Unknown,
        }
    }
    Cards::Kept(top)
}

#[cfg(test)]
mod tests {
    use super::super::measure::{measure, Judged};
    use super::*;

    fn tally(rows: &[(f32, bool)]) -> Tally {
        let mut t = Tally::default();
        for &(score, fraud) in rows {
            t.add(score, score >= 0.5, fraud);
        }
        t
    }

    #[test]
    fn a_stored_tally_reads_back_equal_and_garbage_is_named() {
        let t = tally(&[(0.9, true), (0.1, false), (0.1, false), (0.0004, false), (0.97, false)]);
        let bytes = t.encode();
        assert_eq!(Tally::decode(&bytes).unwrap(), t);
        assert_eq!(Tally::decode(&Tally::default().encode()).unwrap(), Tally::default());
        assert!(Tally::decode(&[0xff, 0xff, 0xff]).unwrap_err().contains("does not decode"));
    }

    /// A minute's tally of (card, score) rows, counted as the book does.
    fn minute(rows: &[(&str, f32)]) -> Tally {
        let mut counter = Counter::default();
        for &(card, score) in rows {
            let row = Scored {
                card: Some(card),
                model_version: "v",
                fraud_score: score,
                predicted: false,
                shadow: None,
                fraud: false,
            };
            counter.count(row, &HashMap::new());
        }
        counter.finish(2).remove("v").unwrap()
    }

    #[test]
    fn cards_are_stored_with_the_tally_and_an_earlier_releases_have_none() {
        let t = minute(&[("a", 0.9), ("b", 0.4), ("c", 0.4), ("d", 0.1)]);
        assert!(matches!(&t.cards, Cards::Kept(top) if top.entries().len() == 3), "{:?}", t.cards);
        assert_eq!(Tally::decode(&t.encode()).unwrap(), t);
        let unknown = Tally { cards: Cards::Unknown, ..t.clone() };
        assert_eq!(Tally::decode(&unknown.encode()).unwrap(), unknown);
        let earlier = Tally { cards: Cards::NotKept, ..t };
        assert_eq!(Tally::decode(&earlier.encode()).unwrap().cards, Cards::NotKept);
    }

    #[test]
    fn the_days_cards_follow_minutes_counted_again_or_say_they_cannot() {
        let minutes = [minute(&[("a", 0.9), ("b", 0.5)]), minute(&[("a", 0.4), ("c", 0.8), ("d", 0.7)])];
        let (mut day, mut sum) = (Cards::NotKept, 0);
        for m in &minutes {
            assert!(!follow_cards(&mut day, sum, None, Some(m)));
            sum += m.transactions();
        }
        assert_eq!(day, merge_minutes(&minutes));
        // The same scores again (a label came): followed in place.
        assert!(!follow_cards(&mut day, sum, Some(&minutes[1]), Some(&minutes[1].clone())));
        assert_eq!(day, merge_minutes(&minutes));
        // a scored lower where its highest was: merged again.
        let lowered = minute(&[("a", 0.1), ("b", 0.5)]);
        assert!(follow_cards(&mut day.clone(), sum, Some(&minutes[0]), Some(&lowered)));
        // A day whose cards an earlier release did not keep: merged again.
        assert!(follow_cards(&mut Cards::NotKept, 5, None, Some(&minutes[0])));
        // A minute of rows without cards makes the day's unknown, and it stays so.
        let unknown = Tally { cards: Cards::Unknown, ..minutes[0].clone() };
        assert!(!follow_cards(&mut day, sum, Some(&minutes[0]), Some(&unknown)));
        assert_eq!(day, Cards::Unknown);
        assert!(!follow_cards(&mut day, sum, Some(&minutes[1]), Some(&minutes[1].clone())));
        assert_eq!(day, Cards::Unknown);
        assert_eq!(merge_minutes([&unknown, &minutes[1]]), Cards::Unknown);
    }

    #[test]
    fn the_days_cards_followed_through_random_recounts_are_every_minutes_merged() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for k in [1u32, 2, 3, 5] {
            let minute_rows = |next: &mut dyn FnMut(u64) -> u64| -> Vec<(String, f32)> {
                (0..next(8)).map(|_| (format!("c{}", next(12)), next(50) as f32 / 50.0)).collect()
            };
            let tally_of = |rows: &[(String, f32)]| {
                let mut counter = Counter::default();
                for (card, score) in rows {
                    let row = Scored {
                        card: Some(card),
                        model_version: "v",
                        fraud_score: *score,
                        predicted: false,
                        shadow: None,
                        fraud: false,
                    };
                    counter.count(row, &HashMap::new());
                }
                counter.finish(k).remove("v").unwrap_or_default()
            };
            let mut minutes: Vec<Tally> = (0..10).map(|_| tally_of(&minute_rows(&mut next))).collect();
            let (mut day, mut sum) = (merge_minutes(&minutes), minutes.iter().map(Tally::transactions).sum::<u64>());
            let (mut followed, mut remerged) = (0, 0);
            for _ in 0..2_000 {
                let at = next(10) as usize;
                let new = tally_of(&minute_rows(&mut next));
                let (old, new_sum) = (minutes[at].clone(), sum - minutes[at].transactions() + new.transactions());
                if follow_cards(&mut day, sum, Some(&old), Some(&new)) {
                    minutes[at] = new;
                    day = merge_minutes(&minutes);
                    remerged += 1;
                } else {
                    minutes[at] = new;
                    followed += 1;
                }
                sum = new_sum;
                let (Cards::Kept(got), Cards::Kept(want)) = (&day, &merge_minutes(&minutes)) else { panic!("kept") };
                if !got.is_cut() && !want.is_cut() {
                    assert_eq!(got.entries(), want.entries(), "k {k}: followed {followed}, merged again {remerged}");
                }
            }
            assert!(followed > 100 && remerged > 10, "both ways taken: {followed} {remerged}");
        }
    }

    #[test]
    fn a_minute_counted_again_replaces_what_it_added() {
        let (a, b) = (tally(&[(0.9, true), (0.2, false)]), tally(&[(0.7, false), (0.3, true)]));
        let mut day = a.clone();
        day.merge(&b);
        // b's minute got a label: its new tally replaces the old one.
        let b2 = tally(&[(0.7, true), (0.3, true)]);
        day.subtract(&b);
        day.merge(&b2);
        let mut expected = a.clone();
        expected.merge(&b2);
        assert_eq!(day.confusion, expected.confusion);
        assert_eq!(day.histogram.frauds(), 3);
        assert_eq!(day.measures(None), expected.measures(None));
    }

    #[test]
    fn measures_of_a_tally_are_the_exact_ones_within_their_error() {
        let rows: Vec<(f32, bool)> =
            (0..5_000).map(|i| ((i as f32 * 0.618_034).fract(), i % 37 == 0 || (i % 7 == 0 && i % 3 == 0))).collect();
        let exact = measure(
            &rows.iter().map(|&(score, fraud)| Judged { score, predicted: score >= 0.5, fraud }).collect::<Vec<_>>(),
            None,
        );
        let m = tally(&rows).measures(None);
        assert_eq!((m.transactions, m.frauds, m.confusion), (exact.transactions, exact.frauds, exact.confusion));
        let (ap, ap_err) = (m.average_precision.unwrap(), m.average_precision_error.unwrap());
        assert!((ap - exact.average_precision.unwrap()).abs() <= ap_err + 1e-12);
        let (auc, auc_err) = (m.roc_auc.unwrap(), m.roc_auc_error.unwrap());
        assert!((auc - exact.roc_auc.unwrap()).abs() <= auc_err + 1e-12);
    }
}
