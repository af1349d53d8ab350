//! Retrying: exponential backoff with jitter, forever, until the work
//! succeeds or is abandoned (the shutdown deadline passed). A sink that is
//! down therefore stalls its batches rather than losing them. Every retry
//! loop in fraudflight (sink writes, connecting, scoring a batch) counts its
//! attempts, logs and waits through [`Retry`].

use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

/// Delays between attempts: 100 ms doubling to 5 s, each with +-20% jitter so
/// many writers do not retry in lock step.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: Duration::from_millis(100), max: Duration::from_secs(5) }
    }
}

impl Backoff {
    /// The next delay; grows until `max`.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = rand::rng().random_range(0.8..1.2);
        base.mul_f64(jitter)
    }

    /// Sleeps the next delay; false if `abandon` fired first.
    pub async fn wait(&mut self, abandon: &CancellationToken) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(self.next_delay()) => true,
            _ = abandon.cancelled() => false,
        }
    }
}

/// The state of one retry loop:
///
/// ```ignore
/// let mut retry = Retry::new("cassandra", abandon);
/// loop {
///     match write().await {
///         Ok(done) => return Ok(done),
///         Err(e) => retry.failed(e).await?, // waits, or Err(Abandoned)
///     }
/// }
/// ```
pub struct Retry<'a> {
    what: &'static str,
    abandon: &'a CancellationToken,
    backoff: Backoff,
    attempts: u32,
}

/// Failed attempts between two "still failing" log lines.
const LOG_EVERY: u32 = 20;

impl<'a> Retry<'a> {
    pub fn new(what: &'static str, abandon: &'a CancellationToken) -> Self {
        Self { what, abandon, backoff: Backoff::default(), attempts: 0 }
    }

    /// Counts a failed attempt and waits before the next one (logging every
    /// [`LOG_EVERY`] failures); [`Abandoned`], naming the error, once
    /// `abandon` fires.
    pub async fn failed(&mut self, error: impl std::fmt::Display) -> Result<(), Abandoned> {
        self.attempts += 1;
        if self.attempts.is_multiple_of(LOG_EVERY) {
            tracing::warn!(what = self.what, error = %error, attempts = self.attempts, "still failing; retrying");
        }
        if self.backoff.wait(self.abandon).await {
            Ok(())
        } else {
            Err(Abandoned { sink: self.what, attempts: self.attempts, last: error.to_string() })
        }
    }

    /// Failed attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

/// Whether a backend's error says the credentials or the certificate are
/// wrong (refused login, 401/403, a certificate not trusted): a
/// configuration problem that retrying cannot fix. Matched on the message
/// because each driver wraps these differently.
pub fn is_credentials_error(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "authenticat",
        "bad credentials",
        "401 unauthorized",
        "403 forbidden",
        "invalid peer certificate",
        "certificate verify",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

/// Whether a sink's writes are failing. Logs each change once (not once per
/// failed write), with how long the sink was unavailable; the dashboard
/// and `/ready` read it.
pub struct Health {
    sink: &'static str,
    failing: std::sync::atomic::AtomicBool,
    since: std::sync::Mutex<Option<std::time::Instant>>,
    /// Failed attempts since start, for `/metrics`.
    errors: std::sync::atomic::AtomicU64,
}

impl Health {
    pub fn new(sink: &'static str) -> Self {
        Self { sink, failing: Default::default(), since: Default::default(), errors: Default::default() }
    }

    pub fn failed(&self, error: &str) {
        use std::sync::atomic::Ordering;
        self.errors.fetch_add(1, Ordering::Relaxed);
        if !self.failing.swap(true, Ordering::SeqCst) {
            *self.since.lock().expect("health lock") = Some(std::time::Instant::now());
            tracing::warn!(sink = self.sink, error, "sink writes failing; retrying with backoff until it returns");
        }
    }

    pub fn succeeded(&self) {
        use std::sync::atomic::Ordering;
        if self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::SeqCst) {
            let since = self.since.lock().expect("health lock").take();
            let seconds = since.map_or(0.0, |t| t.elapsed().as_secs_f64());
            tracing::info!(sink = self.sink, unavailable_seconds = seconds, "sink writes succeed again");
        }
    }

    /// Failed write attempts so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn is_healthy(&self) -> bool {
        !self.failing.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A write given up at shutdown; its records are not acknowledged, so Kafka
/// redelivers them to the next consumer.
#[derive(Debug, thiserror::Error)]
#[error("{sink}: write abandoned at shutdown after {attempts} attempt(s); last error: {last}")]
pub struct Abandoned {
    pub sink: &'static str,
    pub attempts: u32,
    pub last: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_and_certificate_errors_are_told_from_outages() {
        // As the drivers word them (seen against the local services).
        let refused_login = "Failed to perform a connection setup request. Request: AUTH_RESPONSE, reason: Database \
                             returned an error: Authentication failed - bad credentials";
        assert!(is_credentials_error(refused_login));
        assert!(is_credentials_error("OpenSearch index template: 401 Unauthorized: <html>"));
        assert!(is_credentials_error("client error (Connect): invalid peer certificate: UnknownIssuer"));
        assert!(!is_credentials_error("Control connection pool error: Connection refused (os error 111)"));
        assert!(!is_credentials_error("OpenSearch index template: 503 Service Unavailable"));
    }

    #[test]
    fn delays_grow_to_the_cap() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(80) && first <= Duration::from_millis(120), "{first:?}");
        let later: Vec<_> = (0..10).map(|_| b.next_delay()).collect();
        assert!(later.iter().all(|d| *d <= Duration::from_secs(6)));
        assert!(later.last().unwrap() >= &Duration::from_secs(4));
    }

    #[test]
    fn health_follows_the_last_write() {
        let h = Health::new("test");
        assert!(h.is_healthy());
        h.failed("down");
        h.failed("still down");
        assert!(!h.is_healthy());
        h.succeeded();
        assert!(h.is_healthy());
    }

    #[tokio::test]
    async fn a_retry_loop_counts_and_ends_when_abandoned() {
        let token = CancellationToken::new();
        let mut retry = Retry::new("test", &token);
        retry.backoff = Backoff { next: Duration::from_millis(1), max: Duration::from_millis(1) };
        assert!(retry.failed("first").await.is_ok());
        token.cancel();
        retry.backoff = Backoff { next: Duration::from_secs(60), max: Duration::from_secs(60) };
        let abandoned = retry.failed("second").await.unwrap_err();
        assert_eq!((abandoned.sink, abandoned.attempts, abandoned.last.as_str()), ("test", 2, "second"));
        assert_eq!(retry.attempts(), 2);
    }

    #[tokio::test]
    async fn waiting_stops_when_abandoned() {
        let token = CancellationToken::new();
        token.cancel();
        let mut b = Backoff { next: Duration::from_secs(60), max: Duration::from_secs(60) };
        assert!(!b.wait(&token).await);
    }
}
