//! `permissions:` — who may use the bridge, and who may administer it.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::validate::{FieldError, Validate};

/// Glob patterns over Matrix user IDs: `@alice:example.org`, `*:example.org`, `*`.
///
/// `*` matches any characters, `:` and `/` included. Admins are users too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PermissionsConfig {
    /// Who may administer the bridge (default: nobody).
    pub admins: Vec<String>,
    /// Who may use the bridge (default `["*"]`: everyone).
    pub users: Vec<String>,
}

impl Default for PermissionsConfig {
    fn default() -> Self {
        Self { admins: Vec::new(), users: vec!["*".to_owned()] }
    }
}

/// What a Matrix user may do with the bridge; each level includes the ones below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PermissionLevel {
    /// Not allowed to use the bridge.
    None,
    /// May use the bridge.
    User,
    /// May use and administer the bridge.
    Admin,
}

/// The compiled [`PermissionsConfig`].
#[derive(Clone, Debug)]
pub struct Permissions {
    admins: GlobSet,
    users: GlobSet,
}

impl Permissions {
    /// Compiles the patterns; the error names the first bad one, e.g. `admins[1]`.
    pub fn new(config: &PermissionsConfig) -> Result<Self, FieldError> {
        Ok(Self { admins: compile("admins", &config.admins)?, users: compile("users", &config.users)? })
    }

    /// `user_id`'s level: [`Admin`](PermissionLevel::Admin) when it matches an admin pattern,
    /// else [`User`](PermissionLevel::User) when it matches a user pattern, else
    /// [`None`](PermissionLevel::None).
    pub fn level(&self, user_id: &str) -> PermissionLevel {
        if self.admins.is_match(user_id) {
            PermissionLevel::Admin
        } else if self.users.is_match(user_id) {
            PermissionLevel::User
        } else {
            PermissionLevel::None
        }
    }
}

impl TryFrom<&PermissionsConfig> for Permissions {
    type Error = FieldError;

    fn try_from(config: &PermissionsConfig) -> Result<Self, FieldError> {
        Self::new(config)
    }
}

impl Validate for PermissionsConfig {
    fn validate(&self, errors: &mut Vec<FieldError>) {
        for (list, patterns) in [("admins", &self.admins), ("users", &self.users)] {
            for (index, pattern) in patterns.iter().enumerate() {
                if let Err(error) = glob(list, index, pattern) {
                    errors.push(error);
                }
            }
        }
    }
}

const EXPECTED: &str = "expected a Matrix user ID glob such as @alice:example.org, *:example.org or *";

fn glob(list: &str, index: usize, pattern: &str) -> Result<Glob, FieldError> {
    let field = || format!("{list}[{index}]");
    if !pattern.starts_with(['@', '*', '?', '[', '{']) {
        return Err(FieldError::new(
            field(),
            format!("`{pattern}` cannot match a user ID, which starts with @ ({EXPECTED})"),
        ));
    }
    GlobBuilder::new(pattern)
        .literal_separator(false)
        .build()
        .map_err(|err| FieldError::new(field(), format!("`{pattern}`: {} ({EXPECTED})", err.kind())))
}

fn compile(list: &str, patterns: &[String]) -> Result<GlobSet, FieldError> {
    let mut set = GlobSetBuilder::new();
    for (index, pattern) in patterns.iter().enumerate() {
        set.add(glob(list, index, pattern)?);
    }
    set.build().map_err(|err| FieldError::new(list, format!("{err} ({EXPECTED})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permissions(admins: &[&str], users: &[&str]) -> Permissions {
        let config = PermissionsConfig {
            admins: admins.iter().map(|s| (*s).to_owned()).collect(),
            users: users.iter().map(|s| (*s).to_owned()).collect(),
        };
        Permissions::new(&config).expect("valid globs")
    }

    #[test]
    fn levels() {
        use PermissionLevel::{Admin, None, User};
        let defaults = Permissions::new(&PermissionsConfig::default()).expect("defaults compile");
        let custom = permissions(&["@alice:example.org", "@ops-*:example.org"], &["*:example.org", "@guest:other.org"]);
        let nobody = permissions(&[], &[]);
        let cases = [
            (&defaults, "@anyone:anywhere.org", User),
            (&custom, "@alice:example.org", Admin),
            (&custom, "@ops-bob:example.org", Admin),
            (&custom, "@bob:example.org", User),
            (&custom, "@guest:other.org", User),
            (&custom, "@bob:other.org", None),
            (&custom, "@alice:example.org.evil", None),
            (&custom, "@ALICE:example.org", User),
            (&nobody, "@alice:example.org", None),
        ];
        for (permissions, user, expected) in cases {
            assert_eq!(permissions.level(user), expected, "{user}");
        }
    }

    #[test]
    fn admins_are_users_even_when_not_listed_as_users() {
        let permissions = permissions(&["@root:example.org"], &["@someone:else.org"]);
        let level = permissions.level("@root:example.org");
        assert_eq!(level, PermissionLevel::Admin);
        assert!(level >= PermissionLevel::User);
    }

    #[test]
    fn levels_are_ordered() {
        assert!(PermissionLevel::None < PermissionLevel::User);
        assert!(PermissionLevel::User < PermissionLevel::Admin);
    }

    #[test]
    fn star_crosses_slashes_and_colons() {
        let permissions = permissions(&[], &["@irc_*:example.org"]);
        assert_eq!(permissions.level("@irc_a/b:c:example.org"), PermissionLevel::User);
    }

    #[test]
    fn validation_names_each_bad_pattern() {
        let config = PermissionsConfig {
            admins: vec!["@ok:example.org".into(), "@bad[:example.org".into()],
            users: vec!["example.org".into(), "*".into(), "{@a,@b}:x".into()],
        };
        let mut errors = Vec::new();
        config.validate(&mut errors);
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["admins[1]", "users[0]"]);
        assert!(errors.iter().all(|e| e.message.contains("expected a Matrix user ID glob")));
        assert!(errors[0].message.contains("unclosed"), "{}", errors[0]);
        assert!(errors[1].message.contains("starts with @"), "{}", errors[1]);

        let err = Permissions::try_from(&config).expect_err("bad globs");
        assert_eq!(err.field, "admins[1]");
    }
}
