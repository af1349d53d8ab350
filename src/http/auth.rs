//! Bearer-token authentication of the HTTP routes. Every route but
//! `/health` (and the login form) needs a `read` token, from an
//! `authorization: Bearer <token>` header (tools, Prometheus) or from the
//! `fraudflight_token` cookie that `POST /login` sets (browsers: the page's
//! event stream cannot send headers). With no tokens configured every
//! route is open.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};

use crate::security::{Role, Tokens};

/// Cookie that carries the token of a browser session.
const COOKIE: &str = "fraudflight_token";

/// What the middleware needs.
#[derive(Clone)]
pub struct Auth {
    pub tokens: Tokens,
    /// Mark the cookie `Secure` (served over TLS).
    pub secure: bool,
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

/// The caller's role, from the header or else the cookie.
fn role(auth: &Auth, headers: &HeaderMap) -> Result<Role, crate::security::tokens::Denied> {
    let header = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match (header, cookie_token(headers)) {
        (None, Some(token)) => auth.tokens.authorize(Some(&format!("Bearer {token}"))),
        _ => auth.tokens.authorize(header),
    }
}

/// Checks the caller may do `what`, which needs an `admin` token (always
/// true without tokens). Err is the status and message to answer with.
pub fn require_admin(auth: &Auth, headers: &HeaderMap, what: &str) -> Result<(), (StatusCode, String)> {
    if !auth.tokens.enabled() {
        return Ok(());
    }
    let role = role(auth, headers).map_err(|d| (StatusCode::UNAUTHORIZED, format!("{d}\n")))?;
    crate::security::tokens::require(role, Role::Admin, what)
        .map_err(|message| (StatusCode::FORBIDDEN, format!("{message}\n")))
}

/// The middleware: lets `/health` and `/login` through, else needs `read`.
pub async fn require_read(State(auth): State<Auth>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if !auth.tokens.enabled() || path == "/health" || path == "/login" {
        return next.run(request).await;
    }
    match role(&auth, request.headers()) {
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

/// `POST /login` with a form field `token`: a valid token becomes the
/// session cookie and the browser goes to the dashboard.
pub async fn login(State(auth): State<Auth>, body: String) -> Response {
    let token = url_form_value(&body, "token").unwrap_or_default();
    if auth.tokens.role_of(&token).is_none() {
        return (
            StatusCode::UNAUTHORIZED,
            Html(LOGIN.replace("<!--error-->", "<p class=error>Not a valid token.</p>")),
        )
            .into_response();
    }
    let secure = if auth.secure { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/{secure}");
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
</head><body><form method="post" action="/login"><b>fraudflight</b><label for="token">Access token (read or admin)</label>
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
        headers.insert(header::COOKIE, HeaderValue::from_static("theme=dark; fraudflight_token=abc; x=y"));
        assert_eq!(cookie_token(&headers), Some("abc"));
    }
}
