//! The load generator: creates events in a real API server at a given rate for a
//! given time, over several namespaces and involved objects, with count bumps (an
//! existing event updated with count + 1, as the kubelet does for a repeating
//! event), and records each occurrence's uid, count and creation time.
//!
//! Used by the end-to-end bench (`tests/bench_e2e.rs`) and by `examples/loadgen.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};
use tokio::sync::{Mutex, Semaphore};

/// What to create.
#[derive(Debug, Clone)]
pub struct Load {
    /// Occurrences per second (creations and bumps together).
    pub rate: u32,
    pub duration: Duration,
    /// Namespaces `load-0` … (created if missing).
    pub namespaces: usize,
    /// Involved objects per namespace.
    pub objects: usize,
    /// Every Nth occurrence bumps the count of an event created earlier (0: never).
    pub bump_every: usize,
    /// Requests in flight at most.
    pub concurrency: usize,
}

impl Load {
    /// `n` new events as fast as the API server takes them (64 requests in
    /// flight), over 5 namespaces × 20 pods.
    #[allow(dead_code)] // the benches' shape; examples/loadgen.rs takes its own
    pub fn burst(n: u64) -> Load {
        Load {
            rate: 100_000,
            duration: Duration::from_millis(n * 1000 / 100_000),
            namespaces: 5,
            objects: 20,
            bump_every: 0,
            concurrency: 64,
        }
    }
}

/// One occurrence created: `<uid>.<resourceVersion>` (what evrelay's `evrelay_id`
/// tag carries), its count, and when the API server accepted it (Unix ms).
#[derive(Debug, Clone)]
pub struct Occurrence {
    pub id: String,
    pub count: i32,
    pub created_ms: i64,
}

fn id_of(event: &Event) -> String {
    format!(
        "{}.{}",
        event.metadata.uid.as_deref().unwrap_or(""),
        event.metadata.resource_version.as_deref().unwrap_or("")
    )
}

/// Runs `load` and returns every occurrence, in completion order.
pub async fn run(client: kube::Client, load: &Load) -> Vec<Occurrence> {
    for n in 0..load.namespaces {
        let ns = k8s_openapi::api::core::v1::Namespace {
            metadata: ObjectMeta {
                name: Some(format!("load-{n}")),
                ..Default::default()
            },
            ..Default::default()
        };
        let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await;
    }
    let done = Arc::new(Mutex::new(Vec::new()));
    let created: Arc<Mutex<Vec<Event>>> = Arc::new(Mutex::new(Vec::new()));
    let permits = Arc::new(Semaphore::new(load.concurrency));
    let start = Instant::now();
    let total = (load.rate as u64 * load.duration.as_millis() as u64 / 1000) as usize;
    let tick = Duration::from_millis(10);
    let mut next = 0usize;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    while next < total {
        interval.tick().await;
        // How many should exist by now, at the target rate.
        let due = ((start.elapsed().as_secs_f64() * load.rate as f64) as usize).min(total);
        while next < due {
            let i = next;
            next += 1;
            let permit = permits.clone().acquire_owned().await.unwrap();
            let (client, done, created, load) =
                (client.clone(), done.clone(), created.clone(), load.clone());
            tasks.spawn(async move {
                let bump = load.bump_every > 0 && i % load.bump_every == load.bump_every - 1;
                let occurrence = if bump {
                    let victim = {
                        let list = created.lock().await;
                        (!list.is_empty()).then(|| list[i % list.len()].clone())
                    };
                    match victim {
                        Some(event) => bump_count(&client, event).await,
                        None => create(&client, &load, i, &created).await,
                    }
                } else {
                    create(&client, &load, i, &created).await
                };
                if let Some(o) = occurrence {
                    done.lock().await.push(o);
                }
                drop(permit);
            });
        }
    }
    while tasks.join_next().await.is_some() {}
    let mut done = done.lock().await;
    std::mem::take(&mut *done)
}

async fn create(
    client: &kube::Client,
    load: &Load,
    i: usize,
    created: &Mutex<Vec<Event>>,
) -> Option<Occurrence> {
    let ns = format!("load-{}", i % load.namespaces);
    let pod = format!("app-{}", (i / load.namespaces) % load.objects);
    let now = Time(jiff::Timestamp::now());
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{pod}.")),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            kind: Some("Pod".into()),
            name: Some(pod.clone()),
            namespace: Some(ns.clone()),
            uid: Some(format!("uid-{ns}-{pod}")),
            ..Default::default()
        },
        reason: Some(
            if i.is_multiple_of(7) {
                "BackOff"
            } else {
                "Pulled"
            }
            .into(),
        ),
        message: Some(format!(
            "Load event {i}: container image \"registry.example/app:{}\" already present on machine",
            i % 100
        )),
        type_: Some(
            if i.is_multiple_of(7) {
                "Warning"
            } else {
                "Normal"
            }
            .into(),
        ),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(format!("node-{}", i % 10)),
        }),
        ..Default::default()
    };
    let made = Api::<Event>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &event)
        .await
        .ok()?;
    let occurrence = Occurrence {
        id: id_of(&made),
        count: 1,
        created_ms: jiff::Timestamp::now().as_millisecond(),
    };
    let mut list = created.lock().await;
    if list.len() < 10_000 {
        list.push(made);
    }
    Some(occurrence)
}

/// An existing event seen again: count + 1, a new last timestamp.
async fn bump_count(client: &kube::Client, event: Event) -> Option<Occurrence> {
    let ns = event.metadata.namespace.clone()?;
    let name = event.metadata.name.clone()?;
    let api = Api::<Event>::namespaced(client.clone(), &ns);
    // Read the current version (other bumps may have raced), then replace.
    let mut current = api.get(&name).await.ok()?;
    let count = current.count.unwrap_or(1) + 1;
    current.count = Some(count);
    current.last_timestamp = Some(Time(jiff::Timestamp::now()));
    let made = api
        .replace(&name, &PostParams::default(), &current)
        .await
        .ok()?;
    Some(Occurrence {
        id: id_of(&made),
        count,
        created_ms: jiff::Timestamp::now().as_millisecond(),
    })
}
