//! Who may call what, and over which channel (docs/serving.md,
//! "Configuration"; docs/security.md):
//!
//! - [`tokens`]: bearer tokens with a role, `read` (scoring, queries, the
//!   dashboard) or `admin` (also `load-model` and DoPut), compared in
//!   constant time; none configured = every caller is admin.
//! - [`tls`]: PEM files for TLS on Flight and HTTP, optionally requiring a
//!   client certificate signed by a given CA (mutual TLS).
//! - [`plaintext_allowed`]: without TLS, only loopback addresses, unless
//!   the operator opts in.
//! - [`card`]: a keyed hash of card numbers in place of the numbers at rest.

pub mod card;
pub mod tls;
pub mod tokens;

use std::net::SocketAddr;

pub use tokens::{Role, Tokens};

/// Refuses a plain-text listener on a non-loopback address unless
/// `allow_plaintext`; says so in the logs either way it goes.
pub fn plaintext_allowed(
    what: &'static str,
    addr: SocketAddr,
    tls: bool,
    allow_plaintext: bool,
) -> Result<(), PlaintextRefused> {
    if tls || addr.ip().is_loopback() {
        return Ok(());
    }
    if !allow_plaintext {
        return Err(PlaintextRefused { what, addr });
    }
    tracing::warn!(%addr, "{what} is served in PLAIN TEXT on a non-loopback address (allow_plaintext = true)");
    Ok(())
}

/// A plain-text listener on an address other hosts can reach, not opted in.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to serve {what} in plain text on {addr}, which is not a loopback address: configure TLS ([tls] \
     cert and key, FRAUDFLIGHT_TLS_CERT / FRAUDFLIGHT_TLS_KEY) or opt in with allow_plaintext = true \
     (FRAUDFLIGHT_ALLOW_PLAINTEXT=true)"
)]
pub struct PlaintextRefused {
    pub what: &'static str,
    pub addr: SocketAddr,
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
}
