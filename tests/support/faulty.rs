//! A fault-injecting intake in front of fakeintake: it forwards what it lets through,
//! so Datadog's parser still judges every delivered payload, and otherwise refuses
//! connections or answers with the status the test chose.
//!
//! Its port stays bound for its whole life, refusing included (a refused connection
//! is accepted and reset at once): a port given back to the kernel could be handed
//! to another test before it is bound again.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// Connections are reset as soon as they are accepted, before any HTTP: the
    /// sender sees a network error, as with nothing listening.
    Refuse,
    /// Answer this status.
    Status(u16),
    /// 429 with `Retry-After: <seconds>`.
    TooMany { retry_after_secs: u64 },
    /// Judges each `/intake/` body as Datadog would a bad one: 413 when it holds
    /// more than `max_events` events, else 400 when it holds `reject`; else forwards.
    Judge { reject: String, max_events: usize },
    /// Answer `status` (a 3xx) with `Location: to`.
    Redirect { status: u16, to: String },
    /// Forward, but only after this long (a slow intake).
    Slow(Duration),
}

/// The events in a zstd `/intake/` body, and its JSON text.
fn intake_body(body: &[u8]) -> (usize, String) {
    let raw = zstd::decode_all(body).unwrap_or_default();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let events = json["events"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_array()).map(Vec::len).sum())
        .unwrap_or(0);
    (events, text)
}

/// One request the intake saw.
#[derive(Debug, Clone)]
pub struct Hit {
    pub at: Instant,
    pub status: u16,
    /// `/intake/`, `/api/v1/check_run`, …
    pub path: String,
    pub user_agent: String,
    pub content_encoding: String,
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
    server: JoinHandle<()>,
}

/// The intake's listener: resets every connection while the fault is `Refuse`,
/// recording it as a hit with status 0.
struct Gate {
    listener: TcpListener,
    shared: Shared,
}

impl axum::serve::Listener for Gate {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.listener.accept().await else {
                continue;
            };
            if *self.shared.fault.lock().unwrap() != Fault::Refuse {
                return (stream, addr);
            }
            // SO_LINGER 0: the close sends a reset, as a refused connect would fail.
            let _ = stream.set_zero_linger();
            drop(stream);
            self.shared.hits.lock().unwrap().push(Hit {
                at: Instant::now(),
                status: 0,
                path: String::new(),
                user_agent: String::new(),
                content_encoding: String::new(),
            });
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
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
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let gate = Gate {
            listener,
            shared: shared.clone(),
        };
        let server = tokio::spawn(async move {
            let _ = axum::serve(gate, app).await;
        });
        FaultyIntake {
            addr,
            shared,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches behaviour for the connections accepted from now on.
    pub async fn set(&mut self, fault: Fault) {
        *self.shared.fault.lock().unwrap() = fault;
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.shared.hits.lock().unwrap().clone()
    }
}

impl Drop for FaultyIntake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut fault = shared.fault.lock().unwrap().clone();
    let path = uri.path().to_owned();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (user_agent, content_encoding) = (header("user-agent"), header("content-encoding"));
    let shared_for_slow = shared.clone();
    if let Fault::Judge { reject, max_events } = fault.clone() {
        fault = Fault::Pass;
        if path == "/intake/" {
            let (events, text) = intake_body(&body);
            // Size first, as an intake refuses a body before it parses it.
            if events > max_events {
                fault = Fault::Status(413);
            } else if text.contains(reject.as_str()) {
                fault = Fault::Status(400);
            }
        }
    }
    let mut response = match fault {
        // The intake takes its time, and finishes even if the sender gave up
        // waiting (as a real one would): then the batch arrives twice.
        Fault::Slow(delay) => {
            let forwarding = tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                forward(&shared_for_slow, method, &uri, &headers, body).await
            });
            forwarding.await.unwrap()
        }
        Fault::Redirect { status, to } => (
            StatusCode::from_u16(status).unwrap(),
            [("location", to.clone())],
            "moved",
        )
            .into_response(),
        Fault::Pass | Fault::Refuse | Fault::Judge { .. } => {
            forward(&shared, method, &uri, &headers, body).await
        }
        Fault::Status(code) => (StatusCode::from_u16(code).unwrap(), "injected").into_response(),
        Fault::TooMany { retry_after_secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", retry_after_secs.to_string())],
            "slow down",
        )
            .into_response(),
    };
    // One request per connection, so that a switch to `Refuse` meets the next one.
    response
        .headers_mut()
        .insert("connection", "close".parse().unwrap());
    shared.hits.lock().unwrap().push(Hit {
        at: Instant::now(),
        status: response.status().as_u16(),
        path,
        user_agent,
        content_encoding,
    });
    response
}

/// Passes a request on to fakeintake and answers what it answers.
async fn forward(
    shared: &Shared,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let mut request = shared
        .client
        // Origin-form, also when the request came as a proxy's absolute-form.
        .request(
            method,
            format!(
                "{}{}",
                shared.upstream,
                uri.path_and_query().map_or("/", |p| p.as_str())
            ),
        )
        .body(body);
    for (name, value) in headers {
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
