//! Reading the golden corpus (`tests/golden/*.json`; the format is in
//! `tests/golden.rs`).

use std::path::Path;

use serde_json::{Map, Value};

use evrelay::config::EventsSection;

/// One case, expanded.
#[derive(Clone)]
pub struct Case {
    pub name: String,
    pub about: String,
    pub cluster_name: Option<String>,
    /// evrelay's own host (`config.hostname`, else [`HOSTNAME`]).
    pub hostname: String,
    /// `datadog.tags` (`config.tags`).
    pub tags: Vec<String>,
    pub events_config: EventsSection,
    pub events: Vec<Value>,
    pub expected: Vec<Value>,
    pub filtered: Vec<u64>,
}

/// evrelay's host in every case that sets none: the host of events that name no
/// node. The end-to-end runs set `DD_HOSTNAME` to it.
pub const HOSTNAME: &str = "evrelay-host";

/// Every case, by file name.
pub fn cases() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths.iter().map(|p| read(p)).collect()
}

fn read(path: &Path) -> Case {
    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(path).unwrap();
    let raw: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc = expand(&raw);
    let config = &doc["config"];
    let template = doc.get("template").cloned().unwrap_or(Value::Null);
    let events = doc["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: no events"))
        .iter()
        .map(|e| overlay(&template, e))
        .collect();
    Case {
        about: doc["about"].as_str().unwrap_or_default().to_owned(),
        cluster_name: config["cluster_name"].as_str().map(Into::into),
        hostname: config["hostname"].as_str().unwrap_or(HOSTNAME).to_owned(),
        tags: config["tags"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default(),
        events_config: match config.get("events") {
            Some(v) => serde_json::from_value(v.clone())
                .unwrap_or_else(|e| panic!("{name}: config.events: {e}")),
            None => EventsSection::default(),
        },
        events,
        expected: doc["expected"]
            .as_array()
            .map(|a| a.iter().map(sorted_tags).collect())
            .unwrap_or_default(),
        filtered: doc["filtered"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_u64().unwrap()).collect())
            .unwrap_or_default(),
        name,
    }
}

/// An expected Datadog event with its tags as the Agent's aggregator sends them:
/// sorted byte-wise, repeats removed. The corpus writes them in the order the
/// Cluster Agent's check makes them, which is easier to check by eye.
fn sorted_tags(event: &Value) -> Value {
    let mut event = event.clone();
    if let Some(tags) = event.get_mut("tags").and_then(Value::as_array_mut) {
        let mut strings: Vec<String> = tags
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect();
        strings.sort_unstable();
        strings.dedup();
        *tags = strings.into_iter().map(Value::String).collect();
    }
    event
}

/// `over` laid on `base`: mappings merged key by key, anything else replaced.
fn overlay(base: &Value, over: &Value) -> Value {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            let mut out = b.clone();
            for (k, v) in o {
                let merged = match b.get(k) {
                    Some(bv) => overlay(bv, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (_, over) => over.clone(),
    }
}

fn expand(v: &Value) -> Value {
    match v {
        Value::Object(m) if m.contains_key("$repeat") => {
            let unit = m["$repeat"].as_str().unwrap();
            Value::String(unit.repeat(m["times"].as_u64().unwrap() as usize))
        }
        Value::Object(m) if m.contains_key("$concat") => Value::String(
            m["$concat"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| expand(p).as_str().unwrap().to_owned())
                .collect(),
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), expand(v)))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                match item.get("$each") {
                    Some(range) => {
                        let from = range[0].as_u64().unwrap();
                        let to = range[1].as_u64().unwrap();
                        for i in from..=to {
                            out.push(expand(&substitute(&item["value"], i)));
                        }
                    }
                    None => out.push(expand(item)),
                }
            }
            Value::Array(out)
        }
        other => other.clone(),
    }
}

fn substitute(v: &Value, i: u64) -> Value {
    match v {
        Value::String(s) if s == "$i" => Value::from(i),
        Value::String(s) => Value::String(s.replace("{i}", &i.to_string())),
        Value::Array(a) => Value::Array(a.iter().map(|x| substitute(x, i)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), substitute(x, i)))
                .collect(),
        ),
        other => other.clone(),
    }
}
