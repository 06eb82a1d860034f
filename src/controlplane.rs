//! Control-plane health, as the Cluster Agent reports it: the service check
//! `kube_apiserver_controlplane.up`, sent to `/api/v1/check_run` every
//! `datadog.service_check_interval_seconds` (15 s, the Cluster Agent's check
//! interval), with evrelay's host and the configured tags. Only the leader sends
//! it, so Datadog gets one report per interval, not one per replica.
//!
//! **From ComponentStatus** (`datadog.use_component_status`, on by default, as the
//! Cluster Agent's `use_component_status`): one check per component the API
//! server lists at `/api/v1/componentstatuses` (`component:scheduler`,
//! `component:controller-manager`, `component:etcd-0`), from its `Healthy`
//! condition: `True` → OK with the condition's message, `False` → CRITICAL with
//! its error (else its message), anything else → UNKNOWN. The API is deprecated
//! upstream; where it cannot be listed (refused, removed), the check is read from
//! `/readyz` instead, as below, so a report is never silently missing.
//!
//! **From `/readyz?verbose`** (`use_component_status: false`): one check for
//! `component:apiserver` and one for `component:etcd`.
//!
//! | answer from `/readyz?verbose`       | apiserver        | etcd                           |
//! |-------------------------------------|------------------|--------------------------------|
//! | 200                                 | OK (0), `ok`     | OK if `[+]etcd ok`, else CRITICAL (2) `etcd not ready` |
//! | another status                      | CRITICAL, `apiserver not ready` | as above                 |
//! | no answer                           | CRITICAL, the error | UNKNOWN (3), `apiserver unreachable` |
//!
//! A check that cannot be delivered is not retried: the next one is due soon and
//! says more.

use std::convert::Infallible;
use std::time::Duration;

use serde_json::Value;

use crate::apiserver::{GetError, get};
use crate::sinks::datadog::{Intake, ServiceCheck, encode_check_run};

pub const CHECK: &str = "kube_apiserver_controlplane.up";

const OK: u8 = 0;
const CRITICAL: u8 = 2;
const UNKNOWN: u8 = 3;

/// What `/readyz?verbose` said: its status and body, or the error.
pub type Readyz = Result<(u16, String), String>;

/// The two checks for one reading of `/readyz?verbose`.
pub fn checks(readyz: &Readyz, host: &str, tags: &[String], now_s: i64) -> Vec<ServiceCheck> {
    let (apiserver, etcd) = match readyz {
        Ok((status, body)) => {
            let etcd_ok = body.lines().any(|l| l.trim() == "[+]etcd ok");
            (
                if *status == 200 {
                    (OK, "ok".to_owned())
                } else {
                    (CRITICAL, "apiserver not ready".to_owned())
                },
                if etcd_ok {
                    (OK, "ok".to_owned())
                } else {
                    (CRITICAL, "etcd not ready".to_owned())
                },
            )
        }
        Err(e) => (
            (CRITICAL, format!("apiserver unreachable: {e}")),
            (UNKNOWN, "apiserver unreachable".to_owned()),
        ),
    };
    [("apiserver", apiserver), ("etcd", etcd)]
        .into_iter()
        .map(|(component, (status, message))| check(component, status, message, host, tags, now_s))
        .collect()
}

/// One component's check: `component:<name>` and the check's tags, sorted and
/// de-duplicated as the Agent's aggregator sends them.
fn check(
    component: &str,
    status: u8,
    message: String,
    host: &str,
    tags: &[String],
    now_s: i64,
) -> ServiceCheck {
    let mut all = vec![format!("component:{component}")];
    all.extend(tags.iter().cloned());
    all.sort_unstable();
    all.dedup();
    ServiceCheck {
        check: CHECK,
        host_name: host.to_owned(),
        timestamp: now_s,
        status,
        message,
        tags: all,
    }
}

/// How long reading `/readyz` may take: past it, the API server counts as
/// unreachable for this report.
const READYZ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads `/readyz?verbose` through the API client.
async fn readyz(client: &kube::Client) -> Readyz {
    match get(client, "/readyz?verbose", READYZ_TIMEOUT).await {
        Ok(body) => Ok((200, body)),
        Err(GetError::Status { code, message, .. }) => Ok((code, message)),
        Err(e) => Err(e.to_string()),
    }
}

/// The checks for one `ComponentStatusList`: one per component with a `Healthy`
/// condition.
pub fn component_checks(
    list: &Value,
    host: &str,
    tags: &[String],
    now_s: i64,
) -> Vec<ServiceCheck> {
    let items = list["items"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut out = Vec::new();
    for component in items {
        let Some(name) = component["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
        else {
            continue;
        };
        let conditions = component["conditions"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for condition in conditions.iter().filter(|c| c["type"] == "Healthy") {
            let text = |key: &str| condition[key].as_str().unwrap_or_default().to_owned();
            let (status, message) = match condition["status"].as_str() {
                Some("True") => (OK, text("message")),
                Some("False") => {
                    let error = text("error");
                    (
                        CRITICAL,
                        if error.is_empty() {
                            text("message")
                        } else {
                            error
                        },
                    )
                }
                _ => (UNKNOWN, String::new()),
            };
            out.push(check(name, status, message, host, tags, now_s));
        }
    }
    out
}

/// Lists `/api/v1/componentstatuses`.
async fn component_statuses(client: &kube::Client) -> Result<Value, String> {
    let body = get(client, "/api/v1/componentstatuses", READYZ_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&body).map_err(|e| e.to_string())
}

/// The checks of one report: from ComponentStatus when asked and it answers,
/// else from `/readyz`. `unlisted` says whether ComponentStatus failed last time,
/// so that a change is logged once.
async fn reading(
    client: &kube::Client,
    use_component_status: bool,
    unlisted: &mut bool,
    host: &str,
    tags: &[String],
) -> Vec<ServiceCheck> {
    let now = jiff::Timestamp::now().as_second();
    if use_component_status {
        match component_statuses(client).await {
            Ok(list) => {
                if std::mem::take(unlisted) {
                    tracing::info!(
                        "ComponentStatus answers again: the control-plane check reads it"
                    );
                }
                return component_checks(&list, host, tags, now);
            }
            Err(e) if !*unlisted => {
                *unlisted = true;
                tracing::warn!(error = %e, "ComponentStatus cannot be listed: the control-plane check reads /readyz instead");
            }
            Err(_) => {}
        }
    }
    checks(&readyz(client).await, host, tags, now)
}

/// Reports every `interval` until dropped (at the end of the leader's term).
pub async fn report(
    client: &kube::Client,
    intake: &Intake,
    host: &str,
    tags: &[String],
    interval: Duration,
    use_component_status: bool,
) -> Infallible {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unlisted = false;
    loop {
        tick.tick().await;
        let checks = reading(client, use_component_status, &mut unlisted, host, tags).await;
        let body = encode_check_run(&checks);
        let answer = intake.send(&body).await;
        if answer.status.is_none_or(|s| !(200..300).contains(&s)) {
            tracing::warn!(detail = %answer.detail, "sending {CHECK} failed");
        } else {
            tracing::debug!(checks = checks.len(), "sent {CHECK}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_degraded_and_unreachable() {
        let tags = vec!["kube_cluster_name:prod".to_owned()];
        let healthy = checks(
            &Ok((200, "[+]ping ok\n[+]etcd ok\nreadyz check passed\n".into())),
            "evrelay-0",
            &tags,
            7,
        );
        assert_eq!(healthy.len(), 2);
        assert_eq!(
            healthy[0],
            ServiceCheck {
                check: "kube_apiserver_controlplane.up",
                host_name: "evrelay-0".into(),
                timestamp: 7,
                status: 0,
                message: "ok".into(),
                tags: vec![
                    "component:apiserver".into(),
                    "kube_cluster_name:prod".into()
                ],
            }
        );
        assert_eq!(healthy[1].tags[0], "component:etcd");
        assert_eq!(healthy[1].status, 0);

        let etcd_down = checks(
            &Ok((500, "[+]ping ok\n[-]etcd failed: reason withheld\n".into())),
            "h",
            &[],
            7,
        );
        assert_eq!((etcd_down[0].status, etcd_down[1].status), (2, 2));
        assert_eq!(etcd_down[1].message, "etcd not ready");

        let gone = checks(&Err("connection refused".into()), "h", &[], 7);
        assert_eq!((gone[0].status, gone[1].status), (2, 3));
        assert!(gone[0].message.contains("connection refused"));
    }

    /// What a control plane without a scheduler or controller manager answers.
    #[test]
    fn one_check_per_component_from_its_healthy_condition() {
        let list = serde_json::json!({"items": [
            {"metadata": {"name": "scheduler"}, "conditions": [{"type": "Healthy", "status": "False",
             "message": "", "error": "Get \"https://127.0.0.1:10259/healthz\": connection refused"}]},
            {"metadata": {"name": "etcd-0"}, "conditions": [{"type": "Healthy", "status": "True",
             "message": "ok"}]},
            {"metadata": {"name": "odd"}, "conditions": [{"type": "Healthy", "status": "Unknown"},
             {"type": "Other", "status": "True"}]},
            {"metadata": {}, "conditions": [{"type": "Healthy", "status": "True"}]}
        ]});
        let checks = component_checks(&list, "h", &["env:prod".to_owned()], 7);
        let summary: Vec<(&str, u8, &str)> = checks
            .iter()
            .map(|c| (c.tags[0].as_str(), c.status, c.message.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "component:scheduler",
                    2,
                    "Get \"https://127.0.0.1:10259/healthz\": connection refused"
                ),
                ("component:etcd-0", 0, "ok"),
                ("component:odd", 3, ""),
            ]
        );
        assert_eq!(checks[0].tags, ["component:scheduler", "env:prod"]);
        assert_eq!(checks[0].host_name, "h");
    }
}
