//! Resolution of relative paths against the configuration file's directory.

use std::path::{Path, PathBuf};

/// The directory relative paths in the configuration file at `config_path` are resolved against:
/// its parent directory, made absolute against the working directory.
pub(crate) fn base_dir(config_path: &Path) -> PathBuf {
    let parent = match config_path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::path::absolute(parent).unwrap_or_else(|_| parent.to_owned())
}

/// `path` if it is absolute or empty (so validation still sees it as empty), otherwise
/// `base_dir/path`.
pub(crate) fn resolve(base_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() || path.as_os_str().is_empty() { path.to_owned() } else { base_dir.join(path) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_paths_only() {
        let base = Path::new("/etc/lattice");
        let cases = [
            ("registration.yaml", "/etc/lattice/registration.yaml"),
            ("keys/lattice.key", "/etc/lattice/keys/lattice.key"),
            ("../shared.key", "/etc/lattice/../shared.key"),
            ("/var/lib/lattice.key", "/var/lib/lattice.key"),
            ("", ""),
        ];
        for (path, expected) in cases {
            assert_eq!(resolve(base, Path::new(path)), Path::new(expected), "{path}");
        }
    }

    #[test]
    fn base_dir_is_absolute_parent() {
        let cwd = std::env::current_dir().expect("cwd");
        let cases = [
            ("/etc/lattice/config.yaml", PathBuf::from("/etc/lattice")),
            ("config.yaml", cwd.clone()),
            ("conf/config.yaml", cwd.join("conf")),
        ];
        for (path, expected) in cases {
            assert_eq!(base_dir(Path::new(path)), expected, "{path}");
        }
    }
}
