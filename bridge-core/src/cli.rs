//! The command line every Lattice bridge binary shares: `generate-registration`, `check-config`, `copy-database`
//! and `run` (the default). This is the binaries' edge, so its errors are `anyhow` with context naming the file at fault.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, bail};
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use lattice_config::{Config, FieldError, LogFormat, Validate};
use lattice_registration::{AppserviceRegistration, RegistrationTemplate, template_regex};
use serde::de::DeserializeOwned;

use crate::{Bridge, connector::Connector};

mod copy_database;

pub use self::copy_database::{CopyReport, copy_database};

/// The bridge-specific section of a config file (`bridge:`), as the shared command line needs it.
pub trait BridgeSection: DeserializeOwned + Validate + Default + Send + Sync + 'static {
    /// The protocol ID, which names the third-party protocol in the registration (`irc`, `xmpp`).
    const PROTOCOL: &'static str;

    /// Templates of the ghosts' user IDs, e.g. `@irc_{network}_{nick}:{server_name}`; each becomes an exclusive
    /// user namespace of the registration.
    fn user_templates(&self) -> Vec<String>;

    /// Templates of portal aliases, e.g. `#irc_{network}_{channel}:{server_name}`; each becomes an exclusive alias
    /// namespace.
    fn alias_templates(&self) -> Vec<String>;
}

/// Checks an ID template of a [`BridgeSection`]: it names every placeholder the bridge fills in and ends with
/// `:{server_name}`, so the registration's namespace regex covers exactly the IDs the bridge makes.
pub fn validate_id_template(field: &str, template: &str, placeholders: &[&str], errors: &mut Vec<FieldError>) {
    for placeholder in placeholders {
        if !template.contains(placeholder) {
            errors.push(FieldError::new(field, format!("must contain {placeholder}")));
        }
    }
    if !template.ends_with(":{server_name}") {
        errors.push(FieldError::new(field, "must end with :{server_name}"));
    }
}

/// The version `--version` prints: the release and the commit it was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("LATTICE_COMMIT"), ")");

#[derive(Debug, Parser)]
#[command(version = VERSION, about)]
struct Cli {
    /// The config file.
    #[arg(short, long, global = true, default_value = "config.yaml", env = "LATTICE_CONFIG")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the appservice registration file for the homeserver (fresh random tokens).
    GenerateRegistration {
        /// Where to write it; defaults to `appservice.registration` from the config.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Replace an existing file (the homeserver must then load the new tokens).
        #[arg(long)]
        force: bool,
    },
    /// Load and validate the config (and the registration file, if present), then exit.
    CheckConfig,
    /// Copy the bridge's SQLite store (database.url) into an empty PostgreSQL database; the bridge must be stopped.
    /// Then set database.url to the new URL and start the bridge. The SQLite file is left as it was.
    CopyDatabase {
        /// The PostgreSQL URL (postgres://user:password@host/database), or the environment variable.
        #[arg(long, env = "LATTICE_COPY_DATABASE_TO", hide_env_values = true)]
        to: String,
    },
    /// Run the bridge (the default).
    Run,
}

/// Parses the command line and runs the chosen command; `build` makes the connector from the loaded config.
pub fn main<B, C, F>(build: F) -> ExitCode
where
    B: BridgeSection,
    C: Connector,
    F: FnOnce(&Config<B>) -> anyhow::Result<C>,
{
    // Named after the binary (`lattice-irc`, `lattice-xmpp`) in `--version` and `--help`, not after this crate.
    let name = std::env::args_os()
        .next()
        .and_then(|arg| PathBuf::from(arg).file_name().map(|name| name.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "lattice".into());
    // Once per process: clap takes a name that lives as long as the program.
    let name: &'static str = Box::leak(name.into_boxed_str());
    let matches = Cli::command().name(name).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    match run_cli(cli, build) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run_cli<B, C, F>(cli: Cli, build: F) -> anyhow::Result<()>
where
    B: BridgeSection,
    C: Connector,
    F: FnOnce(&Config<B>) -> anyhow::Result<C>,
{
    let config: Config<B> = Config::load(&cli.config)?;
    match cli.command.unwrap_or(Command::Run) {
        Command::GenerateRegistration { output, force } => {
            let path = output.unwrap_or_else(|| config.appservice.registration.clone());
            if path.exists() && !force {
                bail!(
                    "{} exists; pass --force to replace it (the homeserver must then be restarted with the new file)",
                    path.display()
                );
            }
            lattice_registration::write(&path, &lattice_registration::generate(&registration_template(&config)))
                .with_context(|| format!("writing the registration file {}", path.display()))?;
            println!("wrote {}: add it to the homeserver's app_service_config_files and restart it", path.display());
            Ok(())
        }
        Command::CheckConfig => {
            let registration = &config.appservice.registration;
            if registration.exists() {
                let loaded = AppserviceRegistration::load(registration)?;
                check_registration_matches(&config, &loaded, registration)?;
                println!("{}: OK; {}: OK and consistent", cli.config.display(), registration.display());
            } else {
                println!(
                    "{}: OK; no registration at {} yet (run generate-registration)",
                    cli.config.display(),
                    registration.display()
                );
            }
            Ok(())
        }
        Command::CopyDatabase { to } => {
            let address = SocketAddr::new(config.appservice.bind_address, config.appservice.port);
            if let Err(error) = std::net::TcpListener::bind(address)
                && error.kind() == std::io::ErrorKind::AddrInUse
            {
                bail!(
                    "something listens on {address} (appservice.port): stop the bridge first, so its store holds still"
                )
            }
            let from = config.database.url.resolve()?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let report = runtime.block_on(copy_database(&from, &to, &config.encryption.key_file))?;
            for (table, rows) in &report {
                println!("{table}: {rows} rows");
            }
            println!(
                "copied {} rows of {} tables to PostgreSQL; set database.url in {} to the new URL (keep \
                 encryption.key_file), then start the bridge",
                report.values().sum::<i64>(),
                report.len(),
                cli.config.display()
            );
            Ok(())
        }
        Command::Run => {
            init_tracing(&config)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(async {
                let connector = build(&config)?;
                let bridge = Bridge::new(&config, connector)
                    .await
                    .with_context(|| format!("starting the bridge from {}", cli.config.display()))?;
                let address = SocketAddr::new(config.appservice.bind_address, config.appservice.port);
                bridge.run(address).await?;
                Ok(())
            })
        }
    }
}

/// The registration a config calls for (tokens are drawn by `generate`).
pub fn registration_template<B: BridgeSection>(config: &Config<B>) -> RegistrationTemplate {
    let server_name = &config.homeserver.server_name;
    let regexes = |templates: Vec<String>| -> Vec<String> {
        templates.iter().map(|template| template_regex(template, server_name)).collect()
    };
    RegistrationTemplate {
        id: config.appservice.id.clone(),
        url: config.appservice.public_url(),
        sender_localpart: config.appservice.bot.localpart.clone(),
        user_regexes: regexes(config.bridge.user_templates()),
        alias_regexes: regexes(config.bridge.alias_templates()),
        protocols: vec![B::PROTOCOL.to_owned()],
        receive_ephemeral: true,
    }
}

fn check_registration_matches<B: BridgeSection>(
    config: &Config<B>,
    loaded: &AppserviceRegistration,
    path: &Path,
) -> anyhow::Result<()> {
    let expected = registration_template(config);
    let actual = loaded.registration();
    let mut problems = Vec::new();
    if actual.id != expected.id {
        problems.push(format!("id is `{}` but appservice.id is `{}`", actual.id, expected.id));
    }
    if actual.sender_localpart != expected.sender_localpart {
        problems.push(format!(
            "sender_localpart is `{}` but appservice.bot.localpart is `{}`",
            actual.sender_localpart, expected.sender_localpart
        ));
    }
    // Registrations store the URL without a trailing slash, as Synapse does.
    let expected_url = expected.url.as_str().trim_end_matches('/');
    if actual.url.as_deref().map(|url| url.trim_end_matches('/')) != Some(expected_url) {
        problems.push(format!("url is {:?} but the config's public URL is `{expected_url}`", actual.url));
    }
    let regexes = |namespaces: &[lattice_registration::Namespace]| -> Vec<String> {
        namespaces.iter().map(|namespace| namespace.regex.clone()).collect()
    };
    for regex in &expected.user_regexes {
        if !regexes(&actual.namespaces.users).contains(regex) {
            problems.push(format!("no user namespace `{regex}`"));
        }
    }
    for regex in &expected.alias_regexes {
        if !regexes(&actual.namespaces.aliases).contains(regex) {
            problems.push(format!("no alias namespace `{regex}`"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!(
            "{} does not match the config: {}; regenerate it with generate-registration --force",
            path.display(),
            problems.join("; ")
        )
    }
}

fn init_tracing<B>(config: &Config<B>) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.logging.filter))
        .with_context(|| format!("logging.filter `{}` is not a valid filter", config.logging.filter))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = match config.logging.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    result.map_err(|error| anyhow::anyhow!("cannot install the logger: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_templates_need_their_placeholders_and_the_server_name() {
        let cases: &[(&str, &[&str])] = &[
            ("@irc_{network}_{nick}:{server_name}", &[]),
            ("@irc_{nick}:{server_name}", &["must contain {network}"]),
            ("@irc_{network}_{nick}:example.org", &["must end with :{server_name}"]),
            ("@irc:example.org", &["must contain {network}", "must contain {nick}", "must end with :{server_name}"]),
        ];
        for (template, expected) in cases {
            let mut errors = Vec::new();
            validate_id_template("user_template", template, &["{network}", "{nick}"], &mut errors);
            let messages: Vec<&str> = errors.iter().map(|error| error.message.as_str()).collect();
            assert_eq!(messages, *expected, "{template}");
            assert!(errors.iter().all(|error| error.field == "user_template"));
        }
    }
}
