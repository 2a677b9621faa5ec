//! `[opcua]`: off by default, its values checked whether enabled or not,
//! its password files read (relative to the config file) only when enabled.

use crate::{config_dir, minimal_with, refused, write_secret, MINIMAL};
use serialine::config::{Config, ConfigError};

#[test]
fn off_by_default_and_nothing_read() {
    let (_dir, path) = config_dir(MINIMAL);
    let c = Config::load_with_env(&path, false).unwrap();
    assert!(!c.opcua.enabled);
    assert_eq!(c.opcua.listen, "0.0.0.0:4840");
    assert!(c.opcua.anonymous_read && !c.opcua.anonymous_methods);
    assert!(c.opcua_server().unwrap().is_none());
}

#[test]
fn invalid_values_name_their_key() {
    let cases: Vec<(String, &str, &[&str])> = vec![
        (
            minimal_with("[opcua]\nlisten = \"4840\""),
            "opcua.listen",
            &["expected address:port"],
        ),
        (
            minimal_with("[opcua]\ncertificate_file = \"c.der\""),
            "opcua.certificate_file",
            &["set both, or neither"],
        ),
        (
            minimal_with("[opcua]\nanonymous_read = false\ninsecure_endpoint = true"),
            "opcua.insecure_endpoint",
            &["anonymous sessions only"],
        ),
        (
            minimal_with(
                "[[opcua.user]]\nname = \"mes\"\npassword_file = \"a\"\n\
                 [[opcua.user]]\nname = \"mes\"\npassword_file = \"b\"",
            ),
            "opcua.user[1].name",
            &["named twice"],
        ),
    ];
    for (text, key, says) in cases {
        let err = refused(&text, key, says);
        assert!(matches!(err, ConfigError::Invalid(_)), "{key}: {err:?}");
    }
}

#[test]
fn enabled_reads_the_password_files_next_to_the_config() {
    let (_dir, path) = config_dir(&minimal_with(
        "[opcua]\nenabled = true\nlisten = \"127.0.0.1:4841\"\n\
         [[opcua.user]]\nname = \"mes\"\npassword_file = \"opcua-mes.password\"",
    ));
    let c = Config::load_with_env(&path, false).unwrap();
    // Missing: named by its key.
    let err = c.opcua_server().unwrap_err();
    assert!(
        err.to_string().contains("opcua.user[0].password_file"),
        "{err}"
    );

    write_secret(
        &path.with_file_name("opcua-mes.password"),
        b"s3cret\n",
        0o600,
    );
    let server = c.opcua_server().unwrap().expect("enabled");
    assert_eq!(server.listen.to_string(), "127.0.0.1:4841");
    assert_eq!(server.users.len(), 1);
    assert_eq!(server.users[0].name, "mes");
    assert_eq!(
        server.users[0].password, "s3cret",
        "one trailing newline dropped"
    );
    assert!(!format!("{:?}", server.users[0]).contains("s3cret"));
    assert!(server.pki_dir.ends_with("opcua/pki"));
    assert!(server.certificate.is_none(), "made on first start");
}
