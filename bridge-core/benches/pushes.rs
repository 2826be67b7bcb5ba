//! Throughput of durable pushes into the remote queue (what `BridgeHandle::push` costs a connector): many
//! connections pushing at once, against the baseline of one pusher in the same run, where every push pays its own
//! flush to disk. Concurrent pushes share flushes through group commit.
//!
//! Run: `cargo bench -p lattice-bridge-core --bench pushes` (prints figures; asserts nothing).

use std::time::Instant;

use lattice_bridge_core::store::{Cipher, QueueKind, Store};

const PUSHES: usize = 2_000;

async fn pushes_per_second(store: &Store, pushers: usize) -> f64 {
    let queue = store.queue(QueueKind::Remote);
    let started = Instant::now();
    let tasks: Vec<_> = (0..pushers)
        .map(|pusher| {
            let queue = queue.clone();
            tokio::spawn(async move {
                for n in 0..PUSHES / pushers {
                    let payload = format!(r#"{{"portal":"net/#c{pusher}","n":{n},"body":"a typical line of chat"}}"#);
                    queue.push(&format!("net/#c{pusher}"), &payload).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    PUSHES as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("pushes.db").display());
    let store = Store::connect(&url, 8, Cipher::random()).await.unwrap();
    let baseline = pushes_per_second(&store, 1).await;
    println!("sqlite  1 pusher  (baseline): {baseline:>8.0} durable pushes/s");
    for pushers in [16, 64] {
        let grouped = pushes_per_second(&store, pushers).await;
        println!(
            "sqlite {pushers:>2} pushers:            {grouped:>8.0} durable pushes/s ({:.1}x the baseline)",
            grouped / baseline
        );
    }
}
