//! What long command-line work shows a person: a progress bar on a terminal
//! (indicatif; nothing when stderr is a pipe or a file, so scripts and logs
//! stay clean) and, at the end, one human sentence such as
//! `1,000,000 transactions written in 2.6 s (382k/s)` instead of a log line
//! of raw floats.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// A running count of transactions, drawn on stderr when it is a terminal.
pub struct Progress {
    bar: ProgressBar,
    started: Instant,
}

impl Progress {
    /// `total` transactions expected (None: unknown, e.g. a CSV file's rows).
    pub fn new(total: Option<u64>) -> Self {
        let bar = match total {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template("{bar:40} {human_pos}/{human_len} transactions  {per_sec}  eta {eta}")
                    .expect("a valid template"),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {human_pos} transactions  {per_sec}")
                    .expect("a valid template"),
            ),
        };
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar, started: Instant::now() }
    }

    /// One more transaction done.
    pub fn tick(&self) {
        self.bar.inc(1);
    }

    /// Clears the bar; the summary of `count` transactions that were `done`
    /// (e.g. "written to Kafka topic transactions").
    pub fn finish(self, count: u64, done: &str) -> String {
        self.bar.finish_and_clear();
        summary(count, done, self.started.elapsed())
    }
}

/// `20,000 transactions written to Kafka topic t in 10.0 s (2,000/s)`.
pub fn summary(count: u64, done: &str, took: Duration) -> String {
    let secs = took.as_secs_f64();
    let rate = if secs > 0.0 { count as f64 / secs } else { 0.0 };
    let rate = if rate >= 10_000.0 {
        format!("{}k/s", grouped((rate / 1000.0).round() as u64))
    } else {
        format!("{}/s", grouped(rate.round() as u64))
    };
    let noun = if count == 1 { "transaction" } else { "transactions" };
    format!("{} {noun} {done} in {secs:.1} s ({rate})", grouped(count))
}

/// `1234567` as `1,234,567`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_read_like_sentences() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(
            summary(1_000_000, "written", Duration::from_millis(2_617)),
            "1,000,000 transactions written in 2.6 s (382k/s)"
        );
        assert_eq!(
            summary(20_000, "sent to Kafka topic transactions", Duration::from_secs(10)),
            "20,000 transactions sent to Kafka topic transactions in 10.0 s (2,000/s)"
        );
        assert_eq!(summary(1, "written", Duration::ZERO), "1 transaction written in 0.0 s (0/s)");
    }
}
