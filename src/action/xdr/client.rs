//! The XDR HTTP client: OAuth2 client-credentials token, bundle import, incident PATCH,
//! search, delete.
//!
//! - Token (`xdr-ctim.md` §4): `POST /iroh/oauth2/token` with HTTP Basic and
//!   `grant_type=client_credentials`; cached, renewed when fewer than 60 s remain, and renewed
//!   once more on a 401 (after which the call is retried once).
//! - Import (§6): `POST /iroh/private-intel/bundle/import?external-key-prefixes=<prefix>-`; the
//!   answer is 200 whenever the body passes the schema layer, with one result per entity,
//!   matched back by `original_id`.
//! - Incident PATCH (§5.1): `PATCH /iroh/private-intel/incident/{id}` on the same IROH front
//!   door as the import (not CTIA's `PATCH /ctia/incident/{id}`): one host, one scope family
//!   (`private-intel`), the family Cisco's incident-management guide documents for incidents.
//! - Errors are sorted by what the caller should do: [`Error::Transient`] (retry later: network,
//!   timeouts, 429, 5xx, auth problems that an operator can fix without losing data) and
//!   [`Error::Rejected`] (this body will never be accepted: 400).
//!
//! Credentials are only ever put in the `Authorization` header; errors and logs carry status
//! codes and the service's messages, never the id, secret or token.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;

use super::limiter::{Budget, retry_after};
use super::settings::{Endpoints, Secret};

/// Why a request did not succeed.
#[derive(Debug, Clone)]
pub enum Error {
    /// Try again later (after `retry_after` if the service said so).
    Transient { msg: String, retry_after: Option<Duration> },
    /// The service will never accept this request as it is.
    Rejected { status: u16, body: String },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Transient { msg, .. } => write!(f, "{msg}"),
            Error::Rejected { status, body } => write!(f, "rejected with HTTP {status}: {body}"),
        }
    }
}

impl std::error::Error for Error {}

/// One per-entity result of a bundle import.
#[derive(Debug, Clone, Deserialize)]
pub struct EntityResult {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub original_id: Option<String>,
    #[serde(default)]
    pub result: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub error: Option<Value>,
    #[serde(default)]
    pub msg: Option<String>,
}

#[derive(Deserialize)]
struct ImportResult {
    results: Vec<EntityResult>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default = "default_expires")]
    expires_in: u64,
}
fn default_expires() -> u64 {
    600
}

/// Renew this long before the token expires.
const RENEW_BEFORE: Duration = Duration::from_secs(60);

pub struct Client {
    http: reqwest::Client,
    ep: Endpoints,
    id: Secret,
    secret: Secret,
    prefix: String,
    token: Mutex<Option<(String, Instant)>>,
    /// The request budget; every request (token ones too) is counted.
    pub budget: Mutex<Budget>,
}

fn transient(msg: impl Into<String>) -> Error {
    Error::Transient { msg: msg.into(), retry_after: None }
}

impl Client {
    pub fn new(ep: Endpoints, id: Secret, secret: Secret, prefix: &str, timeout: Duration, budget: Budget) -> Client {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("trapline/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("HTTP client");
        Client { http, ep, id, secret, prefix: prefix.to_string(), token: Mutex::new(None), budget: Mutex::new(budget) }
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.ep
    }

    /// Waits until the budget allows one more request, then counts it.
    async fn pace(&self) {
        loop {
            let wait = {
                let mut b = self.budget.lock().await;
                let now = Instant::now();
                let w = b.wait(now);
                if w.is_zero() {
                    b.record(now);
                    return;
                }
                w
            };
            tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
        }
    }

    /// A valid token (cached unless `renew`).
    pub async fn token(&self, renew: bool) -> Result<String, Error> {
        let mut slot = self.token.lock().await;
        if !renew
            && let Some((t, exp)) = slot.as_ref()
            && Instant::now() + RENEW_BEFORE < *exp
        {
            return Ok(t.clone());
        }
        if self.id.0.is_empty() || self.secret.0.is_empty() {
            return Err(transient("no XDR credentials (set TRAPLINE_XDR_CLIENT_ID and TRAPLINE_XDR_CLIENT_SECRET)"));
        }
        self.pace().await;
        let resp = self
            .http
            .post(self.ep.token_url())
            .basic_auth(&self.id.0, Some(&self.secret.0))
            .header("Accept", "application/json")
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .map_err(|e| transient(format!("token request failed: {}", without_url(&e))))?;
        let status = resp.status();
        if status.as_u16() == 429 {
            let ra = retry_after(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()));
            return Err(Error::Transient { msg: "token request rate limited (429)".into(), retry_after: ra });
        }
        if !status.is_success() {
            // Bad credentials are an operator problem: keep the queue, retry with backoff.
            return Err(transient(format!(
                "token request refused: HTTP {status} (check the API client id/secret and region)"
            )));
        }
        let t: TokenResponse =
            resp.json().await.map_err(|e| transient(format!("unreadable token response: {}", without_url(&e))))?;
        let exp = Instant::now() + Duration::from_secs(t.expires_in);
        *slot = Some((t.access_token.clone(), exp));
        tracing::debug!(expires_in = t.expires_in, "XDR token obtained");
        Ok(t.access_token)
    }

    /// Sends an authorised request; on 401 renews the token and retries once.
    async fn send(&self, build: impl Fn(&str) -> reqwest::RequestBuilder) -> Result<reqwest::Response, Error> {
        let mut renewed = false;
        loop {
            let token = self.token(renewed).await?;
            self.pace().await;
            let resp = build(&token).send().await.map_err(|e| {
                transient(if e.is_timeout() {
                    "request timed out".to_string()
                } else {
                    format!("request failed: {}", without_url(&e))
                })
            })?;
            let status = resp.status().as_u16();
            if status == 401 && !renewed {
                tracing::debug!("XDR answered 401; renewing the token and retrying once");
                renewed = true;
                continue;
            }
            return match status {
                200..=299 => Ok(resp),
                429 => {
                    let ra = retry_after(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()));
                    Err(Error::Transient {
                        msg: "rate limited (429)".into(),
                        retry_after: ra.or(Some(Duration::from_secs(60))),
                    })
                }
                400 | 404 | 413 | 422 => Err(Error::Rejected { status, body: body_text(resp).await }),
                401 => Err(transient(format!("unauthorised after renewing the token: {}", body_text(resp).await))),
                403 => Err(transient(format!(
                    "forbidden (does the API client have the private-intel scope?): {}",
                    body_text(resp).await
                ))),
                _ => Err(transient(format!("HTTP {status}: {}", body_text(resp).await))),
            };
        }
    }

    /// Imports one bundle; returns the per-entity results.
    pub async fn import(&self, bundle: &Value) -> Result<Vec<EntityResult>, Error> {
        let url = self.ep.import_url();
        let prefixes = format!("{}-", self.prefix);
        let resp = self
            .send(|tok| {
                self.http
                    .post(&url)
                    .query(&[("external-key-prefixes", prefixes.as_str())])
                    .bearer_auth(tok)
                    .json(bundle)
            })
            .await?;
        let r: ImportResult =
            resp.json().await.map_err(|e| transient(format!("unreadable import response: {}", without_url(&e))))?;
        Ok(r.results)
    }

    /// `PATCH /iroh/private-intel/incident/{short id}` on the IROH front door, the host and
    /// family the bundle import already uses (`xdr-ctim.md` §5, §5.1: 200 with the stored
    /// incident). The path takes the short id (`incident-<uuid>`) of the stored long id. A 404
    /// (the incident was deleted) comes back as [`Error::Rejected`].
    pub async fn patch_incident(&self, long_id: &str, body: &Value) -> Result<Value, Error> {
        let short = long_id.rsplit('/').next().unwrap_or(long_id);
        let url = self.ep.incident_url(short);
        let resp = self.send(|tok| self.http.patch(&url).bearer_auth(tok).json(body)).await?;
        resp.json().await.map_err(|e| transient(format!("unreadable PATCH response: {}", without_url(&e))))
    }

    /// `GET /ctia/{entity}/search` (CTIA host): one page.
    pub async fn search(&self, entity: &str, query: &str, source: &str, limit: usize) -> Result<Vec<Value>, Error> {
        let url = format!("{}/ctia/{entity}/search", self.ep.private_intel);
        let limit = limit.to_string();
        let resp = self
            .send(|tok| {
                self.http
                    .get(&url)
                    .query(&[("query", query), ("source", source), ("limit", limit.as_str()), ("fields", "id")])
                    .bearer_auth(tok)
            })
            .await?;
        resp.json().await.map_err(|e| transient(format!("unreadable search response: {}", without_url(&e))))
    }

    /// `GET /ctia/{entity}/search/count`.
    pub async fn count(&self, entity: &str, query: &str, source: &str) -> Result<u64, Error> {
        let url = format!("{}/ctia/{entity}/search/count", self.ep.private_intel);
        let resp = self
            .send(|tok| self.http.get(&url).query(&[("query", query), ("source", source)]).bearer_auth(tok))
            .await?;
        resp.json().await.map_err(|e| transient(format!("unreadable count response: {}", without_url(&e))))
    }

    /// `DELETE /ctia/{entity}/{short id}`; a 404 counts as done.
    pub async fn delete(&self, entity: &str, id: &str) -> Result<(), Error> {
        let short = id.rsplit('/').next().unwrap_or(id);
        let url = format!("{}/ctia/{entity}/{short}", self.ep.private_intel);
        match self.send(|tok| self.http.delete(&url).query(&[("wait_for", "true")]).bearer_auth(tok)).await {
            Ok(_) | Err(Error::Rejected { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

async fn body_text(resp: reqwest::Response) -> String {
    let t = resp.text().await.unwrap_or_default();
    let t: String = t.chars().take(2000).collect();
    t.trim().to_string()
}

/// reqwest errors print the URL; ours hold no secrets, but keep messages short.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(&format!(" ({u})"), "").replace(u.as_str(), "<url>");
    }
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
