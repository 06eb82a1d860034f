//! Which journaled events are forwarded: the filters Cluster Agent users already
//! write, plus namespace lists.
//!
//! Filters decide what is *sent*, never what is *kept*: every event is journaled
//! (and shown by `dump`) whatever the filters say, and a filtered event counts as
//! handled, so the cursor passes it. Changing a filter and replaying a window sends
//! what the new filter lets through.
//!
//! - `filtered_event_types` is the Cluster Agent's deny list, in its syntax: a bare
//!   word `X` means `reason!=X`; otherwise a field selector (`type==Normal`,
//!   `involvedObject.kind!=Node`, several joined by commas). An event is forwarded
//!   only if it satisfies every selector, as the API server would apply them.
//! - `collected_event_types` (`{kind, source, reasons}` entries) keeps only the
//!   events an entry matches: kind and source (the reporting component) when given,
//!   and one of the reasons when any are listed. Empty: every event.
//! - `namespaces_include` / `namespaces_exclude`: names, or prefixes ending in `*`.
//!   The involved object's namespace decides, else the event's own. Exclusion wins.

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
    include: Vec<String>,
    exclude: Vec<String>,
}

impl Filter {
    /// Parses the lists: every unusable selector of `filtered_event_types` is
    /// reported, not only the first.
    pub fn parse(
        filtered_event_types: &[String],
        collected: &[CollectedType],
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
            include: include.to_vec(),
            exclude: exclude.to_vec(),
        })
    }

    /// Whether and how `event` is forwarded.
    pub fn decide(&self, event: &KubeEvent<'_>) -> Decision {
        let namespace = match text(&event.involved_object.namespace) {
            "" => text(&event.metadata.namespace),
            ns => ns,
        };
        let listed = |patterns: &[String]| patterns.iter().any(|p| name_matches(p, namespace));
        if listed(&self.exclude)
            || (!self.include.is_empty() && !listed(&self.include))
            || !self.deny.iter().all(|s| s.matches(event))
        {
            return Decision::Drop;
        }
        if self.collected.is_empty() || self.collected.iter().any(|c| collects(c, event)) {
            Decision::Collect
        } else {
            Decision::Unspecified
        }
    }
}

fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// The Cluster Agent's `shouldCollect` for one entry.
fn collects(entry: &CollectedType, event: &KubeEvent<'_>) -> bool {
    (entry.kind.is_empty() || entry.kind == text(&event.involved_object.kind))
        && (entry.source.is_empty() || entry.source == text(&event.source.component))
        && (entry.reasons.is_empty() || entry.reasons.iter().any(|r| r == text(&event.reason)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(raw: &str) -> KubeEvent<'_> {
        KubeEvent::parse(raw.as_bytes()).unwrap()
    }

    fn filter(deny: &[&str], collected: &[CollectedType], inc: &[&str], exc: &[&str]) -> Filter {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Filter::parse(&owned(deny), collected, &owned(inc), &owned(exc)).unwrap()
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
        assert_eq!(f.decide(&event(SCALED)), Decision::Drop);
        assert_eq!(f.decide(&event(BACKOFF)), Decision::Collect);
        let f = filter(&["type!=Normal"], &[], &[], &[]);
        assert_eq!(f.decide(&event(SCALED)), Decision::Drop);
        assert_eq!(f.decide(&event(BACKOFF)), Decision::Collect);
        let f = filter(
            &["involvedObject.kind!=Node,reason!=BackOff"],
            &[],
            &[],
            &[],
        );
        assert_eq!(f.decide(&event(NODE)), Decision::Drop);
        assert_eq!(f.decide(&event(BACKOFF)), Decision::Drop);
        assert_eq!(f.decide(&event(SCALED)), Decision::Collect);
        let f = filter(&["type==Warning"], &[], &[], &[]);
        assert_eq!(f.decide(&event(BACKOFF)), Decision::Collect);
        assert_eq!(f.decide(&event(NODE)), Decision::Drop);
    }

    #[test]
    fn unknown_fields_are_configuration_errors() {
        let problems = Filter::parse(
            &["involvedObject.colour!=red".into(), "".into()],
            &[],
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
        assert_eq!(f.decide(&event(BACKOFF)), Decision::Collect);
        assert_eq!(f.decide(&event(SCALED)), Decision::Unspecified);
        let f = filter(&[], &[deployments], &[], &[]);
        assert_eq!(f.decide(&event(SCALED)), Decision::Collect);
        assert_eq!(f.decide(&event(NODE)), Decision::Unspecified);
    }

    #[test]
    fn namespace_lists() {
        let f = filter(&[], &[], &[], &["kube-*"]);
        assert_eq!(f.decide(&event(SCALED)), Decision::Drop);
        assert_eq!(f.decide(&event(BACKOFF)), Decision::Collect);
        let f = filter(&[], &[], &["shop", "default"], &[]);
        assert_eq!(f.decide(&event(BACKOFF)), Decision::Collect);
        assert_eq!(
            f.decide(&event(NODE)),
            Decision::Collect,
            "cluster-scoped: the event's own namespace"
        );
        assert_eq!(f.decide(&event(SCALED)), Decision::Drop);
        let f = filter(&[], &[], &["shop"], &["shop"]);
        assert_eq!(f.decide(&event(BACKOFF)), Decision::Drop, "exclusion wins");
    }
}
