//! generate → write → load, as a bridge does on first start.

use std::{fs, os::unix::fs::PermissionsExt as _};

use lattice_registration::{
    AppserviceRegistration, GENERATED_HEADER, RegistrationTemplate, generate, template_regex, write,
};
use url::Url;

fn template(server_name: &str) -> RegistrationTemplate {
    RegistrationTemplate {
        id: "lattice-irc".to_owned(),
        url: Url::parse("http://127.0.0.1:29330").expect("valid url"),
        sender_localpart: "ircbot".to_owned(),
        user_regexes: vec![template_regex("@irc_{network}_{nick}:{server_name}", server_name)],
        alias_regexes: vec![template_regex("#irc_{network}_{channel}:{server_name}", server_name)],
        protocols: vec!["irc".to_owned()],
        receive_ephemeral: true,
    }
}

#[test]
fn generated_registration_survives_write_and_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registration.yaml");
    let generated = generate(&template("example.org"));

    write(&path, &generated).expect("write");
    let loaded = AppserviceRegistration::load(&path).expect("load");

    let on_disk = loaded.registration();
    assert_eq!(on_disk.id, generated.id);
    assert_eq!(on_disk.url, generated.url);
    assert_eq!(on_disk.as_token, generated.as_token);
    assert_eq!(on_disk.hs_token, generated.hs_token);
    assert_eq!(on_disk.sender_localpart, "ircbot");
    assert_eq!(on_disk.rate_limited, Some(false));
    assert_eq!(on_disk.protocols, Some(vec!["irc".to_owned()]));
    assert!(on_disk.receive_ephemeral);

    // (id, in a namespace, exclusively)
    let users = [
        ("@irc_libera_alice:example.org", true, true),
        ("@irc_libera_alice:other.org", false, false),
        ("@alice:example.org", false, false),
    ];
    for (user, in_namespace, exclusive) in users {
        assert_eq!(loaded.is_user_in_namespace(user), in_namespace, "{user}");
        assert_eq!(loaded.is_exclusive_user(user), exclusive, "{user}");
    }
    assert!(loaded.is_exclusive_alias("#irc_libera_rust:example.org"));
    assert!(!loaded.is_alias_in_namespace("#rust:example.org"));
    assert!(loaded.is_interested_in_user("@ircbot:example.org", "example.org"));

    let text = fs::read_to_string(&path).expect("read");
    assert!(text.starts_with(&format!("{GENERATED_HEADER}\n")), "{text}");
    let mode = fs::metadata(&path).expect("metadata").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}
