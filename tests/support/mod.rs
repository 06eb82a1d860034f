//! Test ground shared by the end-to-end tests: a real kube-apiserver + etcd and
//! Datadog's fakeintake, started by `scripts/dev-cluster` (etcd on unix sockets,
//! fakeintake on a port the kernel chose, kube-apiserver on a reserved port: no port
//! can be taken between choosing and binding it), and evrelay itself run as a child
//! process.
//!
//! Nothing here is faked. If the control plane cannot start, [`ControlPlane::start`]
//! panics with its logs: a test that needs it fails, it never passes vacuously.
//! Everything is torn down on drop (also when a test panics), and a watcher left by
//! `dev-cluster up` tears it down if the test process dies without unwinding.

#![allow(dead_code)] // each test binary uses its own part of the support code

pub mod bench;
pub mod faulty;
pub mod golden;
pub mod ha;
pub mod load;
pub mod tmpfs;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Namespace, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Deserialize;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A running control plane and intake.
pub struct ControlPlane {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and fakeintake (building them once per machine).
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// The same, with extra kube-apiserver flags.
    pub fn start_with(kube_apiserver_args: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("evrelay-e2e-")
            .tempdir()
            .expect("temp dir");
        let run = dir.path().join("cluster");
        let started = Instant::now();
        let output = Command::new(repo().join("scripts/dev-cluster"))
            .arg("up")
            .arg(&run)
            .env("EVRELAY_OWNER_PID", std::process::id().to_string())
            .env("EVRELAY_KAS_EXTRA_ARGS", kube_apiserver_args)
            .stdin(Stdio::null())
            .output()
            .expect("running scripts/dev-cluster");
        assert!(
            output.status.success(),
            "scripts/dev-cluster up failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        let env =
            parse_env(&std::fs::read_to_string(run.join("env")).expect("dev-cluster env file"));
        for key in [
            "KUBECONFIG",
            "DD_URL",
            "EVRELAY_INTAKE_EVENTS",
            "EVRELAY_DEV_AUDIT_LOG",
        ] {
            assert!(env.contains_key(key), "dev-cluster env lacks {key}");
        }
        eprintln!(
            "control plane up in {:.1?} at {}",
            started.elapsed(),
            run.display()
        );
        ControlPlane { dir, env }
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("cluster")
    }

    /// The pids of etcd, kube-apiserver and fakeintake.
    pub fn pids(&self) -> Vec<u32> {
        ["etcd", "kube-apiserver", "fakeintake"]
            .iter()
            .filter_map(|name| {
                std::fs::read_to_string(self.run_dir().join(format!("{name}.pid"))).ok()
            })
            .filter_map(|pid| pid.trim().parse().ok())
            .collect()
    }

    pub fn var(&self, key: &str) -> &str {
        &self.env[key]
    }

    pub fn dd_url(&self) -> &str {
        self.var("DD_URL")
    }

    /// An admin client for the API server.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = Kubeconfig::read_from(self.var("KUBECONFIG")).expect("kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("client config");
        kube::Client::try_from(config).expect("client")
    }

    /// A fresh directory for an evrelay data dir, removed with the control plane.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).expect("data dir");
        dir
    }

    /// The events fakeintake received on `/intake/`, as Datadog's own parser reads them.
    pub fn intake_events(&self) -> Vec<IntakeEvent> {
        self.intake("events")
            .into_iter()
            .map(|v| serde_json::from_value(v).expect("intake-events line"))
            .collect()
    }

    /// What fakeintake received of one kind (`events`, `logs`, `checks`), as
    /// Datadog's own parsers read it.
    pub fn intake(&self, kind: &str) -> Vec<serde_json::Value> {
        let output = Command::new(self.var("EVRELAY_INTAKE_EVENTS"))
            .args(["-url", self.dd_url(), "-kind", kind])
            .output()
            .expect("running intake-events");
        assert!(
            output.status.success(),
            "intake-events failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("intake-events line"))
            .collect()
    }

    /// Requests the API server logged for a verb on core/v1 events (the audit log).
    pub fn event_requests(&self, verb: &str) -> usize {
        let log = std::fs::read_to_string(self.var("EVRELAY_DEV_AUDIT_LOG")).unwrap_or_default();
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| {
                e["stage"] == "ResponseComplete"
                    && e["verb"] == verb
                    && e["objectRef"]["resource"] == "events"
            })
            .count()
    }

    /// Requests the API server logged (the audit log) whose URI holds `part`.
    pub fn audited(&self, part: &str) -> Vec<String> {
        let log = std::fs::read_to_string(self.var("EVRELAY_DEV_AUDIT_LOG")).unwrap_or_default();
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["stage"] == "ResponseComplete")
            .filter_map(|e| e["requestURI"].as_str().map(str::to_owned))
            .filter(|uri| uri.contains(part))
            .collect()
    }

    /// An evrelay command with the control plane's environment and the given data dir.
    pub fn evrelay(&self, data_dir: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_evrelay"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", self.var("KUBECONFIG"))
            .env("DD_URL", self.dd_url())
            // fakeintake and the tests' faulty intake speak plain HTTP on loopback.
            .env("EVRELAY_DATADOG_ALLOW_INSECURE_HTTP", "true")
            .env("DD_API_KEY", TEST_API_KEY)
            .env("EVRELAY_DATA_DIR", data_dir)
            .env("RUST_LOG", "info,evrelay=debug")
            // A free port each: several replicas run side by side.
            .env("EVRELAY_ADMIN_LISTEN_ADDRESS", "127.0.0.1:0")
            .stdin(Stdio::null());
        cmd
    }

    /// Starts `evrelay run`, logging to `<data_dir>.log`.
    pub fn spawn_evrelay(&self, data_dir: &Path) -> Evrelay {
        self.spawn_evrelay_with(data_dir, &[])
    }

    /// Starts `evrelay run` with extra environment (overriding the defaults).
    pub fn spawn_evrelay_with(&self, data_dir: &Path, env: &[(&str, &str)]) -> Evrelay {
        let log_path = data_dir.with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let log_start = log.metadata().map_or(0, |m| m.len());
        let mut cmd = self.evrelay(data_dir);
        cmd.envs(env.iter().copied());
        let child = cmd
            .arg("run")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawning evrelay");
        Evrelay {
            child: Some(child),
            log_path,
            log_start,
        }
    }

    /// Compacts etcd at its current revision, so older resourceVersions expire.
    pub async fn compact_etcd(&self) -> i64 {
        let range = self.etcd_call("/v3/kv/range", serde_json::json!({"key": "Lw=="}));
        let revision: i64 = range["header"]["revision"]
            .as_str()
            .expect("revision")
            .parse()
            .expect("numeric revision");
        self.etcd_call(
            "/v3/kv/compaction",
            serde_json::json!({"revision": revision.to_string(), "physical": true}),
        );
        revision
    }

    /// One call to etcd's JSON gateway, on its unix socket (curl speaks to sockets,
    /// reqwest does not); panics unless etcd answers 2xx.
    fn etcd_call(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let output = Command::new("curl")
            .args(["-fsS", "--max-time", "30", "--unix-socket"])
            .arg(self.var("EVRELAY_DEV_ETCD_SOCKET"))
            .arg(format!("http://etcd{path}"))
            .arg("-d")
            .arg(body.to_string())
            .output()
            .expect("running curl");
        assert!(
            output.status.success(),
            "etcd {path}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("etcd answers JSON")
    }

    /// `evrelay dump --meta` of a data dir, parsed.
    pub fn dump_meta(&self, data_dir: &Path) -> serde_json::Value {
        let output = self
            .evrelay(data_dir)
            .args(["dump", "--meta"])
            .output()
            .expect("evrelay dump --meta");
        assert!(
            output.status.success(),
            "dump --meta: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("dump --meta is JSON")
    }

    /// `evrelay dump` of a data dir, parsed.
    pub fn dump(&self, data_dir: &Path) -> Vec<serde_json::Value> {
        let output = self
            .evrelay(data_dir)
            .arg("dump")
            .output()
            .expect("evrelay dump");
        assert!(
            output.status.success(),
            "evrelay dump failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("dump line is JSON"))
            .collect()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/dev-cluster"))
            .arg("down")
            .arg(self.run_dir())
            .stdin(Stdio::null())
            .status();
    }
}

/// The API key the tests run evrelay with, to look for it where it must not be.
pub const TEST_API_KEY: &str = "e2e0000test0000key0000dd00000000";

/// A running `evrelay run`, killed on drop.
pub struct Evrelay {
    child: Option<Child>,
    pub log_path: PathBuf,
    /// Where this process's lines begin in the log (a data dir's log is shared by
    /// every run on it).
    log_start: u64,
}

impl Evrelay {
    /// SIGTERM, then wait for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().expect("waiting for evrelay")
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        child.wait().expect("reap");
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("try_wait").is_none())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// This process's lines of the log.
    pub fn own_log(&self) -> String {
        let all = std::fs::read(&self.log_path).unwrap_or_default();
        let start = (self.log_start as usize).min(all.len());
        String::from_utf8_lossy(&all[start..]).into_owned()
    }

    /// GET on the admin endpoint: status and body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let url = format!("{}{path}", self.admin_url().await);
        let r = reqwest::get(&url).await.expect(&url);
        (r.status().as_u16(), r.text().await.expect(&url))
    }

    /// A metric's value from `/metrics`: the first sample whose line starts with
    /// `sample` (a name, or a name and labels).
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let (_, text) = self.admin_get("/metrics").await;
        text.lines()
            .find(|l| l.starts_with(sample))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// The admin endpoint's base URL, from the log line that announces it
    /// (waits for it).
    pub async fn admin_url(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self.own_log().lines().find_map(|l| {
                l.contains("serving /metrics")
                    .then(|| l.split("address=").nth(1))
                    .flatten()
                    .map(|a| a.split_whitespace().next().unwrap_or("").to_owned())
            });
            if let Some(address) = found {
                return format!("http://{address}");
            }
            assert!(
                Instant::now() < deadline,
                "no admin endpoint announced; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Evrelay {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One event as fakeintake's parser read it.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct IntakeEvent {
    pub source: String,
    pub msg_title: String,
    pub msg_text: String,
    pub timestamp: i64,
    pub priority: String,
    pub host: String,
    pub tags: Option<Vec<String>>,
    pub alert_type: String,
    pub aggregation_key: String,
    pub source_type_name: String,
    pub event_type: String,
}

impl IntakeEvent {
    /// The occurrences this Datadog event carries: `<uid>.<resourceVersion>` of
    /// each, from its `evrelay_id` tags.
    pub fn event_ids(&self) -> Vec<&str> {
        self.tags
            .iter()
            .flatten()
            .filter_map(|t| t.strip_prefix("evrelay_id:"))
            .collect()
    }

    /// The uids of the Kubernetes events this Datadog event carries, from its
    /// `evrelay_id:<uid>.<resourceVersion>` tags (one unbundled, several bundled).
    pub fn event_uids(&self) -> Vec<&str> {
        self.tags
            .iter()
            .flatten()
            .filter_map(|t| t.strip_prefix("evrelay_id:"))
            .filter_map(|id| id.rsplit_once('.'))
            .map(|(uid, _)| uid)
            .collect()
    }
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn create_namespace(client: &kube::Client, name: &str) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("creating namespace");
}

/// Creates one event about a Pod and returns its uid.
pub async fn create_event(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    reason: &str,
    message: &str,
) -> String {
    let at = jiff::Timestamp::now();
    create_event_at(client, namespace, pod, reason, message, at).await
}

/// Creates one event about a Pod, last seen at `at`, and returns its uid.
pub async fn create_event_at(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    reason: &str,
    message: &str,
    at: jiff::Timestamp,
) -> String {
    let now = Time(at);
    // A name of our own, not generateName: kube's client retries a create the API
    // server answered 429/503/504, and a create that had in fact succeeded would
    // then make a second event the test never heard of. With a name, the retry
    // finds the first one instead.
    let name = format!("{pod}.{:016x}", fastrand::u64(..));
    let event = Event {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            kind: Some("Pod".into()),
            name: Some(pod.into()),
            namespace: Some(namespace.into()),
            uid: Some(format!("uid-{namespace}-{pod}")),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some("Normal".into()),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some("e2e".into()),
            host: Some("node-1".into()),
        }),
        ..Default::default()
    };
    let api = Api::<Event>::namespaced(client.clone(), namespace);
    let created = match api.create(&PostParams::default(), &event).await {
        Ok(created) => created,
        Err(kube::Error::Api(status)) if status.code == 409 => {
            api.get(&name).await.expect("reading back a created event")
        }
        Err(e) => panic!("creating event: {e}"),
    };
    created.metadata.uid.expect("created events have a uid")
}

fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Creates events in the background, one every `every`, until stopped; keeps the
/// uids in creation order.
pub struct Stream {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Stream {
    pub fn start(client: kube::Client, namespace: &'static str, every: Duration) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut uids = Vec::new();
                let mut tick = tokio::time::interval(every);
                while !stop.is_cancelled() {
                    tick.tick().await;
                    let i = uids.len();
                    let pod = if i % 2 == 0 { "api-0" } else { "worker-0" };
                    uids.push(
                        create_event(&client, namespace, pod, "Streamed", &format!("stream {i}"))
                            .await,
                    );
                }
                uids
            }
        });
        Stream { stop, task }
    }

    /// Stops creating and returns every uid created, in order.
    pub async fn stop(self) -> Vec<String> {
        self.stop.cancel();
        self.task.await.expect("stream task")
    }
}

/// Delivered occurrences (`<uid>.<resourceVersion>`) at the intake, in arrival
/// order (duplicates kept), whether bundled or not.
pub fn delivered_ids(cp: &ControlPlane) -> Vec<String> {
    cp.intake_events()
        .iter()
        .flat_map(|e| {
            e.event_ids()
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every event the API server holds, in every namespace: the test's own and the
/// world's. The API server records events of its own (seen: a Warning
/// `ClusterIPNotAllocated` on `default/kubernetes` when its start-up repair loop
/// races the allocator: 3 of 30 starts), and evrelay must ship those too.
pub async fn cluster_event_uids(client: &kube::Client) -> std::collections::BTreeSet<String> {
    Api::<Event>::all(client.clone())
        .list(&Default::default())
        .await
        .expect("listing events")
        .items
        .into_iter()
        .filter_map(|e| e.metadata.uid)
        .collect()
}

/// Delivered event uids at the intake, in arrival order (duplicates kept), whether
/// bundled or not.
pub fn delivered_uids(cp: &ControlPlane) -> Vec<String> {
    cp.intake_events()
        .iter()
        .flat_map(|e| {
            let uids = e.event_uids();
            assert!(!uids.is_empty(), "an event without evrelay_id: {e:?}");
            uids.into_iter().map(str::to_owned).collect::<Vec<_>>()
        })
        .collect()
}

/// Created, delivered, duplicated, lost: the figures every delivery test reports;
/// and events at the intake that the test did not create (the API server's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub created: usize,
    pub delivered: usize,
    pub duplicated: usize,
    pub lost: usize,
    pub extra: usize,
}

pub fn tally(created: &[String], delivered: &[String]) -> Tally {
    let mut seen = std::collections::HashSet::new();
    let duplicated = delivered
        .iter()
        .filter(|u| !seen.insert(u.as_str()))
        .count();
    let lost = created
        .iter()
        .filter(|u| !seen.contains(u.as_str()))
        .count();
    let mine: std::collections::HashSet<&str> = created.iter().map(String::as_str).collect();
    let extra = seen.iter().filter(|u| !mine.contains(*u)).count();
    Tally {
        created: created.len(),
        delivered: seen.len() - extra,
        duplicated,
        lost,
        extra,
    }
}
