//! Issue 13 §6.2: `check_files` (and so `check-config`) loads the TLS
//! files: certificates that parse and are within their validity period, a
//! key file holding the client certificate's key.

use crate::{check_config, config_dir, write_keys, write_secret, GOOD_SECRET, KEYED};
use serialine::config::Config;
use std::fs;
use std::path::PathBuf;
use tempfile::TempDir;

struct TestPki {
    _dir: TempDir,
    config: PathBuf,
}

fn pem_ca(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

/// (certificate, key) signed by `issuer`, valid over `years` if given.
fn pem_leaf(
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    years: Option<(i32, i32)>,
) -> (String, String) {
    use rcgen::{CertificateParams, DnType, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "serialine-plant-x");
    if let Some((from, to)) = years {
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(to, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A config with a line secret and `[mqtt.tls]` naming ca.pem, client.pem,
/// client.key, written with the given contents.
fn tls_config(ca: &str, cert: &str, key: &str) -> TestPki {
    let (dir, path) = config_dir(&format!(
        "{KEYED}\n[mqtt.tls]\nca_file = \"ca.pem\"\n\
         client_cert_file = \"client.pem\"\nclient_key_file = \"client.key\"\n"
    ));
    write_secret(&path.with_file_name("line-1.secret"), GOOD_SECRET, 0o600);
    write_keys(&path);
    fs::write(path.with_file_name("ca.pem"), ca).unwrap();
    fs::write(path.with_file_name("client.pem"), cert).unwrap();
    write_secret(&path.with_file_name("client.key"), key.as_bytes(), 0o600);
    TestPki {
        _dir: dir,
        config: path,
    }
}

/// The file problems as "key: message".
fn tls_issues(t: &TestPki) -> Vec<(String, String)> {
    let c = Config::load_with_env(&t.config, false).unwrap();
    match c.check_files() {
        Ok(w) => {
            assert!(w.is_empty(), "{w:?}");
            vec![]
        }
        Err(e) => e
            .issues()
            .iter()
            .map(|i| (i.key.clone().unwrap_or_default(), i.message.clone()))
            .collect(),
    }
}

#[test]
fn check_files_accepts_a_matching_tls_certificate_and_key() {
    let (ca, issuer) = pem_ca("plant CA");
    let (cert, key) = pem_leaf(&issuer, None);
    assert_eq!(tls_issues(&tls_config(&ca, &cert, &key)), vec![]);
}

/// Each set of files is refused with one problem, naming the key of the
/// file at fault and what is wrong with it.
#[test]
fn check_files_names_the_tls_file_at_fault() {
    let (ca, issuer) = pem_ca("plant CA");
    let (cert, key) = pem_leaf(&issuer, None);
    let (_, other_key) = pem_leaf(&issuer, None);
    let (expired, expired_key) = pem_leaf(&issuer, Some((2020, 2021)));
    let (future, future_key) = pem_leaf(&issuer, Some((2100, 2110)));
    let cases = [
        // (ca, cert, key), the key named, what the message says
        (
            (ca.as_str(), cert.as_str(), cert.as_str()),
            "mqtt.tls.client_key_file",
            "{dir}/client.key: holds a certificate, not a private key",
        ),
        (
            (ca.as_str(), cert.as_str(), other_key.as_str()),
            "mqtt.tls.client_key_file",
            "does not match the public key of the certificate",
        ),
        (
            (ca.as_str(), expired.as_str(), expired_key.as_str()),
            "mqtt.tls.client_cert_file",
            "expired on",
        ),
        (
            (ca.as_str(), future.as_str(), future_key.as_str()),
            "mqtt.tls.client_cert_file",
            "not valid yet",
        ),
        (
            ("not a certificate\n", cert.as_str(), key.as_str()),
            "mqtt.tls.ca_file",
            "holds no PEM certificate",
        ),
    ];
    for ((ca, cert, key), want_key, says) in cases {
        let t = tls_config(ca, cert, key);
        let dir = t.config.parent().unwrap().display().to_string();
        let says = says.replace("{dir}", &dir);
        let issues = tls_issues(&t);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].0, want_key, "{issues:?}");
        assert!(issues[0].1.contains(&says), "{says:?} not in {issues:?}");
    }
}

#[test]
fn cli_check_config_fails_on_a_key_file_holding_a_certificate() {
    let (ca, issuer) = pem_ca("plant CA");
    let (cert, _) = pem_leaf(&issuer, None);
    let t = tls_config(&ca, &cert, &cert);
    let run = check_config(&t.config);
    let stderr = &run.stderr;
    assert_ne!(run.code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: key mqtt.tls.client_key_file: ",
            t.config.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("holds a certificate, not a private key"),
        "{stderr}"
    );
}
