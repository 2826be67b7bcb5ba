//! The store's disk fills up under traffic: a 4 MiB tmpfs holds the SQLite store, a file fills it, and transactions
//! keep coming. The bridge stops acknowledging (the homeserver keeps the transactions and resends them), loses
//! nothing, and takes the held-back transactions once space returns. Needs root to mount the tmpfs; skipped with a
//! message otherwise.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use lattice_bridge_core::store::{Cipher, Store};
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{TestBridge, bodies, message, registration};

/// A tmpfs mounted on a temporary directory, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` (after saying why) where a tmpfs cannot be mounted: not root, or no `mount`.
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|status| status.success());
        if !mounted {
            eprintln!("skipped: cannot mount a tmpfs (the disk-full test needs root)");
            return None;
        }
        Some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the disk is full; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let _ = file.write_all(&block[..1]);
        while file.write_all(&[0]).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

#[tokio::test]
async fn a_full_disk_stops_acknowledgements_and_nothing_is_lost_when_space_returns() {
    let Some(disk) = SmallDisk::mount("4m") else { return };
    let url = format!("sqlite://{}", disk.path().join("lattice.db").display());
    let store = Store::connect(&url, 4, Cipher::random()).await.unwrap();
    let bridge = TestBridge::start(store, registration()).await;
    // Each transaction larger than the last: freed pages and a checkpointed WAL are reused for writes of a size
    // seen before, so same-sized transactions could go on fitting a full disk while the queue drains.
    let transaction = |n: usize| {
        let padding = "x".repeat((n + 1) * 64 * 1024);
        json!({"events": [message("!r:localhost", &format!("$e{n}"), &format!("{n} {padding}"))]})
    };

    assert_eq!(bridge.put_transaction("t0", &transaction(0)).await.status(), StatusCode::OK);
    let filler = disk.fill();
    // The homeserver's side: a transaction not acknowledged is sent again, and later ones wait behind it.
    let mut next = 1;
    let mut refused = 0;
    while refused < 3 && next < 200 {
        let response = bridge.put_transaction(&format!("t{next}"), &transaction(next)).await;
        match response.status() {
            StatusCode::OK => next += 1,
            status => {
                let error = response.text().await.unwrap();
                assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "a full disk is a store failure: {error}");
                assert!(error.contains("full"), "{error}");
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 3, "the disk never filled up: {next} transactions were taken");
    let health = bridge.http.get(format!("{}/health/live", bridge.url)).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "the bridge still answers with its disk full");

    std::fs::remove_file(filler).unwrap();
    let freed = Instant::now();
    let taken = loop {
        let status = bridge.put_transaction(&format!("t{next}"), &transaction(next)).await.status();
        if status == StatusCode::OK {
            break freed.elapsed();
        }
        assert!(freed.elapsed() < Duration::from_secs(30), "still refused 30 s after space returned: {status}");
        // The homeserver's retry backoff, shortened.
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for later in next + 1..next + 3 {
        assert_eq!(bridge.put_transaction(&format!("t{later}"), &transaction(later)).await.status(), StatusCode::OK);
    }
    let last = next + 2;
    let numbers_of = |events: Vec<lattice_bridge_core::event::MatrixEvent>| -> Vec<usize> {
        bodies(&events).iter().map(|body| body.split(' ').next().unwrap().parse().unwrap()).collect()
    };
    let mut count = last + 1;
    let numbers = loop {
        // Doubles count too: wait for more until the last message is among them.
        let numbers = numbers_of(bridge.recorder.wait_for(count, Duration::from_secs(30)).await);
        if numbers.contains(&last) {
            break numbers;
        }
        count = numbers.len() + 1;
    };
    let mut first_seen: Vec<usize> = Vec::new();
    for number in &numbers {
        if !first_seen.contains(number) {
            first_seen.push(*number);
        }
    }
    assert_eq!(first_seen, (0..=last).collect::<Vec<_>>(), "every message, in order");
    println!(
        "disk full after {next} transactions; taken again {taken:?} after space returned; {} delivered, {} doubled",
        numbers.len(),
        numbers.len() - first_seen.len()
    );
    bridge.stop().await;
}
