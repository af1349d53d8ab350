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

/// Whether a sink's writes are failing. Logs a failure once and the
/// recovery once, with how long and how many attempts failed; a sink that
/// flaps (a database under load: a timeout, a success, a timeout) is
/// reported at most once per [`REPORT_EVERY`], the failures in between
/// counted into the next line, not one line each. The dashboard and
/// `/ready` read it.
pub struct Health {
    sink: &'static str,
    failing: std::sync::atomic::AtomicBool,
    state: std::sync::Mutex<HealthLog>,
    /// Failed attempts since start, for `/metrics`.
    errors: std::sync::atomic::AtomicU64,
}

/// How often, at most, a sink's failing is reported.
pub const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Default)]
struct HealthLog {
    /// When the current failure began.
    since: Option<std::time::Instant>,
    /// When a failure was last reported, and whether the current one was.
    reported_at: Option<std::time::Instant>,
    reported: bool,
    /// Failed attempts not reported yet.
    unreported: u64,
    /// Lines logged (failures and recoveries), for tests.
    lines: u64,
}

impl Health {
    pub fn new(sink: &'static str) -> Self {
        Self { sink, failing: Default::default(), state: Default::default(), errors: Default::default() }
    }

    pub fn failed(&self, error: &str) {
        use std::sync::atomic::Ordering;
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut log = self.state.lock().expect("health lock");
        log.unreported += 1;
        if self.failing.swap(true, Ordering::SeqCst) {
            return;
        }
        let now = std::time::Instant::now();
        log.since = Some(now);
        log.reported = log.reported_at.is_none_or(|at| now.duration_since(at) >= REPORT_EVERY);
        if log.reported {
            let failed_attempts = std::mem::take(&mut log.unreported);
            log.reported_at = Some(now);
            log.lines += 1;
            tracing::warn!(sink = self.sink, error, failed_attempts, "sink writes failing; retrying with backoff");
        }
    }

    pub fn succeeded(&self) {
        use std::sync::atomic::Ordering;
        if !(self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::SeqCst)) {
            return;
        }
        let mut log = self.state.lock().expect("health lock");
        let seconds = log.since.take().map_or(0.0, |t| t.elapsed().as_secs_f64());
        if log.reported {
            let failed_attempts = std::mem::take(&mut log.unreported);
            log.lines += 1;
            tracing::info!(
                sink = self.sink,
                unavailable_seconds = seconds,
                failed_attempts,
                "sink writes succeed again"
            );
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
    fn a_flapping_sink_is_reported_once_not_once_a_failure() {
        let h = Health::new("test");
        for _ in 0..50 {
            h.failed("timeout");
            h.failed("timeout");
            h.succeeded();
        }
        assert!(h.is_healthy());
        assert_eq!(h.errors(), 100);
        let log = h.state.lock().unwrap();
        assert_eq!(log.lines, 2, "one failure line and one recovery line within a minute");
        assert_eq!(log.unreported, 49 * 2, "the later failures wait for the next report");
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
