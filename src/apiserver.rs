//! The client evrelay talks to the API server with: kube's request stack (the
//! cluster's address, its credentials, its headers) on a connector that gives up
//! connecting after [`CONNECT_TIMEOUT`] and keeps TCP keepalive probes on every
//! connection, so a peer that vanished without closing (a dropped NAT or load
//! balancer entry) is noticed by the kernel instead of waited on forever. Each
//! request evrelay makes has its own deadline on top (watch, lease, ConfigMap).

use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use tower::ServiceBuilder;

/// How long connecting (TCP and TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle time before the kernel probes a connection.
pub const KEEPALIVE: Duration = Duration::from_secs(30);

/// A client for the cluster evrelay runs in (or `KUBECONFIG`'s).
pub async fn client() -> Result<kube::Client, kube::Error> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.set_keepalive(Some(KEEPALIVE));
    http.set_nodelay(true);
    let https = config.rustls_https_connector_with_connector(http)?;
    let hyper = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(hyper);
    Ok(kube::Client::new(service, config.default_namespace))
}

/// Why a [`get`] found no answer body.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// The API server answered with an error status.
    #[error("{path}: {code} {message}")]
    Status {
        path: String,
        code: u16,
        message: String,
    },
    #[error("{path}: {message}")]
    Failed { path: String, message: String },
}

/// `GET path` with a deadline: the body of a 2xx answer.
pub async fn get(client: &kube::Client, path: &str, limit: Duration) -> Result<String, GetError> {
    let failed = |message: String| GetError::Failed {
        path: path.to_owned(),
        message,
    };
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| failed(e.to_string()))?;
    match crate::backoff::within(limit, client.request_text(request)).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(kube::Error::Api(status))) => Err(GetError::Status {
            path: path.to_owned(),
            code: status.code,
            message: status.message.clone(),
        }),
        Ok(Err(e)) => Err(failed(e.to_string())),
        Err(elapsed) => Err(failed(elapsed.to_string())),
    }
}
