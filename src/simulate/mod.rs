//! The transaction simulator: a deterministic, Sparkov-like stream of card
//! transactions with fraud episodes injected on compromised cards.
//!
//! How it works: a fixed population of customers (home town, age, gender, job)
//! spends day by day. Each simulated day every customer makes a Poisson number
//! of genuine purchases whose category, hour and amount depend on the
//! category and on the customer's age group; the day's purchases are sorted by
//! time and handed out one by one. Now and then a card is compromised: the
//! fraudster first tests it with a few tiny online amounts, then runs a
//! night-time burst of large purchases in online, grocery and misc categories
//! far from the customer's home. About 0.5 to 1 % of transactions are fraud.
//!
//! Everything is drawn from one seeded xoshiro generator, so a seed always
//! gives the same stream (and the same CSV bytes).

pub mod category;
pub mod geography;
pub mod labels;
pub mod output;
mod population;
pub mod scenarios;

use chrono::{DateTime, Datelike, NaiveDate};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::record::Transaction;
use category::CATEGORIES;
use population::{Customer, Draft, Population};

/// Settings of a simulation run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    /// Number of customers (cards) in the population.
    pub customers: usize,
    /// First simulated day, as Unix seconds at 00:00 UTC.
    pub start_unix: i64,
    /// Probability that a given card is compromised on a given day.
    pub compromise_rate: f64,
    /// Which kind of fraud is injected.
    pub fraud: FraudModel,
}

/// The fraud a simulation injects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FraudModel {
    /// Sparkov-like episodes: card testing, then a night-time burst of large
    /// purchases far from home (visible in single transactions).
    #[default]
    Sparkov,
    /// The handbook's scenarios ([`scenarios`]): compromised merchants,
    /// stolen card numbers and cards, card testing (visible in history).
    Handbook,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            customers: 2_000,
            // 2025-01-01 00:00:00 UTC
            start_unix: 1_735_689_600,
            compromise_rate: 0.0032,
            fraud: FraudModel::Sparkov,
        }
    }
}

const SECONDS_PER_DAY: i64 = 86_400;
/// Categories fraudsters test cards in, and burst categories with their
/// median fraud amounts (Sparkov: online shopping and misc, grocery at night).
const TESTING_CATEGORIES: &[&str] = &["misc_net", "shopping_net", "gas_transport"];
const BURST_CATEGORIES: &[(&str, f64)] = &[
    ("shopping_net", 850.0),
    ("misc_net", 700.0),
    ("grocery_pos", 310.0),
    ("shopping_pos", 650.0),
    ("misc_pos", 250.0),
];
/// Night hours of fraud bursts.
const FRAUD_HOURS: &[u32] = &[22, 23, 0, 1, 2, 3];

/// An infinite, time-ordered iterator of simulated transactions.
pub struct Simulator {
    config: SimConfig,
    rng: Xoshiro256PlusPlus,
    population: Population,
    day: i64,
    /// Today's transactions, sorted by time, reversed so `pop` hands out the
    /// earliest.
    today: Vec<Draft>,
    /// Fraud bursts that run past midnight, handed out the next day.
    carry: Vec<Draft>,
    /// The handbook scenarios under way.
    compromised: scenarios::Compromised,
}

impl Simulator {
    pub fn new(config: SimConfig) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(config.seed);
        let population = Population::generate(&mut rng, config.customers.max(1), config.start_unix);
        let compromised = scenarios::Compromised::default();
        Self { config, rng, population, day: 0, today: Vec::new(), carry: Vec::new(), compromised }
    }

    /// The customers of this run (for tests and statistics).
    pub fn customers(&self) -> &[Customer] {
        &self.population.customers
    }

    fn simulate_day(&mut self) {
        let day_start = self.config.start_unix + self.day * SECONDS_PER_DAY;
        let day_end = day_start + SECONDS_PER_DAY;
        let mut txns = std::mem::take(&mut self.carry);
        if self.config.fraud == FraudModel::Handbook {
            let merchants = self.population.merchants_per_category();
            let rate = scenarios::Rates::default().merchant;
            self.compromised.start_merchants(&mut self.rng, rate, self.day, &merchants);
        }
        for c in 0..self.population.customers.len() {
            let rate = self.population.customers[c].daily_rate;
            for _ in 0..poisson(&mut self.rng, rate) {
                let draft = self.genuine(c, day_start);
                txns.push(match self.config.fraud {
                    FraudModel::Sparkov => draft,
                    FraudModel::Handbook => self.handbook_fraud(draft),
                });
            }
            match self.config.fraud {
                FraudModel::Sparkov if self.rng.random::<f64>() < self.config.compromise_rate => {
                    self.fraud_episode(c, day_start, &mut txns)
                }
                FraudModel::Sparkov => {}
                FraudModel::Handbook => self.handbook_starts(c, day_start, &mut txns),
            }
        }
        let (later, mut txns): (Vec<_>, Vec<_>) = txns.into_iter().partition(|t| t.unix_time >= day_end);
        self.carry = later;
        // Newest first so that `pop` yields in time order.
        txns.sort_unstable_by(|a, b| b.unix_time.cmp(&a.unix_time).then_with(|| b.id.cmp(&a.id)));
        self.today = txns;
        self.day += 1;
    }

    fn genuine(&mut self, c: usize, day_start: i64) -> Draft {
        let customer = &self.population.customers[c];
        let cat = self.population.category_sampler[customer.age_group].sample(&mut self.rng);
        let category = &CATEGORIES[cat];
        let hour = self.population.hour_sampler[cat].sample(&mut self.rng) as i64;
        let time = day_start + hour * 3600 + self.rng.random_range(0..3600);
        let amt = log_normal(&mut self.rng, category.median_amt * customer.spend_factor, category.sigma);
        // Travel and online purchases are sometimes far from home; everything
        // else happens within about a degree of it, as in Sparkov.
        let far = category.online && self.rng.random::<f64>() < 0.03;
        let merchant = self.population.merchant(&mut self.rng, cat);
        self.population.draft(&mut self.rng, c, merchant, cat, amt.max(1.0), time, far, false)
    }

    fn fraud_episode(&mut self, c: usize, day_start: i64, txns: &mut Vec<Draft>) {
        let night_start = self.rng.random_range(0..FRAUD_HOURS.len() - 2);
        let mut clock = day_start + FRAUD_HOURS[night_start] as i64 * 3600 + self.rng.random_range(0..1800);
        // Card testing: one to three tiny online amounts.
        let tests = self.rng.random_range(1..=3);
        clock = self.card_testing(c, tests, clock, true, 60..900, txns);
        // The burst: large amounts, far from home, minutes apart.
        for _ in 0..self.rng.random_range(2..=7) {
            let (name, median) = BURST_CATEGORIES[self.rng.random_range(0..BURST_CATEGORIES.len())];
            let cat = category::index_of(name).expect("burst categories exist");
            let amt = log_normal(&mut self.rng, median, 0.45);
            let merchant = self.population.merchant(&mut self.rng, cat);
            txns.push(self.population.draft(&mut self.rng, c, merchant, cat, amt, clock, true, true));
            clock += self.rng.random_range(120..2400);
        }
    }
}

impl Simulator {
    /// A genuine purchase as the handbook's scenarios leave it: fraud at a
    /// compromised merchant; the fraudster's (another city, 5 x the amount)
    /// a third of the time while the card's number is stolen.
    fn handbook_fraud(&mut self, mut draft: Draft) -> Draft {
        let c = draft.customer as usize;
        if self.compromised.merchant_is(draft.category as usize, draft.merchant as usize, self.day) {
            draft.fraud = true;
        } else if self.compromised.number_is_stolen(c, self.day)
            && self.rng.random::<f64>() < scenarios::CARD_NUMBER_SHARE
        {
            let amt = draft.amt * scenarios::CARD_NUMBER_FACTOR;
            let (merchant, cat, time) = (draft.merchant as usize, draft.category as usize, draft.unix_time);
            draft = self.population.draft(&mut self.rng, c, merchant, cat, amt, time, true, true);
        }
        draft
    }

    /// `count` tiny amounts in testing categories from `clock` on, `gap`
    /// seconds apart; the clock after them.
    fn card_testing(
        &mut self,
        c: usize,
        count: u32,
        mut clock: i64,
        far: bool,
        gap: std::ops::Range<i64>,
        txns: &mut Vec<Draft>,
    ) -> i64 {
        for _ in 0..count {
            let cat = category::index_of(TESTING_CATEGORIES[self.rng.random_range(0..TESTING_CATEGORIES.len())])
                .expect("testing categories exist");
            let amt = 1.0 + self.rng.random::<f64>() * 9.0;
            let merchant = self.population.merchant(&mut self.rng, cat);
            txns.push(self.population.draft(&mut self.rng, c, merchant, cat, amt, clock, far, true));
            clock += self.rng.random_range(gap.clone());
        }
        clock
    }

    /// Scenarios that start on card `c` today.
    fn handbook_starts(&mut self, c: usize, day_start: i64, txns: &mut Vec<Draft>) {
        let rates = scenarios::Rates::default();
        if self.rng.random::<f64>() < rates.card_number {
            self.compromised.steal_number(c, self.day);
        }
        if self.rng.random::<f64>() < rates.physical_card {
            // A burst of purchases in the thief's town, 2 to 4 times what
            // the card would spend there, minutes apart.
            let mut clock = day_start + self.rng.random_range(8..20) * 3600;
            for _ in 0..self.rng.random_range(3..=8) {
                let mut draft = self.genuine(c, day_start);
                let amt = draft.amt * self.rng.random_range(2.0..4.0);
                let (merchant, cat) = (draft.merchant as usize, draft.category as usize);
                draft = self.population.draft(&mut self.rng, c, merchant, cat, amt, clock, true, true);
                txns.push(draft);
                clock += self.rng.random_range(120..1800);
            }
        }
        if self.rng.random::<f64>() < rates.card_testing {
            let clock = day_start + self.rng.random_range(0..22) * 3600;
            let tests = self.rng.random_range(5..=15);
            self.card_testing(c, tests, clock, false, 30..300, txns);
        }
    }
}

impl Iterator for Simulator {
    type Item = Transaction;

    fn next(&mut self) -> Option<Transaction> {
        while self.today.is_empty() {
            self.simulate_day();
        }
        self.today.pop().map(|d| self.population.transaction(&d))
    }
}

/// Formats Unix seconds as the Kaggle `trans_date_trans_time` text,
/// "YYYY-MM-DD HH:MM:SS" (UTC). Written digit by digit: chrono's `format`
/// parses its pattern on every call and was a tenth of the simulator's time.
pub fn format_time(unix: i64) -> String {
    let Some(t) = DateTime::from_timestamp(unix, 0) else { return String::new() };
    let (date, secs) = (t.date_naive(), unix.rem_euclid(86_400) as u32);
    let year = date.year();
    if !(0..=9999).contains(&year) {
        return t.naive_utc().format("%Y-%m-%d %H:%M:%S").to_string();
    }
    let mut buf = *b"0000-00-00 00:00:00";
    let mut put = |at: usize, value: u32, width: usize| {
        let mut v = value;
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year as u32, 4);
    put(5, date.month(), 2);
    put(8, date.day(), 2);
    put(11, secs / 3600, 2);
    put(14, secs / 60 % 60, 2);
    put(17, secs % 60, 2);
    String::from_utf8(buf.to_vec()).expect("ASCII digits")
}

/// Formats a date as "YYYY-MM-DD".
pub fn format_date(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

/// Poisson sample by inversion (Knuth); rates here are small (< 10).
fn poisson(rng: &mut impl Rng, lambda: f64) -> u32 {
    let limit = (-lambda).exp();
    let mut k = 0;
    let mut p = rng.random::<f64>();
    while p > limit {
        k += 1;
        p *= rng.random::<f64>();
    }
    k
}

/// Log-normal sample with the given median, rounded to cents.
fn log_normal(rng: &mut impl Rng, median: f64, sigma: f64) -> f64 {
    // Box-Muller; one of the pair is enough here.
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    ((median * (sigma * z).exp()) * 100.0).round() / 100.0
}

/// Weighted choice over a fixed table, by binary search on cumulative weights.
#[derive(Debug, Clone)]
struct WeightedIndex {
    cumulative: Vec<f64>,
}

impl WeightedIndex {
    fn new(weights: impl IntoIterator<Item = f64>) -> Self {
        let mut total = 0.0;
        let cumulative = weights
            .into_iter()
            .map(|w| {
                total += w;
                total
            })
            .collect();
        Self { cumulative }
    }

    fn sample(&self, rng: &mut impl Rng) -> usize {
        let total = *self.cumulative.last().expect("non-empty weights");
        let x = rng.random::<f64>() * total;
        self.cumulative.partition_point(|&c| c <= x).min(self.cumulative.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(seed: u64, n: usize) -> Vec<Transaction> {
        Simulator::new(SimConfig { seed, ..SimConfig::default() }).take(n).collect()
    }

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        assert_eq!(take(7, 2_000), take(7, 2_000));
        assert_ne!(take(7, 200), take(8, 200));
    }

    #[test]
    fn fraud_rate_is_between_half_and_one_percent() {
        let txns = take(42, 200_000);
        let frauds = txns.iter().filter(|t| t.is_fraud == Some(1)).count();
        let rate = frauds as f64 / txns.len() as f64;
        assert!((0.005..=0.01).contains(&rate), "fraud rate {rate}");
    }

    #[test]
    fn the_handbook_scenarios_make_about_one_percent_fraud_in_time_order() {
        let config = SimConfig { seed: 5, customers: 500, fraud: FraudModel::Handbook, ..SimConfig::default() };
        let txns: Vec<Transaction> = Simulator::new(config).take(100_000).collect();
        let frauds = txns.iter().filter(|t| t.is_fraud == Some(1)).count();
        assert!((300..3_000).contains(&frauds), "{frauds} frauds in 100,000");
        assert!(txns.windows(2).all(|w| w[0].unix_time <= w[1].unix_time));
        // A compromised merchant's frauds look like its genuine sales: the
        // share of frauds below 100 dollars is far from zero (Sparkov's are
        // nearly all large or tiny).
        let small = txns.iter().filter(|t| t.is_fraud == Some(1) && (10.0..100.0).contains(&t.amt)).count();
        assert!(small * 5 > frauds, "{small} of {frauds} frauds between 10 and 100");
    }

    #[test]
    fn stream_is_time_ordered_with_unique_ids() {
        let txns = take(3, 50_000);
        assert!(txns.windows(2).all(|w| w[0].unix_time <= w[1].unix_time));
        let ids: std::collections::HashSet<_> = txns.iter().map(|t| &t.trans_num).collect();
        assert_eq!(ids.len(), txns.len());
    }

    #[test]
    fn fraud_is_larger_later_and_farther_than_genuine() {
        let txns = take(11, 200_000);
        let (fraud, genuine): (Vec<_>, Vec<_>) = txns.iter().partition(|t| t.is_fraud == Some(1));
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let burst_amt = median(&mut fraud.iter().map(|t| t.amt).filter(|a| *a > 20.0).collect());
        let genuine_amt = median(&mut genuine.iter().map(|t| t.amt).collect());
        assert!(burst_amt > 4.0 * genuine_amt, "fraud burst {burst_amt} vs genuine {genuine_amt}");
        let night = |v: &[&Transaction]| {
            v.iter().filter(|t| matches!((t.unix_time.unwrap() % 86_400) / 3600, 22 | 23 | 0..=3)).count() as f64
                / v.len() as f64
        };
        assert!(night(&fraud) > 0.9 && night(&genuine) < 0.2);
        let dist = |t: &&Transaction| crate::features::haversine_km(t.lat, t.long, t.merch_lat, t.merch_long);
        let far = |v: &[&Transaction]| v.iter().filter(|t| dist(t) > 300.0).count() as f64 / v.len() as f64;
        assert!(far(&fraud) > 0.5 && far(&genuine) < 0.05, "far: fraud {} genuine {}", far(&fraud), far(&genuine));
    }

    #[test]
    fn time_text_matches_chrono() {
        for unix in [0, 1, 59, 3_599, 86_399, 951_782_400, 1_735_689_600, 4_102_444_799, -86_401] {
            let chrono = DateTime::from_timestamp(unix, 0).unwrap().naive_utc().format("%Y-%m-%d %H:%M:%S").to_string();
            assert_eq!(format_time(unix), chrono, "{unix}");
        }
    }

    #[test]
    fn records_are_complete_and_consistent() {
        for t in take(5, 5_000) {
            assert_eq!(t.cc_num.len(), 16);
            assert!(t.cc_num.bytes().all(|b| b.is_ascii_digit()));
            assert_eq!(t.trans_date_trans_time.as_deref(), Some(format_time(t.unix_time.unwrap()).as_str()));
            assert!(t.amt > 0.0 && (-90.0..=90.0).contains(&t.merch_lat));
            assert!(category::index_of(&t.category).is_some());
        }
    }
}
