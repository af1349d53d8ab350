//! Fraud that only history reveals: the scenarios of the fraud-detection
//! handbook's simulator (Le Borgne et al., "Reproducible Machine Learning for
//! Credit Card Fraud Detection", chapter 3), on top of genuine spending.
//!
//! - **Compromised merchant**: every transaction at the merchant is fraud for
//!   28 days (a skimmed terminal); amounts and times look genuine, only the
//!   merchant's labelled history shows it.
//! - **Stolen card number**: for 14 days a third of the card's transactions
//!   are card-not-present, shipped to another city, amounts multiplied by 5
//!   (normal for another card, not for this one).
//! - **Stolen physical card**: one day, a burst of purchases near the
//!   thief's town, amounts multiplied by 2 to 4, minutes apart.
//! - **Card testing**: a burst of small amounts (1 to 10) minutes apart.
//!
//! Unlike the Sparkov-like episodes ([`super::FraudModel::Sparkov`]), no
//! single transaction gives these away: the card's windows and the
//! merchant's risk do (docs/simulator.md).

use std::collections::HashMap;

use rand::Rng;

/// Days a merchant stays compromised.
pub const MERCHANT_DAYS: i64 = 28;
/// Days a stolen card number is used.
pub const CARD_NUMBER_DAYS: i64 = 14;
/// Share of a stolen number's transactions that are the fraudster's.
pub const CARD_NUMBER_SHARE: f64 = 1.0 / 3.0;
/// Amount multiplier of a stolen number's transactions.
pub const CARD_NUMBER_FACTOR: f64 = 5.0;

/// Daily chances of each scenario starting.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// Per merchant and day.
    pub merchant: f64,
    /// Per card and day.
    pub card_number: f64,
    pub physical_card: f64,
    pub card_testing: f64,
}

impl Default for Rates {
    fn default() -> Self {
        // About 1 % of transactions fraudulent, in the handbook's proportions.
        Self { merchant: 0.0002, card_number: 0.0008, physical_card: 0.0006, card_testing: 0.0003 }
    }
}

/// What is compromised, and until which day.
#[derive(Debug, Default)]
pub struct Compromised {
    /// (category, merchant index) -> last day (exclusive).
    merchants: HashMap<(usize, usize), i64>,
    /// card -> last day (exclusive) of its stolen number's use.
    card_numbers: HashMap<usize, i64>,
}

impl Compromised {
    /// Draws the merchants compromised from `day` on.
    pub fn start_merchants(&mut self, rng: &mut impl Rng, rate: f64, day: i64, merchants_per_category: &[usize]) {
        for (category, &n) in merchants_per_category.iter().enumerate() {
            for merchant in 0..n {
                if rng.random::<f64>() < rate {
                    self.merchants.insert((category, merchant), day + MERCHANT_DAYS);
                }
            }
        }
        self.merchants.retain(|_, until| *until > day);
        self.card_numbers.retain(|_, until| *until > day);
    }

    pub fn merchant_is(&self, category: usize, merchant: usize, day: i64) -> bool {
        self.merchants.get(&(category, merchant)).is_some_and(|until| day < *until)
    }

    pub fn steal_number(&mut self, card: usize, day: i64) {
        self.card_numbers.entry(card).or_insert(day + CARD_NUMBER_DAYS);
    }

    pub fn number_is_stolen(&self, card: usize, day: i64) -> bool {
        self.card_numbers.get(&card).is_some_and(|until| day < *until)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    use super::*;

    #[test]
    fn a_compromise_lasts_its_days_and_then_ends() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let mut c = Compromised::default();
        c.start_merchants(&mut rng, 1.0, 10, &[2]);
        assert!(c.merchant_is(0, 1, 10) && c.merchant_is(0, 1, 10 + MERCHANT_DAYS - 1));
        assert!(!c.merchant_is(0, 1, 10 + MERCHANT_DAYS));
        c.steal_number(5, 3);
        assert!(c.number_is_stolen(5, 3 + CARD_NUMBER_DAYS - 1) && !c.number_is_stolen(5, 3 + CARD_NUMBER_DAYS));
        assert!(!c.number_is_stolen(6, 3));
    }
}
