//! Bearer-token authentication of the HTTP routes. Every route but
//! `/health` (and the login form) needs a `read` token, from an
//! `authorization: Bearer <token>` header (tools, Prometheus) or from the
//! session cookie `POST /login` sets (browsers: the page's event stream
//! cannot send headers). The cookie holds a random session id, not the
//! token: cookies are not scoped to a port, so any service on this host may
//! receive it, and a session ends ([`SESSION_HOURS`]) where a token would
//! not. With no tokens configured every route is open.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::security::tokens::{Caller, Denied};
use crate::security::{Role, Tokens};

/// Cookie that carries a browser session's id.
const COOKIE: &str = "fraudflight_session";
/// How long a browser session lasts.
pub const SESSION_HOURS: u64 = 12;
/// Sessions kept at most (the oldest go first).
const MAX_SESSIONS: usize = 10_000;

/// What the middleware needs.
#[derive(Clone)]
pub struct Auth {
    pub tokens: Tokens,
    /// Mark the cookie `Secure` (served over TLS).
    pub secure: bool,
    pub sessions: Sessions,
}

impl Auth {
    pub fn new(tokens: Tokens, secure: bool) -> Self {
        Self { tokens, secure, sessions: Sessions::default() }
    }
}

/// Who logged in, and until when.
type Session = (Caller, Instant);

/// Browser sessions, by the digest of their id.
#[derive(Clone, Default)]
pub struct Sessions(Arc<Mutex<HashMap<[u8; 32], Session>>>);

impl Sessions {
    fn digest(id: &str) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(id.as_bytes()).into()
    }

    /// A new session for `caller`; its id.
    fn open(&self, caller: Caller) -> String {
        use rand::Rng;
        let id: String = rand::rng().sample_iter(rand::distr::Alphanumeric).take(43).map(char::from).collect();
        let mut sessions = self.0.lock().expect("sessions lock");
        let now = Instant::now();
        sessions.retain(|_, (_, until)| *until > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions.iter().min_by_key(|(_, (_, until))| *until).map(|(k, _)| *k) {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(Self::digest(&id), (caller, now + Duration::from_secs(SESSION_HOURS * 3600)));
        id
    }

    fn caller(&self, id: &str) -> Option<Caller> {
        let sessions = self.0.lock().expect("sessions lock");
        sessions.get(&Self::digest(id)).filter(|(_, until)| *until > Instant::now()).map(|(c, _)| c.clone())
    }
}

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The caller, from the header or else the session cookie.
fn caller(auth: &Auth, headers: &HeaderMap) -> Result<Caller, Denied> {
    let header = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match (header, cookie_token(headers)) {
        (None, Some(id)) if auth.tokens.enabled() => auth.sessions.caller(id).ok_or(Denied::Unknown),
        _ => auth.tokens.identify(header),
    }
}

/// Checks the caller may do `what`, which needs a `needed` token (always
/// true without tokens); the caller. Err is the status and message to
/// answer with.
pub fn require(auth: &Auth, headers: &HeaderMap, needed: Role, what: &str) -> Result<Caller, (StatusCode, String)> {
    let caller = caller(auth, headers).map_err(|d| (StatusCode::UNAUTHORIZED, format!("{d}\n")))?;
    crate::security::tokens::require(caller.role, needed, what)
        .map_err(|message| (StatusCode::FORBIDDEN, format!("{message}\n")))?;
    Ok(caller)
}

/// Refuses a request a page of another origin sent (a browser says so in
/// `Origin`, or `Sec-Fetch-Site`): another service on this host, whatever
/// its port, must not make an analyst's browser label alerts. Tools send
/// neither header and pass.
pub fn same_origin(headers: &HeaderMap, what: &str) -> Result<(), (StatusCode, String)> {
    let text = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    let refused = || Err((StatusCode::FORBIDDEN, format!("{what} is refused from another origin\n")));
    if let Some(origin) = text(header::ORIGIN) {
        let host = text(header::HOST).unwrap_or_default();
        let authority = origin.split_once("://").map_or("", |(_, a)| a);
        if origin == "null" || authority != host {
            return refused();
        }
    }
    match text(axum::http::HeaderName::from_static("sec-fetch-site")) {
        Some("cross-site" | "same-site") => refused(),
        _ => Ok(()),
    }
}

/// The middleware: lets `/health` and `/login` through, else needs `read`.
pub async fn require_read(State(auth): State<Auth>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if !auth.tokens.enabled() || path == "/health" || path == "/login" {
        return next.run(request).await;
    }
    match caller(&auth, request.headers()) {
        Ok(_) => next.run(request).await,
        // A browser asking for the page gets the login form.
        Err(_) if path == "/" => (StatusCode::UNAUTHORIZED, Html(LOGIN)).into_response(),
        Err(denied) => {
            let mut response = (StatusCode::UNAUTHORIZED, format!("{denied}\n")).into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

/// `POST /login` with a form field `token`: a valid token opens a session
/// (the cookie holds its id) and the browser goes to the dashboard.
pub async fn login(State(auth): State<Auth>, body: String) -> Response {
    let token = url_form_value(&body, "token").unwrap_or_default();
    let Some(caller) = auth.tokens.caller_of(&token) else {
        return (
            StatusCode::UNAUTHORIZED,
            Html(LOGIN.replace("<!--error-->", "<p class=error>Not a valid token.</p>")),
        )
            .into_response();
    };
    let id = auth.sessions.open(caller);
    let secure = if auth.secure { "; Secure" } else { "" };
    let max_age = SESSION_HOURS * 3600;
    let cookie = format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}");
    let mut response = Redirect::to("/").into_response();
    match HeaderValue::from_str(&cookie) {
        Ok(value) => {
            response.headers_mut().insert(header::SET_COOKIE, value);
            response
        }
        Err(_) => (StatusCode::BAD_REQUEST, "the token cannot be stored in a cookie\n").into_response(),
    }
}

/// The value of `name` in an `application/x-www-form-urlencoded` body.
fn url_form_value(body: &str, name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(body).ok()?;
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

const LOGIN: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fraudflight — sign in</title>
<style>body{font:15px system-ui,sans-serif;background:#0f1419;color:#d8dee6;display:grid;place-items:center;height:90vh}
form{background:#171e26;border:1px solid #263241;border-radius:6px;padding:1.5rem;display:grid;gap:.7rem;min-width:22rem}
input,button{font:inherit;padding:.4rem .6rem;border-radius:4px;border:1px solid #263241}.error{color:#ff5d5d;margin:0}</style>
</head><body><form method="post" action="/login"><b>fraudflight</b><label for="token">Access token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required><!--error-->
<button type="submit">Open the dashboard</button></form></body></html>"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_decoded() {
        assert_eq!(url_form_value("a=1&token=ab%2Bc+d%3D", "token").as_deref(), Some("ab+c d="));
        assert_eq!(url_form_value("token=", "token").as_deref(), Some(""));
        assert_eq!(url_form_value("other=x", "token"), None);
        assert_eq!(url_form_value("token=%zz%4", "token").as_deref(), Some("%zz%4"));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("theme=dark; fraudflight_session=abc; x=y"));
        assert_eq!(cookie_token(&headers), Some("abc"));
    }

    #[test]
    fn labels_from_a_page_of_another_origin_are_refused() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(axum::http::HeaderName::from_static(k), HeaderValue::from_static(v));
            }
            h
        };
        assert!(same_origin(&headers(&[("host", "bank:8080")]), "x").is_ok(), "a tool");
        assert!(same_origin(&headers(&[("host", "bank:8080"), ("origin", "https://bank:8080")]), "x").is_ok());
        let other_port = headers(&[("host", "bank:8080"), ("origin", "http://bank:9999")]);
        assert_eq!(same_origin(&other_port, "labels").unwrap_err().0, StatusCode::FORBIDDEN);
        assert!(same_origin(&headers(&[("host", "bank:8080"), ("origin", "null")]), "x").is_err());
        assert!(same_origin(&headers(&[("host", "bank:8080"), ("sec-fetch-site", "same-site")]), "x").is_err());
        assert!(same_origin(&headers(&[("host", "bank:8080"), ("sec-fetch-site", "same-origin")]), "x").is_ok());
    }

    #[test]
    fn a_session_names_its_caller_and_is_not_the_token() {
        let sessions = Sessions::default();
        let caller = Caller { role: Role::Analyst, name: Some("alice".into()) };
        let id = sessions.open(caller.clone());
        assert_eq!(sessions.caller(&id), Some(caller));
        assert_eq!(sessions.caller("forged"), None);
        assert!(id.len() >= 40);
    }
}
