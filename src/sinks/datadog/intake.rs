//! One HTTP call to the intake, its answer judged by the delivery rules.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// The configured request timeout, and the one the next request gets: doubled
    /// after a request that timed out, twice the last answer's time after an
    /// answer, never below the configured one nor above [`MAX_STRETCH`] times it.
    /// A slow but working intake then answers the second or third try, and the
    /// tries after it at once, instead of every try timing out and each resent
    /// batch arriving once more.
    timeout: Duration,
    next_timeout_ms: Arc<AtomicU64>,
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
        // Redirects are not followed: a 3xx would re-send the key to wherever it
        // points (reqwest keeps custom headers), and a 301/302 turns the POST into
        // a GET whose 2xx would count as delivered. A 3xx is retried, and logged.
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Intake {
            client,
            timeout,
            next_timeout_ms: Arc::new(AtomicU64::new(timeout.as_millis() as u64)),
            base: datadog.base_url(),
            logs_base: datadog.logs_base_url(),
            api_key: datadog.api_key.clone(),
        })
    }

    /// Where a body goes.
    pub fn url(&self, endpoint: Endpoint) -> String {
        let base = match endpoint {
            Endpoint::Logs => &self.logs_base,
            Endpoint::Events | Endpoint::CheckRun | Endpoint::Series => &self.base,
        };
        format!("{base}{}", endpoint.path())
    }

    /// Sends one body once.
    pub async fn send(&self, body: &Body) -> Answer {
        let mut key = match http::HeaderValue::from_str(self.api_key.expose()) {
            Ok(key) => key,
            // check-config refuses such keys; never the key in the message.
            Err(_) => {
                return Answer {
                    verdict: Verdict::Forbidden,
                    status: None,
                    detail: "the API key cannot be sent as a header".into(),
                };
            }
        };
        key.set_sensitive(true);
        let timeout = Duration::from_millis(self.next_timeout_ms.load(Ordering::Relaxed));
        let started = std::time::Instant::now();
        let result = self
            .client
            .post(self.url(body.endpoint))
            .timeout(timeout)
            .header("DD-API-KEY", key)
            .header(http::header::CONTENT_TYPE, body.endpoint.content_type())
            .header(http::header::CONTENT_ENCODING, body.encoding)
            .body(body.bytes.clone())
            .send()
            .await;
        match result {
            Ok(mut response) => {
                let next = (started.elapsed() * 2)
                    .max(self.timeout)
                    .min(self.timeout * MAX_STRETCH);
                self.next_timeout_ms
                    .store(next.as_millis() as u64, Ordering::Relaxed);
                let status = response.status().as_u16();
                let retry_after = retry_after(response.headers());
                let location = response
                    .headers()
                    .get(http::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .map(str::to_owned);
                let text = body_start(&mut response).await;
                let detail = match location {
                    Some(to) if (300..400).contains(&status) => {
                        format!(
                            "HTTP {status}: a redirect to {to}, not followed (set DD_URL to where the intake is)"
                        )
                    }
                    _ => format!("HTTP {status}: {text}"),
                };
                Answer {
                    verdict: delivery::judge(status, retry_after),
                    status: Some(status),
                    detail,
                }
            }
            Err(e) if e.is_timeout() => {
                let longer = (timeout * 2).min(self.timeout * MAX_STRETCH);
                self.next_timeout_ms
                    .store(longer.as_millis() as u64, Ordering::Relaxed);
                Answer {
                    verdict: Verdict::Retry { after: None },
                    status: None,
                    detail: format!(
                        "timeout: no answer within {timeout:?}; the next request waits {longer:?} (the intake may still have taken this batch: it is sent again)"
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

/// What an answer's body says, for the log: its first [`BODY_KEPT`] bytes, read no
/// further (an intake or a proxy may answer with anything).
async fn body_start(response: &mut reqwest::Response) -> String {
    let mut kept = Vec::new();
    while kept.len() < BODY_KEPT {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                kept.extend_from_slice(&chunk[..chunk.len().min(BODY_KEPT - kept.len())])
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&kept).chars().take(200).collect()
}

/// How far a request's timeout stretches after timeouts: 4 × the configured one.
pub const MAX_STRETCH: u32 = 4;

/// Bytes of an answer's body read at most.
const BODY_KEPT: usize = 4096;

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
