//! Configuration: one YAML file, every key overridable from the environment, read
//! and checked once into the typed settings each module takes.
//!
//! - `sections.rs`: the file's sections as written, and their conversion into each
//!   module's settings (`watch::WatchSettings`, `ship::ShipSettings`, …): enums for
//!   choices, `Duration`s, filters parsed. Modules never see the file or a
//!   [`Problem`].
//! - `env.rs`: the environment overrides, their names derived from the sections'
//!   types.
//! - `problem.rs`: what is wrong, with the key and the fix; all at once.
//!
//! Precedence, lowest first: built-in defaults, the file, the environment,
//! command-line flags. Every key `a.b` can be set by `EVRELAY_A_B`; keys the Datadog
//! Agent also has keep its names (`DD_API_KEY`, `DD_SITE`, `DD_URL`, …).

pub mod env;
mod problem;
mod sections;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::admin::AdminSettings;
use crate::journal::JournalSettings;
use crate::leader::LeaderSettings;
use crate::ship::ShipSettings;
use crate::sinks::datadog::{DatadogSettings, EventsSettings, agent_global_tags};
use crate::watch::WatchSettings;
pub use problem::{ConfigError, Problem};
pub use sections::{
    AdminSection, DatadogSection, EventsSection, JournalSection, LeaderSection, ShipSection,
    WatchSection,
};

/// The file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct File {
    pub datadog: DatadogSection,
    pub events: EventsSection,
    pub journal: JournalSection,
    pub watch: WatchSection,
    pub ship: ShipSection,
    pub leader: LeaderSection,
    pub admin: AdminSection,
}

/// Every setting, checked and typed.
#[derive(Debug, Clone)]
pub struct Settings {
    pub datadog: DatadogSettings,
    pub events: EventsSettings,
    pub journal: JournalSettings,
    pub watch: WatchSettings,
    pub ship: ShipSettings,
    pub leader: LeaderSettings,
    pub admin: AdminSettings,
}

impl Settings {
    /// Loads the file (if any), applies the environment, and checks the result:
    /// every problem at once.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let mut tree = match file {
            Some(path) => read_file(path)?,
            None => Value::Object(Default::default()),
        };
        if tree.is_null() {
            tree = Value::Object(Default::default());
        }
        env::apply(&mut tree, &env)?;
        let unknown = unknown_keys(&tree);
        if !unknown.is_empty() {
            return Err(unknown.into());
        }
        let mut raw: File = serde_json::from_value(tree).map_err(|e| {
            Problem::new(
                "(file)",
                e.to_string(),
                "see the configuration reference, docs/configuration.md",
            )
        })?;
        // The Agent's global tags, after the configured ones.
        let (global, dropped) = agent_global_tags(&env);
        if let Some((var, tag)) = dropped.first() {
            return Err(Problem::new(
                *var,
                format!("{tag:?} has no value: the Cluster Agent drops such global tags"),
                "write it as key:value, or put it in datadog.tags, which keeps tags as written",
            )
            .into());
        }
        raw.datadog.tags.extend(global);
        // Defaults that depend on where evrelay runs: the node and the pod. The
        // host is the Cluster Agent's: `<node>-<cluster>`.
        let pod = env("POD_NAME").filter(|p| !p.is_empty());
        if raw.datadog.hostname.as_deref().is_none_or(str::is_empty) {
            let node = env("NODE_NAME").filter(|n| !n.is_empty());
            raw.datadog.hostname = match (node, raw.datadog.cluster_name.as_deref()) {
                (Some(node), Some(cluster)) if !cluster.is_empty() => {
                    Some(format!("{node}-{cluster}"))
                }
                (Some(node), _) => Some(node),
                (None, _) => pod.clone(),
            };
        }
        if raw.leader.identity.as_deref().is_none_or(str::is_empty) {
            raw.leader.identity = pod.or_else(machine_hostname);
        }
        raw.try_into().map_err(ConfigError::from)
    }

    /// Where the journal lives, overriding the configured place.
    pub fn with_data_dir(mut self, dir: Option<PathBuf>) -> Self {
        if let Some(dir) = dir {
            self.journal.data_dir = dir;
        }
        self
    }
}

impl TryFrom<File> for Settings {
    type Error = Vec<Problem>;

    /// Every section checked; the problems of all of them at once.
    fn try_from(f: File) -> Result<Self, Vec<Problem>> {
        fn take<T>(problems: &mut Vec<Problem>, r: Result<T, Vec<Problem>>) -> Option<T> {
            r.map_err(|p| problems.extend(p)).ok()
        }
        let mut problems = Vec::new();
        let p = &mut problems;
        let datadog = take(p, f.datadog.try_into());
        let events = take(p, f.events.try_into());
        let journal = take(p, f.journal.try_into());
        let watch = take(p, f.watch.try_into());
        let ship = take(p, f.ship.try_into());
        let leader = take(p, f.leader.try_into());
        let admin = take(p, f.admin.try_into());
        match (datadog, events, journal, watch, ship, leader, admin) {
            (
                Some(datadog),
                Some(events),
                Some(journal),
                Some(watch),
                Some(ship),
                Some(leader),
                Some(admin),
            ) if problems.is_empty() => Ok(Settings {
                datadog,
                events,
                journal,
                watch,
                ship,
                leader,
                admin,
            }),
            _ => Err(problems),
        }
    }
}

/// This machine's hostname, for a replica's identity outside a pod.
fn machine_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

fn read_file(path: &Path) -> Result<Value, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Problem::new(
            "--config",
            format!("cannot read {}: {e}", path.display()),
            "pass the path of a readable YAML file",
        )
    })?;
    serde_saphyr::from_str::<Value>(&text).map_err(|e| {
        Problem::new(
            "--config",
            format!("{} is not valid YAML: {e}", path.display()),
            "correct the YAML syntax at the position given",
        )
        .into()
    })
}

/// Keys in the file that evrelay does not know, each with the closest known key
/// when one is close enough to be a typo.
fn unknown_keys(tree: &Value) -> Vec<Problem> {
    let Some(root) = tree.as_object() else {
        return Vec::new(); // reported when the tree is read into `File`
    };
    let keys = env::keys();
    let known: Vec<&str> = keys.iter().map(|k| k.path.as_str()).collect();
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
    Problem::new(
        path,
        "is not a configuration key",
        match closest {
            Some((_, c)) => format!("did you mean `{c}`?"),
            None => "remove it; the keys are listed in docs/configuration.md".into(),
        },
    )
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
        let c = Settings::load(None, env(&[("DD_API_KEY", "k")])).unwrap();
        assert_eq!(c.datadog.site, "datadoghq.com");
        assert_eq!(c.journal.data_dir, PathBuf::from("/var/lib/evrelay"));
    }

    #[test]
    fn environment_overrides_file() {
        let f =
            write("datadog:\n  site: datadoghq.eu\n  api_key: fromfile\nship:\n  max_events: 10\n");
        let c = Settings::load(
            Some(f.path()),
            env(&[
                ("DD_SITE", "us5.datadoghq.com"),
                ("EVRELAY_SHIP_MAX_EVENTS", "20"),
            ]),
        )
        .unwrap();
        assert_eq!(c.datadog.site, "us5.datadoghq.com");
        assert_eq!(c.ship.max_events, 20);
        assert_eq!(c.datadog.api_key.expose(), "fromfile");
    }

    #[test]
    fn evrelay_name_wins_over_agent_alias() {
        let c = Settings::load(
            None,
            env(&[("DD_API_KEY", "a"), ("EVRELAY_DATADOG_API_KEY", "b")]),
        )
        .unwrap();
        assert_eq!(c.datadog.api_key.expose(), "b");
    }

    #[test]
    fn unknown_keys_are_errors_with_a_suggestion() {
        let f = write(
            "datadog:\n  api_key: k\n  sitee: x\nleadr:\n  enabled: true\nship:\n  colour: red\n",
        );
        let err = Settings::load(Some(f.path()), env(&[])).unwrap_err();
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
        let reference = include_str!("../../docs/configuration.md");
        let documented: Vec<&str> = reference
            .lines()
            .filter_map(|l| l.strip_prefix("| `")?.split_once("` |"))
            .map(|(key, _)| key)
            .collect();
        let keys = env::keys();
        for key in &keys {
            assert!(
                documented.contains(&key.path.as_str()),
                "{} is not documented in docs/configuration.md",
                key.path
            );
        }
        for key in documented {
            assert!(
                keys.iter().any(|k| k.path == key),
                "docs/configuration.md documents {key}, which is not a key"
            );
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = Settings::load(
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
        let err = Settings::load(None, env(&[("EVRELAY_SHIP_MAX_EVENTS", "lots")])).unwrap_err();
        assert!(err.to_string().contains("EVRELAY_SHIP_MAX_EVENTS"), "{err}");
    }

    #[test]
    fn agent_names_set_leadership() {
        let c = Settings::load(
            None,
            env(&[
                ("DD_API_KEY", "k"),
                ("DD_LEADER_LEASE_DURATION", "60"),
                ("DD_KUBE_RESOURCES_NAMESPACE", "datadog"),
                ("EVRELAY_LEADER_ENABLED", "false"),
            ]),
        )
        .unwrap();
        assert_eq!(c.leader.lease_duration, std::time::Duration::from_secs(60));
        assert_eq!(c.leader.namespace.as_deref(), Some("datadog"));
        assert!(!c.leader.enabled);
        let err = Settings::load(None, env(&[("EVRELAY_LEADER_ENABLED", "maybe")])).unwrap_err();
        assert!(err.to_string().contains("EVRELAY_LEADER_ENABLED"), "{err}");
    }

    #[test]
    fn a_key_from_a_file_loses_its_newline_and_a_key_no_header_can_carry_is_refused() {
        let c = Settings::load(None, env(&[("DD_API_KEY", "abc123\n")])).unwrap();
        assert_eq!(c.datadog.api_key.expose(), "abc123");
        let err = Settings::load(None, env(&[("DD_API_KEY", "abc 123")])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("datadog.api_key"), "{text}");
        assert!(
            !text.contains("abc 123"),
            "the key itself is never printed: {text}"
        );
    }

    #[test]
    fn an_http_intake_needs_an_explicit_yes() {
        let plain = [("DD_API_KEY", "k"), ("DD_URL", "http://intake.example")];
        let err = Settings::load(None, env(&plain)).unwrap_err();
        assert!(err.to_string().contains("allow_insecure_http"), "{err}");
        let allowed = [
            ("DD_API_KEY", "k"),
            ("DD_URL", "http://127.0.0.1:9"),
            ("EVRELAY_DATADOG_ALLOW_INSECURE_HTTP", "true"),
        ];
        assert!(Settings::load(None, env(&allowed)).is_ok());
    }

    #[test]
    fn the_api_key_never_prints() {
        let c = Settings::load(None, env(&[("DD_API_KEY", "s3cr3t-key-value")])).unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn leader_defaults_are_valid() {
        let section = LeaderSection::default();
        assert!(LeaderSettings::try_from(section).is_ok());
    }

    #[test]
    fn bad_names_and_ranges_are_reported() {
        let c = LeaderSection {
            lease_duration_seconds: 1,
            configmap: "Token_Map".into(),
            resume_from_configmap: Some("Token_Map".into()),
            ..Default::default()
        };
        let keys: Vec<_> = LeaderSettings::try_from(c)
            .unwrap_err()
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert!(keys.contains(&"leader.lease_duration_seconds".to_owned()));
        assert!(keys.contains(&"leader.configmap".to_owned()));
        assert!(keys.contains(&"leader.resume_from_configmap".to_owned()));
    }

    #[test]
    fn unusable_selectors_name_the_key_and_the_fields() {
        let err = Settings::load(
            None,
            env(&[
                ("DD_API_KEY", "k"),
                (
                    "EVRELAY_EVENTS_FILTERED_EVENT_TYPES",
                    "involvedObject.colour!=red",
                ),
            ]),
        )
        .unwrap_err();
        let p = &err.problems[0];
        assert_eq!(p.key, "events.filtered_event_types");
        assert!(p.message.contains("involvedObject.colour"), "{p}");
        assert!(p.fix.contains("involvedObject.kind"), "{p}");
    }

    #[test]
    fn the_pod_name_is_the_default_hostname_and_identity() {
        let c =
            Settings::load(None, env(&[("DD_API_KEY", "k"), ("POD_NAME", "evrelay-1")])).unwrap();
        assert_eq!(c.datadog.hostname, "evrelay-1");
        assert_eq!(c.leader.identity, "evrelay-1");
        let c = Settings::load(
            None,
            env(&[
                ("DD_API_KEY", "k"),
                ("POD_NAME", "evrelay-1"),
                ("DD_HOSTNAME", "h"),
            ]),
        )
        .unwrap();
        assert_eq!(c.datadog.hostname, "h");
    }

    /// The Cluster Agent's host is the node it runs on, suffixed with the cluster.
    #[test]
    fn on_a_node_the_default_hostname_is_the_cluster_agents() {
        let base = [
            ("DD_API_KEY", "k"),
            ("POD_NAME", "evrelay-1"),
            ("NODE_NAME", "node-a"),
        ];
        let c = Settings::load(None, env(&base)).unwrap();
        assert_eq!(c.datadog.hostname, "node-a");
        let with_cluster = [&base[..], &[("DD_CLUSTER_NAME", "prod")]].concat();
        let c = Settings::load(None, env(&with_cluster)).unwrap();
        assert_eq!(c.datadog.hostname, "node-a-prod");
        assert_eq!(c.leader.identity, "evrelay-1");
    }

    #[test]
    fn a_cluster_name_the_cluster_agent_would_ignore_is_refused_with_the_fix() {
        let err = Settings::load(
            None,
            env(&[("DD_API_KEY", "k"), ("DD_CLUSTER_NAME", "Prod_EU")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("datadog.cluster_name"), "{err}");
        assert!(err.contains("\"prod-eu\""), "{err}");
    }

    #[test]
    fn unbundled_mode_that_would_send_nothing_is_refused_with_the_choices() {
        let err = Settings::load(
            None,
            env(&[("DD_API_KEY", "k"), ("EVRELAY_EVENTS_MODE", "unbundled")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("events.collected_event_types")
                && err.contains("bundle_unspecified_events"),
            "{err}"
        );
        for enough in [
            (
                "EVRELAY_EVENTS_COLLECTED_EVENT_TYPES",
                r#"[{"kind":"Pod"}]"#,
            ),
            ("EVRELAY_EVENTS_BUNDLE_UNSPECIFIED_EVENTS", "true"),
            ("EVRELAY_EVENTS_FILTERING_ENABLED", "true"),
        ] {
            let vars = [
                ("DD_API_KEY", "k"),
                ("EVRELAY_EVENTS_MODE", "unbundled"),
                enough,
            ];
            assert!(Settings::load(None, env(&vars)).is_ok(), "{enough:?}");
        }
    }

    #[test]
    fn global_tags_come_after_the_configured_ones_and_need_a_value() {
        let c = Settings::load(
            None,
            env(&[
                ("DD_API_KEY", "k"),
                ("EVRELAY_DATADOG_TAGS", "team:a, plain"),
                ("DD_TAGS", "env:prod  region:eu"),
                ("DD_EXTRA_TAGS", "extra:1"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.datadog.tags,
            ["team:a", "plain", "env:prod", "region:eu", "extra:1"]
        );
        assert_eq!(
            c.datadog.check_tags(),
            ["team:a", "plain", "env:prod", "region:eu", "extra:1"]
        );
        let err = Settings::load(
            None,
            env(&[("DD_API_KEY", "k"), ("DD_TAGS", "env:prod prod")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("DD_TAGS") && err.contains("\"prod\""), "{err}");
    }
}
