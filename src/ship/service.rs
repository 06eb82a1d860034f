//! One HTTP call to the intake, its answer judged by the delivery rules.

use std::time::Duration;

use http::HeaderMap;

use crate::datadog::{ApiKey, Body};
use crate::delivery::{self, Verdict};

/// The Datadog intake: where, with which key, over which client.
#[derive(Clone)]
pub struct Intake {
    client: reqwest::Client,
    url: String,
    api_key: ApiKey,
}

/// What one attempt came to.
#[derive(Debug)]
pub struct Answer {
    pub verdict: Verdict,
    /// The status, or `None` when no answer came (network error, timeout).
    pub status: Option<u16>,
    /// A short description for logs: the status and the start of the body, or the
    /// network error.
    pub detail: String,
}

impl Intake {
    /// `base_url` is the intake's base (`DD_URL` or the site's); requests go to
    /// `{base_url}/intake/`.
    pub fn new(base_url: &str, api_key: ApiKey, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("evrelay/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Intake {
            client,
            url: format!("{}/intake/", base_url.trim_end_matches('/')),
            api_key,
        })
    }

    /// Sends one body once.
    pub async fn send(&self, body: &Body) -> Answer {
        let result = self
            .client
            .post(&self.url)
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
