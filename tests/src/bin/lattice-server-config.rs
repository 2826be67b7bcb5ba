//! `lattice-server-config`: writes the config of a server the tests run, for `scripts/demo.sh`, so the demo runs
//! the very configs the tests do.
//!
//! ```text
//! lattice-server-config inspircd --dir DIR --port PORT --link-port PORT --link-password PASSWORD
//! lattice-server-config atheme --dir DIR --link-port PORT --link-password PASSWORD
//! lattice-server-config prosody --dir DIR --c2s-port PORT --component-port PORT --component DOMAIN --secret SECRET
//! ```
//!
//! It writes `inspircd.conf`, `atheme.conf` or `prosody.cfg.lua` (and Prosody's `data` and `certs` folders) in DIR.

use std::{collections::HashMap, path::PathBuf};

use anyhow::{Context as _, bail};
use lattice_e2e::{ircd, prosody};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let server = args.next().context("which server: inspircd, atheme or prosody")?;
    let mut options = HashMap::new();
    while let Some(name) = args.next() {
        let key = name.strip_prefix("--").with_context(|| format!("expected an --option, got {name:?}"))?;
        let value = args.next().with_context(|| format!("{name} needs a value"))?;
        options.insert(key.to_owned(), value);
    }
    let option = |key: &str| options.get(key).map(String::as_str).with_context(|| format!("missing --{key}"));
    let port = |key: &str| option(key)?.parse::<u16>().with_context(|| format!("--{key} is not a port"));
    let dir = PathBuf::from(option("dir")?);
    let (file, config) = match server.as_str() {
        "inspircd" => (
            "inspircd.conf",
            ircd::inspircd_hub_config(&dir, port("port")?, port("link-port")?, option("link-password")?, ""),
        ),
        "atheme" => ("atheme.conf", ircd::atheme_config(port("link-port")?, option("link-password")?)),
        "prosody" => {
            for folder in ["data", "certs"] {
                std::fs::create_dir_all(dir.join(folder)).with_context(|| format!("creating {folder} in {dir:?}"))?;
            }
            let config = prosody::prosody_config(
                &dir,
                port("c2s-port")?,
                port("component-port")?,
                &[option("component")?],
                option("secret")?,
            );
            ("prosody.cfg.lua", config)
        }
        other => bail!("unknown server {other:?}: inspircd, atheme or prosody"),
    };
    let path = dir.join(file);
    std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))
}
