//! Bearer tokens and their roles. Tokens come from a file (lines
//! `read:<token>` or `admin:<token>`, `#` comments) and from the
//! configuration / environment (`tokens.read`, `tokens.admin`, comma
//! separated). A presented token is compared with every known one in
//! constant time (SHA-256 digests compared with `subtle`, so neither the
//! content nor the length of a known token leaks through timing).

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a caller may do. `Admin` may do everything `Read` may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Scoring, queries, model info, the dashboard and its API.
    Read,
    /// Also `load-model` and DoPut (ingest).
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

/// Shortest token accepted: a guessable token is no protection.
pub const MIN_TOKEN_LEN: usize = 16;

/// The known tokens (as digests). Empty = authentication off.
#[derive(Clone, Default)]
pub struct Tokens {
    known: Vec<([u8; 32], Role)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens themselves.
        write!(f, "Tokens({} configured)", self.known.len())
    }
}

/// Why the tokens cannot be used. Never contains a token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the tokens file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{source_name} line {line}: {message}")]
    Line { source_name: String, line: usize, message: String },
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// Tokens from `file` (if any) plus the `read` and `admin` lists.
    pub fn load(file: Option<&Path>, read: &[String], admin: &[String]) -> Result<Self, TokenError> {
        let mut tokens = Tokens::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|source| TokenError::Read { path: path.display().to_string(), source })?;
            tokens.add_lines(&path.display().to_string(), &text)?;
        }
        for (role, list, name) in [(Role::Read, read, "tokens.read"), (Role::Admin, admin, "tokens.admin")] {
            for (i, token) in list.iter().enumerate() {
                tokens.add(name, i + 1, role, token)?;
            }
        }
        Ok(tokens)
    }

    /// Parses `role:token` lines.
    pub fn add_lines(&mut self, source_name: &str, text: &str) -> Result<(), TokenError> {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let error = |message: &str| TokenError::Line {
                source_name: source_name.to_string(),
                line: i + 1,
                message: message.to_string(),
            };
            let (role, token) =
                line.split_once(':').ok_or_else(|| error("expected `read:<token>` or `admin:<token>`"))?;
            let role = match role.trim() {
                "read" => Role::Read,
                "admin" => Role::Admin,
                _ => return Err(error("the role must be `read` or `admin`")),
            };
            self.add(source_name, i + 1, role, token.trim())?;
        }
        Ok(())
    }

    fn add(&mut self, source_name: &str, line: usize, role: Role, token: &str) -> Result<(), TokenError> {
        if token.chars().count() < MIN_TOKEN_LEN || token.chars().any(char::is_whitespace) {
            return Err(TokenError::Line {
                source_name: source_name.to_string(),
                line,
                message: format!("a token must be at least {MIN_TOKEN_LEN} characters without spaces"),
            });
        }
        self.known.push((digest(token), role));
        Ok(())
    }

    /// True when calls must present a token.
    pub fn enabled(&self) -> bool {
        !self.known.is_empty()
    }

    /// The role of `presented`, or None if it is not a known token. Every
    /// known token is compared, whatever matches first.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let presented = digest(presented);
        let mut found: Option<Role> = None;
        for (known, role) in &self.known {
            if bool::from(known.ct_eq(&presented)) {
                found = found.max(Some(*role));
            }
        }
        found
    }

    /// The caller's role from an `authorization` header value. With no
    /// tokens configured everyone is admin.
    pub fn authorize(&self, header: Option<&str>) -> Result<Role, Denied> {
        if !self.enabled() {
            return Ok(Role::Admin);
        }
        let header = header.ok_or(Denied::Missing)?;
        let token =
            header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer ")).ok_or(Denied::NotBearer)?.trim();
        self.role_of(token).ok_or(Denied::Unknown)
    }
}

/// Why a call was not authenticated (said to the caller; no token in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("a bearer token is required: send `authorization: Bearer <token>`")]
    Missing,
    #[error("the authorization header must be `Bearer <token>`")]
    NotBearer,
    #[error("the bearer token is not valid")]
    Unknown,
}

/// Refuses `role` where `needed` is required.
pub fn require(role: Role, needed: Role, what: &str) -> Result<(), String> {
    if role >= needed {
        Ok(())
    } else {
        Err(format!("{what} needs an `{}` token; this token is `{}`", needed.name(), role.name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const READ: &str = "read-token-0123456789";
    const ADMIN: &str = "admin-token-0123456789";

    fn tokens() -> Tokens {
        let mut t = Tokens::default();
        t.add_lines("tokens.txt", &format!("# who may call\nread:{READ}\n\nadmin: {ADMIN}\n")).unwrap();
        t
    }

    #[test]
    fn roles_come_from_the_matching_token() {
        let t = tokens();
        assert_eq!(t.authorize(Some(&format!("Bearer {READ}"))), Ok(Role::Read));
        assert_eq!(t.authorize(Some(&format!("Bearer {ADMIN}"))), Ok(Role::Admin));
        assert_eq!(t.authorize(None), Err(Denied::Missing));
        assert_eq!(t.authorize(Some(READ)), Err(Denied::NotBearer));
        assert_eq!(t.authorize(Some("Bearer read-token-012345678")), Err(Denied::Unknown));
        assert_eq!(t.authorize(Some(&format!("Bearer {READ}x"))), Err(Denied::Unknown));
    }

    #[test]
    fn without_tokens_everyone_is_admin() {
        assert_eq!(Tokens::default().authorize(None), Ok(Role::Admin));
    }

    #[test]
    fn admin_may_read_but_read_may_not_administer() {
        assert!(require(Role::Admin, Role::Read, "DoGet").is_ok());
        let refused = require(Role::Read, Role::Admin, "load-model").unwrap_err();
        assert_eq!(refused, "load-model needs an `admin` token; this token is `read`");
    }

    #[test]
    fn bad_lines_are_named_without_the_token() {
        let mut t = Tokens::default();
        let e = t.add_lines("tokens.txt", "read:short-secret").unwrap_err().to_string();
        assert!(e.contains("tokens.txt line 1") && e.contains("at least 16"), "{e}");
        assert!(!e.contains("short-secret"));
        let e = t.add_lines("tokens.txt", "\nwrite:abcdefghijklmnopqrstuvwxyz").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("`read` or `admin`") && !e.contains("abcdefgh"), "{e}");
        assert_eq!(format!("{:?}", tokens()), "Tokens(2 configured)");
    }
}
