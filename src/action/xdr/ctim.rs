//! The CTIM rules a bundle must pass, as CTIA applies them (see `shared/docs/xdr-ctim.md` §7–§9).
//!
//! One implementation serves two callers, on purpose:
//! - trapline checks every rendered bundle *before* it is queued, so a template that produces
//!   something XDR would reject fails at load time (with the template's file:line), not at the
//!   first attack;
//! - the sandbox (`trapline xdr sandbox`) answers with the same verdicts, in CTIA's shapes.
//!
//! The layers are kept apart because the service reports them differently:
//! - [`schema_errors`] (closed maps, required keys, closed vocabularies, JSON types, dates):
//!   the whole request fails with 400 `{"errors": <tree mirroring the body>}`;
//! - [`spec_error`] (lengths, URIs, references, 1970–2525, start ≤ end, non-negative numbers),
//!   [`tlp_error`] (minimum TLP) and the judgement disposition check: one entity fails, with
//!   a per-entity `"result": "error"` inside a bundle.
//!
//! An incident PATCH has its own schema ([`patch_schema_errors`]: CTIA's `PartialNewIncident`)
//! and merge ([`merge_patch`]); [`INCIDENT_PATCH_KEYS`] is the narrower set trapline sends.
//!
//! The tests pin the verdicts on the documented examples (§6.1 passes; each documented
//! violation fails in its layer) so that a mistake here cannot hide behind the sandbox agreeing
//! with the client.

use serde_json::{Map, Value, json};

/// JSON type of a field, as the schema layer checks it.
#[derive(Clone, Copy)]
enum T {
    Str,
    Int,
    Num,
    Bool,
    Time,
    Enum(&'static [&'static str]),
    IntEnum(&'static [i64]),
    Arr(&'static T),
    Obj(&'static Schema),
    /// Any JSON object (`relation_info`, `context`, entity arrays trapline never sends).
    AnyObj,
    /// `meta`: keys → scalars (checked by the spec layer).
    Meta,
    /// `scores`: keys → numbers.
    NumMap,
}

/// A closed map: required keys and the groups of allowed fields.
struct Schema {
    req: &'static [&'static str],
    parts: &'static [&'static [(&'static str, T)]],
}

pub const CONFIDENCE: &[&str] = &["Info", "Low", "Medium", "High", "None", "Unknown"];
pub const SEVERITY: &[&str] = &["Info", "Low", "Medium", "High", "None", "Unknown", "Critical"];
pub const TLP: &[&str] = &["red", "amber", "green", "white"];
pub const STATUS: &[&str] = &[
    "New",
    "New: Processing",
    "New: Presented",
    "Open",
    "Open: Investigating",
    "Open: Reported",
    "Open: Contained",
    "Open: Recovered",
    "Hold",
    "Hold: Internal",
    "Hold: External",
    "Hold: Legal",
    "Stalled",
    "Containment Achieved",
    "Restoration Achieved",
    "Incident Reported",
    "Closed",
    "Closed: Under Review",
    "Closed: Confirmed Threat",
    "Closed: Suspected",
    "Closed: False Positive",
    "Closed: Near-Miss",
    "Closed: Merged",
    "Closed: Other",
    "Rejected",
];
const PROMOTION: &[&str] = &["Manual", "Automated"];
const DISPOSITION_NAME: &[&str] = &["Clean", "Malicious", "Suspicious", "Common", "Unknown"];
const DETECTION_STATUS: &[&str] =
    &["active", "inactive_expired", "inactive_merged", "inactive_oversized", "inactive_user_closed"];
pub const OBSERVABLE_TYPES: &[&str] = &[
    "acudid",
    "amp_computer_guid",
    "certificate_common_name",
    "certificate_issuer",
    "certificate_serial",
    "cisco_cm_id",
    "cisco_mid",
    "cisco_uc_id",
    "cortex_agent_id",
    "crowdstrike_id",
    "cvm_id",
    "cybereason_id",
    "darktrace_id",
    "device",
    "domain",
    "email",
    "email_messageid",
    "email_subject",
    "file_name",
    "file_path",
    "google_chromebook_id",
    "google_cloud_id",
    "hostname",
    "imei",
    "imsi",
    "intune_id",
    "ip",
    "ipv6",
    "jamf_management_id",
    "mac_address",
    "md5",
    "meraki_network_id",
    "meraki_node_sn",
    "meraki_org_id",
    "ms_machine_id",
    "mutex",
    "ngfw_id",
    "ngfw_name",
    "odns_identity",
    "odns_identity_label",
    "orbital_node_id",
    "pki_serial",
    "process_args",
    "process_hash",
    "process_name",
    "process_path",
    "process_uid",
    "process_username",
    "processor_id",
    "registry_key",
    "registry_name",
    "registry_path",
    "s1_agent_id",
    "secure_access_id",
    "serial_number",
    "service_now_id",
    "sha1",
    "sha256",
    "swc_device_id",
    "trend_micro_id",
    "url",
    "user",
    "user_agent",
];

const STRS: T = T::Arr(&T::Str);

static EXTREF: Schema = Schema {
    req: &["source_name"],
    parts: &[&[
        ("source_name", T::Str),
        ("description", T::Str),
        ("url", T::Str),
        ("hashes", STRS),
        ("external_id", T::Str),
    ]],
};
static OBSERVED_TIME: Schema =
    Schema { req: &["start_time"], parts: &[&[("start_time", T::Time), ("end_time", T::Time)]] };
static VALID_TIME: Schema = Schema { req: &[], parts: &[&[("start_time", T::Time), ("end_time", T::Time)]] };
static OBSERVABLE: Schema =
    Schema { req: &["value", "type"], parts: &[&[("value", T::Str), ("type", T::Enum(OBSERVABLE_TYPES))]] };
static IDENTITY: Schema = Schema {
    req: &["type", "observables", "observed_time"],
    parts: &[&[
        ("type", T::Str),
        ("observables", T::Arr(&T::Obj(&OBSERVABLE))),
        ("observed_time", T::Obj(&OBSERVED_TIME)),
        ("os", T::Str),
    ]],
};
static SENSOR_COORDINATES: Schema = Schema {
    req: &["type", "observables"],
    parts: &[&[("type", T::Str), ("observables", T::Arr(&T::Obj(&OBSERVABLE))), ("os", T::Str)]],
};
static RELATION: Schema = Schema {
    req: &["origin", "relation", "source", "related"],
    parts: &[&[
        ("origin", T::Str),
        ("origin_uri", T::Str),
        ("relation", T::Str),
        ("relation_info", T::AnyObj),
        ("source", T::Obj(&OBSERVABLE)),
        ("related", T::Obj(&OBSERVABLE)),
    ]],
};
static INCIDENT_TIME: Schema = Schema {
    req: &["opened"],
    parts: &[&[
        ("opened", T::Time),
        ("discovered", T::Time),
        ("reported", T::Time),
        ("remediated", T::Time),
        ("closed", T::Time),
        ("rejected", T::Time),
        ("contained", T::Time),
    ]],
};
static DATA_TABLE: Schema = Schema {
    req: &["columns", "rows"],
    parts: &[&[("columns", T::Arr(&T::AnyObj)), ("rows", T::Arr(&T::Arr(&T::Str))), ("row_count", T::Int)]],
};

/// Fields of every entity, with CTIA's extras (`CTIAEntity`).
const COMMON: &[(&str, T)] = &[
    ("id", T::Str),
    ("type", T::Str),
    ("schema_version", T::Str),
    ("revision", T::Int),
    ("external_ids", STRS),
    ("external_references", T::Arr(&T::Obj(&EXTREF))),
    ("timestamp", T::Time),
    ("language", T::Str),
    ("tlp", T::Enum(TLP)),
    ("authorized_users", STRS),
    ("authorized_groups", STRS),
    ("client_id", T::Str),
    ("owner", T::Str),
    ("groups", STRS),
    ("created", T::Time),
    ("modified", T::Time),
];
const DESCRIBABLE: &[(&str, T)] = &[("title", T::Str), ("description", T::Str), ("short_description", T::Str)];
const SOURCABLE: &[(&str, T)] = &[("source", T::Str), ("source_uri", T::Str)];

static INCIDENT: Schema =
    Schema { req: &["confidence", "status", "incident_time"], parts: &[COMMON, DESCRIBABLE, SOURCABLE, INCIDENT_OWN] };
/// The body of an incident PATCH: CTIA's `PartialNewIncident` (`entity/incident.clj`
/// `:patch-schema`), i.e. the `NewIncident` closed map with every key optional.
static INCIDENT_PATCH: Schema = Schema { req: &[], parts: &[COMMON, DESCRIBABLE, SOURCABLE, INCIDENT_OWN] };
const INCIDENT_OWN: &[(&str, T)] = &[
    ("confidence", T::Enum(CONFIDENCE)),
    ("status", T::Enum(STATUS)),
    ("incident_time", T::Obj(&INCIDENT_TIME)),
    ("categories", STRS),
    ("discovery_method", T::Str),
    ("intended_effect", T::Str),
    ("assignees", STRS),
    ("detection_sources", STRS),
    ("promotion_method", T::Enum(PROMOTION)),
    ("severity", T::Enum(SEVERITY)),
    ("tactics", STRS),
    ("techniques", STRS),
    ("meta", T::Meta),
    ("scores", T::NumMap),
    ("detection_status", T::Enum(DETECTION_STATUS)),
    ("short_id", T::Str),
];
static SIGHTING: Schema = Schema {
    req: &["observed_time"],
    parts: &[
        COMMON,
        DESCRIBABLE,
        SOURCABLE,
        &[
            ("observed_time", T::Obj(&OBSERVED_TIME)),
            ("confidence", T::Enum(CONFIDENCE)),
            ("count", T::Int),
            ("internal", T::Bool),
            ("severity", T::Enum(SEVERITY)),
            ("resolution", T::Str),
            ("sensor", T::Str),
            ("sensor_coordinates", T::Obj(&SENSOR_COORDINATES)),
            ("targets", T::Arr(&T::Obj(&IDENTITY))),
            ("observables", T::Arr(&T::Obj(&OBSERVABLE))),
            ("relations", T::Arr(&T::Obj(&RELATION))),
            ("data", T::Obj(&DATA_TABLE)),
            ("context", T::AnyObj),
            ("activity_interval", T::Obj(&OBSERVED_TIME)),
            ("detection_interval", T::Obj(&OBSERVED_TIME)),
            ("modification_interval", T::Obj(&OBSERVED_TIME)),
        ],
    ],
};
static RELATIONSHIP: Schema = Schema {
    req: &["relationship_type", "source_ref", "target_ref"],
    parts: &[
        COMMON,
        DESCRIBABLE,
        SOURCABLE,
        &[("relationship_type", T::Str), ("source_ref", T::Str), ("target_ref", T::Str)],
    ],
};
static JUDGEMENT: Schema = Schema {
    req: &["observable", "source", "priority", "confidence", "severity"],
    parts: &[
        COMMON,
        SOURCABLE,
        &[
            ("observable", T::Obj(&OBSERVABLE)),
            ("priority", T::Int),
            ("confidence", T::Enum(CONFIDENCE)),
            ("severity", T::Enum(SEVERITY)),
            ("disposition", T::IntEnum(&[1, 2, 3, 4, 5])),
            ("disposition_name", T::Enum(DISPOSITION_NAME)),
            ("valid_time", T::Obj(&VALID_TIME)),
            ("reason", T::Str),
            ("reason_uri", T::Str),
        ],
    ],
};

/// The entity arrays trapline sends and validates deeply, with their singular type.
pub const ENTITY_ARRAYS: &[(&str, &str)] = &[
    ("incidents", "incident"),
    ("sightings", "sighting"),
    ("relationships", "relationship"),
    ("judgements", "judgement"),
];
/// Other bundle arrays: accepted (as objects) but not used by trapline.
const OTHER_ARRAYS: &[&str] = &[
    "actors",
    "assets",
    "asset_mappings",
    "asset_properties",
    "attack_patterns",
    "campaigns",
    "coas",
    "data_tables",
    "feedbacks",
    "identity_assertions",
    "indicators",
    "malwares",
    "notes",
    "target_records",
    "tools",
    "verdicts",
    "weaknesses",
    "vulnerabilities",
];

fn schema_of(entity_type: &str) -> Option<&'static Schema> {
    match entity_type {
        "incident" => Some(&INCIDENT),
        "sighting" => Some(&SIGHTING),
        "relationship" => Some(&RELATIONSHIP),
        "judgement" => Some(&JUDGEMENT),
        _ => None,
    }
}

/// Schema layer for a whole bundle: `None` if it passes, else the `errors` tree (the body's
/// shape with Prismatic-style leaf strings), as CTIA returns it in a 400.
pub fn schema_errors(bundle: &Value) -> Option<Value> {
    let Some(obj) = bundle.as_object() else {
        return Some(json!(type_leaf("clojure.lang.PersistentArrayMap", bundle)));
    };
    let mut errs = Map::new();
    if !obj.contains_key("source") {
        errs.insert("source".into(), json!("missing-required-key"));
    }
    for (k, v) in obj {
        let e = if let Some((_, ty)) = ENTITY_ARRAYS.iter().find(|(a, _)| a == k) {
            let s = schema_of(ty).expect("known type");
            check(v, T::Arr(&T::AnyObj)).or_else(|| entity_array_errors(v, s, ty))
        } else if OTHER_ARRAYS.contains(&k.as_str()) {
            check(v, T::Arr(&T::AnyObj))
        } else if k.ends_with("_refs") {
            check(v, STRS)
        } else {
            match k.as_str() {
                "type" => (v != "bundle").then(|| enum_leaf(&["bundle"], v)),
                "source" | "id" | "title" | "description" | "short_description" | "language" | "source_uri" => {
                    check(v, T::Str)
                }
                "valid_time" => check(v, T::Obj(&VALID_TIME)),
                "timestamp" => check(v, T::Time),
                "external_ids" => check(v, STRS),
                "tlp" => check(v, T::Enum(TLP)),
                "schema_version" => check(v, T::Str),
                _ => Some(json!("disallowed-key")),
            }
        };
        if let Some(e) = e {
            errs.insert(k.clone(), e);
        }
    }
    (!errs.is_empty()).then_some(Value::Object(errs))
}

fn entity_array_errors(v: &Value, s: &'static Schema, ty: &str) -> Option<Value> {
    let items = v.as_array()?;
    let mut any = false;
    let out: Vec<Value> = items
        .iter()
        .map(|it| {
            let mut e = check(it, T::Obj(s));
            // `type` must name the entity's own type.
            if e.is_none()
                && let Some(t) = it.get("type")
                && t != ty
            {
                e = Some(json!({"type": enum_leaf(&[ty], t)}));
            }
            any |= e.is_some();
            e.unwrap_or(Value::Null)
        })
        .collect();
    any.then_some(Value::Array(out))
}

/// Schema layer for one entity of type `entity_type` (single-entity POSTs).
pub fn entity_schema_errors(entity_type: &str, v: &Value) -> Option<Value> {
    let s = schema_of(entity_type)?;
    check(v, T::Obj(s))
}

/// The incident fields trapline keeps current with a PATCH: those its templates derive from
/// the aggregate (counts, times, classes, severity, ATT&CK ids, scores). CTIA would accept any
/// `NewIncident` key ([`patch_schema_errors`]), but the rest belong to others once the incident
/// exists: `status`, `assignees`, `confidence`, `tlp` and `incident_time` are what analysts
/// (and CTIA's status transitions) change, and the ids, `type` and `source` identify the
/// incident. Sending them again would undo an analyst's triage. (`severity` is dropped from an
/// update too unless the aggregate's rose above the first detection's: see the action.)
pub const INCIDENT_PATCH_KEYS: &[&str] = &[
    "title",
    "short_description",
    "description",
    "severity",
    "categories",
    "tactics",
    "techniques",
    "scores",
    "meta",
    "intended_effect",
    "detection_sources",
    "timestamp",
];

/// The PATCH body that brings a stored incident up to date with `incident` (a rendered
/// incident entity): its [`INCIDENT_PATCH_KEYS`], nothing else.
pub fn incident_patch(incident: &Value) -> Value {
    let mut out = Map::new();
    if let Some(o) = incident.as_object() {
        for k in INCIDENT_PATCH_KEYS {
            if let Some(v) = o.get(*k) {
                out.insert(k.to_string(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// Schema layer of an incident PATCH body (`PartialNewIncident`): a closed map whose keys are
/// all optional; `None` if it passes, else the `errors` tree CTIA returns with a 400.
pub fn patch_schema_errors(v: &Value) -> Option<Value> {
    let mut e = check(v, T::Obj(&INCIDENT_PATCH));
    if e.is_none()
        && let Some(t) = v.get("type")
        && t != "incident"
    {
        e = Some(json!({"type": enum_leaf(&["incident"], t)}));
    }
    e
}

/// CTIA's PATCH semantics (`flows/crud.clj` `patch-entity` with `:replace`): nested maps are
/// merged key by key, every other value (arrays included) is replaced; `id` and
/// `schema_version` of the body are ignored. The caller re-validates the result as a whole
/// entity, as CTIA does.
pub fn merge_patch(stored: &Value, patch: &Value) -> Value {
    fn deep(a: &mut Value, b: &Value) {
        match (a.as_object_mut(), b.as_object()) {
            (Some(ao), Some(bo)) => {
                for (k, v) in bo {
                    match ao.get_mut(k) {
                        Some(x) if x.is_object() && v.is_object() => deep(x, v),
                        _ => {
                            ao.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            _ => *a = b.clone(),
        }
    }
    let mut body = patch.clone();
    if let Some(o) = body.as_object_mut() {
        o.remove("id");
        o.remove("schema_version");
    }
    let mut out = stored.clone();
    deep(&mut out, &body);
    out
}

fn check(v: &Value, t: T) -> Option<Value> {
    match t {
        T::Str => (!v.is_string()).then(|| type_leaf("java.lang.String", v)),
        T::Int => (!(v.is_i64() || v.is_u64())).then(|| type_leaf("java.lang.Long", v)),
        T::Num => (!v.is_number()).then(|| type_leaf("java.lang.Number", v)),
        T::Bool => (!v.is_boolean()).then(|| type_leaf("java.lang.Boolean", v)),
        T::Time => match v.as_str() {
            Some(s) if parse_time(s).is_some() => None,
            _ => Some(json!(format!("(not (valid-date-time {}))", show(v)))),
        },
        T::Enum(vals) => (!v.as_str().is_some_and(|s| vals.contains(&s))).then(|| enum_leaf(vals, v)),
        T::IntEnum(vals) => (!v.as_i64().is_some_and(|n| vals.contains(&n))).then(|| {
            let set: Vec<String> = vals.iter().map(|n| n.to_string()).collect();
            json!(format!("(not (#{{{}}} {}))", set.join(" "), show(v)))
        }),
        T::Arr(inner) => {
            let Some(a) = v.as_array() else { return Some(type_leaf("clojure.lang.Sequential", v)) };
            let errs: Vec<Value> = a.iter().map(|x| check(x, *inner).unwrap_or(Value::Null)).collect();
            errs.iter().any(|e| !e.is_null()).then_some(Value::Array(errs))
        }
        T::AnyObj => (!v.is_object()).then(|| type_leaf("clojure.lang.PersistentArrayMap", v)),
        T::Meta | T::NumMap => {
            let Some(o) = v.as_object() else { return Some(type_leaf("clojure.lang.PersistentArrayMap", v)) };
            if matches!(t, T::NumMap) {
                let errs: Map<String, Value> =
                    o.iter().filter_map(|(k, x)| check(x, T::Num).map(|e| (k.clone(), e))).collect();
                return (!errs.is_empty()).then_some(Value::Object(errs));
            }
            None
        }
        T::Obj(s) => {
            let Some(o) = v.as_object() else { return Some(type_leaf("clojure.lang.PersistentArrayMap", v)) };
            let mut errs = Map::new();
            for r in s.req {
                if !o.contains_key(*r) {
                    errs.insert(r.to_string(), json!("missing-required-key"));
                }
            }
            for (k, x) in o {
                match s.parts.iter().flat_map(|p| p.iter()).find(|(n, _)| n == k) {
                    None => {
                        errs.insert(k.clone(), json!("disallowed-key"));
                    }
                    Some((_, ft)) => {
                        if let Some(e) = check(x, *ft) {
                            errs.insert(k.clone(), e);
                        }
                    }
                }
            }
            (!errs.is_empty()).then_some(Value::Object(errs))
        }
    }
}

fn type_leaf(class: &str, v: &Value) -> Value {
    json!(format!("(not (instance? {class} {}))", show(v)))
}

fn enum_leaf(vals: &[&str], v: &Value) -> Value {
    let set: Vec<String> = vals.iter().map(|s| format!("{s:?}")).collect();
    json!(format!("(not (#{{{}}} {}))", set.join(" "), show(v)))
}

/// Parses an ISO-8601 date-time as the stand-in accepts it: RFC 3339 with a zone (`Z` or
/// `±hh:mm`). Zone-less times are rejected: they are how the old script shipped local time
/// labelled as UTC.
pub fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&chrono::Utc))
}

/// trapline's own, stricter rule for what it sends: `YYYY-MM-DDTHH:MM:SS.sssZ`.
pub fn is_strict_utc_millis(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b[23] == b'Z'
        && b[19] == b'.'
        && b[10] == b'T'
        && [4, 7].iter().all(|&i| b[i] == b'-')
        && [13, 16].iter().all(|&i| b[i] == b':')
        && b.iter().enumerate().all(|(i, c)| [4, 7, 10, 13, 16, 19, 23].contains(&i) || c.is_ascii_digit())
        && parse_time(s).is_some()
}

/// Every CTIM field that holds a time (shared by the sandbox's checks and the bundle's).
pub const TIME_KEYS: &[&str] = &[
    "start_time",
    "end_time",
    "timestamp",
    "opened",
    "discovered",
    "reported",
    "remediated",
    "closed",
    "rejected",
    "contained",
    "created",
    "modified",
];

/// Spec layer for one entity (which has passed the schema layer): the first violation, in
/// clojure.spec's explain style, or `None`.
pub fn spec_error(entity: &Value) -> Option<String> {
    let mut path = Vec::new();
    walk_spec(entity, &mut path)
}

fn walk_spec(v: &Value, path: &mut Vec<String>) -> Option<String> {
    let at = |path: &Vec<String>| format!("[:{}]", path.join(" :"));
    match v {
        Value::Object(o) => {
            if let (Some(s), Some(e)) = (
                o.get("start_time").and_then(Value::as_str).and_then(parse_time),
                o.get("end_time").and_then(Value::as_str).and_then(parse_time),
            ) && s > e
            {
                return Some(format!(
                    "{} - failed: (<= start_time end_time) in: {} spec: ObservedTime\n",
                    show(v),
                    at(path)
                ));
            }
            for (k, x) in o {
                path.push(k.clone());
                let e = leaf_spec(k, x, path).or_else(|| walk_spec(x, path));
                path.pop();
                if e.is_some() {
                    return e;
                }
            }
            None
        }
        Value::Array(a) => {
            for x in a {
                if let Some(e) = walk_spec(x, path) {
                    return Some(e);
                }
            }
            None
        }
        _ => None,
    }
}

/// A value as shown in messages: JSON, cut to 200 characters (values can be huge and are
/// attacker-controlled).
fn show(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

fn leaf_spec(key: &str, full: &Value, path: &[String]) -> Option<String> {
    let at = format!("[:{}]", path.join(" :"));
    let v = full;
    let shown = show(full);
    let fail = |what: &str| Some(format!("{shown} - failed: {what} in: {at} at: {at}\n"));
    let len_max = |max: usize, v: &Value| -> Option<String> {
        let too_long = |s: &Value| s.as_str().is_some_and(|s| s.chars().count() > max);
        let bad = match v {
            Value::Array(a) => a.iter().any(too_long),
            s => too_long(s),
        };
        if bad { fail(&format!("(<= (count %) {max})")) } else { None }
    };
    // Keys inside `meta`, `relation_info`, `scores` are data, not CTIM fields.
    let parent = path.len().checked_sub(2).map(|i| path[i].as_str());
    if matches!(parent, Some("relation_info" | "context")) {
        return None;
    }
    if parent == Some("meta") {
        return (!(v.is_string() || v.is_number() || v.is_boolean()))
            .then(|| format!("{shown} - failed: scalar? in: {at}\n"));
    }
    if parent == Some("scores") {
        return v.as_f64().is_some_and(|n| n < 0.0).then(|| format!("{shown} - failed: valid-score? in: {at}\n"));
    }
    match key {
        "title" | "language" | "assignees" | "tactics" | "techniques" | "reason" => len_max(1024, v),
        "short_description" | "source" if v.is_string() => len_max(2048, v),
        "detection_sources" | "source_name" => len_max(2048, v),
        "description" => len_max(5000, v),
        "source_uri" | "url" | "reason_uri" | "origin_uri" => {
            let s = v.as_str().unwrap_or("");
            if s.is_empty() || s.chars().count() > 2048 || !is_uri(s) { fail("uri?") } else { None }
        }
        "source_ref" | "target_ref" => {
            let s = v.as_str().unwrap_or("");
            if s.len() <= 2048 && (s.starts_with("transient:") || is_long_id(s)) { None } else { fail("reference?") }
        }
        "revision" | "count" => {
            v.as_i64().is_some_and(|n| n < 0).then(|| format!("{shown} - failed: pos-int? in: {at}\n"))
        }
        k if TIME_KEYS.contains(&k) => {
            let t = v.as_str().and_then(parse_time)?;
            let lo = chrono::DateTime::parse_from_rfc3339("1970-01-01T00:00:00Z").ok()?;
            let hi = chrono::DateTime::parse_from_rfc3339("2525-01-01T00:01:00Z").ok()?;
            if t < lo || t > hi {
                Some(format!(
                    "#inst {shown} - failed: (inst-in-range? #inst \"1970-01-01T00:00:00.000-00:00\" #inst \"2525-01-01T00:01:00.000-00:00\" %) in: {at} at: {at}\n"
                ))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// What `java.net.URI/create` accepts, approximately: no spaces or control characters, no
/// unbalanced brackets, and a scheme when the string has a colon before any slash.
fn is_uri(s: &str) -> bool {
    if s.chars().any(|c| c.is_whitespace() || c.is_control() || "<>\"{}|\\^`".contains(c)) {
        return false;
    }
    if let Some(i) = s.find(':') {
        let scheme = &s[..i];
        if !scheme.contains('/') {
            return scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        }
    }
    true
}

/// CTIM's long-id regex (`domain/id.cljc` `long-id-re`).
pub fn is_long_id(s: &str) -> bool {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(
            r"^(https?)://([-\da-zA-Z][-\da-zA-Z.]*)(:(\d+))?((/[-\w.]+)*)/ctia/([a-z][-a-z]+)/(([a-z][-a-z]+)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$",
        )
        .expect("valid regex")
    })
    .is_match(s)
}

/// TLP layer: `None` when `tlp` (default `green` when absent) is at least `min`.
pub fn tlp_error(entity: &Value, min: &str) -> Option<String> {
    let order = ["white", "green", "amber", "red"];
    let rank = |t: &str| order.iter().position(|o| *o == t);
    let tlp = entity.get("tlp").and_then(Value::as_str).unwrap_or("green");
    let min_rank = rank(min).unwrap_or(1);
    if rank(tlp).is_some_and(|r| r >= min_rank) {
        return None;
    }
    let allowed: Vec<&str> = order[min_rank..].to_vec();
    Some(format!("Invalid document TLP {tlp}, allowed TLPs are: {}", allowed.join(",")))
}

/// Realize layer for judgements: `disposition` and `disposition_name` must agree.
pub fn disposition_error(entity: &Value) -> Option<String> {
    let (Some(n), Some(name)) =
        (entity.get("disposition").and_then(Value::as_i64), entity.get("disposition_name").and_then(Value::as_str))
    else {
        return None;
    };
    let expected = DISPOSITION_NAME.get((n - 1).max(0) as usize).copied();
    (expected != Some(name)).then(|| "Mismatched disposition and dispositon_name for judgement".to_string())
}

/// Number of entities in a bundle (all arrays of entities).
pub fn entity_count(bundle: &Value) -> usize {
    ENTITY_ARRAYS
        .iter()
        .map(|(a, _)| *a)
        .chain(OTHER_ARRAYS.iter().copied())
        .filter_map(|a| bundle.get(a).and_then(Value::as_array))
        .map(Vec::len)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc_example() -> Value {
        json!({
          "type": "bundle", "source": "trapline",
          "incidents": [{
            "id": "transient:trapline-incident-1", "external_ids": ["trapline-incident-1"], "type": "incident",
            "source": "trapline", "title": "SQL injection against honeypot web-01", "description": "## Summary\n...",
            "short_description": "SQLi from 203.0.113.7", "status": "New", "confidence": "High", "severity": "High",
            "tlp": "amber", "categories": ["Unauthorized Access"], "discovery_method": "Log Review",
            "promotion_method": "Automated", "tactics": ["TA0001"], "techniques": ["T1190"],
            "incident_time": {"opened": "2025-01-02T03:04:05.000Z", "discovered": "2025-01-02T03:04:05.000Z"},
            "timestamp": "2025-01-02T03:04:05.000Z"}],
          "sightings": [{
            "id": "transient:trapline-sighting-1", "external_ids": ["trapline-sighting-1"], "type": "sighting",
            "source": "trapline", "title": "SQL injection attempt", "confidence": "High", "severity": "High",
            "count": 3, "internal": true, "sensor": "network.sensor",
            "observed_time": {"start_time": "2025-01-02T03:04:05.000Z", "end_time": "2025-01-02T03:05:00.000Z"},
            "observables": [{"type": "ip", "value": "203.0.113.7"}, {"type": "url", "value": "http://web-01/login.php?id=1'%20OR%201=1"}],
            "targets": [{"type": "endpoint.server", "observables": [{"type": "hostname", "value": "web-01"}],
                         "observed_time": {"start_time": "2025-01-02T03:04:05.000Z", "end_time": "2025-01-02T03:05:00.000Z"}, "os": "Linux"}],
            "relations": [{"origin": "trapline", "relation": "Connected_To", "source": {"type": "ip", "value": "203.0.113.7"},
                           "related": {"type": "ip", "value": "10.0.0.5"}}]}],
          "relationships": [{
            "id": "transient:trapline-relationship-1", "external_ids": ["trapline-relationship-1"], "type": "relationship",
            "source": "trapline", "relationship_type": "member-of", "source_ref": "transient:trapline-sighting-1",
            "target_ref": "transient:trapline-incident-1"}]
        })
    }

    #[test]
    fn documented_example_passes_every_layer() {
        let b = doc_example();
        assert_eq!(schema_errors(&b), None);
        for (a, _) in ENTITY_ARRAYS {
            for e in b.get(*a).and_then(Value::as_array).into_iter().flatten() {
                assert_eq!(spec_error(e), None, "{e}");
                assert_eq!(tlp_error(e, "green"), None);
            }
        }
        assert_eq!(entity_count(&b), 3);
    }

    #[test]
    fn schema_layer_mirrors_the_body() {
        let mut b = doc_example();
        b["incidents"][0].as_object_mut().unwrap().remove("status");
        b["incidents"][0]["bogus"] = json!(1);
        b["sightings"][0]["confidence"] = json!("Bogus");
        b["sightings"][0]["count"] = json!("3");
        let e = schema_errors(&b).unwrap();
        assert_eq!(e["incidents"][0]["status"], "missing-required-key");
        assert_eq!(e["incidents"][0]["bogus"], "disallowed-key");
        assert!(e["sightings"][0]["confidence"].as_str().unwrap().starts_with("(not (#{"));
        assert!(e["sightings"][0]["count"].as_str().unwrap().contains("instance?"));
        assert!(e.get("relationships").is_none());
        let mut nosrc = doc_example();
        nosrc.as_object_mut().unwrap().remove("source");
        assert_eq!(schema_errors(&nosrc).unwrap()["source"], "missing-required-key");
        let mut localtime = doc_example();
        localtime["incidents"][0]["timestamp"] = json!("2025-01-02 03:04:05");
        assert!(schema_errors(&localtime).is_some());
    }

    #[test]
    fn spec_layer_catches_what_the_schema_cannot() {
        let base = doc_example()["sightings"][0].clone();
        let mut s = base.clone();
        s["observed_time"]["end_time"] = json!("2025-01-01T00:00:00.000Z");
        assert!(spec_error(&s).unwrap().contains("start_time"));
        let mut s = base.clone();
        s["title"] = json!("x".repeat(1025));
        assert!(spec_error(&s).is_some());
        let mut s = base.clone();
        s["observed_time"]["end_time"] = json!("4242-07-11T00:40:48.212Z");
        assert!(spec_error(&s).unwrap().contains("inst-in-range?"));
        let mut s = base.clone();
        s["count"] = json!(-1);
        assert!(spec_error(&s).is_some());
        let mut r = doc_example()["relationships"][0].clone();
        r["target_ref"] = json!("incident-9c1e0000-0000-4000-8000-000000000000");
        assert!(spec_error(&r).is_some(), "short ids are rejected");
        r["target_ref"] = json!(
            "https://private.intel.amp.cisco.com:443/ctia/incident/incident-9c1e0000-0000-4000-8000-000000000000"
        );
        assert_eq!(spec_error(&r), None);
        let mut i = doc_example()["incidents"][0].clone();
        i["scores"] = json!({"asset": -1});
        assert!(spec_error(&i).is_some());
        i["scores"] = json!({"asset": 3});
        i["source_uri"] = json!("not a uri");
        assert!(spec_error(&i).is_some());
        i["tlp"] = json!("white");
        assert!(tlp_error(&i, "green").unwrap().contains("allowed TLPs are: green,amber,red"));
    }

    #[test]
    fn strict_time_format() {
        assert!(is_strict_utc_millis("2025-01-02T03:04:05.000Z"));
        assert!(!is_strict_utc_millis("2025-01-02T03:04:05Z"));
        assert!(!is_strict_utc_millis("2025-01-02T03:04:05.000+01:00"));
        assert!(!is_strict_utc_millis("2025-13-02T03:04:05.000Z"));
    }

    #[test]
    fn judgement_disposition_must_agree() {
        let j = json!({"observable": {"type": "ip", "value": "1.2.3.4"}, "source": "t", "priority": 90,
                       "confidence": "High", "severity": "High", "disposition": 2, "disposition_name": "Malicious"});
        assert_eq!(entity_schema_errors("judgement", &j), None);
        assert_eq!(disposition_error(&j), None);
        let mut bad = j.clone();
        bad["disposition"] = json!(3);
        assert!(disposition_error(&bad).is_some());
    }

    #[test]
    fn incident_patch_keeps_only_what_the_aggregate_derives() {
        let mut i = doc_example()["incidents"][0].clone();
        i["meta"] = json!({"detections": 3});
        let p = incident_patch(&i);
        // Sorted here: serde_json keeps insertion order when a dependency (yara-x) turns on
        // its preserve_order feature, and the order of a JSON object means nothing.
        let mut keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "categories",
                "description",
                "meta",
                "severity",
                "short_description",
                "tactics",
                "techniques",
                "timestamp",
                "title"
            ]
        );
        for owned in ["status", "confidence", "tlp", "incident_time", "id", "external_ids", "type", "source"] {
            assert!(p.get(owned).is_none(), "{owned} is not patched");
        }
        assert_eq!(patch_schema_errors(&p), None);
        assert_eq!(spec_error(&p), None);
    }

    #[test]
    fn patch_schema_is_new_incident_with_every_key_optional() {
        assert_eq!(patch_schema_errors(&json!({})), None, "nothing is required");
        assert_eq!(patch_schema_errors(&json!({"status": "Open", "assignees": ["a"]})), None);
        let e = patch_schema_errors(&json!({"bogus": 1, "severity": "Severe", "scores": {"asset": "x"}})).unwrap();
        assert_eq!(e["bogus"], "disallowed-key");
        assert!(e["severity"].as_str().unwrap().contains("Severe"));
        assert!(e["scores"]["asset"].as_str().unwrap().contains("instance?"));
        assert!(patch_schema_errors(&json!({"type": "sighting"})).is_some());
        assert!(patch_schema_errors(&json!([1])).is_some());
    }

    #[test]
    fn merge_patch_merges_maps_and_replaces_the_rest() {
        let stored = json!({"id": "http://x/ctia/incident/incident-1", "title": "a", "tactics": ["TA0001", "TA0006"],
                            "meta": {"detections": 1, "kept": true}, "incident_time": {"opened": "t0", "closed": "t1"}});
        let patch = json!({"id": "other", "schema_version": "9", "title": "b", "tactics": ["TA0043"],
                           "meta": {"detections": 4}, "incident_time": {"opened": "t2"}});
        let m = merge_patch(&stored, &patch);
        assert_eq!(
            m,
            json!({"id": "http://x/ctia/incident/incident-1", "title": "b", "tactics": ["TA0043"],
                   "meta": {"detections": 4, "kept": true}, "incident_time": {"opened": "t2", "closed": "t1"}})
        );
    }
}
