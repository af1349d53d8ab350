//! Merchant categories and how people spend in them: amount distributions,
//! hours of the day, and how often each age group shops there.
//!
//! Values follow the shape of the Sparkov profiles (grocery and gas are
//! frequent and small, travel is rare and large, online categories run all
//! day and night).

/// One merchant category of the Kaggle / Sparkov data.
pub struct Category {
    pub name: &'static str,
    /// Median amount in dollars (log-normal location).
    pub median_amt: f64,
    /// Log-normal spread of the amount.
    pub sigma: f64,
    /// Relative weight of each hour 0..23 for genuine transactions.
    pub hours: &'static [f64; 24],
    /// Relative frequency for (young, adult, senior) customers.
    pub weight: [f64; 3],
    /// Online categories: merchant location is less tied to home.
    pub online: bool,
}

const DAYTIME: [f64; 24] = [
    0.2, 0.1, 0.1, 0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 4.0, 4.5, 5.0, //
    5.5, 5.0, 4.5, 4.5, 5.0, 5.5, 5.0, 4.0, 3.0, 2.0, 1.0, 0.5,
];
const EVENING: [f64; 24] = [
    0.5, 0.3, 0.2, 0.1, 0.1, 0.1, 0.3, 0.5, 1.0, 1.5, 2.0, 3.0, //
    4.0, 3.0, 2.5, 2.5, 3.0, 4.5, 6.0, 6.5, 6.0, 4.5, 2.5, 1.0,
];
const ALL_DAY: [f64; 24] = [
    1.2, 1.0, 0.9, 0.8, 0.8, 1.0, 1.5, 2.0, 2.5, 3.0, 3.0, 3.0, //
    3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.2, 3.5, 3.5, 3.2, 2.5, 1.8,
];

macro_rules! categories {
    ($( ($n:expr, $m:expr, $s:expr, $h:expr, [$y:expr, $a:expr, $o:expr], $on:expr) ),* $(,)?) => {
        &[ $( Category { name: $n, median_amt: $m, sigma: $s, hours: &$h, weight: [$y, $a, $o], online: $on } ),* ]
    };
}

/// The fourteen Sparkov categories.
pub const CATEGORIES: &[Category] = categories![
    ("gas_transport", 60.0, 0.35, DAYTIME, [11.0, 10.0, 9.0], false),
    ("grocery_pos", 100.0, 0.45, DAYTIME, [8.0, 10.0, 11.0], false),
    ("home", 45.0, 0.9, DAYTIME, [6.0, 9.0, 10.0], false),
    ("shopping_pos", 35.0, 1.0, DAYTIME, [9.0, 8.0, 7.0], false),
    ("kids_pets", 40.0, 0.9, DAYTIME, [6.0, 9.0, 6.0], false),
    ("shopping_net", 45.0, 1.1, ALL_DAY, [10.0, 7.0, 4.0], true),
    ("entertainment", 40.0, 1.0, EVENING, [9.0, 7.0, 5.0], false),
    ("food_dining", 35.0, 0.8, EVENING, [8.0, 7.0, 6.0], false),
    ("personal_care", 30.0, 0.9, DAYTIME, [7.0, 7.0, 7.0], false),
    ("health_fitness", 45.0, 0.7, DAYTIME, [5.0, 6.0, 8.0], false),
    ("misc_pos", 30.0, 1.1, DAYTIME, [5.0, 6.0, 6.0], false),
    ("misc_net", 25.0, 1.2, ALL_DAY, [5.0, 4.0, 3.0], true),
    ("grocery_net", 50.0, 0.5, ALL_DAY, [3.0, 3.5, 3.0], true),
    ("travel", 80.0, 1.3, ALL_DAY, [2.5, 3.0, 3.5], true),
];

/// Index into [`CATEGORIES`] by name.
pub fn index_of(name: &str) -> Option<usize> {
    CATEGORIES.iter().position(|c| c.name == name)
}
