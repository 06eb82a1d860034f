//! A fault-injecting intake in front of fakeintake: it forwards what it lets through,
//! so Datadog's parser still judges every delivered payload, and otherwise refuses
//! connections or answers with the status the test chose.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the intake does with the next requests.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Forward to fakeintake and answer what it answers.
    Pass,
    /// Nothing listens: connections are refused.
    Refuse,
    /// Answer this status.
    Status(u16),
    /// 429 with `Retry-After: <seconds>`.
    TooMany { retry_after_secs: u64 },
}

/// One request the intake saw.
#[derive(Debug, Clone)]
pub struct Hit {
    pub at: Instant,
    pub status: u16,
}

#[derive(Clone)]
struct Shared {
    fault: Arc<Mutex<Fault>>,
    hits: Arc<Mutex<Vec<Hit>>>,
    upstream: String,
    client: reqwest::Client,
}

pub struct FaultyIntake {
    addr: SocketAddr,
    shared: Shared,
    server: Option<JoinHandle<()>>,
}

impl FaultyIntake {
    /// Starts passing everything to `upstream` (fakeintake's base URL).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Shared {
            fault: Arc::new(Mutex::new(Fault::Pass)),
            hits: Arc::new(Mutex::new(Vec::new())),
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
        };
        let mut intake = FaultyIntake {
            addr,
            shared,
            server: None,
        };
        intake.serve(listener);
        intake
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn serve(&mut self, listener: TcpListener) {
        let app = Router::new()
            .fallback(handle)
            .with_state(self.shared.clone());
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    /// Switches behaviour. `Refuse` closes the port; anything else opens it again.
    pub async fn set(&mut self, fault: Fault) {
        *self.shared.fault.lock().unwrap() = fault.clone();
        match (fault, self.server.is_some()) {
            (Fault::Refuse, true) => {
                let server = self.server.take().unwrap();
                server.abort();
                let _ = server.await;
            }
            (Fault::Refuse, false) => {}
            (_, false) => {
                let listener = TcpListener::bind(self.addr)
                    .await
                    .expect("rebind the intake port");
                self.serve(listener);
            }
            (_, true) => {}
        }
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.shared.hits.lock().unwrap().clone()
    }
}

impl Drop for FaultyIntake {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = shared.fault.lock().unwrap().clone();
    let mut response = match fault {
        Fault::Pass | Fault::Refuse => {
            let mut request = shared
                .client
                .request(method, format!("{}{}", shared.upstream, uri))
                .body(body);
            for (name, value) in &headers {
                if name != "host" && name != "content-length" {
                    request = request.header(name, value);
                }
            }
            match request.send().await {
                Ok(r) => {
                    let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
                    (status, r.bytes().await.unwrap_or_default()).into_response()
                }
                Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
            }
        }
        Fault::Status(code) => (StatusCode::from_u16(code).unwrap(), "injected").into_response(),
        Fault::TooMany { retry_after_secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", retry_after_secs.to_string())],
            "slow down",
        )
            .into_response(),
    };
    // One request per connection, so that closing the port refuses the next one.
    response
        .headers_mut()
        .insert("connection", "close".parse().unwrap());
    shared.hits.lock().unwrap().push(Hit {
        at: Instant::now(),
        status: response.status().as_u16(),
    });
    response
}
