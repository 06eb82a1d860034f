//! Configuration: one YAML file, every key overridable from the environment.
//!
//! Each section's type lives next to the code it configures (`journal`, `watch`,
//! `ship`, `datadog`); this module only assembles them, applies the environment and
//! checks the result. Precedence, lowest first: built-in defaults, the file, the
//! environment, command-line flags.
//!
//! Every key `a.b` can be set by `EVRELAY_A_B`; keys the Datadog Agent also has keep
//! its names (`DD_API_KEY`, `DD_SITE`, `DD_URL`, `DD_CLUSTER_NAME`).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::admin::AdminConfig;
use crate::datadog::{DatadogConfig, EventsConfig};
use crate::journal::JournalConfig;
use crate::leader::LeaderConfig;
use crate::ship::ShipConfig;
use crate::watch::WatchConfig;

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub datadog: DatadogConfig,
    pub events: EventsConfig,
    pub journal: JournalConfig,
    pub watch: WatchConfig,
    pub ship: ShipConfig,
    pub leader: LeaderConfig,
    pub admin: AdminConfig,
}

/// The type of a key's value, for reading it from an environment string.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    /// Comma-separated in the environment.
    List,
    /// JSON in the environment (a list of mappings).
    Json,
}

/// Every key that the environment can set: path, type, and the Datadog Agent's
/// variable where it has one (`EVRELAY_<PATH>` always works too).
const KEYS: &[(&str, Kind, Option<&str>)] = &[
    ("datadog.api_key", Kind::Str, Some("DD_API_KEY")),
    ("datadog.site", Kind::Str, Some("DD_SITE")),
    ("datadog.url", Kind::Str, Some("DD_URL")),
    ("datadog.cluster_name", Kind::Str, Some("DD_CLUSTER_NAME")),
    ("datadog.hostname", Kind::Str, Some("DD_HOSTNAME")),
    ("datadog.output", Kind::Str, None),
    ("datadog.compression", Kind::Str, None),
    ("datadog.logs_url", Kind::Str, None),
    ("datadog.service_check_interval_seconds", Kind::Int, None),
    ("events.mode", Kind::Str, None),
    ("events.bundle_unspecified_events", Kind::Bool, None),
    ("events.filtered_event_types", Kind::List, None),
    ("events.collected_event_types", Kind::Json, None),
    ("events.namespaces_include", Kind::List, None),
    ("events.namespaces_exclude", Kind::List, None),
    ("journal.data_dir", Kind::Str, Some("EVRELAY_DATA_DIR")),
    ("journal.cache_capacity_bytes", Kind::Int, None),
    ("journal.max_bytes", Kind::Int, None),
    ("journal.seen_ttl_seconds", Kind::Int, None),
    ("journal.retention_seconds", Kind::Int, None),
    ("watch.timeout_seconds", Kind::Int, None),
    ("watch.stall_timeout_seconds", Kind::Int, None),
    ("watch.list_page_size", Kind::Int, None),
    ("ship.max_events", Kind::Int, None),
    ("ship.max_bytes", Kind::Int, None),
    ("ship.flush_interval_ms", Kind::Int, None),
    ("ship.request_timeout_seconds", Kind::Int, None),
    ("ship.max_backoff_seconds", Kind::Int, None),
    ("ship.shutdown_grace_seconds", Kind::Int, None),
    ("leader.enabled", Kind::Bool, None),
    (
        "leader.namespace",
        Kind::Str,
        Some("DD_KUBE_RESOURCES_NAMESPACE"),
    ),
    ("leader.identity", Kind::Str, None),
    ("leader.lease_name", Kind::Str, None),
    (
        "leader.lease_duration_seconds",
        Kind::Int,
        Some("DD_LEADER_LEASE_DURATION"),
    ),
    ("leader.configmap", Kind::Str, None),
    ("leader.mirror_interval_seconds", Kind::Int, None),
    ("leader.resume_from_configmap", Kind::Str, None),
    ("admin.listen_address", Kind::Str, None),
];

/// One thing wrong with the configuration: where, what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (fix: {})", self.key, self.message, self.fix)
    }
}

/// Everything wrong with a configuration, reported at once.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn one(key: &str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![Problem {
                key: key.into(),
                message: message.into(),
                fix: fix.into(),
            }],
        }
    }
}

impl Config {
    /// Loads the file (if any), applies the environment, and checks the result.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut tree = match file {
            Some(path) => read_file(path)?,
            None => Value::Object(Default::default()),
        };
        if tree.is_null() {
            tree = Value::Object(Default::default());
        }
        apply_env(&mut tree, &env)?;
        let unknown = unknown_keys(&tree);
        if !unknown.is_empty() {
            return Err(ConfigError { problems: unknown });
        }
        let config: Config = serde_json::from_value(tree).map_err(|e| {
            ConfigError::one(
                "(file)",
                e.to_string(),
                "see the configuration reference, docs/configuration.md",
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but cannot work, all at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        problems.extend(self.datadog.problems());
        problems.extend(self.events.problems());
        problems.extend(self.watch.problems());
        problems.extend(self.ship.problems());
        problems.extend(self.leader.problems());
        problems.extend(self.admin.problems());
        if self.journal.max_bytes < 64 * 1024 {
            problems.push(Problem {
                key: "journal.max_bytes".into(),
                message: format!("{} is below 64 KiB", self.journal.max_bytes),
                fix: "use at least 65536; size it for the longest intake outage to ride out (default 536870912)".into(),
            });
        }
        if self.journal.seen_ttl_seconds < 3600 {
            problems.push(Problem {
                key: "journal.seen_ttl_seconds".into(),
                message: format!(
                    "{} is shorter than the API server's default event TTL (1 h)",
                    self.journal.seen_ttl_seconds
                ),
                fix: "use more than the cluster's --event-ttl, e.g. 7200 (the default)".into(),
            });
        }
        if self.journal.cache_capacity_bytes < 1024 * 1024 {
            problems.push(Problem {
                key: "journal.cache_capacity_bytes".into(),
                message: format!("{} is below 1 MiB", self.journal.cache_capacity_bytes),
                fix: "use at least 1048576 (default 16777216)".into(),
            });
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Where the journal lives, overriding the configured place.
    pub fn with_data_dir(mut self, dir: Option<PathBuf>) -> Self {
        if let Some(dir) = dir {
            self.journal.data_dir = dir;
        }
        self
    }
}

fn read_file(path: &Path) -> Result<Value, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::one(
            "--config",
            format!("cannot read {}: {e}", path.display()),
            "pass the path of a readable YAML file",
        )
    })?;
    serde_saphyr::from_str::<Value>(&text).map_err(|e| {
        ConfigError::one(
            "--config",
            format!("{} is not valid YAML: {e}", path.display()),
            "correct the YAML syntax at the position given",
        )
    })
}

/// Keys in the file that evrelay does not know, each with the closest known key
/// when one is close enough to be a typo.
fn unknown_keys(tree: &Value) -> Vec<Problem> {
    let Some(root) = tree.as_object() else {
        return Vec::new(); // reported when the tree is read into `Config`
    };
    let known: Vec<&str> = KEYS.iter().map(|(path, _, _)| *path).collect();
    let sections: Vec<&str> = {
        let mut s: Vec<&str> = known
            .iter()
            .filter_map(|k| k.split_once('.'))
            .map(|(s, _)| s)
            .collect();
        s.dedup();
        s
    };
    let mut problems = Vec::new();
    for (section, body) in root {
        if !sections.contains(&section.as_str()) {
            problems.push(unknown(section, &sections));
            continue;
        }
        let Some(body) = body.as_object() else {
            continue;
        };
        for key in body.keys() {
            let path = format!("{section}.{key}");
            if !known.contains(&path.as_str()) {
                problems.push(unknown(&path, &known));
            }
        }
    }
    problems
}

fn unknown(path: &str, candidates: &[&str]) -> Problem {
    let closest = candidates
        .iter()
        .map(|c| (edit_distance(path, c), *c))
        .min()
        .filter(|(d, c)| *d <= 2.max(c.len() / 4));
    Problem {
        key: path.into(),
        message: "is not a configuration key".into(),
        fix: match closest {
            Some((_, c)) => format!("did you mean `{c}`?"),
            None => "remove it; the keys are listed in docs/configuration.md".into(),
        },
    }
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The `EVRELAY_*` name of a key path.
pub fn env_name(path: &str) -> String {
    format!("EVRELAY_{}", path.replace('.', "_").to_uppercase())
}

fn apply_env(tree: &mut Value, env: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    let mut problems = Vec::new();
    for &(path, kind, alias) in KEYS {
        let own = env_name(path);
        let Some((var, raw)) = [Some(own.as_str()), alias]
            .into_iter()
            .flatten()
            .find_map(|v| env(v).map(|raw| (v, raw)))
        else {
            continue;
        };
        let value = match kind {
            Kind::Str => Value::String(raw),
            Kind::Int => match raw.trim().parse::<u64>() {
                Ok(n) => Value::from(n),
                Err(_) => {
                    problems.push(Problem {
                        key: path.into(),
                        message: format!("{var}={raw:?} is not a whole number"),
                        fix: format!("set {var} to a non-negative integer"),
                    });
                    continue;
                }
            },
            Kind::List => Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.to_owned()))
                    .collect(),
            ),
            Kind::Json => match serde_json::from_str::<Value>(&raw) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(Problem {
                        key: path.into(),
                        message: format!("{var} is not JSON: {e}"),
                        fix: format!(
                            r#"set {var} to a JSON list such as [{{"kind":"Pod","reasons":["BackOff"]}}]"#
                        ),
                    });
                    continue;
                }
            },
            Kind::Bool => match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Value::Bool(true),
                "false" | "0" | "no" => Value::Bool(false),
                _ => {
                    problems.push(Problem {
                        key: path.into(),
                        message: format!("{var}={raw:?} is not true or false"),
                        fix: format!("set {var} to true or false"),
                    });
                    continue;
                }
            },
        };
        let (section, key) = path.split_once('.').expect("paths have a section");
        let Some(root) = tree.as_object_mut() else {
            problems.push(Problem {
                key: "(file)".into(),
                message: "the top level is not a mapping".into(),
                fix: "write the file as `section: {key: value}`".into(),
            });
            break;
        };
        let entry = root
            .entry(section)
            .or_insert_with(|| Value::Object(Default::default()));
        match entry.as_object_mut() {
            Some(map) => {
                map.insert(key.into(), value);
            }
            None => problems.push(Problem {
                key: section.into(),
                message: "is not a mapping".into(),
                fix: format!("write `{section}:` as a mapping of keys"),
            }),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError { problems })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn write(yaml: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), yaml).unwrap();
        f
    }

    #[test]
    fn defaults_need_only_an_api_key() {
        let c = Config::load(None, env(&[("DD_API_KEY", "k")])).unwrap();
        assert_eq!(c.datadog.site, "datadoghq.com");
        assert_eq!(c.journal.data_dir, PathBuf::from("/var/lib/evrelay"));
    }

    #[test]
    fn environment_overrides_file() {
        let f =
            write("datadog:\n  site: datadoghq.eu\n  api_key: fromfile\nship:\n  max_events: 10\n");
        let c = Config::load(
            Some(f.path()),
            env(&[
                ("DD_SITE", "us5.datadoghq.com"),
                ("EVRELAY_SHIP_MAX_EVENTS", "20"),
            ]),
        )
        .unwrap();
        assert_eq!(c.datadog.site, "us5.datadoghq.com");
        assert_eq!(c.ship.max_events, 20);
        assert_eq!(c.datadog.api_key.as_ref().unwrap().expose(), "fromfile");
    }

    #[test]
    fn evrelay_name_wins_over_agent_alias() {
        let c = Config::load(
            None,
            env(&[("DD_API_KEY", "a"), ("EVRELAY_DATADOG_API_KEY", "b")]),
        )
        .unwrap();
        assert_eq!(c.datadog.api_key.unwrap().expose(), "b");
    }

    #[test]
    fn unknown_keys_are_errors_with_a_suggestion() {
        let f = write(
            "datadog:\n  api_key: k\n  sitee: x\nleadr:\n  enabled: true\nship:\n  colour: red\n",
        );
        let err = Config::load(Some(f.path()), env(&[])).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(
                "datadog.sitee: is not a configuration key (fix: did you mean `datadog.site`?)"
            ),
            "{text}"
        );
        assert!(
            text.contains("leadr: is not a configuration key (fix: did you mean `leader`?)"),
            "{text}"
        );
        assert!(
            text.contains("ship.colour: is not a configuration key (fix: remove it"),
            "{text}"
        );
        assert_eq!(err.problems.len(), 3, "{text}");
    }

    #[test]
    fn the_reference_lists_every_key_and_only_keys() {
        let reference = include_str!("../docs/configuration.md");
        let documented: Vec<&str> = reference
            .lines()
            .filter_map(|l| l.strip_prefix("| `")?.split_once("` |"))
            .map(|(key, _)| key)
            .collect();
        for (path, _, _) in KEYS {
            assert!(
                documented.contains(path),
                "{path} is not documented in docs/configuration.md"
            );
        }
        for key in documented {
            assert!(
                KEYS.iter().any(|(path, _, _)| *path == key),
                "docs/configuration.md documents {key}, which is not a key"
            );
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = Config::load(
            None,
            env(&[
                ("DD_SITE", "datadoghq.con"),
                ("EVRELAY_SHIP_MAX_EVENTS", "0"),
            ]),
        )
        .unwrap_err();
        let keys: Vec<_> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"datadog.api_key"), "{keys:?}");
        assert!(keys.contains(&"datadog.site"), "{keys:?}");
        assert!(keys.contains(&"ship.max_events"), "{keys:?}");
    }

    #[test]
    fn bad_numbers_name_the_variable() {
        let err = Config::load(None, env(&[("EVRELAY_SHIP_MAX_EVENTS", "lots")])).unwrap_err();
        assert!(err.to_string().contains("EVRELAY_SHIP_MAX_EVENTS"), "{err}");
    }

    #[test]
    fn agent_names_set_leadership() {
        let c = Config::load(
            None,
            env(&[
                ("DD_API_KEY", "k"),
                ("DD_LEADER_LEASE_DURATION", "60"),
                ("DD_KUBE_RESOURCES_NAMESPACE", "datadog"),
                ("EVRELAY_LEADER_ENABLED", "false"),
            ]),
        )
        .unwrap();
        assert_eq!(c.leader.lease_duration_seconds, 60);
        assert_eq!(c.leader.namespace.as_deref(), Some("datadog"));
        assert!(!c.leader.enabled);
        let err = Config::load(None, env(&[("EVRELAY_LEADER_ENABLED", "maybe")])).unwrap_err();
        assert!(err.to_string().contains("EVRELAY_LEADER_ENABLED"), "{err}");
    }

    #[test]
    fn the_api_key_never_prints() {
        let c = Config::load(None, env(&[("DD_API_KEY", "s3cr3t-key-value")])).unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
