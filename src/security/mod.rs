//! Who may call what, and over which channel (DESIGN.md, "Configuration";
//! README, "Security"):
//!
//! - [`tokens`]: bearer tokens with a role, `read` (scoring, queries, the
//!   dashboard) or `admin` (also `load-model` and DoPut), compared in
//!   constant time; none configured = every caller is admin.
//! - [`tls`]: PEM files for TLS on Flight and HTTP, optionally requiring a
//!   client certificate signed by a given CA (mutual TLS).
//! - [`plaintext_allowed`]: without TLS, only loopback addresses, unless
//!   the operator opts in.
//! - [`card`]: a keyed hash of card numbers in place of the numbers at rest.
//! - [`redact_url`]: backend URLs without their passwords, for logs and errors.

pub mod card;
pub mod tls;
pub mod tokens;

use std::net::SocketAddr;

pub use tokens::{Role, Tokens};

/// Refuses a plain-text listener on a non-loopback address unless
/// `allow_plaintext`; says so in the logs either way it goes.
pub fn plaintext_allowed(what: &str, addr: SocketAddr, tls: bool, allow_plaintext: bool) -> anyhow::Result<()> {
    if tls || addr.ip().is_loopback() {
        return Ok(());
    }
    if !allow_plaintext {
        anyhow::bail!(
            "refusing to serve {what} in plain text on {addr}, which is not a loopback address: \
             configure TLS ([tls] cert and key, FRAUDFLIGHT_TLS_CERT / FRAUDFLIGHT_TLS_KEY) or opt in with \
             allow_plaintext = true (FRAUDFLIGHT_ALLOW_PLAINTEXT=true)"
        );
    }
    tracing::warn!(%addr, "{what} is served in PLAIN TEXT on a non-loopback address (allow_plaintext = true)");
    Ok(())
}

/// `url` with any password in it replaced, for logs and error messages
/// (`https://user:secret@host` -> `https://user:(redacted)@host`). Text that
/// is not a URL is returned as is when it holds no `@`, else withheld.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("(redacted)"));
            }
            parsed.to_string().trim_end_matches('/').to_string()
        }
        Err(_) if !url.contains('@') => url.to_string(),
        Err(_) => "(URL not shown: unparsable, may hold a password)".to_string(),
    }
}

/// What a listener needs from the security settings.
#[derive(Clone, Default)]
pub struct Guard {
    pub tls: Option<tls::TlsFiles>,
    pub tokens: Tokens,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_loopback_only_unless_allowed() {
        let any: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:50051".parse().unwrap();
        let v6: SocketAddr = "[::1]:50051".parse().unwrap();
        assert!(plaintext_allowed("Flight", local, false, false).is_ok());
        assert!(plaintext_allowed("Flight", v6, false, false).is_ok());
        assert!(plaintext_allowed("Flight", any, true, false).is_ok());
        assert!(plaintext_allowed("Flight", any, false, true).is_ok());
        let refused = plaintext_allowed("Flight", any, false, false).unwrap_err().to_string();
        assert!(refused.contains("refusing to serve Flight in plain text on 0.0.0.0:50051"), "{refused}");
    }

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(redact_url("https://ops:s3cret@search:9200"), "https://ops:(redacted)@search:9200");
        assert_eq!(redact_url("http://127.0.0.1:9200"), "http://127.0.0.1:9200");
        assert_eq!(redact_url("http://ops@search"), "http://ops@search");
        assert_eq!(redact_url("not a url"), "not a url");
        assert!(!redact_url("ht!tp://ops:s3cret@x").contains("s3cret"));
    }
}
