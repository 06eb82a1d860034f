//! Control-plane health, as the Cluster Agent reports it: the service check
//! `kube_apiserver_controlplane.up`, one for `component:apiserver` and one for
//! `component:etcd`, read from the API server's `/readyz?verbose` and sent to
//! `/api/v1/check_run` every `datadog.service_check_interval_seconds` (15 s, the
//! Cluster Agent's check interval). Only the leader sends it, so Datadog gets one
//! report per interval, not one per replica.
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

use crate::backoff::within;
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
        .map(|(component, (status, message))| {
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
        })
        .collect()
}

/// How long reading `/readyz` may take: past it, the API server counts as
/// unreachable for this report.
const READYZ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads `/readyz?verbose` through the API client.
async fn readyz(client: &kube::Client) -> Readyz {
    let request = http::Request::get("/readyz?verbose")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    match within(READYZ_TIMEOUT, client.request_text(request)).await {
        Ok(Ok(body)) => Ok((200, body)),
        Ok(Err(kube::Error::Api(status))) => Ok((status.code, status.message.clone())),
        Ok(Err(e)) => Err(e.to_string()),
        Err(elapsed) => Err(elapsed.to_string()),
    }
}

/// Reports every `interval` until dropped (at the end of the leader's term).
pub async fn report(
    client: &kube::Client,
    intake: &Intake,
    host: &str,
    tags: &[String],
    interval: Duration,
) -> Infallible {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let reading = readyz(client).await;
        let now = jiff::Timestamp::now().as_second();
        let body = encode_check_run(&checks(&reading, host, tags, now));
        let answer = intake.send(&body).await;
        if answer.status.is_none_or(|s| !(200..300).contains(&s)) {
            tracing::warn!(detail = %answer.detail, "sending {CHECK} failed");
        } else {
            tracing::debug!(readyz = ?reading.as_ref().map(|(s, _)| s), "sent {CHECK}");
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
}
