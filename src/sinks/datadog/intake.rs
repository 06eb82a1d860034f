//! One HTTP call to the intake, its answer judged by the delivery rules.

use std::future::Future;
use std::time::Duration;

use http::HeaderMap;

use super::{ApiKey, Body, DatadogSettings, Endpoint};
use crate::delivery::{self, Verdict};
use crate::ship::Answer;

/// One request to the intake: the seam between the sinks and HTTP, so that what
/// they send is tested without a network.
pub trait Transport: Send + Sync + 'static {
    fn send(&self, body: &Body) -> impl Future<Output = Answer> + Send;
}

impl Transport for Intake {
    fn send(&self, body: &Body) -> impl Future<Output = Answer> + Send {
        Intake::send(self, body)
    }
}

/// The Datadog intake: where, with which key, over which client. The client
/// honours `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY`.
#[derive(Clone)]
pub struct Intake {
    client: reqwest::Client,
    /// Base URL of `/intake/` and `/api/v1/check_run`.
    base: String,
    /// Base URL of `/api/v2/logs`.
    logs_base: String,
    api_key: ApiKey,
}

impl Intake {
    /// The intake of `datadog` (its `DD_URL`, else its site's addresses), each
    /// request bounded by `timeout`.
    pub fn new(datadog: &DatadogSettings, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(USER_AGENT)
            .build()?;
        Ok(Intake {
            client,
            base: datadog.base_url(),
            logs_base: datadog.logs_base_url(),
            api_key: datadog.api_key.clone(),
        })
    }

    /// Where a body goes.
    pub fn url(&self, endpoint: Endpoint) -> String {
        let base = match endpoint {
            Endpoint::Logs => &self.logs_base,
            Endpoint::Events | Endpoint::CheckRun => &self.base,
        };
        format!("{base}{}", endpoint.path())
    }

    /// Sends one body once.
    pub async fn send(&self, body: &Body) -> Answer {
        let result = self
            .client
            .post(self.url(body.endpoint))
            .header("DD-API-KEY", self.api_key.expose())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::CONTENT_ENCODING, body.encoding)
            .body(body.bytes.clone())
            .send()
            .await;
        match result {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = retry_after(response.headers());
                let text = response.text().await.unwrap_or_default();
                Answer {
                    verdict: delivery::judge(status, retry_after),
                    status: Some(status),
                    detail: format!(
                        "HTTP {status}: {}",
                        text.chars().take(200).collect::<String>()
                    ),
                }
            }
            Err(e) => Answer {
                verdict: Verdict::Retry { after: None },
                status: None,
                // reqwest errors name the URL, never headers: the key stays out.
                detail: e.to_string(),
            },
        }
    }
}

/// `evrelay/<version>`, on every request.
pub const USER_AGENT: &str = concat!("evrelay/", env!("CARGO_PKG_VERSION"));

/// `Retry-After` in seconds (the form Datadog sends); HTTP dates are not used by it.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_site_has_its_addresses() {
        let at = |site: &str| {
            let config = DatadogSettings {
                site: site.into(),
                ..Default::default()
            };
            let intake = Intake::new(&config, Duration::from_secs(1)).unwrap();
            (
                intake.url(Endpoint::Events),
                intake.url(Endpoint::Logs),
                intake.url(Endpoint::CheckRun),
            )
        };
        assert_eq!(
            at("datadoghq.com"),
            (
                "https://app.datadoghq.com/intake/".into(),
                "https://http-intake.logs.datadoghq.com/api/v2/logs".into(),
                "https://app.datadoghq.com/api/v1/check_run".into(),
            )
        );
        for site in super::super::SITES {
            let (events, logs, _) = at(site);
            assert_eq!(events, format!("https://app.{site}/intake/"));
            assert_eq!(logs, format!("https://http-intake.logs.{site}/api/v2/logs"));
        }
        let config = DatadogSettings {
            url: Some("http://127.0.0.1:9/".into()),
            ..Default::default()
        };
        let intake = Intake::new(&config, Duration::from_secs(1)).unwrap();
        assert_eq!(intake.url(Endpoint::Events), "http://127.0.0.1:9/intake/");
        assert_eq!(intake.url(Endpoint::Logs), "http://127.0.0.1:9/api/v2/logs");
    }

    #[test]
    fn retry_after_seconds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            http::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }
}
