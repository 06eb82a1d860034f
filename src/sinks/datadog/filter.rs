//! Which journaled events are forwarded: the filters Cluster Agent users already
//! write, plus namespace lists.
//!
//! Filters decide what is *sent*, never what is *kept*: every event is journaled
//! (and shown by `dump`) whatever the filters say, and a filtered event counts as
//! handled, so the cursor passes it. Changing a filter and replaying a window sends
//! what the new filter lets through.
//!
//! The Cluster Agent's options mean what they mean to it, mode by mode (its
//! `kubernetes_apiserver.go`, `bundled_events.go`, `unbundled_events.go`,
//! `events_common.go`):
//!
//! - `filtered_event_types` is its deny list, in its syntax: a bare word `X` means
//!   `reason!=X`; otherwise a field selector (`type==Normal`,
//!   `involvedObject.kind!=Node`, several joined by commas). An event passes only
//!   if it satisfies every selector, as the API server applies them. The Agent
//!   applies it only where it bundles: in bundled mode, and in unbundled mode with
//!   `bundle_unspecified_events`; plain unbundled mode ignores it.
//! - `collected_event_types` (`{kind, source, reasons}` entries) names events: kind
//!   and source (`source.component`) exactly when given, and one of the reasons when
//!   any are listed. Unbundled mode sends these one by one and leaves the rest out
//!   (or bundles them, with `bundle_unspecified_events`). Bundled mode ignores the
//!   list unless `filtering_enabled`.
//! - `filtering_enabled` adds the Agent's built-in list ([`DEFAULT_TYPES`]) and, in
//!   bundled mode, keeps only what it or `collected_event_types` names.
//! - The logs output (evrelay's own) sends each event that passes
//!   `filtered_event_types` and, when any is set, the lists.
//! - `namespaces_include` / `namespaces_exclude` (evrelay's own, every mode):
//!   names, or prefixes ending in `*`. The involved object's namespace decides,
//!   else the event's own. Exclusion wins.

use serde::Deserialize;

use crate::event::{KubeEvent, text};

/// The event fields a selector may name: the fields the API server itself accepts
/// in a field selector on core/v1 Events.
const FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "reason",
    "reportingComponent",
    "source",
    "type",
    "metadata.name",
    "metadata.namespace",
];

/// The Cluster Agent's built-in list for `filtering_enabled` (its
/// `integrationToCollectedEventTypes`, source detection off: the `kubernetes`
/// entries and the `default` one), as (kind, reasons); an empty kind is any kind.
pub const DEFAULT_TYPES: &[(&str, &[&str])] = &[
    (
        "Pod",
        &[
            "Failed",
            "BackOff",
            "Unhealthy",
            "FailedScheduling",
            "FailedMount",
            "FailedAttachVolume",
        ],
    ),
    (
        "Node",
        &[
            "TerminatingEvictedPod",
            "NodeNotReady",
            "Rebooted",
            "HostPortConflict",
        ],
    ),
    ("CronJob", &["SawCompletedJob"]),
    ("", &["BackOff"]),
];

/// How the events are grouped, which decides what the filters mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    Bundled,
    Unbundled {
        bundle_unspecified: bool,
    },
    /// `datadog.output: logs`: one log per event.
    Logs,
}

/// One `collected_event_types` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectedType {
    pub kind: String,
    pub source: String,
    pub reasons: Vec<String>,
}

/// One parsed term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selector {
    field: &'static str,
    value: String,
    equal: bool,
}

/// Why a selector of `filtered_event_types` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{term:?} {why}")]
pub struct BadSelector {
    pub term: String,
    pub why: String,
}

impl BadSelector {
    /// How to write a selector that works.
    pub fn fix() -> String {
        format!(
            "write a reason to leave out, or `field!=value` / `field==value` with a field among {}",
            FIELDS.join(", ")
        )
    }
}

impl Selector {
    fn parse(term: &str) -> Result<Selector, BadSelector> {
        let bad = |why: &str| BadSelector {
            term: term.to_owned(),
            why: why.to_owned(),
        };
        let term = term.trim();
        if term.is_empty() {
            return Err(bad("is empty"));
        }
        let (field, value, equal) = if let Some((f, v)) = term.split_once("!=") {
            (f, v, false)
        } else if let Some((f, v)) = term.split_once("==") {
            (f, v, true)
        } else if let Some((f, v)) = term.split_once('=') {
            (f, v, true)
        } else {
            // The Cluster Agent's shorthand: a bare reason to leave out.
            ("reason", term, false)
        };
        let field = FIELDS
            .iter()
            .find(|known| **known == field.trim())
            .ok_or_else(|| bad(&format!("names an unknown field {:?}", field.trim())))?;
        Ok(Selector {
            field,
            value: value.trim().to_owned(),
            equal,
        })
    }

    fn matches(&self, event: &KubeEvent<'_>) -> bool {
        (field(event, self.field) == self.value) == self.equal
    }
}

fn field<'e>(event: &'e KubeEvent<'_>, name: &str) -> &'e str {
    match name {
        "involvedObject.kind" => text(&event.involved_object.kind),
        "involvedObject.namespace" => text(&event.involved_object.namespace),
        "involvedObject.name" => text(&event.involved_object.name),
        "involvedObject.uid" => text(&event.involved_object.uid),
        "reason" => text(&event.reason),
        "reportingComponent" => text(&event.reporting_component),
        "source" => text(&event.source.component),
        "type" => text(&event.type_),
        "metadata.name" => text(&event.metadata.name),
        "metadata.namespace" => text(&event.metadata.namespace),
        _ => "",
    }
}

/// What a [`Filter`] decided about one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send it, as collected (unbundled mode sends these one by one).
    Collect,
    /// Send it, but it is not one of `collected_event_types`: in unbundled mode with
    /// `bundle_unspecified_events` it is bundled; otherwise it is left out.
    Unspecified,
    /// Leave it out: a deny selector or a namespace list says so.
    Drop,
}

/// The filters of one configuration, parsed once.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    deny: Vec<Selector>,
    collected: Vec<CollectedType>,
    filtering_enabled: bool,
    include: Vec<String>,
    exclude: Vec<String>,
}

impl Filter {
    /// Parses the lists: every unusable selector of `filtered_event_types` is
    /// reported, not only the first.
    pub fn parse(
        filtered_event_types: &[String],
        collected: &[CollectedType],
        filtering_enabled: bool,
        include: &[String],
        exclude: &[String],
    ) -> Result<Filter, Vec<BadSelector>> {
        let mut deny = Vec::new();
        let mut bad = Vec::new();
        for entry in filtered_event_types {
            for term in entry.split(',') {
                match Selector::parse(term) {
                    Ok(s) => deny.push(s),
                    Err(e) => bad.push(e),
                }
            }
        }
        if !bad.is_empty() {
            return Err(bad);
        }
        Ok(Filter {
            deny,
            collected: collected.to_vec(),
            filtering_enabled,
            include: include.to_vec(),
            exclude: exclude.to_vec(),
        })
    }

    /// Whether and how `event` is forwarded.
    /// What becomes of `event` when events are grouped as `grouping`:
    /// `Collect` (sent: bundled in bundled mode, alone otherwise), `Unspecified`
    /// (unbundled mode: bundled with `bundle_unspecified_events`), or `Drop`.
    pub fn decide(&self, event: &KubeEvent<'_>, grouping: Grouping) -> Decision {
        let namespace = match text(&event.involved_object.namespace) {
            "" => text(&event.metadata.namespace),
            ns => ns,
        };
        let listed = |patterns: &[String]| patterns.iter().any(|p| name_matches(p, namespace));
        if listed(&self.exclude) || (!self.include.is_empty() && !listed(&self.include)) {
            return Decision::Drop;
        }
        let passes_deny = || self.deny.iter().all(|s| s.matches(event));
        let named = || {
            self.collected.iter().any(|c| collects(c, event))
                || (self.filtering_enabled && by_default(event))
        };
        match grouping {
            Grouping::Bundled if !passes_deny() => Decision::Drop,
            Grouping::Bundled if self.filtering_enabled && !named() => Decision::Drop,
            Grouping::Bundled => Decision::Collect,
            Grouping::Unbundled { bundle_unspecified } => {
                if bundle_unspecified && !passes_deny() {
                    Decision::Drop
                } else if named() {
                    Decision::Collect
                } else if bundle_unspecified {
                    Decision::Unspecified
                } else {
                    Decision::Drop
                }
            }
            Grouping::Logs if !passes_deny() => Decision::Drop,
            Grouping::Logs => {
                let lists = !self.collected.is_empty() || self.filtering_enabled;
                if lists && !named() {
                    Decision::Drop
                } else {
                    Decision::Collect
                }
            }
        }
    }

    /// Whether unbundled mode would send nothing: no list names any event.
    pub fn names_nothing(&self) -> bool {
        self.collected.is_empty() && !self.filtering_enabled
    }
}

fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// The Cluster Agent's `shouldCollect` for one entry.
/// Whether the built-in list names `event`.
fn by_default(event: &KubeEvent<'_>) -> bool {
    let (kind, reason) = (text(&event.involved_object.kind), text(&event.reason));
    DEFAULT_TYPES
        .iter()
        .any(|(k, reasons)| (k.is_empty() || *k == kind) && reasons.contains(&reason))
}

fn collects(entry: &CollectedType, event: &KubeEvent<'_>) -> bool {
    (entry.kind.is_empty() || entry.kind == text(&event.involved_object.kind))
        && (entry.source.is_empty() || entry.source == text(&event.source.component))
        && (entry.reasons.is_empty() || entry.reasons.iter().any(|r| r == text(&event.reason)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUNDLED: Grouping = Grouping::Bundled;
    const UNBUNDLED: Grouping = Grouping::Unbundled {
        bundle_unspecified: false,
    };
    const HYBRID: Grouping = Grouping::Unbundled {
        bundle_unspecified: true,
    };

    fn event(raw: &str) -> KubeEvent<'_> {
        KubeEvent::parse(raw.as_bytes()).unwrap()
    }

    fn filter(deny: &[&str], collected: &[CollectedType], inc: &[&str], exc: &[&str]) -> Filter {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Filter::parse(&owned(deny), collected, false, &owned(inc), &owned(exc)).unwrap()
    }

    const BACKOFF: &str = r#"{"metadata":{"namespace":"shop"},"involvedObject":{"kind":"Pod","namespace":"shop"},
        "reason":"BackOff","type":"Warning","source":{"component":"kubelet"}}"#;
    const SCALED: &str = r#"{"metadata":{"namespace":"kube-system"},"involvedObject":{"kind":"Deployment","namespace":"kube-system"},
        "reason":"ScalingReplicaSet","type":"Normal","source":{"component":"deployment-controller"}}"#;
    const NODE: &str = r#"{"metadata":{"namespace":"default"},"involvedObject":{"kind":"Node"},
        "reason":"NodeNotReady","type":"Normal"}"#;

    #[test]
    fn deny_list_in_the_cluster_agents_syntax() {
        let f = filter(&["ScalingReplicaSet"], &[], &[], &[]);
        assert_eq!(f.decide(&event(SCALED), BUNDLED), Decision::Drop);
        assert_eq!(f.decide(&event(BACKOFF), BUNDLED), Decision::Collect);
        let f = filter(&["type!=Normal"], &[], &[], &[]);
        assert_eq!(f.decide(&event(SCALED), BUNDLED), Decision::Drop);
        assert_eq!(f.decide(&event(BACKOFF), BUNDLED), Decision::Collect);
        let f = filter(
            &["involvedObject.kind!=Node,reason!=BackOff"],
            &[],
            &[],
            &[],
        );
        assert_eq!(f.decide(&event(NODE), BUNDLED), Decision::Drop);
        assert_eq!(f.decide(&event(BACKOFF), BUNDLED), Decision::Drop);
        assert_eq!(f.decide(&event(SCALED), BUNDLED), Decision::Collect);
        let f = filter(&["type==Warning"], &[], &[], &[]);
        assert_eq!(f.decide(&event(BACKOFF), BUNDLED), Decision::Collect);
        assert_eq!(f.decide(&event(NODE), BUNDLED), Decision::Drop);
    }

    #[test]
    fn unknown_fields_are_configuration_errors() {
        let problems = Filter::parse(
            &["involvedObject.colour!=red".into(), "".into()],
            &[],
            false,
            &[],
            &[],
        )
        .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].to_string().contains("involvedObject.colour"));
        assert!(BadSelector::fix().contains("involvedObject.kind"));
    }

    #[test]
    fn collected_types_as_the_cluster_agent_matches_them() {
        let pods = CollectedType {
            kind: "Pod".into(),
            reasons: vec!["BackOff".into(), "Failed".into()],
            ..Default::default()
        };
        let deployments = CollectedType {
            source: "deployment-controller".into(),
            ..Default::default()
        };
        let f = filter(&[], &[pods], &[], &[]);
        assert_eq!(f.decide(&event(BACKOFF), UNBUNDLED), Decision::Collect);
        assert_eq!(f.decide(&event(SCALED), UNBUNDLED), Decision::Drop);
        assert_eq!(f.decide(&event(SCALED), HYBRID), Decision::Unspecified);
        let f = filter(&[], &[deployments], &[], &[]);
        assert_eq!(f.decide(&event(SCALED), UNBUNDLED), Decision::Collect);
        assert_eq!(f.decide(&event(NODE), HYBRID), Decision::Unspecified);
    }

    /// The same options, read mode by mode as the Cluster Agent reads them.
    #[test]
    fn each_mode_reads_the_options_as_the_cluster_agent_does() {
        let pods = CollectedType {
            kind: "Pod".into(),
            ..Default::default()
        };
        // Bundled: collected_event_types is ignored without filtering_enabled.
        let f = filter(&[], std::slice::from_ref(&pods), &[], &[]);
        assert_eq!(f.decide(&event(SCALED), BUNDLED), Decision::Collect);
        // Plain unbundled: the deny list is not applied, only the named events go.
        let f = filter(&["BackOff"], std::slice::from_ref(&pods), &[], &[]);
        assert_eq!(f.decide(&event(BACKOFF), UNBUNDLED), Decision::Collect);
        assert_eq!(f.decide(&event(BACKOFF), HYBRID), Decision::Drop);
        assert_eq!(f.decide(&event(BACKOFF), BUNDLED), Decision::Drop);
        // Nothing named: plain unbundled sends nothing.
        let f = filter(&[], &[], &[], &[]);
        assert!(f.names_nothing());
        assert_eq!(f.decide(&event(BACKOFF), UNBUNDLED), Decision::Drop);
        assert_eq!(f.decide(&event(BACKOFF), Grouping::Logs), Decision::Collect);
        // filtering_enabled: the built-in list, in bundled mode too.
        let f = Filter::parse(&[], &[], true, &[], &[]).unwrap();
        assert!(!f.names_nothing());
        assert_eq!(f.decide(&event(BACKOFF), BUNDLED), Decision::Collect);
        assert_eq!(f.decide(&event(NODE), BUNDLED), Decision::Collect);
        assert_eq!(f.decide(&event(SCALED), BUNDLED), Decision::Drop);
        assert_eq!(f.decide(&event(SCALED), UNBUNDLED), Decision::Drop);
        assert_eq!(f.decide(&event(SCALED), Grouping::Logs), Decision::Drop);
    }

    #[test]
    fn namespace_lists() {
        let f = filter(&[], &[], &[], &["kube-*"]);
        assert_eq!(f.decide(&event(SCALED), BUNDLED), Decision::Drop);
        assert_eq!(f.decide(&event(BACKOFF), BUNDLED), Decision::Collect);
        let f = filter(&[], &[], &["shop", "default"], &[]);
        assert_eq!(f.decide(&event(BACKOFF), BUNDLED), Decision::Collect);
        assert_eq!(
            f.decide(&event(NODE), BUNDLED),
            Decision::Collect,
            "cluster-scoped: the event's own namespace"
        );
        assert_eq!(f.decide(&event(SCALED), BUNDLED), Decision::Drop);
        let f = filter(&[], &[], &["shop"], &["shop"]);
        assert_eq!(
            f.decide(&event(BACKOFF), BUNDLED),
            Decision::Drop,
            "exclusion wins"
        );
    }
}
