//! Who may read and who may act, and what keeps a page from being used against its reader.
//!
//! - Reading: free on a loopback address (whoever reaches it is on the machine); on any other address the console
//!   only starts with `QUERN_CONSOLE_TOKEN` set, and every page then asks for it once (the sign-in cookie).
//! - Acting (replay, purge): always needs the token, typed into the confirmation form or given at sign-in; with
//!   no token set, actions are off.
//! - Every POST passes a CSRF check here, before any handler runs: the form's hidden `csrf` field must equal this
//!   browser's `quern_csrf` cookie (SameSite=Strict, so another site's form cannot send it), and a browser's
//!   `Origin` or `Sec-Fetch-Site` header must not name another site.
//! - Every response carries a Content-Security-Policy without scripts, so even text that slipped through as HTML
//!   could not run; maud escapes every value the pages insert in the first place.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use maud::html;
use secrecy::{ExposeSecret, SecretString};

use super::form::Form;
use super::layout::{self, Tab};
use super::Console;

/// The cookie holding this browser's CSRF token.
const CSRF_COOKIE: &str = "quern_csrf";
/// The cookie a sign-in sets.
const SESSION_COOKIE: &str = "quern_session";
/// Shortest token accepted: one guessed online should take longer than anyone keeps trying.
const MIN_TOKEN_CHARS: usize = 16;
/// Largest form read (a selection of a few thousand ids fits).
const FORM_LIMIT: usize = 1024 * 1024;

/// The console's access rules, fixed at start.
#[derive(Debug)]
pub struct Access {
    token: Option<SecretString>,
    /// The sign-in cookie's value: random per process, so a restart signs everyone out.
    session: SecretString,
    loopback: bool,
}

/// This browser's CSRF token, for the forms a page renders.
#[derive(Debug, Clone)]
pub struct CsrfToken(pub String);

impl Access {
    /// The rules for serving on `listen` with `token`; refuses a non-loopback address without a token, and a
    /// token too short to hold off guessing.
    pub fn new(token: Option<String>, listen: SocketAddr) -> Result<Access, String> {
        let loopback = listen.ip().is_loopback();
        if let Some(token) = &token {
            if token.chars().count() < MIN_TOKEN_CHARS {
                return Err(format!(
                    "QUERN_CONSOLE_TOKEN is {} characters long; use at least {MIN_TOKEN_CHARS} (e.g. `openssl rand -hex 16`)",
                    token.chars().count()
                ));
            }
        } else if !loopback {
            return Err(format!(
                "--listen {listen} is not a loopback address, and anyone who can reach it could read the fleet's \
                 dead letters: set QUERN_CONSOLE_TOKEN (every page then asks for it), or listen on 127.0.0.1"
            ));
        }
        Ok(Access { token: token.map(SecretString::from), session: SecretString::from(random_secret()), loopback })
    }

    /// Whether replays and purges can be done at all (a token is set).
    pub fn actions_enabled(&self) -> bool {
        self.token.is_some()
    }

    /// Whether this browser signed in with the token.
    pub fn signed_in(&self, headers: &HeaderMap) -> bool {
        cookie(headers, SESSION_COOKIE).is_some_and(|value| same(value, self.session.expose_secret()))
    }

    fn may_read(&self, headers: &HeaderMap) -> bool {
        self.loopback || self.signed_in(headers)
    }

    fn is_token(&self, typed: &str) -> bool {
        self.token.as_ref().is_some_and(|token| same(typed, token.expose_secret()))
    }

    /// May this request replay or purge? `typed` is the token from the confirmation form, if one was typed.
    pub fn check_action(&self, headers: &HeaderMap, typed: Option<&str>) -> Result<(), &'static str> {
        if !self.actions_enabled() {
            return Err("replays and purges are off: start the console with QUERN_CONSOLE_TOKEN set to enable them");
        }
        if self.signed_in(headers) || typed.is_some_and(|typed| self.is_token(typed)) {
            Ok(())
        } else {
            Err("the console token is missing or wrong: nothing was done")
        }
    }
}

/// Runs before every handler: the read check, the CSRF check of POSTs, the CSRF cookie, the security headers.
pub async fn guard(State(console): State<Arc<Console>>, request: Request, next: Next) -> Response {
    let existing = cookie(request.headers(), CSRF_COOKIE).filter(|v| v.len() == 32).map(str::to_owned);
    let fresh = existing.is_none();
    let csrf = existing.unwrap_or_else(random_secret);
    let path = request.uri().path();
    let open = path == "/login" || path == "/console.css";
    let mut response = if !open && !console.access.may_read(request.headers()) {
        Redirect::to("/login").into_response()
    } else if request.method() == Method::POST {
        match check_post(request, &csrf, fresh).await {
            Ok(mut request) => {
                request.extensions_mut().insert(CsrfToken(csrf.clone()));
                next.run(request).await
            }
            Err(why) => layout::refused(StatusCode::FORBIDDEN, "Request refused", why),
        }
    } else {
        let mut request = request;
        request.extensions_mut().insert(CsrfToken(csrf.clone()));
        next.run(request).await
    };
    let headers = response.headers_mut();
    if fresh {
        let cookie = format!("{CSRF_COOKIE}={csrf}; Path=/; HttpOnly; SameSite=Strict");
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; \
             base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // `same-origin`, not `no-referrer`: with `no-referrer` Chromium sends `Origin: null` on the console's own form
        // posts, which the origin check must refuse.
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// A POST passes when no browser header names another site and its form carries this browser's CSRF token;
/// the body is read here and put back for the handler.
async fn check_post(request: Request, csrf: &str, fresh: bool) -> Result<Request, &'static str> {
    let headers = request.headers();
    if headers.get("sec-fetch-site").is_some_and(|site| !matches!(site.as_bytes(), b"same-origin" | b"none")) {
        return Err("a form from another site cannot act here");
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        let origin = origin.to_str().unwrap_or("null");
        let from_here = [format!("http://{host}"), format!("https://{host}")].iter().any(|o| o == origin);
        if !from_here {
            return Err("a form from another site cannot act here");
        }
    }
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, FORM_LIMIT).await.map_err(|_| "the form is too large")?;
    let form = Form::parse(&bytes);
    if fresh || !form.get("csrf").is_some_and(|sent| same(sent, csrf)) {
        return Err("the form's CSRF token does not match this browser's: reload the page and try again");
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// `GET /login`: the token form.
pub async fn login_page(State(console): State<Arc<Console>>, Extension(csrf): Extension<CsrfToken>) -> Response {
    let body = if console.access.actions_enabled() {
        html! {
            p { "Give the console token (" code { "QUERN_CONSOLE_TOKEN" } ") to read the pages and to replay or purge dead letters from this browser." }
            form #login method="post" action="/login" {
                (layout::csrf_input(&csrf))
                label { "Token " input type="password" name="token" autocomplete="current-password" required; }
                " " button type="submit" { "Sign in" }
            }
        }
    } else {
        html! { p { "No QUERN_CONSOLE_TOKEN is set: the pages need no sign-in on loopback, and actions are off." } }
    };
    layout::page("Sign in", Tab::None, None, body).into_response()
}

/// `POST /login`: sets the sign-in cookie when the token is right.
pub async fn login(State(console): State<Arc<Console>>, body: axum::body::Bytes) -> Response {
    let form = Form::parse(&body);
    if !form.get("token").is_some_and(|typed| console.access.is_token(typed)) {
        return layout::refused(StatusCode::FORBIDDEN, "Sign-in refused", "the console token is missing or wrong");
    }
    let mut response = Redirect::to("/").into_response();
    let cookie =
        format!("{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict", console.access.session.expose_secret());
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// `POST /logout`: forgets the sign-in.
pub async fn logout() -> Response {
    let mut response = Redirect::to("/login").into_response();
    let cookie = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// 128 random bits as 32 hex digits (a v4 UUID's generator is the operating system's).
fn random_secret() -> String {
    let mut secret = uuid::Uuid::new_v4().simple().to_string();
    secret.truncate(16);
    secret.push_str(&uuid::Uuid::new_v4().simple().to_string()[..16]);
    secret
}

/// Equality that takes as long whatever the first difference, so timing tells nothing about a secret.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(addr: &str) -> SocketAddr {
        addr.parse().expect("address")
    }

    #[test]
    fn a_non_loopback_address_needs_a_long_enough_token() {
        assert!(Access::new(None, listen("127.0.0.1:8787")).is_ok());
        assert!(Access::new(None, listen("[::1]:8787")).is_ok());
        let refused = Access::new(None, listen("0.0.0.0:8787")).expect_err("no token");
        assert!(refused.contains("QUERN_CONSOLE_TOKEN"), "{refused}");
        assert!(Access::new(Some("short".into()), listen("127.0.0.1:1")).is_err());
        assert!(Access::new(Some("a-token-long-enough".into()), listen("10.0.0.1:8787")).is_ok());
    }

    #[test]
    fn actions_need_the_token_or_a_sign_in() {
        let none = HeaderMap::new();
        let off = Access::new(None, listen("127.0.0.1:1")).expect("access");
        assert!(off.check_action(&none, Some("anything")).is_err());
        let on = Access::new(Some("a-token-long-enough".into()), listen("127.0.0.1:1")).expect("access");
        assert!(on.check_action(&none, None).is_err());
        assert!(on.check_action(&none, Some("a-token-long-enougH")).is_err());
        assert!(on.check_action(&none, Some("a-token-long-enough")).is_ok());
        let mut signed_in = HeaderMap::new();
        let cookie = format!("other=1; {SESSION_COOKIE}={}", on.session.expose_secret());
        signed_in.insert(header::COOKIE, HeaderValue::from_str(&cookie).expect("header"));
        assert!(on.check_action(&signed_in, None).is_ok());
        assert!(on.may_read(&signed_in));
        let stranger = Access::new(Some("a-token-long-enough".into()), listen("10.0.0.1:1")).expect("access");
        assert!(!stranger.may_read(&none));
        assert!(!stranger.may_read(&signed_in), "another process's session is not this one's");
    }

    #[test]
    fn secrets_are_random_hex_and_compared_whole() {
        let (a, b) = (random_secret(), random_secret());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(same(&a, &a.clone()));
        assert!(!same(&a, &b));
        assert!(!same("abc", "abcd"));
    }
}
