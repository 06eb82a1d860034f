//! Creates Kubernetes events at a given rate, for load tests against any cluster
//! (KUBECONFIG), and writes one CSV line per occurrence: `id,count,created_ms`
//! (`id` is `<uid>.<resourceVersion>`, what evrelay's `evrelay_id` tag carries).
//!
//!     cargo run --release --example loadgen -- --rate 500 --seconds 300 > created.csv

#[path = "../tests/support/load.rs"]
mod load;

use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Occurrences per second.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Namespaces load-0 … (created if missing).
    #[arg(long, default_value_t = 5)]
    namespaces: usize,
    /// Involved objects per namespace.
    #[arg(long, default_value_t = 20)]
    objects: usize,
    /// Every Nth occurrence bumps the count of an earlier event (0: never).
    #[arg(long, default_value_t = 10)]
    bump_every: usize,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = kube::Client::try_default().await?;
    let load = load::Load {
        rate: args.rate,
        duration: Duration::from_secs(args.seconds),
        namespaces: args.namespaces,
        objects: args.objects,
        bump_every: args.bump_every,
        concurrency: args.concurrency,
    };
    let started = std::time::Instant::now();
    let done = load::run(client, &load).await;
    println!("id,count,created_ms");
    for o in &done {
        println!("{},{},{}", o.id, o.count, o.created_ms);
    }
    eprintln!(
        "loadgen: {} occurrences in {:.1?} ({:.0}/s)",
        done.len(),
        started.elapsed(),
        done.len() as f64 / started.elapsed().as_secs_f64()
    );
    Ok(())
}
