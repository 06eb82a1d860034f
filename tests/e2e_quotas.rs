//! OpenShift cluster quotas, end to end: a real API server first without the
//! `quota.openshift.io` API (evrelay asks once, then leaves it alone), then with
//! OpenShift's ClusterResourceQuota CRD installed and quotas whose status is set
//! through the status subresource (no OpenShift controller runs here to fill it).
//! Datadog's fakeintake parses the series; the audit log counts the requests.

mod support;

use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use support::{ControlPlane, eventually};

const WAIT: Duration = Duration::from_secs(60);

/// OpenShift's `clusterresourcequotas.quota.openshift.io` CRD, cut to what the
/// tests use: the group, names, scope and status subresource of the published
/// one (openshift/api, `quota/v1`), its schema left open.
fn crd() -> Value {
    let open = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "clusterresourcequotas.quota.openshift.io"},
        "spec": {
            "group": "quota.openshift.io",
            "scope": "Cluster",
            "names": {
                "kind": "ClusterResourceQuota",
                "listKind": "ClusterResourceQuotaList",
                "plural": "clusterresourcequotas",
                "singular": "clusterresourcequota"
            },
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": open, "status": open
                }}}
            }]
        }
    })
}

fn quota_api(client: &kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("quota.openshift.io", "v1", "ClusterResourceQuota");
    Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk))
}

async fn create_quota(client: &kube::Client, name: &str, status: Value) {
    let api = quota_api(client);
    let quota: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "quota.openshift.io/v1",
        "kind": "ClusterResourceQuota",
        "metadata": {"name": name},
        "spec": {"selector": {"labels": {"matchLabels": {"team": name}}},
                 "quota": {"hard": status["total"]["hard"].clone()}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &quota)
        .await
        .unwrap_or_else(|e| panic!("creating quota {name}: {e}"));
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .unwrap_or_else(|e| panic!("setting the status of quota {name}: {e}"));
}

/// The series fakeintake parsed, as (metric, value, tags, host).
fn series(cp: &ControlPlane) -> Vec<(String, f64, Vec<String>, String)> {
    cp.intake("metrics")
        .iter()
        .map(|s| {
            let host = s["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["type"] == "host")
                .and_then(|r| r["name"].as_str())
                .unwrap_or("")
                .to_owned();
            let tags = s["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect();
            assert_eq!(s["type"], 3, "a gauge: {s}");
            (
                s["metric"].as_str().unwrap().to_owned(),
                s["points"][0]["value"].as_f64().unwrap_or(0.0),
                tags,
                host,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_quotas_reach_datadog_and_a_plain_cluster_is_asked_once() {
    let cp = ControlPlane::start();
    let client = cp.client().await;
    let fast = [
        ("EVRELAY_DATADOG_OPENSHIFT_QUOTA_INTERVAL_SECONDS", "1"),
        ("EVRELAY_DATADOG_SERVICE_CHECK_INTERVAL_SECONDS", "1"),
        ("DD_CLUSTER_NAME", "prod"),
        ("DD_HOSTNAME", "node-z-prod"),
    ];

    // Not OpenShift: one look at the API group, no list, while the leader's
    // other reports (a service check a second) go on.
    let data = cp.data_dir("replica-0");
    let mut evrelay = cp.spawn_evrelay_with(&data, &fast);
    assert!(
        eventually(WAIT, || cp.intake("checks").len() >= 10).await,
        "no service checks; log:\n{}",
        evrelay.own_log()
    );
    assert!(evrelay.terminate().success());
    let asked = cp.audited("quota.openshift.io");
    assert_eq!(
        asked,
        ["/apis/quota.openshift.io"],
        "one detection and nothing else"
    );
    assert_eq!(cp.audited("/oapi"), ["/oapi"], "the legacy API, once");
    assert!(cp.audited("clusterresourcequotas").is_empty());
    assert!(series(&cp).is_empty());

    // OpenShift's API: the CRD, two quotas with the quantities operators write.
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
        )),
    );
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(crd()).unwrap(),
    )
    .await
    .expect("the CRD");
    let established = async || {
        let crd = crds
            .get("clusterresourcequotas.quota.openshift.io")
            .await
            .ok()?;
        let conditions = crd.data["status"]["conditions"].as_array()?.clone();
        conditions
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
            .then_some(())
    };
    let mut ready = false;
    for _ in 0..100 {
        if established().await.is_some() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the CRD was not established");
    create_quota(
        &client,
        "team-a",
        json!({
            "total": {"hard": {"cpu": "2", "memory": "1Gi", "pods": "10"},
                      "used": {"cpu": "500m", "memory": "256Mi", "pods": "3"}},
            "namespaces": [
                {"namespace": "a-1", "status": {"hard": {"cpu": "2", "memory": "1Gi", "pods": "10"},
                                                "used": {"cpu": "200m", "memory": "100Mi", "pods": "1"}}},
                {"namespace": "a-2", "status": {"hard": {"cpu": "2", "memory": "1Gi", "pods": "10"},
                                                "used": {"cpu": "300m", "memory": "156Mi", "pods": "2"}}}
            ]
        }),
    )
    .await;
    create_quota(
        &client,
        "team-b",
        json!({"total": {"hard": {"services.nodeports": "2k"}, "used": {"services.nodeports": "5"}}}),
    )
    .await;

    let mut evrelay = cp.spawn_evrelay_with(&data, &fast);
    // team-a: 3 resources x 3 gauges, and per namespace; team-b: 3 gauges.
    let families = 3 * 3 + 2 * 3 * 3 + 3;
    let distinct = |cp: &ControlPlane| {
        let mut keys: Vec<(String, Vec<String>)> =
            series(cp).into_iter().map(|(m, _, t, _)| (m, t)).collect();
        keys.sort();
        keys.dedup();
        keys.len()
    };
    assert!(
        eventually(WAIT, || distinct(&cp) >= families).await,
        "{} of {families} quota gauges at fakeintake; log:\n{}",
        distinct(&cp),
        evrelay.own_log()
    );
    assert!(evrelay.terminate().success());
    let all = series(&cp);
    assert_eq!(distinct(&cp), families, "no other gauges: {all:?}");
    for family in ["clusterquota.cpu.", "appliedclusterquota.cpu."] {
        for (metric, value, tags, host) in all.iter().filter(|(m, ..)| m.contains(family)) {
            eprintln!("figures: {metric} = {value} host={host} tags={tags:?}");
        }
    }
    let value = |metric: &str, tags: &[&str]| {
        let (_, v, t, host) = all
            .iter()
            .find(|(m, _, t, _)| {
                m == metric
                    && tags.iter().all(|x| t.contains(&(*x).to_owned()))
                    && (tags.iter().any(|x| x.starts_with("kube_namespace:"))
                        || !t.iter().any(|x| x.starts_with("kube_namespace:")))
            })
            .unwrap_or_else(|| panic!("{metric} {tags:?} not at fakeintake"));
        assert_eq!(host, "node-z-prod", "{metric}: evrelay's own host");
        assert!(t.contains(&"kube_cluster_name:prod".to_owned()), "{t:?}");
        *v
    };
    let a = ["clusterquota:team-a"];
    assert_eq!(value("openshift.clusterquota.cpu.limit", &a), 2.0);
    assert_eq!(value("openshift.clusterquota.cpu.used", &a), 0.5);
    assert_eq!(value("openshift.clusterquota.cpu.remaining", &a), 1.5);
    assert_eq!(
        value("openshift.clusterquota.memory.limit", &a),
        1_073_741_824.0
    );
    assert_eq!(
        value("openshift.clusterquota.memory.used", &a),
        268_435_456.0
    );
    assert_eq!(value("openshift.clusterquota.pods.remaining", &a), 7.0);
    let a2 = ["clusterquota:team-a", "kube_namespace:a-2"];
    assert_eq!(value("openshift.appliedclusterquota.cpu.used", &a2), 0.3);
    assert_eq!(
        value("openshift.appliedclusterquota.memory.used", &a2),
        163_577_856.0
    );
    assert_eq!(
        value("openshift.appliedclusterquota.pods.remaining", &a2),
        7.0,
        "a namespace's remaining is the quota's, as the Agent reports it"
    );
    let b = ["clusterquota:team-b"];
    assert_eq!(
        value("openshift.clusterquota.services.nodeports.limit", &b),
        2000.0
    );
    assert_eq!(
        value("openshift.clusterquota.services.nodeports.remaining", &b),
        1995.0
    );
    let lists = cp.audited("clusterresourcequotas");
    assert!(
        !lists.is_empty()
            && lists
                .iter()
                .all(|uri| uri.starts_with("/apis/quota.openshift.io/v1/clusterresourcequotas")),
        "{lists:?}"
    );
}
