//! Card precision at k, live: per day, the cards ranked by their highest
//! score, and the share of fraudulent ones among the k highest (the
//! analysts' budget: of the k cards they can check a day, how many are
//! fraud). The same definition as `train.py`'s
//! (`spark-job/fraudflight_spark/evaluation.py`, `card_precision_at_k`):
//! a card is fraudulent on a day when any of its transactions of that day
//! is labelled fraud; cards tied with the k-th share its remaining places;
//! a day with fewer than k cards divides by the cards it has.
//!
//! Cassandra's book keeps, per (minute, version), only the minute's [`Top`]:
//! the cards whose highest score in the minute is at or above the minute's
//! k-th (ties kept). The day's top is exact from the minutes' tops: a card
//! among the day's k highest is among the k highest of the minute that holds
//! its highest score, since every card above it there is above it for the
//! day. So a day's top is kept by merging the tops of the minutes counted,
//! and read again from every minute's only when a card's score went down (a
//! transaction scored again lower; labels never change a top).

use std::collections::HashMap;

/// Entries a top keeps at most, in multiples of k: more cards than this tied
/// at the k-th score are cut (by card number) and the top says so.
pub const TIES_KEPT: usize = 10;

/// The cards of some transactions with the highest scores: (card, its
/// highest score), highest first, then by card; every card at or above the
/// k-th highest score (all of them when there are k or fewer).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Top {
    k: u32,
    entries: Vec<(String, f32)>,
    /// The score of cards cut ([`TIES_KEPT`]), while it is at or above the
    /// k-th: the share given to the tied ones is then an estimate.
    cut_at: Option<f32>,
}

/// A day's card precision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CardPrecision {
    /// The share of fraudulent cards among the k highest.
    pub value: f64,
    /// The k it was measured at (the smallest of the tops merged).
    pub k: u32,
    /// Cards tied at the k-th place were cut ([`TIES_KEPT`]): the share
    /// given to the tied ones is estimated.
    pub estimated: bool,
}

impl Top {
    /// The top `k` of cards' highest scores.
    pub fn of(k: u32, highest: HashMap<String, f32>) -> Self {
        let mut top = Self { k: k.max(1), entries: highest.into_iter().collect(), cut_at: None };
        top.trim();
        top
    }

    /// The top of every score row given: (card, score) pairs, a card's
    /// highest counting.
    pub fn of_rows<'a>(k: u32, rows: impl IntoIterator<Item = (&'a str, f32)>) -> Self {
        let mut highest: HashMap<String, f32> = HashMap::new();
        for (card, score) in rows {
            note_highest(&mut highest, card, score);
        }
        Self::of(k, highest)
    }

    /// The k this top keeps (0: an empty top never given one).
    pub fn k(&self) -> u32 {
        self.k
    }

    /// (card, its highest score), highest first, then by card.
    pub fn entries(&self) -> &[(String, f32)] {
        &self.entries
    }

    /// Whether cards that could be among the k highest were cut.
    pub fn is_cut(&self) -> bool {
        self.cut_at.is_some()
    }

    fn scores(&self) -> HashMap<&str, f32> {
        self.entries.iter().map(|(c, s)| (c.as_str(), *s)).collect()
    }

    /// Merges another top in (of other transactions of the same version):
    /// the top of both. Tops of different k give the smaller k's.
    pub fn merge(&mut self, other: &Top) {
        if other.k == 0 {
            return;
        }
        self.k = if self.k == 0 { other.k } else { self.k.min(other.k) };
        let mut highest: HashMap<String, f32> = self.entries.drain(..).collect();
        for (card, score) in &other.entries {
            note_highest(&mut highest, card, *score);
        }
        self.entries = highest.into_iter().collect();
        self.cut_at = match (self.cut_at, other.cut_at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.trim();
    }

    /// Whether taking `old` out for `new` (a minute counted again) may lower
    /// a card this top holds: some card of `old` whose score here may have
    /// come from it has a lower one, or none, in `new`, and is not below k
    /// cards of `new` (pushed out by them, it cannot be among the day's k
    /// highest: they are above it for the day too). Then this top must be
    /// merged again from every minute's.
    pub fn loses(&self, old: &Top, new: &Top) -> bool {
        // An empty top (a minute with nothing left) has k = 0 and no floor.
        let floor = (new.k as usize).checked_sub(1).and_then(|at| new.entries.get(at)).map(|&(_, s)| s);
        let (here, new) = (self.scores(), new.scores());
        old.entries.iter().any(|(card, score)| {
            let kept = new.get(card.as_str()).is_some_and(|s| s >= score);
            let pushed_out = floor.is_some_and(|kth| kth > *score);
            !kept && !pushed_out && here.get(card.as_str()).is_some_and(|here| here <= score)
        })
    }

    /// Card precision at this top's k; `fraud` says whether a card is
    /// fraudulent on the day. None without cards.
    pub fn precision(&self, fraud: impl Fn(&str) -> bool) -> Option<CardPrecision> {
        if self.entries.is_empty() {
            return None;
        }
        let k = self.k as usize;
        let frauds = |entries: &[(String, f32)]| entries.iter().filter(|(c, _)| fraud(c)).count() as f64;
        let value = if self.entries.len() <= k {
            frauds(&self.entries) / self.entries.len() as f64
        } else {
            let kth = self.entries[k - 1].1;
            let above = self.entries.partition_point(|&(_, s)| s > kth);
            let tied = &self.entries[above..];
            let places = (k - above) as f64;
            (frauds(&self.entries[..above]) + frauds(tied) * places / tied.len() as f64) / k as f64
        };
        Some(CardPrecision { value, k: self.k, estimated: self.cut_at.is_some() })
    }

    fn trim(&mut self) {
        self.entries.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let k = self.k as usize;
        if self.entries.len() > k {
            let kth = self.entries[k - 1].1;
            let keep = self.entries.partition_point(|&(_, s)| s >= kth);
            self.entries.truncate(keep);
        }
        let most = k * TIES_KEPT;
        if self.entries.len() > most {
            self.entries.truncate(most);
            // Every card past k ties with the k-th: those cut scored this.
            self.cut_at = Some(self.entries[most - 1].1);
        }
        // Cards cut below the k-th score would not be in the top anyway.
        if self.entries.len() >= k && self.cut_at.is_some_and(|at| at < self.entries[k - 1].1) {
            self.cut_at = None;
        }
    }

    /// As stored with a tally: the k, the score cards were cut at, the
    /// cards and scores.
    pub fn to_parts(&self) -> (u32, Option<f32>, Vec<String>, Vec<f32>) {
        let (cards, scores) = self.entries.iter().cloned().unzip();
        (self.k, self.cut_at, cards, scores)
    }

    /// From stored parts; an error names what is wrong.
    pub fn from_parts(k: u32, cut_at: Option<f32>, cards: Vec<String>, scores: Vec<f32>) -> Result<Self, String> {
        if cards.len() != scores.len() {
            return Err("a stored card top has columns of different lengths".into());
        }
        if k == 0 {
            return Err("a stored card top has k = 0".into());
        }
        let scores = scores.into_iter().map(not_nan);
        let mut top = Self { k, entries: cards.into_iter().zip(scores).collect(), cut_at };
        top.trim();
        Ok(top)
    }
}

/// A score as a top ranks it: NaN (which no model should give) as 0, as
/// the score bins count it (`super::bins`), so that it cannot unsort a top.
fn not_nan(score: f32) -> f32 {
    if score.is_nan() {
        0.0
    } else {
        score
    }
}

/// Notes a card's score, keeping its highest.
pub fn note_highest(highest: &mut HashMap<String, f32>, card: &str, score: f32) {
    let score = not_nan(score);
    match highest.get_mut(card) {
        Some(s) => *s = s.max(score),
        None => {
            highest.insert(card.to_string(), score);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// `train.py`'s definition, written out plainly over (card, score, fraud).
    fn by_definition(k: usize, rows: &[(String, f32, bool)]) -> Option<f64> {
        let mut cards: HashMap<&str, (f32, bool)> = HashMap::new();
        for (card, score, fraud) in rows {
            let e = cards.entry(card).or_insert((f32::NEG_INFINITY, false));
            *e = (e.0.max(*score), e.1 || *fraud);
        }
        if cards.is_empty() {
            return None;
        }
        let mut all: Vec<(f32, bool)> = cards.into_values().collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0));
        if all.len() <= k {
            return Some(all.iter().filter(|c| c.1).count() as f64 / all.len() as f64);
        }
        let kth = all[k - 1].0;
        let above: Vec<_> = all.iter().filter(|c| c.0 > kth).collect();
        let tied: Vec<_> = all.iter().filter(|c| c.0 == kth).collect();
        let places = (k - above.len()) as f64;
        let frauds = |v: &[&(f32, bool)]| v.iter().filter(|c| c.1).count() as f64;
        Some((frauds(&above) + frauds(&tied) * places / tied.len() as f64) / k as f64)
    }

    /// Pseudo-random rows: scores on a grid (ties), cards
    /// seen several times.
    fn rows(seed: u64, n: usize, cards: u64) -> Vec<(String, f32, bool)> {
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        (0..n)
            .map(|_| {
                let card = format!("card{}", next() % cards);
                let score = (next() % 4_000) as f32 / 4_000.0;
                (card, score, next() % 9 == 0)
            })
            .collect()
    }

    fn frauds(rows: &[(String, f32, bool)]) -> HashSet<String> {
        rows.iter().filter(|r| r.2).map(|r| r.0.clone()).collect()
    }

    #[test]
    fn a_hand_example_with_a_tie_at_the_kth_place() {
        // Cards by highest score: a 0.9 (fraud), b 0.8, c 0.7 (fraud), d 0.7; k = 3:
        // a and b, then c and d share one place: (1 + 0 + 0.5) / 3.
        let rows: Vec<(String, f32, bool)> = [
            ("a", 0.9, true),
            ("b", 0.8, false),
            ("b", 0.1, false),
            ("c", 0.7, true),
            ("d", 0.7, false),
            ("e", 0.2, true),
        ]
        .iter()
        .map(|&(c, s, f)| (c.to_string(), s, f))
        .collect();
        let top = Top::of_rows(3, rows.iter().map(|r| (r.0.as_str(), r.1)));
        assert_eq!(top.entries().len(), 4, "the tie at the k-th is kept: {top:?}");
        let fraud = frauds(&rows);
        let p = top.precision(|c| fraud.contains(c)).unwrap();
        assert!((p.value - 1.5 / 3.0).abs() < 1e-12, "{p:?}");
        assert_eq!(by_definition(3, &rows), Some(0.5));
        // Fewer cards than k: over the cards there are.
        let p = Top::of_rows(100, rows.iter().map(|r| (r.0.as_str(), r.1))).precision(|c| fraud.contains(c));
        assert_eq!(p.map(|p| p.value), Some(3.0 / 5.0));
        assert_eq!(Top::of_rows(3, []).precision(|_| true), None);
    }

    #[test]
    fn minutes_merged_give_the_days_precision_by_definition() {
        for seed in 1..=5 {
            let day = rows(seed, 5_000, 900);
            let fraud = frauds(&day);
            for k in [1, 7, 100] {
                let mut merged = Top::default();
                for minute in day.chunks(97) {
                    merged.merge(&Top::of_rows(k, minute.iter().map(|r| (r.0.as_str(), r.1))));
                }
                let got = merged.precision(|c| fraud.contains(c)).unwrap();
                let want = by_definition(k as usize, &day).unwrap();
                assert!((got.value - want).abs() < 1e-12, "seed {seed} k {k}: {} vs {want}", got.value);
                assert!(!got.estimated);
            }
        }
    }

    #[test]
    fn a_lowered_card_is_noticed_and_a_label_never_is() {
        let minute = |rows: &[(&str, f32)]| Top::of_rows(2, rows.iter().copied());
        let (m1, m2) = (minute(&[("a", 0.9), ("b", 0.5)]), minute(&[("a", 0.4), ("c", 0.8)]));
        let mut day = m1.clone();
        day.merge(&m2);
        assert_eq!(day.entries(), &[("a".to_string(), 0.9), ("c".to_string(), 0.8)]);
        // m2 counted again, the same scores (a label changed): nothing lost.
        assert!(!day.loses(&m2, &m2.clone()));
        // m2 without a: a's 0.9 came from m1, nothing lost.
        assert!(!day.loses(&m2, &minute(&[("c", 0.8)])));
        // m1 scored again lower for a: the day must be merged again.
        assert!(day.loses(&m1, &minute(&[("a", 0.3), ("b", 0.5)])));
        // a pushed out of m1 by two cards above it: not among the day's two highest.
        let pushed = minute(&[("x", 0.95), ("y", 0.93), ("a", 0.1)]);
        assert!(!day.loses(&m1, &pushed));
        let mut followed = day.clone();
        followed.merge(&pushed);
        let mut merged = pushed.clone();
        merged.merge(&m2);
        assert_eq!(followed.entries(), merged.entries());
        // A minute with nothing left (an empty top, k = 0) loses what it held.
        assert!(day.loses(&m1, &Top::default()));
        // A card outside the day's top going down changes nothing.
        assert!(!day.loses(&m1, &minute(&[("a", 0.9), ("b", 0.1)])));
    }

    #[test]
    fn too_many_ties_are_cut_and_said() {
        let rows: Vec<(String, f32)> = (0..50).map(|i| (format!("c{i:02}"), 0.5)).collect();
        let top = Top::of_rows(2, rows.iter().map(|(c, s)| (c.as_str(), *s)));
        assert_eq!(top.entries().len(), 2 * TIES_KEPT);
        let p = top.precision(|c| c == "c00").unwrap();
        assert!(p.estimated);
        // Two cards above the cut ones: the cut no longer matters.
        let mut merged = top.clone();
        merged.merge(&Top::of_rows(2, [("x", 0.9), ("y", 0.8)]));
        assert!(!merged.is_cut() && !merged.precision(|_| false).unwrap().estimated, "{merged:?}");
        // A NaN score neither panics nor unsorts the top.
        let odd = Top::of_rows(1, [("n", f32::NAN), ("a", 0.95), ("b", 0.9)]);
        assert_eq!(odd.entries(), &[("a".to_string(), 0.95)]);
        let (k, cut, cards, scores) = top.to_parts();
        assert_eq!(Top::from_parts(k, cut, cards, scores).unwrap(), top);
        assert!(Top::from_parts(2, None, vec!["a".into()], vec![]).is_err());
    }
}
