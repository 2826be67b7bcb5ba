//! A test server's own folder, removed when the test ends unless `LATTICE_KEEP_TEST_STATE` is set.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tempfile::TempDir;

use crate::test_state_dir;

/// A fresh folder in [`test_state_dir`](crate::test_state_dir) for one server's config, data
/// and log. Dropping it removes it, unless the env var `LATTICE_KEEP_TEST_STATE` is set.
#[derive(Debug)]
pub struct StateDir {
    dir: TempDir,
}

impl StateDir {
    /// Makes a new folder whose name starts with `prefix` (e.g. `synapse-`).
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let parent = test_state_dir();
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("creating the test state dir {}", parent.display()))?;
        let mut dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&parent)
            .with_context(|| format!("creating a folder in {}", parent.display()))?;
        if std::env::var_os("LATTICE_KEEP_TEST_STATE").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping test state in {}", dir.path().display());
        }
        Ok(Self { dir })
    }

    /// Keeps the folder after all, e.g. for the log a failed start names.
    pub fn keep(&mut self) {
        self.dir.disable_cleanup(true);
    }

    /// The folder's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The path of `name` inside the folder.
    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}
