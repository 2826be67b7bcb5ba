//! Matrix application-service registration files for the Lattice bridges.
//!
//! A registration file tells the homeserver how to reach a bridge and which users and room
//! aliases it owns ([Application Service API: Registration][spec]). This crate
//!
//! - generates one from a [`RegistrationTemplate`] with fresh random tokens ([`generate`]),
//! - turns ID templates such as `@irc_{network}_{nick}:{server_name}` into namespace regexes
//!   ([`template_regex`]),
//! - writes it atomically with owner-only permissions ([`write()`]),
//! - loads and validates it, then answers namespace questions exactly as Synapse does
//!   ([`AppserviceRegistration`]).
//!
//! The on-disk type is ruma's [`Registration`].
//!
//! [spec]: https://spec.matrix.org/latest/application-service-api/#registration

#![warn(missing_docs, unreachable_pub)]

mod error;
mod file;
mod generate;
mod loaded;
mod localpart;
mod template;

pub use ruma::api::appservice::{Namespace, Namespaces, Registration, RegistrationInit};

pub use crate::{
    error::{Error, Result},
    file::{GENERATED_HEADER, write},
    generate::{RegistrationTemplate, TOKEN_BYTES, generate},
    loaded::AppserviceRegistration,
    template::template_regex,
};
