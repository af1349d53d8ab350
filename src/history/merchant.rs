//! Merchant risk: per (merchant, UTC day) tiles of transactions and
//! labelled frauds, and the merchant features of a transaction (the
//! `merchant` rows of [`super::definitions`]).
//!
//! A transaction on day `D` reads the tiles of days `[D - delay - w,
//! D - delay)`. A label counts in its transaction's tile only when it was
//! reported before the tile is *final*, at the start of day
//! `tile_day + delay + 1`: the first day whose transactions read the tile.
//! So a tile never changes once anything has read it, the features depend
//! on event times only (not on how fast labels were consumed), and a late
//! label is stored and shown but never moves merchant risk
//! (docs/architecture.md, "History").

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::card::Label;
use super::definitions::DAY;

/// One merchant's day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tile {
    pub transactions: u64,
    pub frauds: u64,
}

/// Transactions and labelled frauds of one merchant window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MerchantWindow {
    pub transactions: u64,
    pub frauds: u64,
}

impl MerchantWindow {
    /// Share labelled fraud; 0 when the window is empty.
    pub fn fraud_rate(self) -> f64 {
        if self.transactions == 0 {
            0.0
        } else {
            self.frauds as f64 / self.transactions as f64
        }
    }
}

/// The UTC day of a Unix time.
pub fn day_of(unix_time: i64) -> i64 {
    unix_time.div_euclid(DAY)
}

/// Whether `label` counts as a fraud in the tile of a transaction made on
/// `day`: a fraud, reported before the tile is final.
pub fn counts(label: Option<&Label>, day: i64, delay_days: i64) -> bool {
    label.is_some_and(|l| l.is_fraud && on_time(l, day, delay_days))
}

/// Whether `label`, of a transaction made on `day`, was reported before
/// the transaction's tile became final.
pub fn on_time(label: &Label, day: i64, delay_days: i64) -> bool {
    label.reported_at < (day + delay_days + 1) * DAY
}

/// The days whose tiles a transaction on `day` reads, for the longest
/// window.
pub fn read_days(day: i64, longest: i64, delay_days: i64) -> std::ops::Range<i64> {
    day - delay_days - longest..day - delay_days
}

/// Every merchant's tiles.
#[derive(Debug, Default)]
pub struct Merchants {
    tiles: HashMap<Arc<str>, BTreeMap<i64, Tile>>,
}

impl Merchants {
    /// The shared name of a merchant (card events keep it, for labels).
    pub fn intern(&mut self, name: &str) -> Arc<str> {
        match self.tiles.get_key_value(name) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = name.into();
                self.tiles.insert(k.clone(), BTreeMap::new());
                k
            }
        }
    }

    pub fn add_transaction(&mut self, merchant: &Arc<str>, day: i64) {
        self.tiles.entry(merchant.clone()).or_default().entry(day).or_default().transactions += 1;
    }

    /// Moves one transaction of `day` into (`+1`) or out of (`-1`) the
    /// tile's frauds.
    pub fn adjust_frauds(&mut self, merchant: &Arc<str>, day: i64, delta: i64) {
        let tile = self.tiles.entry(merchant.clone()).or_default().entry(day).or_default();
        tile.frauds = tile.frauds.saturating_add_signed(delta);
    }

    /// The windows of a transaction at `merchant` on `day`: `windows` in
    /// days, `delay` days before it. An unknown or missing merchant has
    /// empty windows.
    pub fn features(&self, merchant: Option<&str>, day: i64, windows: &[i64], delay: i64) -> Vec<MerchantWindow> {
        let Some(days) = merchant.and_then(|m| self.tiles.get(m)) else {
            return vec![MerchantWindow::default(); windows.len()];
        };
        windows
            .iter()
            .map(|w| {
                days.range(read_days(day, *w, delay)).fold(MerchantWindow::default(), |acc, (_, t)| MerchantWindow {
                    transactions: acc.transactions + t.transactions,
                    frauds: acc.frauds + t.frauds,
                })
            })
            .collect()
    }

    /// Whether the tile of (merchant, day) is held (with a store: was read).
    pub fn holds(&self, merchant: &str, day: i64) -> bool {
        self.tiles.get(merchant).is_some_and(|days| days.contains_key(&day))
    }

    /// Sets a tile read from the store.
    pub fn set_tile(&mut self, merchant: &Arc<str>, day: i64, tile: Tile) {
        self.tiles.entry(merchant.clone()).or_default().insert(day, tile);
    }

    /// The merchants of `tiles` as held here, with those tiles added: a
    /// view for one what-if batch, leaving this one unchanged.
    pub fn overlay(&self, tiles: &[(Arc<str>, i64, Tile)]) -> Merchants {
        let mut view = Merchants::default();
        for (merchant, day, tile) in tiles {
            let days = view
                .tiles
                .entry(merchant.clone())
                .or_insert_with(|| self.tiles.get(merchant).cloned().unwrap_or_default());
            days.insert(*day, *tile);
        }
        view
    }

    /// Whether tiles of `merchant` are here.
    pub fn knows(&self, merchant: &str) -> bool {
        self.tiles.contains_key(merchant)
    }

    /// Forgets tiles before `day` (no transaction from now on reads them),
    /// and merchants left without a tile: memory holds the merchants of the
    /// window, not every name ever seen. (A card's events keep their shared
    /// name; a merchant seen again is interned again.)
    pub fn prune(&mut self, day: i64) {
        self.tiles.retain(|_, days| {
            while days.first_key_value().is_some_and(|(d, _)| *d < day) {
                days.pop_first();
            }
            !days.is_empty()
        });
    }

    pub fn len(&self) -> usize {
        self.tiles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tiles.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_read_whole_days_before_the_delay() {
        let mut m = Merchants::default();
        let shop = m.intern("shop");
        let d = 20_000;
        for (day, n) in [(d - 8, 2), (d - 7, 5), (d - 14, 3), (d - 15, 7), (d - 37, 1), (d - 38, 100)] {
            for _ in 0..n {
                m.add_transaction(&shop, day);
            }
        }
        m.adjust_frauds(&shop, d - 8, 1);
        let w = m.features(Some("shop"), d, &[1, 7, 30], 7);
        // Day d - 7 is inside the delay; d - 38 is before the 30-day window.
        assert_eq!(w[0], MerchantWindow { transactions: 2, frauds: 1 });
        assert_eq!(w[1], MerchantWindow { transactions: 5, frauds: 1 });
        assert_eq!(w[2], MerchantWindow { transactions: 13, frauds: 1 });
        assert_eq!(w[0].fraud_rate(), 0.5);
        assert_eq!(m.features(None, d, &[1], 7), vec![MerchantWindow::default()]);
        assert_eq!(m.features(Some("elsewhere"), d, &[1], 7)[0].fraud_rate(), 0.0);
    }

    #[test]
    fn merchants_without_a_tile_in_the_window_are_forgotten() {
        let mut m = Merchants::default();
        let (old, busy) = (m.intern("old"), m.intern("busy"));
        m.add_transaction(&old, 10);
        m.add_transaction(&busy, 10);
        m.add_transaction(&busy, 50);
        m.prune(40);
        assert_eq!(m.len(), 1, "only the merchant with a tile on day 40 or later");
        assert!(!m.knows("old") && m.knows("busy"));
        assert_eq!(m.features(Some("busy"), 60, &[7], 7)[0], MerchantWindow { transactions: 1, frauds: 0 });
    }

    #[test]
    fn a_what_if_overlay_adds_tiles_without_changing_the_history() {
        let mut m = Merchants::default();
        let shop = m.intern("shop");
        m.add_transaction(&shop, 10);
        let view = m.overlay(&[(shop.clone(), 11, Tile { transactions: 4, frauds: 1 })]);
        assert_eq!(view.features(Some("shop"), 19, &[7], 7)[0], MerchantWindow { transactions: 5, frauds: 1 });
        assert_eq!(m.features(Some("shop"), 19, &[7], 7)[0], MerchantWindow { transactions: 1, frauds: 0 });
        assert!(!m.holds("shop", 11) && view.knows("shop") && !view.knows("elsewhere"));
    }

    #[test]
    fn a_label_counts_only_before_its_tile_is_final() {
        let day = 20_000;
        let final_at = (day + 8) * DAY;
        let fraud = |at| Label::new(true, at);
        assert!(counts(Some(&fraud(final_at - 1)), day, 7));
        assert!(!counts(Some(&fraud(final_at)), day, 7), "reported when day + 8 begins: late");
        assert!(!counts(Some(&Label::new(false, 0)), day, 7));
        assert!(!counts(None, day, 7));
    }
}
