//! The two API server requests the watcher makes, behind a small trait so that its
//! rules are tested against a scripted API server: one LIST page, and a WATCH
//! opened from a resourceVersion. [`KubeEvents`] makes them with kube's client.

use std::future::Future;
use std::time::Duration;

use kube::core::Request;
use kube::core::params::{ListParams, WatchParams};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::lines::WatchLines;

const EVENTS_PATH: &str = "/api/v1/events";

/// A page of `GET /api/v1/events`, items kept as the API server's bytes.
#[derive(Debug, Deserialize)]
pub struct EventList {
    pub metadata: ListMeta,
    pub items: Vec<Box<RawValue>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListMeta {
    #[serde(default)]
    pub resource_version: String,
    #[serde(default, rename = "continue")]
    pub continue_token: Option<String>,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 410 Gone: the resourceVersion (or the continue token) is too old.
    #[error("410 Gone: {0}")]
    Gone(String),
    /// Anything else: the network, the API server; worth retrying.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// A request could not even be built (a bug, not a condition).
    #[error("building a request: {0}")]
    Request(#[from] kube::core::request::Error),
}

/// The API server, as the watcher uses it.
pub trait EventsApi: Send + Sync + 'static {
    /// One page of events: at most `limit`, after `continue_token`.
    fn list(
        &self,
        limit: u32,
        continue_token: Option<String>,
    ) -> impl Future<Output = Result<EventList, ApiError>> + Send;

    /// A watch from `resource_version`, with bookmarks, that the API server ends
    /// after `timeout`.
    fn watch(
        &self,
        resource_version: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<WatchLines, ApiError>> + Send;
}

/// [`EventsApi`] through kube's client (in-cluster, or `KUBECONFIG`).
pub struct KubeEvents {
    client: kube::Client,
}

impl KubeEvents {
    pub fn new(client: kube::Client) -> Self {
        KubeEvents { client }
    }
}

fn gone(e: kube::Error) -> ApiError {
    match e {
        kube::Error::Api(status) if status.code == 410 => ApiError::Gone(status.message.clone()),
        other => ApiError::Kube(other),
    }
}

impl EventsApi for KubeEvents {
    async fn list(
        &self,
        limit: u32,
        continue_token: Option<String>,
    ) -> Result<EventList, ApiError> {
        let params = ListParams {
            limit: Some(limit),
            continue_token,
            ..Default::default()
        };
        let request = Request::new(EVENTS_PATH).list(&params)?;
        self.client.request(request).await.map_err(gone)
    }

    async fn watch(
        &self,
        resource_version: &str,
        timeout: Duration,
    ) -> Result<WatchLines, ApiError> {
        let params = WatchParams {
            timeout: Some(timeout.as_secs().clamp(1, u32::MAX.into()) as u32),
            bookmarks: true,
            ..Default::default()
        };
        let request = Request::new(EVENTS_PATH).watch(&params, resource_version)?;
        let reader = self.client.request_stream(request).await.map_err(gone)?;
        Ok(WatchLines::new(reader))
    }
}
