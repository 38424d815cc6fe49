//! The `actions.xdr` section of `trapline.yml`, and its resolved form.
//!
//! Everything has a default so that `xdr: {}` works against the sandbox; pointing at the real
//! service needs `region` (or `base_url`) and credentials. Credentials come from the config
//! (usually as `${ENV}`) or, when absent there, from `TRAPLINE_XDR_CLIENT_ID` /
//! `TRAPLINE_XDR_CLIENT_SECRET`. They are never logged: [`Secret`] has a redacting `Debug`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::Loaded;

/// Settings of the `xdr-incident` action.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct XdrDef {
    /// `us` (default), `eu` or `apjc`: selects `visibility{,.eu,.apjc}.amp.cisco.com` (token and
    /// bundle import) and `private.intel{,.eu,.apjc}.amp.cisco.com` (search and delete).
    #[serde(default = "default_region")]
    pub region: String,
    /// Overrides both hosts (a proxy, or the sandbox: `http://127.0.0.1:9099`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// API client id (`client-<uuid>`); default: `$TRAPLINE_XDR_CLIENT_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// API client password; default: `$TRAPLINE_XDR_CLIENT_SECRET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// `source` of every entity and of the bundle; also what `xdr purge` searches for.
    #[serde(default = "default_source")]
    pub source: String,
    /// External-id prefix (`<prefix>-<type>-<sha256>`), sent as `external-key-prefixes`.
    #[serde(default = "default_prefix")]
    pub external_id_prefix: String,
    /// Template directory (default: `<templates>/xdr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templates: Option<PathBuf>,
    /// One incident per group (the attacker) per window; later hits add sightings to it.
    #[serde(default = "default_window")]
    pub window: String,
    /// `attacker` (default): one incident per group and window, whatever rules fire, each
    /// detection a sighting of it; `rule`: one incident per rule, group and window.
    #[serde(default)]
    pub incident: IncidentScope,
    /// Detection fields that make the group key (default: the attacker, `client_ip`).
    #[serde(default = "default_group_by")]
    pub group_by: Vec<String>,
    /// Also send the judgement template (a verdict on the attacker) with each new incident.
    #[serde(default)]
    pub judgement: bool,
    /// Most detections waiting for delivery; beyond it new ones are not queued for XDR (they
    /// stay in the `log` output) and a warning counts them.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    /// Client-side request budget per rolling hour (the organisation's limit is 8,000).
    #[serde(default = "default_budget")]
    pub max_requests_per_hour: u32,
    /// Most bundle imports per incident per minute (default 2). An incident's first import goes
    /// at once; later ones are spaced a minute / N apart. Detections arriving faster wait (in
    /// the outbox) and go together in the incident's next allowed import (many sightings per
    /// bundle, up to 100 entities), followed by one PATCH bringing the incident up to date.
    #[serde(default = "default_imports_per_minute")]
    pub max_imports_per_incident_per_minute: u32,
    /// The "minute" of `max_imports_per_incident_per_minute` (default `1m`). Only tests should
    /// shorten it.
    #[serde(default = "default_minute")]
    pub incident_rate_period: String,
    /// HTTP timeout of one request.
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// Per-rule overrides, by rule id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rules: BTreeMap<String, XdrRuleDef>,
}

/// Per-rule overrides of the XDR action.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct XdrRuleDef {
    /// Template directory for this rule; files it lacks come from the default directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templates: Option<PathBuf>,
    /// Group key fields for this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<Vec<String>>,
    /// Incident window for this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// `rule`: this rule's detections get incidents of their own (see `incident` above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<IncidentScope>,
}

/// What one incident gathers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IncidentScope {
    /// Everything one attacker (group) does within the window.
    #[default]
    Attacker,
    /// One rule's detections of one attacker within the window.
    Rule,
}

fn default_region() -> String {
    "us".into()
}
fn default_source() -> String {
    "trapline".into()
}
fn default_prefix() -> String {
    "trapline".into()
}
fn default_window() -> String {
    "1h".into()
}
fn default_group_by() -> Vec<String> {
    vec!["client_ip".into()]
}
fn default_max_pending() -> usize {
    10_000
}
fn default_budget() -> u32 {
    8_000
}
fn default_imports_per_minute() -> u32 {
    2
}
fn default_minute() -> String {
    "1m".into()
}
fn default_timeout() -> String {
    "10s".into()
}

/// A credential: printed as `***`.
#[derive(Clone, Default)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "<unset>" } else { "***" })
    }
}

/// The two API hosts of a region (or the override).
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// IROH front door: token and bundle import.
    pub visibility: String,
    /// CTIA: search, count and delete (purge).
    pub private_intel: String,
}

impl Endpoints {
    /// Hosts per region (`shared/docs/xdr-ctim.md` §3); `base_url` replaces both.
    pub fn new(region: &str, base_url: Option<&str>) -> Result<Endpoints> {
        if let Some(b) = base_url {
            let b = b.trim_end_matches('/').to_string();
            if !(b.starts_with("http://") || b.starts_with("https://")) {
                bail!("xdr.base_url must start with http:// or https://, got {b:?}");
            }
            return Ok(Endpoints { visibility: b.clone(), private_intel: b });
        }
        let infix = match region {
            "" | "us" => "",
            "eu" => ".eu",
            "apjc" => ".apjc",
            other => bail!("xdr.region must be one of us, eu, apjc (got {other:?})"),
        };
        Ok(Endpoints {
            visibility: format!("https://visibility{infix}.amp.cisco.com"),
            private_intel: format!("https://private.intel{infix}.amp.cisco.com"),
        })
    }
    pub fn token_url(&self) -> String {
        format!("{}/iroh/oauth2/token", self.visibility)
    }
    pub fn import_url(&self) -> String {
        format!("{}/iroh/private-intel/bundle/import", self.visibility)
    }
    /// One incident on the IROH front door (PATCH).
    pub fn incident_url(&self, short_id: &str) -> String {
        format!("{}/iroh/private-intel/incident/{short_id}", self.visibility)
    }
}

/// Grouping and window of one rule.
#[derive(Debug, Clone)]
pub struct Grouping {
    pub group_by: Vec<String>,
    pub window: Duration,
    pub scope: IncidentScope,
}

/// The resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub endpoints: Endpoints,
    pub client_id: Secret,
    pub client_secret: Secret,
    pub source: String,
    pub prefix: String,
    pub templates: PathBuf,
    pub rule_templates: BTreeMap<String, PathBuf>,
    pub grouping: Grouping,
    pub rule_grouping: BTreeMap<String, Grouping>,
    pub judgement: bool,
    pub max_pending: usize,
    pub budget_per_hour: u32,
    /// Imports per incident per `incident_period`.
    pub imports_per_incident: u32,
    pub incident_period: Duration,
    pub timeout: Duration,
    /// `<state_dir>/xdr`: outbox, incident windows, stored ids.
    pub state_dir: PathBuf,
    pub variables: BTreeMap<String, serde_json::Value>,
}

fn duration(s: &str, what: &str) -> Result<Duration> {
    humantime::parse_duration(s).map_err(|e| anyhow!("xdr.{what}: {e} (e.g. 30m, 1h)"))
}

impl Settings {
    /// Resolves `cfg.actions.xdr`; `None` when the section is absent.
    pub fn from_config(cfg: &Loaded) -> Result<Option<Settings>> {
        let Some(d) = &cfg.config.actions.xdr else { return Ok(None) };
        // Errors name the offending value's position (`trapline.yml:LINE:COL`).
        let at = |key: &str| {
            let path = format!("actions.xdr.{key}");
            move |e: anyhow::Error| anyhow!("{}: actions.{e}", cfg.position(&path))
        };
        let key = if d.base_url.is_some() { "base_url" } else { "region" };
        let endpoints = Endpoints::new(&d.region, d.base_url.as_deref()).map_err(at(key))?;
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let client_id = Secret(
            d.client_id.clone().filter(|v| !v.is_empty()).or_else(|| env("TRAPLINE_XDR_CLIENT_ID")).unwrap_or_default(),
        );
        let client_secret = Secret(
            d.client_secret
                .clone()
                .filter(|v| !v.is_empty())
                .or_else(|| env("TRAPLINE_XDR_CLIENT_SECRET"))
                .unwrap_or_default(),
        );
        if d.source.is_empty() || d.source.len() > 2048 {
            return Err(at("source")(anyhow!("xdr.source must be 1 to 2048 characters")));
        }
        if d.external_id_prefix.is_empty() || d.external_id_prefix.contains(',') {
            return Err(at("external_id_prefix")(anyhow!(
                "xdr.external_id_prefix must be non-empty and without commas"
            )));
        }
        let grouping = Grouping {
            group_by: d.group_by.clone(),
            window: duration(&d.window, "window").map_err(at("window"))?,
            scope: d.incident,
        };
        let mut rule_grouping = BTreeMap::new();
        let mut rule_templates = BTreeMap::new();
        for (id, r) in &d.rules {
            let window = match &r.window {
                Some(w) => duration(w, &format!("rules.{id}.window")).map_err(at(&format!("rules.{id}.window")))?,
                None => grouping.window,
            };
            let group_by = r.group_by.clone().unwrap_or_else(|| grouping.group_by.clone());
            // A rule with its own grouping or window cannot share the attacker's incident.
            let scope = match r.incident {
                Some(s) => s,
                None if r.group_by.is_some() || r.window.is_some() => IncidentScope::Rule,
                None => grouping.scope,
            };
            rule_grouping.insert(id.clone(), Grouping { group_by, window, scope });
            if let Some(t) = &r.templates {
                rule_templates.insert(id.clone(), cfg.resolve(t));
            }
        }
        let templates = match &d.templates {
            Some(t) => cfg.resolve(t),
            None => cfg.resolve(&cfg.config.templates).join("xdr"),
        };
        if d.max_imports_per_incident_per_minute == 0 {
            return Err(at("max_imports_per_incident_per_minute")(anyhow!(
                "xdr.max_imports_per_incident_per_minute must be at least 1"
            )));
        }
        let incident_period =
            duration(&d.incident_rate_period, "incident_rate_period").map_err(at("incident_rate_period"))?;
        if incident_period.is_zero() {
            return Err(at("incident_rate_period")(anyhow!("xdr.incident_rate_period must be longer than 0")));
        }
        if d.max_pending == 0 {
            return Err(at("max_pending")(anyhow!("xdr.max_pending must be at least 1")));
        }
        Ok(Some(Settings {
            endpoints,
            client_id,
            client_secret,
            source: d.source.clone(),
            prefix: d.external_id_prefix.clone(),
            templates,
            rule_templates,
            grouping,
            rule_grouping,
            judgement: d.judgement,
            max_pending: d.max_pending,
            budget_per_hour: d.max_requests_per_hour.max(1),
            imports_per_incident: d.max_imports_per_incident_per_minute,
            incident_period,
            timeout: duration(&d.timeout, "timeout").map_err(at("timeout"))?,
            state_dir: cfg.resolve(&cfg.config.state_dir).join("xdr"),
            variables: cfg.config.variables.clone(),
        }))
    }

    pub fn grouping(&self, rule: &str) -> &Grouping {
        self.rule_grouping.get(rule).unwrap_or(&self.grouping)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_map_to_documented_hosts() {
        let us = Endpoints::new("us", None).unwrap();
        assert_eq!(us.token_url(), "https://visibility.amp.cisco.com/iroh/oauth2/token");
        assert_eq!(us.import_url(), "https://visibility.amp.cisco.com/iroh/private-intel/bundle/import");
        assert_eq!(us.private_intel, "https://private.intel.amp.cisco.com");
        let eu = Endpoints::new("eu", None).unwrap();
        assert_eq!(eu.token_url(), "https://visibility.eu.amp.cisco.com/iroh/oauth2/token");
        assert_eq!(eu.private_intel, "https://private.intel.eu.amp.cisco.com");
        let ap = Endpoints::new("apjc", None).unwrap();
        assert_eq!(ap.token_url(), "https://visibility.apjc.amp.cisco.com/iroh/oauth2/token");
        assert!(Endpoints::new("mars", None).is_err());
        let local = Endpoints::new("us", Some("http://127.0.0.1:9099/")).unwrap();
        assert_eq!(local.token_url(), "http://127.0.0.1:9099/iroh/oauth2/token");
    }

    #[test]
    fn secrets_are_not_printed() {
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "***");
    }
}
