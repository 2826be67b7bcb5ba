//! The homeserver a test runs on, Synapse or Conduit, behind one interface, and [`homeserver_tests!`] to run one
//! test body on each.
//!
//! [`homeserver_tests!`]: crate::homeserver_tests

use std::{future::Future, path::Path};

use lattice_registration::{AppserviceRegistration, RegistrationTemplate};

use crate::{MatrixUser, Synapse, conduit::Conduit};

/// Which homeserver a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HomeserverKind {
    /// Synapse from `scripts/install.sh synapse`, registrations in `app_service_config_files`.
    Synapse,
    /// Conduit from `$LATTICE_CONDUIT`, registrations sent to its admin room.
    Conduit,
}

impl HomeserverKind {
    /// Why tests on this homeserver cannot run on this machine, or `None` when they can.
    pub fn unavailable(self) -> Option<String> {
        match self {
            // Synapse is installed by the test command; a missing one is an error, not a skip.
            Self::Synapse => None,
            Self::Conduit => Conduit::binary().err(),
        }
    }
}

/// A running homeserver; stopped when dropped.
#[derive(Debug)]
pub enum Homeserver {
    /// A Synapse.
    Synapse(Synapse),
    /// A Conduit.
    Conduit(Conduit),
}

impl Homeserver {
    /// Generates the registration `template` describes (fresh tokens), writes it to `dir/registration.yaml`, and
    /// starts a homeserver of `kind` with it registered; returns the homeserver and the loaded registration.
    pub async fn start_for_appservice(
        kind: HomeserverKind,
        dir: &Path,
        template: &RegistrationTemplate,
    ) -> anyhow::Result<(Homeserver, AppserviceRegistration)> {
        let registration = lattice_registration::generate(template);
        let path = dir.join("registration.yaml");
        lattice_registration::write(&path, &registration)?;
        let registrations = std::slice::from_ref(&path);
        let homeserver = match kind {
            HomeserverKind::Synapse => Homeserver::Synapse(Synapse::start(registrations).await?),
            HomeserverKind::Conduit => Homeserver::Conduit(Conduit::start(registrations).await?),
        };
        Ok((homeserver, AppserviceRegistration::new(registration, &path)?))
    }

    /// Which homeserver this is.
    pub fn kind(&self) -> HomeserverKind {
        match self {
            Self::Synapse(_) => HomeserverKind::Synapse,
            Self::Conduit(_) => HomeserverKind::Conduit,
        }
    }

    /// The client-server API's base URL, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> &str {
        match self {
            Self::Synapse(synapse) => synapse.url(),
            Self::Conduit(conduit) => conduit.url(),
        }
    }

    /// Registers the ordinary user `@localpart:localhost` and returns a client logged in as them.
    pub async fn register_user(&self, localpart: &str) -> anyhow::Result<MatrixUser> {
        match self {
            Self::Synapse(synapse) => synapse.register_user(localpart, false).await,
            Self::Conduit(conduit) => conduit.register_user(localpart).await,
        }
    }
}

/// Runs `case` on a homeserver of `kind`, or prints `skipped: …` and passes where that homeserver is missing.
pub async fn run_on<F, Fut>(kind: HomeserverKind, case: F) -> anyhow::Result<()>
where
    F: FnOnce(HomeserverKind) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    if let Some(reason) = kind.unavailable() {
        eprintln!("skipped: {kind:?}: {reason}");
        return Ok(());
    }
    case(kind).await
}

/// One test per homeserver for each `async fn case(homeserver: HomeserverKind) -> anyhow::Result<()>` named: a
/// module named like the function, holding the tests `synapse` and `conduit` (`portal::talk::conduit`). The Conduit
/// test prints `skipped: …` and passes where Conduit's binary is missing.
#[macro_export]
macro_rules! homeserver_tests {
    ($($case:ident),+ $(,)?) => {$(
        mod $case {
            #[::tokio::test]
            async fn synapse() -> ::anyhow::Result<()> {
                $crate::homeserver::run_on($crate::homeserver::HomeserverKind::Synapse, super::$case).await
            }

            #[::tokio::test]
            async fn conduit() -> ::anyhow::Result<()> {
                $crate::homeserver::run_on($crate::homeserver::HomeserverKind::Conduit, super::$case).await
            }
        }
    )+};
}
