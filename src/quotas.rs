//! OpenShift cluster quotas, as the Cluster Agent's `kubernetes_apiserver` check
//! reports them (its `kubernetes_openshift.go`): on the leader, every
//! `datadog.openshift_quota_interval_seconds` (15 s, the check's interval), one
//! gauge per resource of every ClusterResourceQuota, sent to `/api/v2/series`.
//!
//! | gauge | value | tags |
//! |---|---|---|
//! | `openshift.clusterquota.<resource>.limit` | `status.total.hard` | `clusterquota:<name>` |
//! | `openshift.clusterquota.<resource>.used` | `status.total.used` | as above |
//! | `openshift.clusterquota.<resource>.remaining` | hard − used, for each resource with both | as above |
//! | `openshift.appliedclusterquota.<resource>.limit` | `status.namespaces[].status.hard` | and `kube_namespace:<namespace>` |
//! | `openshift.appliedclusterquota.<resource>.used` | `status.namespaces[].status.used` | as above |
//! | `openshift.appliedclusterquota.<resource>.remaining` | the *cluster-wide* remaining (the Agent's rule: a namespace may use what the others leave) | as above |
//!
//! - `<resource>` is the key as written (`cpu`, `requests.memory`,
//!   `services.nodeports`): every key the quota has, not a fixed list.
//! - A quantity counts as the Agent counts it: its value in thousandths, rounded
//!   up, over 1000 (`500m` → 0.5, `1Gi` → 1073741824, `2k` → 2000).
//! - Host: evrelay's own, as the Agent's sender fills an empty host. Tags: the
//!   quota's, then the service check's (`kube_cluster_name`, `datadog.tags`, the
//!   global tags), sorted.
//! - OpenShift is detected as the Agent detects it: `/apis/quota.openshift.io`,
//!   else the legacy `/oapi`, else none. A cluster without either gets no quota
//!   request at all, and is asked again only after [`REDETECT`].
//! - Gauges are not journaled: a sample that cannot be delivered is replaced by the
//!   next one, as the service check is.

use std::convert::Infallible;
use std::time::Duration;

use serde_json::Value;

use crate::apiserver::get;
use crate::sinks::datadog::{Gauge, Intake, encode_series};

/// How long a cluster found not to be OpenShift is left alone before asking again.
pub const REDETECT: Duration = Duration::from_secs(3600);

/// How long one request to the API server may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the cluster's quotas are listed, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiLevel {
    /// `quota.openshift.io/v1` (OpenShift 3.7 and later).
    Group,
    /// The legacy `/oapi/v1`.
    Legacy,
    NotOpenShift,
}

impl ApiLevel {
    fn list_path(self) -> Option<&'static str> {
        match self {
            ApiLevel::Group => Some("/apis/quota.openshift.io/v1/clusterresourcequotas/"),
            ApiLevel::Legacy => Some("/oapi/v1/clusterresourcequotas/"),
            ApiLevel::NotOpenShift => None,
        }
    }
}

/// Asks the API server which quota API it serves.
pub async fn detect(client: &kube::Client) -> ApiLevel {
    for (path, level) in [
        ("/apis/quota.openshift.io", ApiLevel::Group),
        ("/oapi", ApiLevel::Legacy),
    ] {
        if get(client, path, REQUEST_TIMEOUT).await.is_ok() {
            return level;
        }
    }
    ApiLevel::NotOpenShift
}

/// A Kubernetes quantity as the Agent reads it: `MilliValue() / 1000`. `None` for
/// text that is not a quantity.
pub fn quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-')))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (pow2, pow10): (u32, i32) = match suffix {
        "" => (0, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        e if e.starts_with(['e', 'E']) => (0, e[1..].parse().ok()?),
        _ => return None,
    };
    let negative = number.starts_with('-');
    let digits = number.strip_prefix(['+', '-']).unwrap_or(number);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    // Exact in thousandths: the mantissa's digits, scaled.
    let mantissa: i128 = format!("{int}{frac}").parse().ok()?;
    let scaled = mantissa.checked_mul(1i128.checked_shl(pow2)?)?;
    let exponent = pow10 + 3 - i32::try_from(frac.len()).ok()?;
    let milli = if exponent >= 0 {
        scaled.checked_mul(10i128.checked_pow(exponent.unsigned_abs())?)?
    } else {
        let divisor = 10i128.checked_pow(exponent.unsigned_abs())?;
        // Rounded up, as Kubernetes' MilliValue rounds.
        if negative {
            scaled / divisor
        } else {
            (scaled + divisor - 1) / divisor
        }
    };
    let milli = if negative { -milli } else { milli };
    Some(milli as f64 / 1000.0)
}

/// The gauges of one `ClusterResourceQuotaList`, in the Agent's order.
pub fn gauges(list: &Value, host: &str, check_tags: &[String], now_s: i64) -> Vec<Gauge> {
    let mut out = Vec::new();
    let items = list["items"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    for quota in items {
        let name = quota["metadata"]["name"].as_str().unwrap_or_default();
        let quota_tags = vec![format!("clusterquota:{name}")];
        let total = &quota["status"]["total"];
        let remaining = remaining(&total["hard"], &total["used"]);
        let mut report = |prefix: &str, suffix: &str, values: &[(String, f64)], tags: &[String]| {
            for (resource, value) in values {
                let mut all: Vec<String> = tags.iter().chain(check_tags).cloned().collect();
                all.sort_unstable();
                all.dedup();
                out.push(Gauge {
                    metric: format!("{prefix}.{resource}.{suffix}"),
                    value: *value,
                    tags: all,
                    host: host.to_owned(),
                    timestamp: now_s,
                });
            }
        };
        let cluster = "openshift.clusterquota";
        report(cluster, "limit", &resources(&total["hard"]), &quota_tags);
        report(cluster, "used", &resources(&total["used"]), &quota_tags);
        report(cluster, "remaining", &remaining, &quota_tags);
        let namespaces = quota["status"]["namespaces"].as_array();
        for ns in namespaces.map(Vec::as_slice).unwrap_or(&[]) {
            let mut tags = quota_tags.clone();
            tags.push(format!(
                "kube_namespace:{}",
                ns["namespace"].as_str().unwrap_or_default()
            ));
            let applied = "openshift.appliedclusterquota";
            report(applied, "limit", &resources(&ns["status"]["hard"]), &tags);
            report(applied, "used", &resources(&ns["status"]["used"]), &tags);
            report(applied, "remaining", &remaining, &tags);
        }
    }
    out
}

/// A `ResourceList` as (resource, value), in key order; unreadable quantities left out.
fn resources(list: &Value) -> Vec<(String, f64)> {
    let Some(map) = list.as_object() else {
        return Vec::new();
    };
    let mut out: Vec<(String, f64)> = map
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), quantity(v.as_str()?)?)))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Hard minus used, for each resource used that has a limit.
fn remaining(hard: &Value, used: &Value) -> Vec<(String, f64)> {
    let hard = resources(hard);
    resources(used)
        .into_iter()
        .filter_map(|(resource, used)| {
            let (_, limit) = hard.iter().find(|(r, _)| *r == resource)?;
            Some((resource, limit - used))
        })
        .collect()
}

/// Reports every `interval` until dropped (at the end of the leader's term).
pub async fn report(
    client: &kube::Client,
    intake: &Intake,
    host: &str,
    check_tags: &[String],
    interval: Duration,
) -> Infallible {
    loop {
        let level = detect(client).await;
        let Some(path) = level.list_path() else {
            tracing::info!(
                again_in = ?REDETECT,
                "not an OpenShift cluster (no quota.openshift.io API): no cluster quotas to report"
            );
            tokio::time::sleep(REDETECT).await;
            continue;
        };
        tracing::info!(?level, "OpenShift cluster quotas: reporting them");
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let list = match get(client, path, REQUEST_TIMEOUT).await {
                Ok(body) => serde_json::from_str::<Value>(&body).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let list = match list {
                Ok(list) => list,
                Err(e) => {
                    tracing::warn!(error = %e, "could not list the cluster quotas");
                    continue;
                }
            };
            let now = jiff::Timestamp::now().as_second();
            let gauges = gauges(&list, host, check_tags, now);
            if gauges.is_empty() {
                continue;
            }
            let answer = intake.send(&encode_series(&gauges)).await;
            if answer.status.is_none_or(|s| !(200..300).contains(&s)) {
                tracing::warn!(detail = %answer.detail, "sending the cluster quota gauges failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_count_as_the_agent_counts_them() {
        for (text, value) in [
            ("600m", 0.6),
            ("500m", 0.5),
            ("1", 1.0),
            ("2k", 2000.0),
            ("1Gi", 1_073_741_824.0),
            ("1.5Gi", 1_610_612_736.0),
            ("100Mi", 104_857_600.0),
            ("1e3", 1000.0),
            ("1E3", 1000.0),
            ("1n", 0.001), // rounded up to a thousandth
            ("10", 10.0),
            ("0.1", 0.1),
            ("1M", 1_000_000.0),
        ] {
            assert_eq!(quantity(text), Some(value), "{text}");
        }
        for bad in ["", "abc", "1Xi", "1.2.3", "m"] {
            assert_eq!(quantity(bad), None, "{bad}");
        }
    }

    /// The Agent's own test case (`kubernetes_openshift_test.go`): 3 resources,
    /// two namespaces, 27 gauges; a namespace's `remaining` is the cluster's.
    #[test]
    fn a_quota_over_two_namespaces_makes_every_gauge() {
        let list = serde_json::json!({"items": [{
            "metadata": {"name": "multiproj-test"},
            "status": {
                "total": {
                    "hard": {"pods": "15", "limits.cpu": "1", "secrets": "15"},
                    "used": {"pods": "4", "limits.cpu": "600m", "secrets": "3"}
                },
                "namespaces": [
                    {"namespace": "proj1", "status": {
                        "hard": {"pods": "15", "limits.cpu": "1", "secrets": "15"},
                        "used": {"pods": "1", "limits.cpu": "100m", "secrets": "1"}}},
                    {"namespace": "proj2", "status": {
                        "hard": {"pods": "15", "limits.cpu": "1", "secrets": "15"},
                        "used": {"pods": "3", "limits.cpu": "500m", "secrets": "9"}}}
                ]
            }
        }]});
        let tags = vec!["kube_cluster_name:prod".to_owned()];
        let g = gauges(&list, "node-a-prod", &tags, 7);
        assert_eq!(g.len(), 27);
        let find = |metric: &str, ns: Option<&str>| {
            g.iter()
                .find(|x| {
                    x.metric == metric
                        && ns.is_none_or(|n| x.tags.contains(&format!("kube_namespace:{n}")))
                        && (ns.is_some()
                            || !x.tags.iter().any(|t| t.starts_with("kube_namespace:")))
                })
                .unwrap_or_else(|| panic!("{metric} {ns:?}"))
        };
        assert_eq!(
            find("openshift.clusterquota.limits.cpu.used", None).value,
            0.6
        );
        assert_eq!(
            find("openshift.clusterquota.pods.remaining", None).value,
            11.0
        );
        let proj2 = find("openshift.appliedclusterquota.secrets.used", Some("proj2"));
        assert_eq!(proj2.value, 9.0);
        assert_eq!(
            find(
                "openshift.appliedclusterquota.secrets.remaining",
                Some("proj2")
            )
            .value,
            12.0,
            "the cluster's remaining, as the Agent reports it"
        );
        assert_eq!(
            proj2.tags,
            [
                "clusterquota:multiproj-test",
                "kube_cluster_name:prod",
                "kube_namespace:proj2"
            ]
        );
        assert_eq!(proj2.host, "node-a-prod");
    }
}
