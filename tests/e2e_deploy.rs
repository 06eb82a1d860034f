//! The deployment files, tested: the kustomize base and overlays and the Helm chart
//! render the same objects, and the real API server accepts every one of them
//! (server-side dry run). That the RBAC is enough, and refuses the rest, is shown
//! by `e2e_failover.rs`, which runs evrelay with `deploy/base/rbac.yaml`'s token.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use kube::api::{Api, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use serde_json::Value;

use support::{ControlPlane, create_namespace};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a renderer and parses its YAML stream.
fn render(program: &str, args: &[&str]) -> Vec<Value> {
    let output = Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("utf-8");
    serde_saphyr::from_multiple::<Value>(&text)
        .expect("rendered YAML parses")
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// Objects by "Kind namespace/name".
fn by_key(objects: &[Value]) -> BTreeMap<String, Value> {
    objects
        .iter()
        .map(|o| {
            let key = format!(
                "{} {}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("?"),
            );
            (key, o.clone())
        })
        .collect()
}

fn assert_equivalent(kustomize: &[Value], helm: &[Value], what: &str) {
    let (k, h) = (by_key(kustomize), by_key(helm));
    assert_eq!(
        k.keys().collect::<Vec<_>>(),
        h.keys().collect::<Vec<_>>(),
        "{what}: different objects"
    );
    for (key, object) in &k {
        assert_eq!(
            object, &h[key],
            "{what}: {key} differs between kustomize and helm"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_render_alike_and_the_api_server_accepts_them() {
    let cp = ControlPlane::start();
    let (kustomize, helm) = (cp.var("EVRELAY_KUSTOMIZE"), cp.var("EVRELAY_HELM"));
    let chart = "deploy/helm/evrelay";

    // The chart passes Helm's own checks.
    let lint = Command::new(helm)
        .args(["lint", "--strict", chart])
        .current_dir(repo())
        .output()
        .expect("helm lint");
    assert!(
        lint.status.success(),
        "helm lint: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    // Kustomize base and overlays against the chart with the matching values.
    let base = render(kustomize, &["build", "deploy/base"]);
    let ha = render(kustomize, &["build", "deploy/overlays/ha"]);
    let takeover = render(
        kustomize,
        &["build", "deploy/overlays/cluster-agent-takeover"],
    );
    let helm_base = render(
        helm,
        &["template", "evrelay", chart, "--namespace", "evrelay"],
    );
    let helm_ha = render(
        helm,
        &[
            "template",
            "evrelay",
            chart,
            "--namespace",
            "evrelay",
            "--set",
            "replicas=2",
        ],
    );
    let helm_takeover = render(
        helm,
        &[
            "template",
            "evrelay",
            chart,
            "--namespace",
            "datadog",
            "--set",
            "replicas=2",
            "--set",
            "leader.resumeFromConfigMap=datadogtoken",
        ],
    );
    assert_equivalent(&base, &helm_base, "base");
    assert_equivalent(&ha, &helm_ha, "ha");
    assert_equivalent(&takeover, &helm_takeover, "cluster-agent-takeover");
    eprintln!(
        "rendered {} objects; kustomize and helm agree on base, ha and takeover",
        base.len()
    );

    // What the issue asks of the StatefulSet, read from the rendered object.
    let sts = &by_key(&base)["StatefulSet evrelay/evrelay"];
    let pod = &sts["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(sts["spec"]["replicas"], 1);
    assert_eq!(
        by_key(&ha)["StatefulSet evrelay/evrelay"]["spec"]["replicas"],
        2
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0],
        "ALL"
    );
    assert_eq!(container["startupProbe"]["httpGet"]["path"], "/startupz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    // Only the monitoring namespace reaches the pods, on the admin port.
    let policy = &by_key(&base)["NetworkPolicy evrelay/evrelay"]["spec"];
    assert_eq!(policy["policyTypes"][0], "Ingress");
    assert_eq!(
        policy["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    assert_eq!(policy["ingress"][0]["ports"][0]["port"], 8080);
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let env = |name: &str| {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {}", container["env"]))
            .clone()
    };
    assert_eq!(
        env("POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    // evrelay's host is the Cluster Agent's: the node it runs on.
    assert_eq!(
        env("NODE_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(
        env("DD_API_KEY")["valueFrom"]["secretKeyRef"]["name"],
        "evrelay-datadog"
    );
    assert!(
        sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
            .is_string()
    );
    let config = by_key(&takeover)["ConfigMap datadog/evrelay-config"]["data"]["evrelay.yaml"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        config.contains("resume_from_configmap: datadogtoken"),
        "{config}"
    );

    // evrelay itself accepts the configuration the manifests give it.
    for (what, objects) in [("base", &base), ("takeover", &takeover)] {
        let cm = objects.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
        let file = cp.data_dir("config").join(format!("{what}.yaml"));
        std::fs::write(&file, cm["data"]["evrelay.yaml"].as_str().unwrap()).unwrap();
        let output = cp
            .evrelay(&cp.data_dir("config"))
            .args(["check-config", "--config"])
            .arg(&file)
            .output()
            .expect("evrelay check-config");
        assert!(
            output.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    // The real API server accepts every object (server-side dry run: validated and
    // admitted, not stored).
    let client = cp.client().await;
    create_namespace(&client, "evrelay").await;
    create_namespace(&client, "datadog").await;
    let mut accepted = 0;
    for object in base.iter().chain(&ha).chain(&takeover) {
        let gvk = GroupVersionKind::try_from(
            &serde_json::from_value::<kube::core::TypeMeta>(object.clone()).unwrap(),
        )
        .unwrap();
        let (resource, caps) = kube::discovery::pinned_kind(&client, &gvk)
            .await
            .unwrap_or_else(|e| panic!("discovering {gvk:?}: {e}"));
        let dynamic: DynamicObject = serde_json::from_value(object.clone()).unwrap();
        let api: Api<DynamicObject> = match caps.scope {
            kube::discovery::Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                dynamic.metadata.namespace.as_deref().unwrap(),
                &resource,
            ),
            kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        let pp = PostParams {
            dry_run: true,
            ..Default::default()
        };
        api.create(&pp, &dynamic).await.unwrap_or_else(|e| {
            panic!(
                "the API server refused {} {:?}: {e}",
                gvk.kind, dynamic.metadata.name
            )
        });
        accepted += 1;
    }
    eprintln!("figures: deploy dry-run accepted={accepted}");
    assert_eq!(accepted, base.len() + ha.len() + takeover.len());
}
