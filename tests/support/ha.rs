//! For the HA tests: the RBAC of `deploy/base/rbac.yaml` applied for real, a kubeconfig
//! with a token of its ServiceAccount (so evrelay runs with exactly those rights),
//! and a TCP proxy in front of the API server that the test can cut.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, PostParams};
use kube::config::Kubeconfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{ControlPlane, create_namespace, repo};

/// The namespace `deploy/base/rbac.yaml` grants evrelay its Lease and ConfigMap in.
pub const NAMESPACE: &str = "evrelay";

/// Applies `deploy/base/rbac.yaml` (creating the namespace first).
pub async fn apply_rbac(client: &kube::Client) {
    create_namespace(client, NAMESPACE).await;
    let text = std::fs::read_to_string(repo().join("deploy/base/rbac.yaml"))
        .expect("deploy/base/rbac.yaml");
    let pp = PostParams::default();
    let mut applied = 0;
    for doc in text.split("\n---\n") {
        let value: serde_json::Value = serde_saphyr::from_str(doc).expect("rbac.yaml parses");
        let kind = value["kind"].as_str().expect("kind").to_owned();
        macro_rules! create {
            ($t:ty, $api:expr) => {{
                let object: $t = serde_json::from_value(value).expect(&kind);
                $api.create(&pp, &object)
                    .await
                    .unwrap_or_else(|e| panic!("creating {kind}: {e}"));
            }};
        }
        let namespace = value["metadata"]["namespace"]
            .as_str()
            .unwrap_or(NAMESPACE)
            .to_owned();
        let ns = || namespace.clone();
        match kind.as_str() {
            "ServiceAccount" => create!(
                ServiceAccount,
                Api::<ServiceAccount>::namespaced(client.clone(), &ns())
            ),
            "ClusterRole" => create!(ClusterRole, Api::<ClusterRole>::all(client.clone())),
            "ClusterRoleBinding" => create!(
                ClusterRoleBinding,
                Api::<ClusterRoleBinding>::all(client.clone())
            ),
            "Role" => create!(Role, Api::<Role>::namespaced(client.clone(), &ns())),
            "RoleBinding" => create!(
                RoleBinding,
                Api::<RoleBinding>::namespaced(client.clone(), &ns())
            ),
            other => panic!("rbac.yaml holds an unexpected kind {other}"),
        }
        applied += 1;
    }
    assert_eq!(
        applied, 5,
        "rbac.yaml: a ServiceAccount, 2 roles, 2 bindings"
    );
}

/// Writes a kubeconfig that authenticates as evrelay's ServiceAccount (a token from
/// the TokenRequest API), pointing at `server` (default: the API server itself).
pub async fn service_account_kubeconfig(
    cp: &ControlPlane,
    client: &kube::Client,
    server: Option<&str>,
    path: &Path,
) -> PathBuf {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(client.clone(), NAMESPACE)
        .create_token_request("evrelay", &PostParams::default(), &request)
        .await
        .expect("token request")
        .status
        .expect("token status")
        .token;
    let admin = std::fs::read_to_string(cp.var("KUBECONFIG")).expect("admin kubeconfig");
    let mut text = String::new();
    for line in admin.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if trimmed.starts_with("token:") {
            text.push_str(&format!("{indent}token: {token}\n"));
        } else if trimmed.starts_with("server:") && server.is_some() {
            text.push_str(&format!("{indent}server: {}\n", server.unwrap()));
        } else {
            text.push_str(&line.replace("namespace: default", &format!("namespace: {NAMESPACE}")));
            text.push('\n');
        }
    }
    std::fs::write(path, text).expect("writing the kubeconfig");
    path.to_path_buf()
}

/// The API server's address, from the admin kubeconfig.
pub fn api_addr(cp: &ControlPlane) -> std::net::SocketAddr {
    let text = std::fs::read_to_string(cp.var("KUBECONFIG")).expect("admin kubeconfig");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server: https://"))
        .expect("server line")
        .parse()
        .expect("server is ip:port")
}

/// A client with the same identity as a kubeconfig file.
pub async fn client_from(path: &Path) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("client config");
    kube::Client::try_from(config).expect("client")
}

/// The token ConfigMap's data (empty if it does not exist).
pub async fn token_configmap(
    client: &kube::Client,
    name: &str,
) -> std::collections::BTreeMap<String, String> {
    Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE)
        .get_opt(name)
        .await
        .expect("reading the ConfigMap")
        .and_then(|cm| cm.data)
        .unwrap_or_default()
}

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Relay everything.
    Open,
    /// A partition: every connection closed, new ones held (accepted, never
    /// answered).
    Cut,
    /// A black hole for quiet connections: those whose client has sent nothing
    /// for a while (an open watch) are dropped, new ones are held, and those in
    /// use (lease renewals every 2 s) go on, as when a load balancer silently
    /// forgets an idle flow.
    BlackHole { quiet: Duration },
}

/// A TCP proxy to the API server, whose path the test can cut or black-hole.
pub struct TcpProxy {
    pub addr: std::net::SocketAddr,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
    connections: Arc<Mutex<usize>>,
}

impl TcpProxy {
    pub async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (mode, mode_rx) = watch::channel(Mode::Open);
        let connections = Arc::new(Mutex::new(0));
        let task = tokio::spawn({
            let connections = connections.clone();
            async move {
                loop {
                    let Ok((inbound, _)) = listener.accept().await else {
                        return;
                    };
                    *connections.lock().unwrap() += 1;
                    tokio::spawn(relay(inbound, upstream, mode_rx.clone()));
                }
            }
        });
        TcpProxy {
            addr,
            mode,
            task,
            connections,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Drops the connections whose client has been silent for `quiet` and holds
    /// new ones; busy connections go on.
    pub fn black_hole(&self, quiet: Duration) {
        self.mode.send_replace(Mode::BlackHole { quiet });
    }

    pub fn restore(&self) {
        self.mode.send_replace(Mode::Open);
    }
}

/// One connection through the proxy.
async fn relay(
    inbound: TcpStream,
    upstream: std::net::SocketAddr,
    mut mode: watch::Receiver<Mode>,
) {
    if *mode.borrow() != Mode::Open {
        // Held: accepted, never answered, until the path is open again.
        let _ = mode.wait_for(|m| *m == Mode::Open).await;
        return;
    }
    let Ok(outbound) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = inbound.into_split();
    let (mut server_read, mut server_write) = outbound.into_split();
    let last_client_byte = Arc::new(Mutex::new(std::time::Instant::now()));
    let up = {
        let last = last_client_byte.clone();
        async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match tokio::io::AsyncReadExt::read(&mut client_read, &mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                *last.lock().unwrap() = std::time::Instant::now();
                if tokio::io::AsyncWriteExt::write_all(&mut server_write, &buf[..n])
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    };
    let down = async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    };
    // Dropped when the path is cut, or once it is black-holed and this
    // connection's client has been quiet long enough.
    let dropped = async {
        loop {
            let current = *mode.borrow_and_update();
            match current {
                Mode::Cut => return,
                Mode::BlackHole { quiet }
                    if last_client_byte.lock().unwrap().elapsed() >= quiet =>
                {
                    return;
                }
                Mode::BlackHole { .. } => {
                    tokio::select! {
                        changed = mode.changed() => if changed.is_err() { return },
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
                Mode::Open => {
                    if mode.changed().await.is_err() {
                        return std::future::pending().await;
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        () = dropped => {}
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
