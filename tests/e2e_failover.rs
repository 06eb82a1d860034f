//! High availability against the real kube-apiserver and Datadog's fakeintake: two
//! evrelay processes, a Lease, the token ConfigMap, and failovers of every kind.
//! evrelay runs with a token of the ServiceAccount in `deploy/base/rbac.yaml`, never as
//! an admin. Every test counts by event uid at the intake and prints a `figures:`
//! line.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use support::faulty::FaultyIntake;
use support::ha::{
    self, NAMESPACE, TcpProxy, apply_rbac, service_account_kubeconfig, token_configmap,
};
use support::{
    ControlPlane, Evrelay, Stream, create_event, create_namespace, delivered_uids, eventually,
    tally,
};

const DRAIN: Duration = Duration::from_secs(90);
/// The defaults: what an operator gets.
const LEASE: Duration = Duration::from_secs(15);
const MIRROR_EVERY: Duration = Duration::from_secs(5);
const TOKEN_CM: &str = "evrelay-token";

/// A control plane with evrelay's RBAC applied and a namespace to create events in.
struct Cluster {
    cp: ControlPlane,
    admin: kube::Client,
    kubeconfig: PathBuf,
}

impl Cluster {
    async fn start(events_namespace: &str) -> Self {
        Self::start_with(events_namespace, "").await
    }

    /// The same, with extra kube-apiserver flags.
    async fn start_with(events_namespace: &str, kube_apiserver_args: &str) -> Self {
        let cp = ControlPlane::start_with(kube_apiserver_args);
        let admin = cp.client().await;
        apply_rbac(&admin).await;
        create_namespace(&admin, events_namespace).await;
        let path = cp.data_dir("kube").join("evrelay.kubeconfig");
        let kubeconfig = service_account_kubeconfig(&cp, &admin, None, &path).await;
        Cluster {
            cp,
            admin,
            kubeconfig,
        }
    }

    /// Starts replica `name` (its `POD_NAME`), with its own data dir.
    fn replica(&self, name: &str, env: &[(&str, &str)]) -> Evrelay {
        let kubeconfig = self.kubeconfig.to_str().unwrap().to_owned();
        self.replica_with_kubeconfig(name, &kubeconfig, env)
    }

    fn replica_with_kubeconfig(
        &self,
        name: &str,
        kubeconfig: &str,
        env: &[(&str, &str)],
    ) -> Evrelay {
        let data = self.cp.data_dir(name);
        let mut all = vec![("KUBECONFIG", kubeconfig), ("POD_NAME", name)];
        all.extend_from_slice(env);
        self.cp.spawn_evrelay_with(&data, &all)
    }

    /// Lets 40 more events reach the intake under the current leader, stops the
    /// stream, and waits until every event created is delivered (a failure shows
    /// the leader's log). Returns the uids created.
    async fn finish_stream(&self, stream: Stream, leader: &Evrelay) -> Vec<String> {
        let target = delivered_uids(&self.cp).len() + 40;
        assert!(eventually(DRAIN, || delivered_uids(&self.cp).len() >= target).await);
        let created = stream.stop().await;
        assert!(
            eventually(DRAIN, || tally(&created, &delivered_uids(&self.cp)).lost
                == 0)
            .await,
            "events lost; leader log:\n{}",
            leader.log()
        );
        created
    }

    /// Waits until every uid in `created` is at the intake (a failure shows the
    /// replica's log).
    async fn wait_delivered(&self, created: &[String], replica: &Evrelay) {
        assert!(
            eventually(DRAIN, || tally(created, &delivered_uids(&self.cp)).lost
                == 0)
            .await,
            "events lost; log:\n{}",
            replica.log()
        );
    }

    /// Waits until the token ConfigMap mirrors every event of `namespace` (its
    /// `event.tokenKey` is at least the newest event's resourceVersion).
    async fn wait_mirrored(&self, namespace: &str) {
        let newest: u64 = Api::<Event>::namespaced(self.admin.clone(), namespace)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter_map(|e| e.metadata.resource_version.as_ref()?.parse().ok())
            .max()
            .unwrap();
        let deadline = Instant::now() + DRAIN;
        loop {
            let data = token_configmap(&self.admin, TOKEN_CM).await;
            let mirrored: u64 = data
                .get("event.tokenKey")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if mirrored >= newest {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "mirror stuck at {mirrored} < {newest}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn holder(&self) -> Option<String> {
        Api::<Lease>::namespaced(self.admin.clone(), NAMESPACE)
            .get_opt("evrelay")
            .await
            .expect("reading the lease")
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .filter(|h| !h.is_empty())
    }

    async fn wait_for_holder(&self, name: &str, replica: &Evrelay) {
        let deadline = Instant::now() + DRAIN;
        while self.holder().await.as_deref() != Some(name) {
            assert!(
                Instant::now() < deadline,
                "{name} never held the lease; log:\n{}",
                replica.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Waits until `needle` is in the replica's log (the log is the replica's own
/// account of what it does, so this is an awaited condition, not a sleep).
async fn wait_for_log(replica: &Evrelay, needle: &str, timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        if replica.log().contains(needle) {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{:?} never logged {needle:?}; log:\n{}",
            replica.log_path,
            replica.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn occurrences(replica: &Evrelay, needle: &str) -> usize {
    replica.log().matches(needle).count()
}

/// 1. kill -9 of the leader while events stream: the standby watches within a
///    lease duration + 2 s, nothing is lost, and duplicates stay within what one
///    mirror interval ships.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_after_kill_9() {
    const RATE: Duration = Duration::from_millis(50); // 20 events/s
    let c = Cluster::start("app").await;
    let mut a = c.replica("evrelay-0", &[]);
    c.wait_for_holder("evrelay-0", &a).await;
    wait_for_log(&a, "watch opened", DRAIN).await;
    let mut b = c.replica("evrelay-1", &[]);
    wait_for_log(&b, "standing by", DRAIN).await;

    let stream = Stream::start(c.admin.clone(), "app", RATE);
    // Mid-stream: some events delivered, and the mirror has published a token.
    assert!(eventually(DRAIN, || delivered_uids(&c.cp).len() >= 60).await);
    let deadline = Instant::now() + DRAIN;
    while !token_configmap(&c.admin, TOKEN_CM)
        .await
        .contains_key("event.tokenKey")
    {
        assert!(
            Instant::now() < deadline,
            "no token mirrored; log:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let opened_before = occurrences(&b, "watch opened");
    assert_eq!(opened_before, 0, "the standby watched while the leader led");

    let killed = Instant::now();
    a.kill9();
    let deadline = killed + DRAIN;
    while occurrences(&b, "watch opened") == 0 {
        assert!(
            Instant::now() < deadline,
            "standby never took over; log:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let takeover = killed.elapsed();
    let created = c.finish_stream(stream, &b).await;
    assert!(b.terminate().success());
    let t = tally(&created, &delivered_uids(&c.cp));
    eprintln!(
        "figures: kill-9 failover takeover={takeover:.1?} (lease {LEASE:?}) {t:?} mirror_interval={MIRROR_EVERY:?} rate=20/s"
    );
    assert_eq!(t.lost, 0);
    assert!(
        takeover <= LEASE + Duration::from_secs(2),
        "took {takeover:?} to take over"
    );
    // Bound: what the old leader shipped after its last mirror write (one interval
    // at 20 events/s), plus the write the cursor stopped in and one batch in flight.
    let bound = (MIRROR_EVERY.as_secs() as usize + 2) * 20 + 50;
    assert!(
        t.duplicated <= bound,
        "{} duplicates > {bound}",
        t.duplicated
    );
}

/// 2. Failover onto an empty data dir: the new replica resumes from the ConfigMap
///    and sends nothing older than its token again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_onto_an_empty_disk_resumes_from_the_configmap() {
    let c = Cluster::start("app").await;
    let mut a = c.replica("evrelay-0", &[]);
    c.wait_for_holder("evrelay-0", &a).await;
    wait_for_log(&a, "watch opened", DRAIN).await;
    let mut created = Vec::new();
    for i in 0..30 {
        created
            .push(create_event(&c.admin, "app", "api-0", "Before", &format!("before {i}")).await);
    }
    assert!(eventually(DRAIN, || tally(&created, &delivered_uids(&c.cp)).lost == 0).await);
    // The mirror catches up with what was shipped (the newest event's version).
    c.wait_mirrored("app").await;
    a.kill9();

    // A replica that has never run: empty disk.
    let mut b = c.replica("evrelay-1", &[]);
    wait_for_log(&b, "resuming from the mirrored token", DRAIN).await;
    for i in 0..20 {
        created.push(create_event(&c.admin, "app", "api-0", "After", &format!("after {i}")).await);
    }
    c.wait_delivered(&created, &b).await;
    assert!(b.terminate().success());
    let t = tally(&created, &delivered_uids(&c.cp));
    let meta = c.cp.dump_meta(&c.cp.data_dir("evrelay-1"));
    eprintln!("figures: empty-disk failover {t:?} term={}", meta["term"]);
    assert_eq!(t.lost, 0);
    assert_eq!(
        t.duplicated, 0,
        "events older than the mirrored token were sent again"
    );
    assert_eq!(meta["term"]["holder"], "evrelay-1");
    assert_eq!(meta["term"]["epoch"], 2);
}

/// 3. The leader is cut off from the API server (a TCP proxy the test controls):
///    it stops watching and shipping before its lease can expire, so the two never
///    ship at the same time; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_leader_steps_down_before_its_lease_expires() {
    let c = Cluster::start("app").await;
    let proxy = TcpProxy::start(ha::api_addr(&c.cp)).await;
    let proxied = c.cp.data_dir("kube").join("proxied.kubeconfig");
    service_account_kubeconfig(&c.cp, &c.admin, Some(&proxy.url()), &proxied).await;
    let intake_a = FaultyIntake::start(c.cp.dd_url()).await;
    let intake_b = FaultyIntake::start(c.cp.dd_url()).await;

    let mut a = c.replica_with_kubeconfig(
        "evrelay-0",
        proxied.to_str().unwrap(),
        &[("DD_URL", &intake_a.url())],
    );
    c.wait_for_holder("evrelay-0", &a).await;
    wait_for_log(&a, "watch opened", DRAIN).await;
    let mut b = c.replica("evrelay-1", &[("DD_URL", &intake_b.url())]);
    wait_for_log(&b, "standing by", DRAIN).await;

    let stream = Stream::start(c.admin.clone(), "app", Duration::from_millis(50));
    assert!(eventually(DRAIN, || delivered_uids(&c.cp).len() >= 40).await);
    let cut = Instant::now();
    proxy.cut();
    let stepped_down = wait_for_log(&a, "leadership lost", DRAIN).await;
    let took_over = wait_for_log(&b, "lease acquired", DRAIN).await;
    let created = c.finish_stream(stream, &b).await;

    let a_hits = intake_a.hits();
    let b_hits = intake_b.hits();
    let a_last = a_hits.iter().map(|h| h.at).max().expect("a shipped");
    let b_first = b_hits.iter().map(|h| h.at).min().expect("b shipped");
    let t = tally(&created, &delivered_uids(&c.cp));
    eprintln!(
        "figures: partition step_down_after_cut={:.1?} takeover_after_cut={:.1?} gap_between_shippers={:.1?} {t:?}",
        stepped_down - cut,
        took_over - cut,
        b_first.saturating_duration_since(a_last),
    );
    assert!(a_last < b_first, "both replicas shipped at the same time");
    assert!(
        stepped_down < took_over,
        "the old leader stepped down after the new one took over"
    );
    assert!(
        stepped_down - cut < LEASE,
        "stepped down {:?} after the cut, past the lease duration",
        stepped_down - cut
    );
    assert_eq!(t.lost, 0);
    assert!(
        a.is_running(),
        "the cut-off replica must stand by, not exit"
    );
    assert!(
        a.log().contains("standing by again"),
        "the cut-off replica did not return to standby"
    );

    // Healed: the old leader stays a standby under the new epoch.
    proxy.restore();
    assert!(a.terminate().success());
    assert!(b.terminate().success());
    let ma = c.cp.dump_meta(&c.cp.data_dir("evrelay-0"));
    let mb = c.cp.dump_meta(&c.cp.data_dir("evrelay-1"));
    assert_eq!(ma["term"]["epoch"], 1);
    assert_eq!(mb["term"]["epoch"], 2, "the takeover claimed a new epoch");
}

/// 4. Taking over from the Datadog Cluster Agent: its `datadogtoken` ConfigMap
///    holds the checkpoint; nothing older is sent. Also checks that evrelay's
///    ServiceAccount can do nothing beyond `deploy/base/rbac.yaml`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_from_a_cluster_agent_configmap() {
    let c = Cluster::start("app").await;
    let mut old = Vec::new();
    for i in 0..20 {
        old.push(create_event(&c.admin, "app", "api-0", "Old", &format!("old {i}")).await);
    }
    // The Cluster Agent's checkpoint: the list's resourceVersion, now.
    let list = Api::<Event>::all(c.admin.clone())
        .list(&ListParams::default().limit(1))
        .await
        .unwrap();
    let checkpoint = list.metadata.resource_version.unwrap();
    let agent = ConfigMap {
        metadata: ObjectMeta {
            name: Some("datadogtoken".into()),
            ..Default::default()
        },
        data: Some(
            [
                ("event.tokenKey".to_owned(), checkpoint.clone()),
                (
                    "event.tokenTimestamp".to_owned(),
                    jiff::Timestamp::now().to_string(),
                ),
            ]
            .into(),
        ),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(c.admin.clone(), NAMESPACE)
        .create(&PostParams::default(), &agent)
        .await
        .unwrap();
    let mut new = Vec::new();
    for i in 0..10 {
        new.push(create_event(&c.admin, "app", "api-0", "New", &format!("new {i}")).await);
    }

    let mut a = c.replica(
        "evrelay-0",
        &[("EVRELAY_LEADER_RESUME_FROM_CONFIGMAP", "datadogtoken")],
    );
    wait_for_log(&a, "starting from the Cluster Agent's token", DRAIN).await;
    for i in 0..5 {
        new.push(create_event(&c.admin, "app", "api-0", "New", &format!("later {i}")).await);
    }
    c.wait_delivered(&new, &a).await;
    let delivered = delivered_uids(&c.cp);
    let resent_old = old.iter().filter(|u| delivered.contains(u)).count();
    let t = tally(&new, &delivered);
    eprintln!(
        "figures: cluster-agent takeover checkpoint={checkpoint} old_resent={resent_old} new={t:?}"
    );
    assert_eq!(
        resent_old, 0,
        "events older than the Cluster Agent's token were sent"
    );
    assert_eq!(t.duplicated, 0);
    // Beside the new events, only events of the API server's own (support::cluster_event_uids).
    let cluster = support::cluster_event_uids(&c.admin).await;
    assert!(
        delivered.iter().all(|u| cluster.contains(u)),
        "an event at the intake that the API server never held"
    );
    assert_eq!(delivered.len(), new.len() + t.extra);

    // evrelay's own ConfigMap now carries its epoch; the Cluster Agent's is untouched.
    let own = token_configmap(&c.admin, TOKEN_CM).await;
    assert_eq!(own.get("evrelay.epoch").map(String::as_str), Some("1"));
    assert_eq!(
        own.get("evrelay.holder").map(String::as_str),
        Some("evrelay-0")
    );
    let theirs = token_configmap(&c.admin, "datadogtoken").await;
    assert_eq!(theirs.get("event.tokenKey"), Some(&checkpoint));
    assert!(!theirs.contains_key("evrelay.epoch"));

    // Least privilege: what the ServiceAccount must not do is refused.
    let sa = ha::client_from(&c.kubeconfig).await;
    let forbidden = |r: Result<_, kube::Error>, what: &str| match r {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: expected 403, got {other:?}"),
    };
    let any_event = Api::<Event>::namespaced(c.admin.clone(), "app")
        .list(&ListParams::default().limit(1))
        .await
        .unwrap()
        .items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    forbidden(
        Api::<Event>::namespaced(sa.clone(), "app")
            .delete(&any_event, &DeleteParams::default())
            .await
            .map(|_| ()),
        "deleting an event",
    );
    forbidden(
        Api::<Secret>::namespaced(sa.clone(), NAMESPACE)
            .list(&ListParams::default())
            .await
            .map(|_| ()),
        "listing secrets",
    );
    let mut theirs = Api::<ConfigMap>::namespaced(c.admin.clone(), NAMESPACE)
        .get("datadogtoken")
        .await
        .unwrap();
    theirs
        .data
        .get_or_insert_default()
        .insert("x".into(), "y".into());
    forbidden(
        Api::<ConfigMap>::namespaced(sa.clone(), NAMESPACE)
            .replace("datadogtoken", &PostParams::default(), &theirs)
            .await
            .map(|_| ()),
        "writing the Cluster Agent's ConfigMap",
    );
    forbidden(
        Api::<Lease>::namespaced(sa.clone(), NAMESPACE)
            .get("someone-else")
            .await
            .map(|_| ()),
        "reading another Lease",
    );
    forbidden(
        Api::<Lease>::namespaced(sa.clone(), "default")
            .list(&ListParams::default())
            .await
            .map(|_| ()),
        "listing leases elsewhere",
    );
    assert!(a.terminate().success());
}

/// 5. A graceful rolling restart of both replicas (standby first, then the
///    leader), as `kubectl rollout restart` does it: nothing lost, nothing
///    duplicated, because the leader drains and publishes its exact token before
///    it releases the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_loses_and_duplicates_nothing() {
    let c = Cluster::start("app").await;
    let mut a = c.replica("evrelay-0", &[]);
    c.wait_for_holder("evrelay-0", &a).await;
    wait_for_log(&a, "watch opened", DRAIN).await;
    let mut b = c.replica("evrelay-1", &[]);
    wait_for_log(&b, "standing by", DRAIN).await;
    // Probes as the StatefulSet sees them: both ready, one leading.
    assert_eq!(
        a.admin_get("/readyz").await,
        (200, "leader, watching\n".into())
    );
    assert_eq!(b.admin_get("/readyz").await, (200, "standby\n".into()));
    assert_eq!(b.admin_get("/healthz").await.0, 200);
    let standby_metrics = b.admin_get("/metrics").await.1;
    assert!(
        standby_metrics.contains("\nevrelay_leader 0\n"),
        "{standby_metrics}"
    );
    assert!(
        standby_metrics.contains("\nevrelay_watching 0\n"),
        "{standby_metrics}"
    );

    let stream = Stream::start(c.admin.clone(), "app", Duration::from_millis(50));
    assert!(eventually(DRAIN, || delivered_uids(&c.cp).len() >= 30).await);

    // The standby restarts first.
    assert!(b.terminate().success());
    b = c.replica("evrelay-1", &[]);
    wait_for_log(&b, "standing by", DRAIN).await;
    // Then the leader: it releases the lease and the standby takes over at once.
    let handover = Instant::now();
    assert!(a.terminate().success(), "log:\n{}", a.log());
    let stopped = handover.elapsed();
    wait_for_log(&b, "watch opened", DRAIN).await;
    let takeover = handover.elapsed();
    a = c.replica("evrelay-0", &[]);
    wait_for_log(&a, "standing by", DRAIN).await;

    let created = c.finish_stream(stream, &b).await;
    assert!(b.terminate().success());
    assert!(a.terminate().success());
    let t = tally(&created, &delivered_uids(&c.cp));
    eprintln!("figures: rolling restart leader_stop={stopped:.1?} takeover={takeover:.1?} {t:?}");
    assert_eq!(t.lost, 0);
    assert_eq!(t.duplicated, 0);
}

/// The leader ships events and mirrors its token, and is killed; more events come
/// while nobody leads, and etcd is compacted past the mirrored token (no watch
/// cache). A replica with an empty disk takes over from the mirror, gets 410 Gone,
/// and relists onto an empty dedup index: nothing created meanwhile may be lost.
/// `before` and `after` create the events (returning their uids).
async fn takeover_onto_a_new_disk_after_an_expired_token<B, A>(
    label: &str,
    before: B,
    after: A,
) -> support::Tally
where
    B: AsyncFn(&kube::Client) -> Vec<String>,
    A: AsyncFn(&kube::Client) -> Vec<String>,
{
    let c = Cluster::start_with("app", "--watch-cache=false").await;
    let mut a = c.replica("evrelay-0", &[]);
    c.wait_for_holder("evrelay-0", &a).await;
    wait_for_log(&a, "watch opened", DRAIN).await;
    let mut created = before(&c.admin).await;
    c.wait_delivered(&created, &a).await;
    c.wait_mirrored("app").await;
    a.kill9();
    let later = after(&c.admin).await;
    created.extend(later.iter().cloned());
    create_namespace(&c.admin, "churn").await;
    c.cp.compact_etcd().await;

    let mut b = c.replica("evrelay-1", &[]);
    wait_for_log(&b, "resume token expired", DRAIN).await;
    c.wait_delivered(&later, &b).await;
    assert!(b.terminate().success());
    let t = tally(&created, &delivered_uids(&c.cp));
    eprintln!("figures: {label} {t:?}");
    t
}

/// Issue: the token's own second. Five events shipped and mirrored at second T,
/// the leader killed, five more with `lastTimestamp` T: the relist keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relist_after_a_takeover_keeps_the_tokens_own_second() {
    let t_second = jiff::Timestamp::now().round(jiff::Unit::Second).unwrap();
    let five = async |client: &kube::Client, reason: &str| {
        let mut uids = Vec::new();
        for i in 0..5 {
            let msg = format!("{reason} {i}");
            uids.push(
                support::create_event_at(client, "app", "api-0", reason, &msg, t_second).await,
            );
        }
        uids
    };
    let t = takeover_onto_a_new_disk_after_an_expired_token(
        "token-second",
        async |c: &kube::Client| five(c, "Before").await,
        async |c: &kube::Client| five(c, "After").await,
    )
    .await;
    assert_eq!(t.lost, 0, "events of the token's second were dropped");
    // Those of the token's second that were delivered already may come again:
    // better a duplicate than a loss.
    assert!(t.duplicated <= 5, "{t:?}");
}

/// Issue: a future-dated event must not carry the token past now. One event dated
/// 9999-12-30 journaled and mirrored, then a takeover after an expired token:
/// every current event is kept by the relist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_dated_event_does_not_make_a_relist_drop_current_events() {
    let far = "9999-12-30T00:00:00Z".parse::<jiff::Timestamp>().unwrap();
    let t = takeover_onto_a_new_disk_after_an_expired_token(
        "future-dated",
        async |c: &kube::Client| {
            let mut uids = vec![create_event(c, "app", "api-0", "Before", "current").await];
            uids.push(
                support::create_event_at(c, "app", "api-0", "Skewed", "from the future", far).await,
            );
            uids
        },
        async |c: &kube::Client| {
            let mut uids = Vec::new();
            for i in 0..5 {
                uids.push(create_event(c, "app", "api-0", "After", &format!("after {i}")).await);
            }
            uids
        },
    )
    .await;
    assert_eq!(t.lost, 0, "a future-dated token dropped current events");
}

/// Settings that make the hang tests take seconds, not minutes.
const FAST_HANG: [(&str, &str); 3] = [
    ("EVRELAY_WATCH_REQUEST_TIMEOUT_SECONDS", "5"),
    ("EVRELAY_WATCH_ESTABLISH_TIMEOUT_SECONDS", "15"),
    ("EVRELAY_DATADOG_SERVICE_CHECK_INTERVAL_SECONDS", "0"),
];

/// Issue: no request can hang. The path to the API server black-holes quiet
/// connections (the open watch is dropped, new connections are accepted and never
/// answered): the watcher gives up each attempt at its deadline, says so, counts
/// it, is seen as not ready, and resumes by itself once the path heals, with
/// nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_watch_is_given_up_and_resumed_when_the_path_heals() {
    let c = Cluster::start("app").await;
    let proxy = TcpProxy::start(ha::api_addr(&c.cp)).await;
    let proxied = c.cp.data_dir("kube").join("proxied.kubeconfig");
    service_account_kubeconfig(&c.cp, &c.admin, Some(&proxy.url()), &proxied).await;
    let mut env = FAST_HANG.to_vec();
    env.push(("EVRELAY_LEADER_ENABLED", "false"));
    let mut a = c.replica_with_kubeconfig("evrelay-0", proxied.to_str().unwrap(), &env);
    wait_for_log(&a, "watch opened", DRAIN).await;
    let mut created = Vec::new();
    for i in 0..5 {
        created
            .push(create_event(&c.admin, "app", "api-0", "Before", &format!("before {i}")).await);
    }
    c.wait_delivered(&created, &a).await;

    let holed = Instant::now();
    proxy.black_hole(Duration::from_secs(2));
    let gave_up = wait_for_log(&a, "opening the watch: no answer within 5s", DRAIN).await;
    // Created while evrelay cannot watch: they wait for the path to heal.
    for i in 0..10 {
        created
            .push(create_event(&c.admin, "app", "api-0", "During", &format!("during {i}")).await);
    }
    // Visible: not ready once the API server has not answered for 30 s.
    let deadline = Instant::now() + DRAIN;
    let readyz = loop {
        let (code, body) = a.admin_get("/readyz").await;
        if code == 503 && body.contains("cannot reach the API server") {
            break body;
        }
        assert!(Instant::now() < deadline, "still ready: {code} {body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (_, metrics) = a.admin_get("/metrics").await;
    assert!(
        metrics.contains("evrelay_apiserver_reachable 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("evrelay_watch_restarts_total 0"),
        "no restart counted:\n{metrics}"
    );

    let healed = Instant::now();
    proxy.restore();
    c.wait_delivered(&created, &a).await;
    let recovered = Instant::now();
    assert!(a.terminate().success());
    let t = tally(&created, &delivered_uids(&c.cp));
    eprintln!(
        "figures: black-holed watch: first deadline {:.1?} after the black hole, recovered {:.1?} after the path healed (unreachable for {:.1?}; readyz: {}) {t:?}",
        gave_up - holed,
        recovered - healed,
        healed - holed,
        readyz.trim(),
    );
    assert_eq!(t.lost, 0);
    assert_eq!(t.duplicated, 0);
    // One clear line per state change, not one per failed request.
    assert_eq!(
        occurrences(&a, "the API server does not answer"),
        1,
        "{}",
        a.log()
    );
    assert!(
        occurrences(&a, "the API server answers again") >= 1,
        "{}",
        a.log()
    );
    assert!(
        !a.log().contains("kube_client"),
        "kube's own error lines leak"
    );
}

/// Issue: no request can hang, with a standby. The leader's watch is black-holed
/// while its lease renewals may go on (they keep their connection busy): it steps
/// down once no watch could be established, releases the Lease, and the standby
/// (on a sound path) takes over; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_watch_hands_over_to_the_standby() {
    let c = Cluster::start("app").await;
    let proxy = TcpProxy::start(ha::api_addr(&c.cp)).await;
    let proxied = c.cp.data_dir("kube").join("proxied.kubeconfig");
    service_account_kubeconfig(&c.cp, &c.admin, Some(&proxy.url()), &proxied).await;
    let mut a = c.replica_with_kubeconfig("evrelay-0", proxied.to_str().unwrap(), &FAST_HANG);
    c.wait_for_holder("evrelay-0", &a).await;
    wait_for_log(&a, "watch opened", DRAIN).await;
    let mut b = c.replica("evrelay-1", &FAST_HANG);
    wait_for_log(&b, "standing by", DRAIN).await;

    let stream = Stream::start(c.admin.clone(), "app", Duration::from_millis(100));
    assert!(eventually(DRAIN, || delivered_uids(&c.cp).len() >= 10).await);
    let holed = Instant::now();
    proxy.black_hole(Duration::from_secs(2));
    c.wait_for_holder("evrelay-1", &b).await;
    let took_over = Instant::now();
    let created = c.finish_stream(stream, &b).await;
    let t = tally(&created, &delivered_uids(&c.cp));
    eprintln!(
        "figures: black-holed leader: standby leads {:.1?} after the black hole (stepped down: {}) {t:?}",
        took_over - holed,
        a.log().contains("stepped down"),
    );
    assert_eq!(t.lost, 0);
    assert!(
        a.is_running(),
        "the black-holed replica stands by, it does not exit"
    );
    assert!(b.terminate().success());
    proxy.restore();
}
