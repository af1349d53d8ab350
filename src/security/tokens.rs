//! Bearer tokens, their roles and their holders' names. Tokens come from a
//! file (lines `<role>:<token>` or `<role>:<name>:<token>`, role `read`,
//! `analyst` or `admin`, `#` comments) and from the configuration /
//! environment (`tokens.read`, `tokens.analyst`, `tokens.admin`, comma
//! separated, each `<token>` or `<name>:<token>`). A token without a name
//! is named after its role. The name is who decided a label an analyst
//! gives (`decided_by`), whatever the request says. A presented token is compared with every known one in
//! constant time (SHA-256 digests compared with `subtle`, so neither the
//! content nor the length of a known token leaks through timing).

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a caller may do; each role may do everything the ones before it
/// may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Scoring, queries, model info, the dashboard and its API.
    Read,
    /// Also labels: an alert's decision on the dashboard, DoPut `["labels"]`.
    Analyst,
    /// Also `load-model`, `promote`, `rollback` and DoPut (ingest).
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "read" => Some(Role::Read),
            "analyst" => Some(Role::Analyst),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Who called: the role and name of the token presented (with tokens off,
/// an admin without a name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    /// The token's name; None when tokens are off.
    pub name: Option<std::sync::Arc<str>>,
}

/// Longest token name, characters.
pub const MAX_NAME_CHARS: usize = 64;

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && name.chars().all(|c| c.is_alphanumeric() || "._@-".contains(c))
}

/// Shortest token accepted: a guessable token is no protection.
pub const MIN_TOKEN_LEN: usize = 16;

/// The known tokens (as digests). Empty = authentication off.
#[derive(Clone, Default)]
pub struct Tokens {
    known: Vec<([u8; 32], Role, std::sync::Arc<str>)>,
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
    /// Tokens from `file` (if any) plus the `read`, `analyst` and `admin`
    /// lists (each entry `<token>` or `<name>:<token>`).
    pub fn load(
        file: Option<&Path>,
        read: &[String],
        analyst: &[String],
        admin: &[String],
    ) -> Result<Self, TokenError> {
        let mut tokens = Tokens::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|source| TokenError::Read { path: path.display().to_string(), source })?;
            tokens.add_lines(&path.display().to_string(), &text)?;
        }
        let lists = [
            (Role::Read, read, "tokens.read"),
            (Role::Analyst, analyst, "tokens.analyst"),
            (Role::Admin, admin, "tokens.admin"),
        ];
        for (role, list, source) in lists {
            for (i, entry) in list.iter().enumerate() {
                let (name, token) = match entry.split_once(':') {
                    Some((name, token)) => (Some(name.trim()), token.trim()),
                    None => (None, entry.as_str()),
                };
                tokens.add(source, i + 1, role, name, token)?;
            }
        }
        Ok(tokens)
    }

    /// A fresh random admin token named `name`, known from now on (the
    /// scheduled retraining's: it never needs a configured secret).
    pub fn add_internal(&mut self, name: &str) -> String {
        use rand::Rng;
        let token: String = rand::rng().sample_iter(rand::distr::Alphanumeric).take(40).map(char::from).collect();
        self.known.push((digest(&token), Role::Admin, name.into()));
        token
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
            let (role, rest) =
                line.split_once(':').ok_or_else(|| error("expected `<role>:<token>` or `<role>:<name>:<token>`"))?;
            let role =
                Role::parse(role.trim()).ok_or_else(|| error("the role must be `read`, `analyst` or `admin`"))?;
            let (name, token) = match rest.split_once(':') {
                Some((name, token)) => (Some(name.trim()), token.trim()),
                None => (None, rest.trim()),
            };
            self.add(source_name, i + 1, role, name, token)?;
        }
        Ok(())
    }

    fn add(
        &mut self,
        source_name: &str,
        line: usize,
        role: Role,
        name: Option<&str>,
        token: &str,
    ) -> Result<(), TokenError> {
        let error = |message: String| TokenError::Line { source_name: source_name.to_string(), line, message };
        if token.chars().count() < MIN_TOKEN_LEN || token.chars().any(char::is_whitespace) {
            return Err(error(format!("a token must be at least {MIN_TOKEN_LEN} characters without spaces")));
        }
        if let Some(name) = name.filter(|n| !valid_name(n)) {
            return Err(error(format!(
                "the name {name:?} must be 1 to {MAX_NAME_CHARS} letters, digits or `._@-` (a token has no `:`)"
            )));
        }
        self.known.push((digest(token), role, name.unwrap_or(role.name()).into()));
        Ok(())
    }

    /// True when calls must present a token.
    pub fn enabled(&self) -> bool {
        !self.known.is_empty()
    }

    /// The role of `presented`, or None if it is not a known token.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        self.caller_of(presented).map(|c| c.role)
    }

    /// Who holds `presented`, or None if it is not a known token. Every
    /// known token is compared, whatever matches first.
    pub fn caller_of(&self, presented: &str) -> Option<Caller> {
        let presented = digest(presented);
        let mut found: Option<Caller> = None;
        for (known, role, name) in &self.known {
            if bool::from(known.ct_eq(&presented)) && found.as_ref().is_none_or(|f| f.role < *role) {
                found = Some(Caller { role: *role, name: Some(name.clone()) });
            }
        }
        found
    }

    /// The caller's role from an `authorization` header value. With no
    /// tokens configured everyone is admin.
    pub fn authorize(&self, header: Option<&str>) -> Result<Role, Denied> {
        self.identify(header).map(|c| c.role)
    }

    /// The caller from an `authorization` header value. With no tokens
    /// configured everyone is an admin without a name.
    pub fn identify(&self, header: Option<&str>) -> Result<Caller, Denied> {
        if !self.enabled() {
            return Ok(Caller { role: Role::Admin, name: None });
        }
        let header = header.ok_or(Denied::Missing)?;
        let token =
            header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer ")).ok_or(Denied::NotBearer)?.trim();
        self.caller_of(token).ok_or(Denied::Unknown)
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
        assert!(e.contains("line 2") && e.contains("`analyst` or `admin`") && !e.contains("abcdefgh"), "{e}");
        assert_eq!(format!("{:?}", tokens()), "Tokens(2 configured)");
    }

    #[test]
    fn tokens_carry_their_holders_names_and_an_analyst_sits_between_read_and_admin() {
        let mut t = Tokens::default();
        t.add_lines("tokens.txt", "analyst:alice:alice-token-0123456789\nadmin:root-token-0123456789\n").unwrap();
        let alice = t.identify(Some("Bearer alice-token-0123456789")).unwrap();
        assert_eq!((alice.role, alice.name.as_deref()), (Role::Analyst, Some("alice")));
        let root = t.identify(Some("Bearer root-token-0123456789")).unwrap();
        assert_eq!(root.name.as_deref(), Some("admin"), "unnamed: named after its role");
        assert!(require(Role::Analyst, Role::Analyst, "labels").is_ok());
        assert!(require(Role::Analyst, Role::Admin, "load-model").is_err());
        assert!(require(Role::Read, Role::Analyst, "labels").is_err());
        let e = t.add_lines("tokens.txt", "analyst:bob smith:bob-token-0123456789").unwrap_err().to_string();
        assert!(e.contains("the name") && !e.contains("bob-token"), "{e}");
        let listed = Tokens::load(None, &[], &["carol:carol-token-0123456789".into()], &[]).unwrap();
        assert_eq!(listed.identify(Some("Bearer carol-token-0123456789")).unwrap().name.as_deref(), Some("carol"));
        let internal = t.add_internal("retrain");
        assert_eq!(t.identify(Some(&format!("Bearer {internal}"))).unwrap().role, Role::Admin);
        assert_eq!(Tokens::default().identify(None), Ok(Caller { role: Role::Admin, name: None }));
    }
}
