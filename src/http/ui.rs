//! The dashboard: a log-in page, a session cookie, and the static page that draws the API.
//!
//! - People log in with the same token scripts send as a bearer token, or with a name and
//!   password of `http.users` ([`super::users`]); they get an HttpOnly,
//!   SameSite=Strict session cookie (12 h) and, from `/api/session`, a CSRF token that every
//!   state-changing request made with the cookie must carry in `X-CSRF-Token`.
//! - Failed log-ins are limited: after 5 within a minute, every attempt is refused for the
//!   rest of that minute.
//! - The page, its script and its style are files of this directory built into the binary;
//!   nothing is loaded from another site, no script is inline, and the Content-Security-Policy
//!   says so. The script inserts every log-derived string with `textContent`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::Shared;

pub const COOKIE: &str = "trapline_session";
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
const FAILURES: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Served with every response: scripts, styles, images and connections from this origin
/// only, nothing inline, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const INDEX: &str = include_str!("ui/index.html");
const LOGIN: &str = include_str!("ui/login.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");

struct Session {
    csrf: String,
    /// The user's name, or [`super::TOKEN_WHO`].
    who: String,
    expires: Instant,
}

/// Live sessions and recent failed log-ins.
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Session>>,
    failures: Mutex<Vec<Instant>>,
}

impl Sessions {
    fn create(&self, who: String) -> anyhow::Result<String> {
        let id = super::random_hex()?;
        let csrf = super::random_hex()?;
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        live.retain(|_, s| s.expires > now);
        live.insert(id.clone(), Session { csrf, who, expires: now + SESSION_TTL });
        Ok(id)
    }

    /// The CSRF token and the user of the session named by the request's cookie, if it is live.
    pub fn get(&self, headers: &HeaderMap) -> Option<(String, String)> {
        let id = cookie(headers)?;
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.get(&id).filter(|s| s.expires > Instant::now()).map(|s| (s.csrf.clone(), s.who.clone()))
    }

    fn remove(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers) {
            self.live.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        }
    }

    /// Whether log-ins are refused now; records nothing.
    fn limited(&self) -> bool {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        f.retain(|t| t.elapsed() < FAILURE_WINDOW);
        f.len() >= FAILURES
    }

    fn failed(&self) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).push(Instant::now());
    }
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
        v.split(';').filter_map(|kv| kv.trim().split_once('=')).find(|(k, _)| *k == COOKIE).map(|(_, v)| v.to_string())
    })
}

fn html(body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// `/`: the dashboard for a session, else the log-in page.
pub async fn index(State(s): State<std::sync::Arc<Shared>>, headers: HeaderMap) -> Response {
    if s.sessions.get(&headers).is_none() {
        return Redirect::to("/login").into_response();
    }
    html(INDEX)
}

pub async fn login_page() -> Response {
    html(LOGIN)
}

#[derive(Deserialize)]
pub struct LoginForm {
    /// Empty (or absent): `token` is the access token; else a user of `http.users`.
    #[serde(default)]
    user: String,
    token: String,
}

pub async fn login(State(s): State<std::sync::Arc<Shared>>, Form(f): Form<LoginForm>) -> Response {
    if s.sessions.limited() {
        return (StatusCode::TOO_MANY_REQUESTS, "too many failed log-ins: wait a minute\n").into_response();
    }
    let user = f.user.trim().to_string();
    let who = if user.is_empty() {
        super::constant_time_eq(f.token.trim().as_bytes(), s.token.as_bytes()).then(|| super::TOKEN_WHO.to_string())
    } else {
        // argon2 is slow on purpose: off the runtime's worker threads.
        let shared = std::sync::Arc::clone(&s);
        let (name, password) = (user.clone(), f.token);
        let ok = tokio::task::spawn_blocking(move || shared.users.verify(&name, &password)).await.unwrap_or(false);
        ok.then_some(user)
    };
    let Some(who) = who else {
        s.sessions.failed();
        // The name typed is attacker-chosen: logged escaped, and never the password.
        tracing::warn!(user = ?f.user.chars().take(64).collect::<String>(), "http: failed log-in");
        return (StatusCode::UNAUTHORIZED, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], LOGIN).into_response();
    };
    tracing::info!(user = ?who, "http: log-in");
    let id = match s.sessions.create(who) {
        Ok(id) => id,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")).into_response(),
    };
    let mut resp = Redirect::to("/").into_response();
    let secure = if s.secure { "; Secure" } else { "" };
    let c = format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}", SESSION_TTL.as_secs());
    if let Ok(v) = HeaderValue::from_str(&c) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

pub async fn logout(State(s): State<std::sync::Arc<Shared>>, headers: HeaderMap) -> Response {
    s.sessions.remove(&headers);
    let mut resp = Redirect::to("/login").into_response();
    let c = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&c) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// `/api/session`: the CSRF token the page sends back with state-changing requests.
pub async fn session(State(s): State<std::sync::Arc<Shared>>, headers: HeaderMap) -> Response {
    match s.sessions.get(&headers) {
        Some((csrf, who)) => axum::Json(serde_json::json!({ "csrf": csrf, "user": who })).into_response(),
        None => (StatusCode::UNAUTHORIZED, "log in first\n").into_response(),
    }
}

pub async fn app_js() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], APP_JS).into_response()
}

pub async fn app_css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS).into_response()
}
