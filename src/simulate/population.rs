//! The simulated population: customers with a home, an age, a card, and
//! spending habits; merchants per category; and the constructor that turns a
//! (customer, merchant, amount, time) choice into a [`Transaction`].

use chrono::{DateTime, Datelike, Duration, NaiveDate};
use rand::Rng;

use super::category::CATEGORIES;
use super::geography::{self, CITIES};
use super::{format_date, format_time, WeightedIndex};
use crate::record::Transaction;

/// One card holder.
#[derive(Debug, Clone)]
pub struct Customer {
    pub cc_num: String,
    pub first: String,
    pub last: String,
    pub gender: &'static str,
    pub street: String,
    pub city: usize,
    pub lat: f64,
    pub long: f64,
    pub job: &'static str,
    pub dob: String,
    /// 0 = young (< 30), 1 = adult (< 55), 2 = senior.
    pub age_group: usize,
    /// Mean purchases per day.
    pub daily_rate: f64,
    /// Multiplier on category amounts (income, household size).
    pub spend_factor: f64,
}

pub struct Population {
    pub customers: Vec<Customer>,
    pub category_sampler: [WeightedIndex; 3],
    pub hour_sampler: Vec<WeightedIndex>,
    /// Merchant names per category.
    merchants: Vec<Vec<String>>,
}

const MERCHANTS_PER_CATEGORY: usize = 40;

impl Population {
    pub fn generate(rng: &mut impl Rng, customers: usize, start_unix: i64) -> Self {
        let start = DateTime::from_timestamp(start_unix, 0).expect("start time in range").date_naive();
        let city_weights = WeightedIndex::new(CITIES.iter().map(|c| (c.population as f64).sqrt()));
        let customers = (0..customers).map(|_| customer(rng, start, &city_weights)).collect();
        let category_sampler = [0, 1, 2].map(|g| WeightedIndex::new(CATEGORIES.iter().map(|c| c.weight[g])));
        let hour_sampler = CATEGORIES.iter().map(|c| WeightedIndex::new(c.hours.iter().copied())).collect();
        let merchants = CATEGORIES
            .iter()
            .map(|c| {
                (0..MERCHANTS_PER_CATEGORY)
                    .map(|_| {
                        let a = pick(rng, geography::MERCHANT_WORDS);
                        let b = pick(rng, geography::MERCHANT_WORDS);
                        let short = c.name.split('_').next().unwrap_or(c.name);
                        format!("{a} {b} {short}")
                    })
                    .collect()
            })
            .collect();
        Self { customers, category_sampler, hour_sampler, merchants }
    }

    /// How many merchants each category has.
    pub fn merchants_per_category(&self) -> Vec<usize> {
        self.merchants.iter().map(Vec::len).collect()
    }

    pub fn merchant(&self, rng: &mut impl Rng, category: usize) -> usize {
        rng.random_range(0..self.merchants[category].len())
    }

    /// Draws the details of one purchase (merchant location, id) without
    /// building its record yet: drafts are small, so sorting a day of them is
    /// cheap. `far` puts the merchant in another town, hundreds of km away.
    #[allow(clippy::too_many_arguments)]
    pub fn draft(
        &self,
        rng: &mut impl Rng,
        customer: usize,
        merchant: usize,
        category: usize,
        amt: f64,
        unix_time: i64,
        far: bool,
        fraud: bool,
    ) -> Draft {
        let c = &self.customers[customer];
        let (merch_lat, merch_long) = if far {
            let other = &CITIES[rng.random_range(0..CITIES.len())];
            (other.lat + rng.random_range(-0.5..0.5), other.long + rng.random_range(-0.5..0.5))
        } else {
            (c.lat + rng.random_range(-1.0..1.0), c.long + rng.random_range(-1.0..1.0))
        };
        Draft {
            unix_time,
            id: rng.random(),
            amt: (amt * 100.0).round() / 100.0,
            merch_lat: round6(merch_lat.clamp(-90.0, 90.0)),
            merch_long: round6(merch_long),
            customer: customer as u32,
            merchant: merchant as u16,
            category: category as u8,
            fraud,
        }
    }

    /// Builds the record of a drafted purchase.
    pub fn transaction(&self, d: &Draft) -> Transaction {
        let c = &self.customers[d.customer as usize];
        let city = &CITIES[c.city];
        let category = d.category as usize;
        Transaction {
            trans_date_trans_time: Some(format_time(d.unix_time)),
            cc_num: c.cc_num.clone(),
            merchant: Some(self.merchants[category][d.merchant as usize].clone()),
            category: CATEGORIES[category].name.to_string(),
            amt: d.amt,
            first: Some(c.first.clone()),
            last: Some(c.last.clone()),
            gender: Some(c.gender.to_string()),
            street: Some(c.street.clone()),
            city: Some(city.name.to_string()),
            state: Some(city.state.to_string()),
            zip: Some(city.zip.to_string()),
            lat: c.lat,
            long: c.long,
            city_pop: Some(city.population),
            job: Some(c.job.to_string()),
            dob: c.dob.clone(),
            trans_num: hex32(d.id),
            unix_time: Some(d.unix_time),
            merch_lat: d.merch_lat,
            merch_long: d.merch_long,
            is_fraud: Some(d.fraud as i64),
        }
    }
}

/// A purchase decided but not yet written out as a [`Transaction`].
#[derive(Debug, Clone, Copy)]
pub struct Draft {
    pub unix_time: i64,
    pub id: u128,
    pub amt: f64,
    pub merch_lat: f64,
    pub merch_long: f64,
    pub customer: u32,
    pub merchant: u16,
    pub category: u8,
    pub fraud: bool,
}

fn customer(rng: &mut impl Rng, start: NaiveDate, city_weights: &WeightedIndex) -> Customer {
    let city = city_weights.sample(rng);
    let home = &CITIES[city];
    let female = rng.random::<bool>();
    // Ages 18..90, most people between 25 and 65.
    let age = (18.0 + (rng.random::<f64>() + rng.random::<f64>() + rng.random::<f64>()) / 3.0 * 72.0) as i64;
    let dob = start - Duration::days(age * 365 + rng.random_range(0..365));
    let age_group = match start.year() - dob.year() {
        ..30 => 0,
        30..55 => 1,
        _ => 2,
    };
    Customer {
        cc_num: card_number(rng),
        first: pick(rng, if female { geography::FIRST_NAMES_F } else { geography::FIRST_NAMES_M }).to_string(),
        last: pick(rng, geography::LAST_NAMES).to_string(),
        gender: if female { "F" } else { "M" },
        street: format!("{} {}", rng.random_range(1..9999), pick(rng, geography::STREETS)),
        city,
        lat: round4(home.lat + rng.random_range(-0.3..0.3)),
        long: round4(home.long + rng.random_range(-0.3..0.3)),
        job: pick(rng, geography::JOBS),
        dob: format_date(dob),
        age_group,
        daily_rate: 1.0 + rng.random::<f64>() * 3.0,
        spend_factor: 0.6 + rng.random::<f64>() * 0.9,
    }
}

/// A 16-digit Visa-style number with a valid Luhn check digit.
fn card_number(rng: &mut impl Rng) -> String {
    let mut digits = vec![4u8];
    digits.extend((0..14).map(|_| rng.random_range(0..10u8)));
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = d as u32;
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    digits.push(((10 - sum % 10) % 10) as u8);
    digits.iter().map(|d| char::from(b'0' + d)).collect()
}

/// 32 lower-case hex digits (the Kaggle `trans_num` shape), without the
/// formatting machinery.
fn hex32(id: u128) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let bytes: Vec<u8> = (0..32).rev().map(|i| DIGITS[((id >> (i * 4)) & 0xf) as usize]).collect();
    String::from_utf8(bytes).expect("hex digits are ASCII")
}

fn pick<T: Copy>(rng: &mut impl Rng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn hex32_matches_format() {
        for id in [0u128, 1, u128::MAX, 0x0123_4567_89ab_cdef_0011_2233_4455_6677] {
            assert_eq!(hex32(id), format!("{id:032x}"));
        }
    }

    #[test]
    fn card_numbers_pass_luhn() {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
        for _ in 0..100 {
            let n = card_number(&mut rng);
            let sum: u32 = n
                .bytes()
                .rev()
                .enumerate()
                .map(|(i, b)| {
                    let d = (b - b'0') as u32;
                    if i % 2 == 1 {
                        if d * 2 > 9 {
                            d * 2 - 9
                        } else {
                            d * 2
                        }
                    } else {
                        d
                    }
                })
                .sum();
            assert_eq!(sum % 10, 0, "{n}");
        }
    }
}
