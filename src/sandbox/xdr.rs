//! `trapline xdr sandbox`: a local stand-in of the XDR endpoints trapline uses
//! (`xdr-ctim.md` §14), so the whole flow works offline and the tests exercise real HTTP.
//!
//! It validates like the real service, in the same order: auth (missing / unknown / expired
//! token → 401 with CTIA's bodies), the schema layer (→ 400 `{"errors": ...}` mirroring the
//! body), bundle size, then per entity: de-duplication by external id (→ `exists`, nothing
//! updated, transient id mapped to the existing one), the spec layer, the TLP minimum,
//! judgement dispositions and transient-reference resolution (→ per-entity `error`).
//!
//! `PATCH /iroh/private-intel/incident/{id}` (and CTIA's `PATCH /ctia/incident/{id}`) update a
//! stored incident as CTIA does: token scope, then the body against `PartialNewIncident` (→ 400
//! `{"errors": ...}` on a key no incident has or a bad value), 404 for an unknown id, a deep
//! merge (maps merged, other values replaced), the merged incident re-validated (→ 400), and
//! the stored incident as the answer.
//!
//! What it accepted is kept in memory, optionally in a JSON file (`--data`, reloaded on start,
//! so a restarted sandbox remembers), and is visible through CTIA's search endpoints and
//! `GET /sandbox/dump`. Tests inject faults with `POST /sandbox/faults` (429 with
//! `Retry-After`, 5xx, slowness, dropped answers) and `POST /sandbox/expire-tokens`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::action::xdr::ctim;
use crate::state::write_atomic;

/// Sandbox settings (the §14 "config knobs").
#[derive(Debug, Clone)]
pub struct Options {
    pub token_ttl: Duration,
    pub min_tlp: String,
    pub max_size: usize,
    /// Accepted credentials; `None`: any non-empty id and secret.
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// Where accepted entities are kept across restarts.
    pub data: Option<PathBuf>,
    /// Scopes granted to every token, space-separated.
    pub scope: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            token_ttl: Duration::from_secs(600),
            min_tlp: "green".into(),
            max_size: 2000,
            client_id: None,
            client_secret: None,
            data: None,
            scope: "private-intel".into(),
        }
    }
}

/// Faults to inject, counted down per import request (`POST /sandbox/faults`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Answer this many imports with 429 and `Retry-After: retry_after`.
    pub status_429: u32,
    pub retry_after: u64,
    /// Answer this many imports with 503.
    pub status_5xx: u32,
    /// Process this many imports, then drop the answer (the connection breaks mid-body).
    pub drop: u32,
    /// Delay every request by this many milliseconds.
    pub delay_ms: u64,
    /// Answer this many incident PATCHes with 503.
    pub patch_5xx: u32,
}

#[derive(Debug, Default, Serialize)]
struct Counters {
    token_requests: u64,
    imports: u64,
    created: u64,
    exists: u64,
    errors: u64,
    rejected_400: u64,
    unauthorized_401: u64,
    injected_429: u64,
    injected_5xx: u64,
    dropped: u64,
    patches: u64,
    forbidden_403: u64,
}

struct Inner {
    opts: Options,
    /// long id → stored entity.
    entities: BTreeMap<String, Value>,
    /// token → (expiry, granted scopes).
    tokens: HashMap<String, (Instant, String)>,
    faults: Faults,
    counters: Counters,
    /// Every import and PATCH as it arrived: milliseconds since start, and the incidents it
    /// touched (for tests of pacing).
    log: Vec<Value>,
    started: Instant,
}

type Shared = Arc<Mutex<Inner>>;

#[derive(Serialize, Deserialize)]
struct Saved {
    entities: Vec<Value>,
}

impl Inner {
    fn save(&self) {
        if let Some(p) = &self.opts.data {
            let s = Saved { entities: self.entities.values().cloned().collect() };
            if let Err(e) = write_atomic(p, &serde_json::to_vec(&s).unwrap_or_default(), false) {
                tracing::warn!(error = %e, "sandbox: cannot save data");
            }
        }
    }

    fn find_by_xid(&self, ty: &str, xids: &[String]) -> Option<String> {
        self.entities
            .values()
            .find(|e| {
                e["type"] == ty
                    && e["external_ids"].as_array().is_some_and(|a| a.iter().any(|x| xids.iter().any(|y| x == y)))
            })
            .and_then(|e| e["id"].as_str().map(str::to_string))
    }
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// The router, with its state loaded from `opts.data` if present.
pub fn router(opts: Options) -> Router {
    let mut entities = BTreeMap::new();
    if let Some(p) = &opts.data
        && let Ok(b) = std::fs::read(p)
        && let Ok(s) = serde_json::from_slice::<Saved>(&b)
    {
        for e in s.entities {
            if let Some(id) = e["id"].as_str() {
                entities.insert(id.to_string(), e.clone());
            }
        }
    }
    let state: Shared = Arc::new(Mutex::new(Inner {
        opts,
        entities,
        tokens: HashMap::new(),
        faults: Faults::default(),
        counters: Counters::default(),
        log: Vec::new(),
        started: Instant::now(),
    }));
    Router::new()
        .route("/iroh/oauth2/token", post(token))
        .route("/iroh/private-intel/bundle/import", post(import))
        .route("/ctia/bundle/import", post(import))
        .route("/iroh/private-intel/incident", post(create_incident))
        .route("/ctia/{entity}", post(create))
        .route("/ctia/{entity}/search", get(search).delete(delete_search))
        .route("/ctia/{entity}/search/count", get(count))
        .route("/ctia/{entity}/external_id/{xid}", get(by_external_id))
        .route("/ctia/{entity}/{id}", get(get_one).delete(delete_one).patch(patch_ctia))
        .route("/iroh/private-intel/incident/{id}", get(get_incident).patch(patch_iroh))
        .route("/sandbox/dump", get(dump))
        .route("/sandbox/faults", post(set_faults))
        .route("/sandbox/expire-tokens", post(expire_tokens))
        .route("/sandbox/reset", delete(reset))
        .with_state(state)
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    opts: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(opts)).with_graceful_shutdown(shutdown).await
}

/// A sandbox running on its own thread (for tests and embedding). Stops when dropped.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Starts a sandbox on `addr` (e.g. `127.0.0.1:0`) in a background thread.
pub fn spawn(addr: &str, opts: Options) -> std::io::Result<Running> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let local = std_listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
            let _ = serve(listener, opts, async move {
                let _ = rx.await;
            })
            .await;
        });
    });
    Ok(Running { addr: local, stop: Some(tx), thread: Some(thread) })
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn json_resp(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

fn err401(error: &str, desc: &str) -> Response {
    json_resp(StatusCode::UNAUTHORIZED, json!({"error": error, "error_description": desc}))
}

/// Layer 1: the bearer token. (The error is the finished response; it is returned at once.)
#[allow(clippy::result_large_err)]
fn check_auth(st: &Shared, headers: &HeaderMap) -> Result<(), Response> {
    let mut s = lock(st);
    let Some(h) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        s.counters.unauthorized_401 += 1;
        return Err(err401("invalid_request", "No Authorization Header"));
    };
    let tok = h.strip_prefix("Bearer ").unwrap_or("");
    match s.tokens.get(tok).map(|(e, _)| *e) {
        None => {
            s.counters.unauthorized_401 += 1;
            Err(err401("jwt_invalid_signature", "JWT signature does not match"))
        }
        Some(exp) if Instant::now() >= exp => {
            s.counters.unauthorized_401 += 1;
            let ago = Instant::now().duration_since(exp).as_secs();
            Err(err401("jwt_expired", &format!("This JWT max lifetime has expired {}min {}s ago", ago / 60, ago % 60)))
        }
        Some(_) => Ok(()),
    }
}

/// Whether a granted scope covers a required one: `private-intel` covers
/// `private-intel:write` and `private-intel/incident:write`; `private-intel:write` covers
/// `private-intel/incident:write` but not `private-intel:read`.
pub fn scope_covers(granted: &str, required: &str) -> bool {
    let (gp, ga) = granted.split_once(':').map_or((granted, None), |(p, a)| (p, Some(a)));
    let (rp, ra) = required.split_once(':').map_or((required, None), |(p, a)| (p, Some(a)));
    let under = rp == gp || rp.strip_prefix(gp).is_some_and(|r| r.starts_with('/'));
    under && (ga.is_none() || ga == ra)
}

/// Layer 1, second half: the token's scopes must cover `required` (403 with CTIA's body).
#[allow(clippy::result_large_err)]
fn check_scope(st: &Shared, headers: &HeaderMap, required: &str) -> Result<(), Response> {
    let mut s = lock(st);
    let tok = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or("");
    let granted = s.tokens.get(tok).map(|(_, g)| g.clone()).unwrap_or_default();
    if granted.split_whitespace().any(|g| scope_covers(g, required)) {
        return Ok(());
    }
    s.counters.forbidden_403 += 1;
    Err(json_resp(
        StatusCode::FORBIDDEN,
        json!({"message": "Missing capability", "error": "missing_capability", "capabilities": required, "owner": "sandbox"}),
    ))
}

/// Layer 1 whole: token, then scope; the refusal, if any.
fn authorize(st: &Shared, headers: &HeaderMap, scope: &str) -> Option<Response> {
    check_auth(st, headers).err().or_else(|| check_scope(st, headers, scope).err())
}

async fn delay(st: &Shared) {
    let d = lock(st).faults.delay_ms;
    if d > 0 {
        tokio::time::sleep(Duration::from_millis(d)).await;
    }
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

async fn token(State(st): State<Shared>, headers: HeaderMap, body: String) -> Response {
    delay(&st).await;
    let mut s = lock(&st);
    s.counters.token_requests += 1;
    let creds = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|c| c.split_once(':').map(|(a, b)| (a.to_string(), b.to_string())));
    let Some((id, secret)) = creds else {
        return json_resp(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_client", "error_description": "HTTP Basic authentication required"}),
        );
    };
    let ok = !id.is_empty()
        && !secret.is_empty()
        && s.opts.client_id.as_ref().is_none_or(|c| *c == id)
        && s.opts.client_secret.as_ref().is_none_or(|c| *c == secret);
    if !ok {
        return json_resp(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_client", "error_description": "Invalid client credentials"}),
        );
    }
    if !body.split('&').any(|kv| kv == "grant_type=client_credentials") {
        return json_resp(
            StatusCode::BAD_REQUEST,
            json!({"error": "unsupported_grant_type", "error_description": "grant_type must be client_credentials"}),
        );
    }
    let ttl = s.opts.token_ttl;
    let now = chrono::Utc::now().timestamp();
    let payload = json!({"iss": "IROH Auth SANDBOX", "sub": id, "iat": now, "exp": now + ttl.as_secs() as i64,
                         "jti": format!("{:032x}", fastrand::u128(..))});
    let tok = format!(
        "{}.{}.{}",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(payload.to_string().as_bytes()),
        b64url(&fastrand::u64(..).to_le_bytes())
    );
    let scope = s.opts.scope.clone();
    s.tokens.insert(tok.clone(), (Instant::now() + ttl, scope.clone()));
    json_resp(
        StatusCode::OK,
        json!({"access_token": tok, "token_type": "bearer", "expires_in": ttl.as_secs(), "scope": scope}),
    )
}

fn uuid() -> String {
    let n = fastrand::u128(..);
    let h = format!("{n:032x}");
    format!("{}-{}-4{}-8{}-{}", &h[..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

fn origin(headers: &HeaderMap) -> String {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// What CTIA adds when it stores an entity (§6.8).
fn realize(mut e: Value, ty: &str, long: &str) -> Value {
    let o = e.as_object_mut().expect("object");
    o.remove("schema_version");
    o.insert("id".into(), json!(long));
    o.insert("type".into(), json!(ty));
    o.insert("schema_version".into(), json!("1.3.30"));
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    o.entry("timestamp").or_insert_with(|| json!(now));
    o.entry("tlp").or_insert_with(|| json!("green"));
    o.insert("created".into(), json!(now));
    if ty == "sighting" {
        o.entry("count").or_insert(json!(1));
        o.entry("confidence").or_insert(json!("Unknown"));
    }
    e
}

/// Layers 3–5 for one entity; `Err((error, msg, type))`.
fn entity_errors(
    e: &Value,
    ty: &str,
    min_tlp: &str,
    tempids: &HashMap<String, String>,
) -> Result<Value, (String, String, String)> {
    let mut e = e.clone();
    let mut check = e.clone();
    if let Some(o) = check.as_object_mut() {
        o.remove("id");
        o.remove("schema_version");
    }
    if let Some(m) = ctim::spec_error(&check) {
        return Err(("Entity validation Error".into(), m, "spec-validation-error".into()));
    }
    if let Some(m) = ctim::tlp_error(&e, min_tlp) {
        return Err(("Entity Access Control validation Error".into(), m, "invalid-tlp-error".into()));
    }
    if ty == "judgement"
        && let Some(m) = ctim::disposition_error(&e)
    {
        return Err((m.clone(), m, "realize-entity-error".into()));
    }
    if ty == "relationship" {
        for k in ["source_ref", "target_ref"] {
            let r = e[k].as_str().unwrap_or_default().to_string();
            if let Some(long) = tempids.get(&r) {
                e[k] = json!(long);
            } else if r.starts_with("transient:") {
                let m = "A relationship cannot be created if a source or a target ref is still a transient ID (The source or target entity is probably not provided in the bundle)";
                return Err((m.into(), m.into(), "realize-entity-error".into()));
            }
        }
    }
    Ok(e)
}

async fn import(
    State(st): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    delay(&st).await;
    if let Some(r) = authorize(&st, &headers, "private-intel:write") {
        return r;
    }
    let drop_answer;
    {
        let mut s = lock(&st);
        if s.faults.status_429 > 0 {
            s.faults.status_429 -= 1;
            s.counters.injected_429 += 1;
            let ra = s.faults.retry_after.to_string();
            return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, ra)], "{\"error\": \"Too Many Requests\"}")
                .into_response();
        }
        if s.faults.status_5xx > 0 {
            s.faults.status_5xx -= 1;
            s.counters.injected_5xx += 1;
            return json_resp(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "unknown server error", "error_description": "injected fault", "trace_id": uuid()}),
            );
        }
        drop_answer = s.faults.drop > 0;
        if drop_answer {
            s.faults.drop -= 1;
            s.counters.dropped += 1;
        }
    }
    let bundle: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            lock(&st).counters.rejected_400 += 1;
            return json_resp(
                StatusCode::BAD_REQUEST,
                json!({"type": "json-parse-exception", "message": e.to_string()}),
            );
        }
    };
    let mut s = lock(&st);
    s.counters.imports += 1;
    if let Some(errors) = ctim::schema_errors(&bundle) {
        s.counters.rejected_400 += 1;
        return json_resp(StatusCode::BAD_REQUEST, json!({"errors": errors}));
    }
    let n = ctim::entity_count(&bundle);
    if n > s.opts.max_size {
        s.counters.rejected_400 += 1;
        return json_resp(StatusCode::BAD_REQUEST, json!(format!("Bundle max nb of entities: {}", s.opts.max_size)));
    }
    let prefixes: Option<Vec<String>> = q
        .get("external-key-prefixes")
        .map(|p| p.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect());
    let origin = origin(&headers);
    let min_tlp = s.opts.min_tlp.clone();
    let mut tempids: HashMap<String, String> = HashMap::new();
    let mut results = Vec::new();
    // Non-relationship entities first, then relationships (CTIA `create-bulk`).
    let order = ["incidents", "sightings", "judgements", "relationships"];
    for array in order {
        let ty = ctim::ENTITY_ARRAYS.iter().find(|(a, _)| *a == array).map(|(_, t)| *t).expect("known");
        let mut seen: Vec<&Value> = Vec::new();
        for e in bundle.get(array).and_then(Value::as_array).into_iter().flatten() {
            if seen.contains(&e) {
                continue; // entity arrays are sets
            }
            seen.push(e);
            let id = e["id"].as_str().unwrap_or_default().to_string();
            let original = id.starts_with("transient:").then(|| id.clone());
            let xids: Vec<String> = e["external_ids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter(|x| prefixes.as_ref().is_none_or(|p| p.iter().any(|p| x.starts_with(p.as_str()))))
                .map(str::to_string)
                .collect();
            let mut r = json!({"type": ty, "external_ids": xids});
            if let Some(o) = &original {
                r["original_id"] = json!(o);
            }
            if !id.is_empty() && original.is_none() {
                r["result"] = json!("error");
                r["error"] = json!("Missing capability to specify entity ID");
                r["msg"] = json!("Missing capability to specify entity ID");
                s.counters.errors += 1;
                results.push(r);
                continue;
            }
            if !xids.is_empty()
                && let Some(existing) = s.find_by_xid(ty, &xids)
            {
                if let Some(o) = &original {
                    tempids.insert(o.clone(), existing.clone());
                }
                r["id"] = json!(existing);
                r["result"] = json!("exists");
                s.counters.exists += 1;
                results.push(r);
                continue;
            }
            match entity_errors(e, ty, &min_tlp, &tempids) {
                Err((error, msg, _kind)) => {
                    r["result"] = json!("error");
                    r["error"] = json!(error);
                    r["msg"] = json!(msg);
                    s.counters.errors += 1;
                }
                Ok(e) => {
                    let long = format!("{origin}/ctia/{ty}/{ty}-{}", uuid());
                    if let Some(o) = &original {
                        tempids.insert(o.clone(), long.clone());
                    }
                    s.entities.insert(long.clone(), realize(e, ty, &long));
                    r["id"] = json!(long);
                    r["result"] = json!("created");
                    s.counters.created += 1;
                }
            }
            results.push(r);
        }
    }
    let touched: Vec<Value> = results
        .iter()
        .filter(|r| r["type"] == "incident")
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .chain(bundle.get("relationships").and_then(Value::as_array).into_iter().flatten().filter_map(|r| {
            let t = r["target_ref"].as_str()?;
            tempids.get(t).cloned().or_else(|| (!t.starts_with("transient:")).then(|| t.to_string()))
        }))
        .collect::<std::collections::BTreeSet<String>>()
        .into_iter()
        .map(Value::from)
        .collect();
    let at = s.started.elapsed().as_millis() as u64;
    s.log.push(json!({"op": "import", "at_ms": at, "incidents": touched, "entities": n}));
    s.save();
    drop(s);
    let body = json!({"results": results});
    if drop_answer {
        // Processed, but the answer never arrives: the client must retry and get `exists`.
        let stream =
            futures_util::stream::once(async { Err::<Bytes, std::io::Error>(std::io::Error::other("dropped")) });
        return (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Body::from_stream(stream))
            .into_response();
    }
    json_resp(StatusCode::OK, body)
}

async fn create_one(st: &Shared, ty: &str, headers: &HeaderMap, body: &Bytes) -> Response {
    delay(st).await;
    if let Err(r) = check_auth(st, headers) {
        return r;
    }
    let Ok(e) = serde_json::from_slice::<Value>(body) else {
        return json_resp(
            StatusCode::BAD_REQUEST,
            json!({"type": "json-parse-exception", "message": "malformed JSON"}),
        );
    };
    let Some(errors) = ctim::entity_schema_errors(ty, &e).map(Some).unwrap_or_else(|| {
        if ctim::ENTITY_ARRAYS.iter().any(|(_, t)| *t == ty) { None } else { Some(json!("unknown entity type")) }
    }) else {
        if let Some(id) = e["id"].as_str()
            && !id.starts_with("transient:")
        {
            return json_resp(
                StatusCode::FORBIDDEN,
                json!({"error": "Missing capability to specify entity ID", "entity": e}),
            );
        }
        let mut s = lock(st);
        let min = s.opts.min_tlp.clone();
        return match entity_errors(&e, ty, &min, &HashMap::new()) {
            Err((error, msg, kind)) if kind == "spec-validation-error" => json_resp(
                StatusCode::BAD_REQUEST,
                json!({"error": "Spec Validation Client Error", "type": "Invalid Entity Error", "message": msg, "entity": e, "class": "clojure.lang.ExceptionInfo", "detail": error}),
            ),
            Err((_, msg, kind)) if kind == "invalid-tlp-error" => json_resp(
                StatusCode::BAD_REQUEST,
                json!({"type": "Invalid TLP Error", "message": msg, "entity": e, "class": "clojure.lang.ExceptionInfo"}),
            ),
            Err((error, _, _)) => json_resp(StatusCode::BAD_REQUEST, json!({"error": error})),
            Ok(e) => {
                let long = format!("{}/ctia/{ty}/{ty}-{}", origin(headers), uuid());
                let stored = realize(e, ty, &long);
                s.entities.insert(long.clone(), stored.clone());
                s.counters.created += 1;
                s.save();
                (StatusCode::CREATED, [(header::LOCATION, long)], axum::Json(stored)).into_response()
            }
        };
    };
    lock(st).counters.rejected_400 += 1;
    json_resp(StatusCode::BAD_REQUEST, json!({"errors": errors}))
}

async fn create(State(st): State<Shared>, Path(entity): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    create_one(&st, &entity, &headers, &body).await
}

async fn create_incident(State(st): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    create_one(&st, "incident", &headers, &body).await
}

/// The filter of a search: entity type, `source`, and a small Lucene subset in `query`:
/// `*`, `field:value`, `field:prefix*`, `field:"exact"`, joined with ` AND `.
fn matches(e: &Value, ty: &str, q: &HashMap<String, String>) -> bool {
    if e["type"] != ty {
        return false;
    }
    if let Some(src) = q.get("source")
        && e["source"].as_str() != Some(src.as_str())
    {
        return false;
    }
    let Some(query) = q.get("query") else { return true };
    query.split(" AND ").all(|clause| {
        let clause = clause.trim();
        if clause == "*" || clause.is_empty() {
            return true;
        }
        let Some((field, pat)) = clause.split_once(':') else { return false };
        let pat = pat.trim_matches('"');
        let values: Vec<&str> = match &e[field] {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        values.iter().any(|v| match pat.strip_suffix('*') {
            Some(p) => v.starts_with(p),
            None => *v == pat,
        })
    })
}

fn found<'a>(s: &'a Inner, ty: &str, q: &HashMap<String, String>) -> Vec<&'a Value> {
    s.entities.values().filter(|e| matches(e, ty, q)).collect()
}

async fn search(
    State(st): State<Shared>,
    Path(entity): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    delay(&st).await;
    if let Err(r) = check_auth(&st, &headers) {
        return r;
    }
    let s = lock(&st);
    let all = found(&s, &entity, &q);
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(100).min(10_000);
    let offset: usize = q.get("offset").and_then(|l| l.parse().ok()).unwrap_or(0);
    let page: Vec<Value> = all.iter().skip(offset).take(limit).map(|v| (*v).clone()).collect();
    (StatusCode::OK, [("X-Total-Hits", all.len().to_string())], axum::Json(page)).into_response()
}

async fn count(
    State(st): State<Shared>,
    Path(entity): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check_auth(&st, &headers) {
        return r;
    }
    let s = lock(&st);
    json_resp(StatusCode::OK, json!(found(&s, &entity, &q).len()))
}

async fn delete_search(
    State(st): State<Shared>,
    Path(entity): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check_auth(&st, &headers) {
        return r;
    }
    let filters = q.keys().any(|k| !matches!(k.as_str(), "REALLY_DELETE_ALL_THESE_ENTITIES" | "wait_for"));
    if !filters {
        return json_resp(
            StatusCode::FORBIDDEN,
            json!({"error": "you must provide at least one of from, to, query or any field filter."}),
        );
    }
    let mut s = lock(&st);
    let ids: Vec<String> = found(&s, &entity, &q).iter().filter_map(|e| e["id"].as_str().map(str::to_string)).collect();
    if q.get("REALLY_DELETE_ALL_THESE_ENTITIES").map(String::as_str) == Some("true") {
        for id in &ids {
            s.entities.remove(id);
        }
        s.save();
    }
    json_resp(StatusCode::OK, json!(ids.len()))
}

async fn by_external_id(
    State(st): State<Shared>,
    Path((entity, xid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check_auth(&st, &headers) {
        return r;
    }
    let s = lock(&st);
    let v: Vec<Value> = s
        .entities
        .values()
        .filter(|e| {
            e["type"] == entity.as_str()
                && e["external_ids"].as_array().is_some_and(|a| a.iter().any(|x| x == &json!(xid)))
        })
        .cloned()
        .collect();
    json_resp(StatusCode::OK, json!(v))
}

fn long_id_of(s: &Inner, entity: &str, id: &str) -> Option<String> {
    let short = id.rsplit('/').next().unwrap_or(id);
    s.entities.keys().find(|k| k.rsplit('/').next() == Some(short) && k.contains(&format!("/ctia/{entity}/"))).cloned()
}

async fn get_one(State(st): State<Shared>, Path((entity, id)): Path<(String, String)>, headers: HeaderMap) -> Response {
    if let Err(r) = check_auth(&st, &headers) {
        return r;
    }
    let s = lock(&st);
    match long_id_of(&s, &entity, &id).and_then(|k| s.entities.get(&k)) {
        Some(e) => json_resp(StatusCode::OK, e.clone()),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn delete_one(
    State(st): State<Shared>,
    Path((entity, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check_auth(&st, &headers) {
        return r;
    }
    let mut s = lock(&st);
    match long_id_of(&s, &entity, &id) {
        Some(k) => {
            s.entities.remove(&k);
            s.save();
            StatusCode::NO_CONTENT.into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The stored long id of an incident named by long id, short id (`incident-<uuid>`) or bare
/// uuid (the forms IROH accepts).
fn incident_id_of(s: &Inner, id: &str) -> Option<String> {
    let short = id.rsplit('/').next().unwrap_or(id);
    let short = if short.starts_with("incident-") { short.to_string() } else { format!("incident-{short}") };
    long_id_of(s, "incident", &short)
}

async fn get_incident(State(st): State<Shared>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Err(r) = check_auth(&st, &headers) {
        return r;
    }
    let s = lock(&st);
    match incident_id_of(&s, &id).and_then(|k| s.entities.get(&k)) {
        Some(e) => json_resp(StatusCode::OK, e.clone()),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn patch_iroh(State(st): State<Shared>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    patch_one(&st, &id, &headers, &body).await
}

async fn patch_ctia(
    State(st): State<Shared>,
    Path((entity, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // CTIA can patch incidents only (`:can-patch? true`); other entities have no such route.
    if entity != "incident" {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    patch_one(&st, &id, &headers, &body).await
}

/// `PATCH` of one incident, in CTIA's order: auth and scope, body schema (all keys optional,
/// closed map), lookup, merge, validation of the merged incident, store.
async fn patch_one(st: &Shared, id: &str, headers: &HeaderMap, body: &Bytes) -> Response {
    delay(st).await;
    if let Some(r) = authorize(st, headers, "private-intel/incident:write") {
        return r;
    }
    {
        let mut s = lock(st);
        if s.faults.patch_5xx > 0 {
            s.faults.patch_5xx -= 1;
            s.counters.injected_5xx += 1;
            return json_resp(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "unknown server error", "error_description": "injected fault", "trace_id": uuid()}),
            );
        }
    }
    let patch: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            lock(st).counters.rejected_400 += 1;
            return json_resp(
                StatusCode::BAD_REQUEST,
                json!({"type": "json-parse-exception", "message": e.to_string()}),
            );
        }
    };
    let mut s = lock(st);
    if let Some(errors) = ctim::patch_schema_errors(&patch) {
        s.counters.rejected_400 += 1;
        return json_resp(StatusCode::BAD_REQUEST, json!({"errors": errors}));
    }
    let Some(long) = incident_id_of(&s, id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let merged = ctim::merge_patch(&s.entities[&long], &patch);
    let mut check = merged.clone();
    if let Some(o) = check.as_object_mut() {
        o.remove("id");
        o.remove("schema_version");
    }
    let invalid = ctim::entity_schema_errors("incident", &check)
        .map(|errors| json!({"errors": errors}))
        .or_else(|| {
            ctim::spec_error(&check).map(|m| {
                json!({"error": "Spec Validation Client Error", "type": "Invalid Entity Error", "message": m,
                       "entity": patch, "class": "clojure.lang.ExceptionInfo"})
            })
        })
        .or_else(|| {
            ctim::tlp_error(&check, &s.opts.min_tlp).map(|m| {
                json!({"type": "Invalid TLP Error", "message": m, "entity": patch, "class": "clojure.lang.ExceptionInfo"})
            })
        });
    if let Some(body) = invalid {
        s.counters.rejected_400 += 1;
        return json_resp(StatusCode::BAD_REQUEST, body);
    }
    let mut stored = merged;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    stored["id"] = json!(long);
    stored["type"] = json!("incident");
    stored["schema_version"] = json!("1.3.30");
    stored["modified"] = json!(now);
    s.entities.insert(long.clone(), stored.clone());
    s.counters.patches += 1;
    let at = s.started.elapsed().as_millis() as u64;
    s.log.push(json!({"op": "patch", "at_ms": at, "incidents": [long]}));
    s.save();
    json_resp(StatusCode::OK, stored)
}

/// Everything stored, by type, plus counters. No auth: it is a local inspection aid.
async fn dump(State(st): State<Shared>) -> Response {
    let s = lock(&st);
    let mut by: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (_, ty) in ctim::ENTITY_ARRAYS {
        by.insert(format!("{ty}s"), Vec::new());
    }
    for e in s.entities.values() {
        by.entry(format!("{}s", e["type"].as_str().unwrap_or("other"))).or_default().push(e.clone());
    }
    json_resp(StatusCode::OK, json!({"entities": by, "counters": s.counters, "faults": s.faults, "log": s.log}))
}

async fn set_faults(State(st): State<Shared>, axum::Json(f): axum::Json<Faults>) -> Response {
    let mut s = lock(&st);
    s.faults = f;
    json_resp(StatusCode::OK, json!(s.faults))
}

async fn expire_tokens(State(st): State<Shared>) -> Response {
    let mut s = lock(&st);
    let past = Instant::now().checked_sub(Duration::from_secs(1)).unwrap_or_else(Instant::now);
    for (exp, _) in s.tokens.values_mut() {
        *exp = past;
    }
    json_resp(StatusCode::OK, json!({"expired": s.tokens.len()}))
}

async fn reset(State(st): State<Shared>) -> Response {
    let mut s = lock(&st);
    s.entities.clear();
    s.counters = Counters::default();
    s.log.clear();
    s.save();
    StatusCode::NO_CONTENT.into_response()
}
