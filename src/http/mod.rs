//! **http**: what `trapline run` serves when `http.listen` is set — Prometheus metrics, the
//! history and the live feed of detections as JSON, for the dashboard and for scripts.
//!
//! - Runs on the daemon's tokio runtime; the reading thread only hands it detections (which
//!   the live feed serialises only while someone listens, as compact rows batched once per
//!   tick for every client: [`feed`]) and metric snapshots at its ticks ([`metrics`]).
//! - **Access**: every endpoint wants `Authorization: Bearer <token>` or the session cookie
//!   of a log-in (with the token, or as one of `http.users`: [`ui`], [`users`]). The token
//!   comes from `TRAPLINE_HTTP_TOKEN`, else from `http.token_file`, else from
//!   `state_dir/http.token`, created (random, mode 0600) at the first start. It is compared
//!   in constant time and never logged.
//! - **TLS** ([`tls`]) with a configured certificate; without one, a non-loopback `listen` is
//!   refused. The `Host` header must name the listening address, `localhost` or a configured
//!   host name, so a web page elsewhere cannot reach the API through DNS rebinding.
//! - Log-derived text leaves as JSON built by serde; no endpoint renders HTML from it.

pub mod feed;
pub mod metrics;
pub mod tls;
pub mod ui;
pub mod users;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use anyhow::{Context, Result, bail};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use metrics::{Metrics, RuleCounts, Snapshot};

/// Environment variable holding the access token.
pub const TOKEN_ENV: &str = "TRAPLINE_HTTP_TOKEN";
/// The token file created in the state directory when no token is configured.
pub const TOKEN_FILE: &str = "http.token";

/// `http:` in trapline.yml.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpDef {
    /// Address to serve on, e.g. `127.0.0.1:9100`. Absent: no HTTP server. A non-loopback
    /// address needs `tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// File holding the access token (first line). Default: `TRAPLINE_HTTP_TOKEN`, else
    /// `state_dir/http.token`, created with a random token at the first start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Serve HTTPS with this certificate: required to listen on anything but loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsDef>,
    /// Host names clients use to reach the server (`trapline.example.com`), accepted in the
    /// `Host` header besides the listening address and `localhost`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// People who log in to the dashboard with a name and a password besides the token, e.g.
    /// `- {name: alice, password_hash: "$argon2id$v=19$..."}` (`trapline hash-password`
    /// prints the hash). What they do is recorded under their name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<users::UserDef>,
}

/// `http.tls`: PEM files.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsDef {
    /// Certificate chain (PEM), the server's certificate first.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// What the rule page shows of a loaded rule.
#[derive(Debug, Clone, Serialize)]
pub struct RuleDoc {
    pub id: String,
    pub title: String,
    pub description: String,
    pub severity: crate::rule::Severity,
    pub class: String,
    pub tags: Vec<String>,
    pub enabled: bool,
    /// The rule file.
    pub file: String,
    /// `match`, `threshold` or `sequence`.
    pub kind: &'static str,
    /// "5 within 1m by client_ip (distinct path)".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppress: Option<String>,
    pub actions: Vec<String>,
    /// When what the rule matches last changed: the rule file's modification time when the
    /// daemon started, or the reload that changed it.
    pub changed_at: String,
}

/// What the server shares with the daemon.
pub struct Shared {
    pub metrics: Metrics,
    feed: Arc<feed::Feed>,
    clients: AtomicI64,
    token: String,
    state_dir: PathBuf,
    /// `Host` header values accepted.
    hosts: Vec<String>,
    sessions: ui::Sessions,
    users: users::Users,
    /// Served over TLS: the session cookie is `Secure`.
    secure: bool,
    /// The rules loaded now, set by the daemon at start and at each reload.
    rules: std::sync::RwLock<Arc<Vec<RuleDoc>>>,
}

impl Shared {
    /// Hands a detection to the live feed, serialised only when someone listens.
    pub fn publish(&self, d: &crate::engine::Detection) {
        self.feed.publish(d);
    }

    /// The rules loaded now (the rule pages).
    pub fn set_rules(&self, docs: Vec<RuleDoc>) {
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(docs);
    }

    fn rule_doc(&self, id: &str) -> Option<RuleDoc> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).iter().find(|r| r.id == id).cloned()
    }

    pub fn live_clients(&self) -> i64 {
        self.clients.load(Ordering::Relaxed)
    }
}

/// The running server: its address and what it shares.
pub struct Server {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
}

/// Binds `def.listen` (refusing what is not loopback, unless with TLS) and serves on `rt` until
/// `shutdown`.
pub fn start(
    def: &HttpDef,
    cfg: &crate::config::Loaded,
    rt: &tokio::runtime::Handle,
    shutdown: crate::shutdown::Shutdown,
) -> Result<Option<Server>> {
    let Some(listen) = &def.listen else { return Ok(None) };
    let at = cfg.position("http.listen");
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("{at}: http.listen {listen:?} is not an address such as 127.0.0.1:9100"))?;
    if !addr.ip().is_loopback() && def.tls.is_none() {
        bail!(
            "{at}: http.listen {listen:?} is not a loopback address: serving beyond this machine needs \
             `http.tls` (a certificate and its key), so that the token and the session never cross the \
             network in clear"
        );
    }
    let acceptor = match &def.tls {
        Some(t) => Some(
            tls::acceptor(&cfg.resolve(&t.cert), &cfg.resolve(&t.key))
                .with_context(|| cfg.position("http.tls").to_string())?,
        ),
        None => None,
    };
    let users = users::Users::new(&def.users, |i| cfg.position(&format!("http.users.{i}")))?;
    let state_dir = cfg.resolve(&cfg.config.state_dir);
    let token = token(def, cfg, &state_dir)?;
    let std_listener = std::net::TcpListener::bind(addr).with_context(|| format!("{at}: cannot listen on {addr}"))?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let mut hosts = vec![
        addr.to_string(),
        format!("localhost:{}", addr.port()),
        if addr.is_ipv6() { format!("[::1]:{}", addr.port()) } else { format!("127.0.0.1:{}", addr.port()) },
    ];
    for h in &def.hosts {
        hosts.push(h.clone());
        hosts.push(format!("{h}:{}", addr.port()));
    }
    let feed = Arc::new(feed::Feed::new());
    let shared = Arc::new(Shared {
        metrics: Metrics::new(),
        feed: Arc::clone(&feed),
        clients: AtomicI64::new(0),
        token,
        state_dir,
        hosts,
        sessions: ui::Sessions::default(),
        users,
        secure: acceptor.is_some(),
        rules: Default::default(),
    });
    let app = router(Arc::clone(&shared));
    let _guard = rt.enter();
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    rt.spawn(feed::run(feed, shutdown.clone()));
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    match acceptor {
        Some(acceptor) => {
            let listener = tls::TlsListener::new(listener, acceptor)?;
            rt.spawn(async move {
                let stop = async move { shutdown.wait().await };
                if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
                    tracing::error!(error = %e, "http server stopped");
                }
            });
        }
        None => {
            rt.spawn(async move {
                let stop = async move { shutdown.wait().await };
                if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
                    tracing::error!(error = %e, "http server stopped");
                }
            });
        }
    }
    tracing::info!(%addr, scheme, "http: serving metrics and the API (Authorization: Bearer <token>)");
    Ok(Some(Server { addr, shared }))
}

/// The access token: the environment, the configured file, else the state directory's file
/// (created once, mode 0600).
fn token(def: &HttpDef, cfg: &crate::config::Loaded, state_dir: &Path) -> Result<String> {
    if let Ok(t) = std::env::var(TOKEN_ENV)
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_string());
    }
    let path = match &def.token_file {
        Some(p) => cfg.resolve(p),
        None => state_dir.join(TOKEN_FILE),
    };
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.lines().next().unwrap_or("").trim().to_string()),
        Ok(_) => bail!("{}: the token file is empty", path.display()),
        Err(e) if def.token_file.is_some() || e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("{}: cannot read the token file", cfg.position("http.token_file")));
        }
        Err(_) => {}
    }
    let t = random_hex()?;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    std::fs::create_dir_all(state_dir)?;
    let mut f = o.open(&path).with_context(|| format!("cannot create {}", path.display()))?;
    std::io::Write::write_all(&mut f, format!("{t}\n").as_bytes())?;
    tracing::info!(file = %path.display(), "http: created an access token");
    Ok(t)
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(ui::index))
        .route("/login", get(ui::login_page).post(ui::login))
        .route("/logout", axum::routing::post(ui::logout))
        .route("/static/app.js", get(ui::app_js))
        .route("/static/app.css", get(ui::app_css))
        .route("/api/session", get(ui::session))
        .route("/metrics", get(metrics_text))
        .route("/api/detections", get(detections))
        .route("/api/top", get(top))
        .route("/api/status", get(status))
        .route("/api/events", get(events))
        .route("/api/detection", get(detection))
        .route("/api/attacker", get(attacker))
        .route("/api/rule", get(rule))
        .route("/api/webroot/changes", get(webroot_changes))
        .route("/api/webroot/accept", axum::routing::post(webroot_accept))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&shared), guard))
        .with_state(shared)
}

/// For every request: the Host check; then, except for the log-in page and the static files,
/// the bearer token or a session cookie — with the session's CSRF token on anything but a
/// read. Security headers on every answer.
async fn guard(State(s): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let mut resp = if !s.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        (StatusCode::MISDIRECTED_REQUEST, "unexpected Host header\n").into_response()
    } else {
        let path = req.uri().path();
        let public = path == "/login" || path.starts_with("/static/") || (path == "/" && req.method() == "GET");
        let read = req.method() == "GET" || req.method() == "HEAD";
        if public {
            next.run(req).await
        } else if authorized(req.headers(), &s.token) {
            req.extensions_mut().insert(Who(TOKEN_WHO.to_string()));
            next.run(req).await
        } else {
            match s.sessions.get(req.headers()) {
                Some((csrf, who)) => {
                    let given = req.headers().get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or("");
                    if read || constant_time_eq(given.as_bytes(), csrf.as_bytes()) {
                        req.extensions_mut().insert(Who(who));
                        next.run(req).await
                    } else {
                        (StatusCode::FORBIDDEN, "missing or wrong X-CSRF-Token\n").into_response()
                    }
                }
                None => (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    "a valid bearer token or session is required\n",
                )
                    .into_response(),
            }
        }
    };
    let h = resp.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_SECURITY_POLICY, header::HeaderValue::from_static(ui::CSP));
    h.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, header::HeaderValue::from_static("no-referrer"));
    resp
}

/// Who made an authorised request: a user's name, or [`TOKEN_WHO`] for the token.
#[derive(Debug, Clone)]
pub struct Who(pub String);

/// What a request made with the access token (bearer or log-in) is recorded as.
pub const TOKEN_WHO: &str = "token";

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
    else {
        return false;
    };
    constant_time_eq(given.trim().as_bytes(), token.as_bytes())
}

/// 32 bytes from the kernel's random source, as hex: access tokens, session ids, CSRF tokens.
pub(crate) fn random_hex() -> Result<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("cannot read the kernel's random source: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Equal without an early exit: the time taken does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

async fn metrics_text(State(s): State<Arc<Shared>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.metrics.encode())
        .into_response()
}

#[derive(Debug, Deserialize)]
struct Filter {
    ip: Option<String>,
    rule: Option<String>,
    /// A duration back from now (`1h`, `7d`).
    since: Option<String>,
    /// A detection's key.
    key: Option<String>,
    limit: Option<usize>,
}

/// An error answer: a status and a line of text.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

fn since_ms(since: Option<&str>, default: std::time::Duration) -> Result<i64, ApiError> {
    let d = match since {
        Some(s) => {
            humantime::parse_duration(s).map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("since: {e}")))?
        }
        None => default,
    };
    Ok(chrono::Utc::now().timestamp_millis() - d.as_millis().min(i64::MAX as u128) as i64)
}

/// Runs a history query on a blocking thread (SQLite is synchronous).
async fn with_history<T: Send + 'static>(
    s: &Shared,
    f: impl FnOnce(&crate::history::Reader) -> Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let dir = s.state_dir.clone();
    let r = tokio::task::spawn_blocking(move || crate::history::Reader::open(&dir).and_then(|r| f(&r))).await;
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}"))),
        Err(e) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

async fn detections(State(s): State<Arc<Shared>>, Query(f): Query<Filter>) -> Response {
    let since = match since_ms(f.since.as_deref(), std::time::Duration::from_secs(86_400 * 365 * 100)) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let q = crate::history::Query {
        ip: f.ip,
        rule: f.rule,
        key: f.key,
        since_ms: Some(since),
        limit: f.limit.unwrap_or(100).min(10_000),
    };
    match with_history(&s, move |r| r.detections(&q)).await {
        Ok(rows) => Json(rows).into_response(),
        Err(r) => r.into_response(),
    }
}

#[derive(Serialize)]
struct TopAnswer {
    attackers: Vec<crate::history::Top>,
    rules: Vec<crate::history::Top>,
    /// (bucket start in ms, detections), oldest first.
    timeline: Vec<(i64, u64)>,
}

async fn top(State(s): State<Arc<Shared>>, Query(f): Query<Filter>) -> Response {
    let since = match since_ms(f.since.as_deref(), std::time::Duration::from_secs(3600)) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let limit = f.limit.unwrap_or(10).min(1000);
    // 60 buckets over the period (at least a minute each): what the page draws.
    let span = chrono::Utc::now().timestamp_millis() - since;
    let bucket = (span / 60).max(60_000);
    let answer = with_history(&s, move |r| {
        Ok(TopAnswer {
            attackers: r.top(true, since, limit)?,
            rules: r.top(false, since, limit)?,
            timeline: r.timeline(since, bucket)?,
        })
    })
    .await;
    match answer {
        Ok(a) => Json(a).into_response(),
        Err(r) => r.into_response(),
    }
}

async fn status(State(s): State<Arc<Shared>>) -> Response {
    let path = s.state_dir.join(crate::daemon::status::FILE);
    match tokio::task::spawn_blocking(move || std::fs::read(&path)).await {
        Ok(Ok(bytes)) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("no status yet: {e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// The newest changes under the web roots, reported or not (maintenance, flapping,
/// accepted), with sizes and hashes before and after.
async fn webroot_changes(State(s): State<Arc<Shared>>, Query(f): Query<Filter>) -> Response {
    let dir = s.state_dir.clone();
    let limit = f.limit.unwrap_or(100).min(10_000);
    match tokio::task::spawn_blocking(move || crate::source::webroot::baseline::recent_changes(&dir, limit)).await {
        Ok(Ok(rows)) => Json(rows).into_response(),
        Ok(Err(e)) => ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")).into_response(),
        Err(e) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The attacker page: what the history holds about one address.
async fn attacker(State(s): State<Arc<Shared>>, Query(f): Query<Filter>) -> Response {
    let Some(ip) = f.ip else {
        return ApiError(StatusCode::BAD_REQUEST, "ip= is required".into()).into_response();
    };
    match with_history(&s, move |r| r.attacker(&ip)).await {
        Ok(a) => Json(a).into_response(),
        Err(r) => r.into_response(),
    }
}

#[derive(Serialize)]
struct RuleAnswer {
    /// Absent when no rule of this id is loaded now (its detections stay in the history).
    rule: Option<RuleDoc>,
    /// Counters since the daemon started: matches, detections, evaluations and their cost.
    counts: Option<RuleCounts>,
    history: crate::history::RuleHistory,
}

/// The rule page: the rule as loaded, its counters and cost, its history.
async fn rule(State(s): State<Arc<Shared>>, Query(f): Query<Filter>) -> Response {
    let Some(id) = f.rule else {
        return ApiError(StatusCode::BAD_REQUEST, "rule= is required".into()).into_response();
    };
    let doc = s.rule_doc(&id);
    let counts = s.metrics.rule_counts(&id);
    let now = chrono::Utc::now().timestamp_millis();
    match with_history(&s, move |r| r.rule(&id, now)).await {
        Ok(history) => Json(RuleAnswer { rule: doc, counts, history }).into_response(),
        Err(r) => r.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct AcceptBody {
    /// Rows of `/api/webroot/changes`.
    ids: Vec<i64>,
}

/// A person accepts reported web-root changes after checking them (recorded under the
/// session's user; a state change, so a session needs its CSRF token).
async fn webroot_accept(
    State(s): State<Arc<Shared>>,
    axum::Extension(who): axum::Extension<Who>,
    Json(body): Json<AcceptBody>,
) -> Response {
    if body.ids.len() > 10_000 {
        return ApiError(StatusCode::BAD_REQUEST, "at most 10000 ids at once".into()).into_response();
    }
    let dir = s.state_dir.clone();
    let who = who.0;
    let by = who.clone();
    let n = body.ids.len();
    match tokio::task::spawn_blocking(move || crate::source::webroot::baseline::accept_changes(&dir, &body.ids, &by))
        .await
    {
        Ok(Ok(accepted)) => {
            tracing::info!(user = ?who, asked = n, accepted, "web root: changes accepted");
            Json(serde_json::json!({ "accepted": accepted, "by": who })).into_response()
        }
        Ok(Err(e)) => ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")).into_response(),
        Err(e) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// How long a quiet feed waits before it writes a comment, so that proxies and browsers keep
/// the connection.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// The live feed: server-sent events `detections`, each a JSON array of compact rows
/// ([`feed::Row`]) of up to [`feed::GATHER`]; `lagged` with the number of rows a client missed
/// (too slow, or a flood beyond what the feed carries). The frames are built once per tick
/// for every client ([`feed::run`]); a client only writes them.
async fn events(State(s): State<Arc<Shared>>) -> Response {
    let rx = s.feed.subscribe();
    let guard = ClientGuard::new(Arc::clone(&s));
    let stream = futures_util::stream::unfold((rx, guard, None), |(mut rx, guard, mut expected)| async move {
        loop {
            let frame = match tokio::time::timeout(KEEP_ALIVE, rx.recv()).await {
                Err(_) => bytes::Bytes::from_static(b":\n\n"),
                Ok(Ok(batch)) => {
                    let end = batch.end;
                    let f = feed::frame_for(batch, expected);
                    expected = Some(end);
                    f
                }
                // The next batch tells how many rows the skipped ones held.
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(broadcast::error::RecvError::Closed)) => return None,
            };
            return Some((Ok::<_, std::convert::Infallible>(frame), (rx, guard, expected)));
        }
    });
    ([(header::CONTENT_TYPE, "text/event-stream")], axum::body::Body::from_stream(stream)).into_response()
}

#[derive(Debug, Deserialize)]
struct DetectionQuery {
    /// The detection's key (the feed's rows and the history carry it).
    id: Option<String>,
}

/// One whole detection by its key: from the feed's recent ones (the newest are not in the
/// history yet: it is written in batches), else from the history.
async fn detection(State(s): State<Arc<Shared>>, Query(q): Query<DetectionQuery>) -> Response {
    let Some(id) = q.id.filter(|k| !k.is_empty()) else {
        return ApiError(StatusCode::BAD_REQUEST, "id= is required".into()).into_response();
    };
    // Keys are 16 hex digits; anything much longer is no key of ours.
    if id.len() > 128 {
        return ApiError(StatusCode::NOT_FOUND, "no such detection".into()).into_response();
    }
    let json = |body: String| ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(full) = s.feed.recent(&id) {
        return json(full.to_string());
    }
    if !s.state_dir.join(crate::history::FILE).exists() {
        return ApiError(StatusCode::NOT_FOUND, "no such detection (and no history)".into()).into_response();
    }
    match with_history(&s, move |r| r.detection(&id)).await {
        Ok(Some(full)) => json(full),
        Ok(None) => ApiError(StatusCode::NOT_FOUND, "no such detection".into()).into_response(),
        Err(r) => r.into_response(),
    }
}

/// Counts a live-feed client while its stream exists.
struct ClientGuard(Arc<Shared>);

impl ClientGuard {
    fn new(s: Arc<Shared>) -> ClientGuard {
        s.clients.fetch_add(1, Ordering::Relaxed);
        ClientGuard(s)
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"abc\0", b"abc"));
        assert!(!constant_time_eq(b"", b"abc"));
    }
}
