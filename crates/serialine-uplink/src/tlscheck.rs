//! Checks the TLS files before they are used, so that a wrong file is
//! named by `check-config` (and logged at start) instead of showing up as a
//! handshake that fails forever: the CA and client certificates must parse
//! and be within their validity period, the key file must hold a private
//! key (not a certificate), and that key must be the certificate's.

use crate::config::TlsPaths;
use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Which of the TLS files a problem is with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    Ca,
    ClientCert,
    ClientKey,
}

/// One problem with a TLS file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFileProblem {
    pub file: TlsFile,
    pub message: String,
}

/// Checks the content of every TLS file at time `now`. Files that cannot be
/// read are skipped: reporting those is the caller's business (it names
/// missing and unreadable files already).
pub fn check_tls_files(paths: &TlsPaths, now: SystemTime) -> Vec<TlsFileProblem> {
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let mut out = Vec::new();
    let mut fail = |file, message: String| out.push(TlsFileProblem { file, message });

    if let Some(bytes) = read(&paths.ca) {
        match certificates(&bytes) {
            Err(e) => fail(TlsFile::Ca, format!("{}: {e}", paths.ca.display())),
            Ok((certs, _)) if certs.is_empty() => fail(
                TlsFile::Ca,
                format!(
                    "{} holds no PEM certificate; expected the CA certificate(s) that sign the broker's certificate (-----BEGIN CERTIFICATE-----)",
                    paths.ca.display()
                ),
            ),
            Ok((certs, _)) => {
                for (i, c) in certs.iter().enumerate() {
                    if let Err(m) = check_cert(c, now) {
                        fail(
                            TlsFile::Ca,
                            format!("{} certificate #{}: {m}", paths.ca.display(), i + 1),
                        );
                    }
                }
            }
        }
    }

    let (Some(cert_path), Some(key_path)) = (&paths.client_cert, &paths.client_key) else {
        return out;
    };
    let mut leaf = None;
    if let Some(bytes) = read(cert_path) {
        match certificates(&bytes) {
            Err(e) => fail(TlsFile::ClientCert, format!("{}: {e}", cert_path.display())),
            Ok((certs, has_key)) if certs.is_empty() => fail(
                TlsFile::ClientCert,
                format!(
                    "{} holds {}; expected the client certificate (-----BEGIN CERTIFICATE-----)",
                    cert_path.display(),
                    if has_key {
                        "a private key, not a certificate"
                    } else {
                        "no PEM certificate"
                    }
                ),
            ),
            Ok((certs, _)) => {
                if let Err(m) = check_cert(&certs[0], now) {
                    fail(TlsFile::ClientCert, format!("{}: {m}", cert_path.display()));
                }
                leaf = Some(certs[0].clone());
            }
        }
    }
    if let Some(bytes) = read(key_path) {
        match private_key(&bytes) {
            Err(m) => fail(TlsFile::ClientKey, format!("{}: {m}", key_path.display())),
            Ok(key) => {
                if let Some(cert) = leaf {
                    if let Err(m) = keys_match(cert, key) {
                        fail(
                            TlsFile::ClientKey,
                            format!(
                                "the key in {} {m} in {}",
                                key_path.display(),
                                cert_path.display()
                            ),
                        );
                    }
                }
            }
        }
    }
    out
}

fn read(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// The certificates in a PEM file, and whether it also holds a private key.
fn certificates(pem: &[u8]) -> Result<(Vec<CertificateDer<'static>>, bool), String> {
    let mut certs = Vec::new();
    let mut has_key = false;
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        match item.map_err(|e| format!("not valid PEM ({e})"))? {
            (SectionKind::Certificate, der) => certs.push(CertificateDer::from(der)),
            (
                SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey,
                _,
            ) => has_key = true,
            _ => {}
        }
    }
    Ok((certs, has_key))
}

fn check_cert(cert: &CertificateDer<'_>, now: i64) -> Result<(), String> {
    let (_, x) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| format!("does not parse as an X.509 certificate ({e})"))?;
    let v = x.validity();
    let subject = x.subject().to_string();
    if v.not_before.timestamp() > now {
        return Err(format!(
            "certificate {subject:?} is not valid yet: valid from {} (check the clock, or the certificate)",
            v.not_before
        ));
    }
    if v.not_after.timestamp() < now {
        return Err(format!(
            "certificate {subject:?} expired on {}; expected a certificate within its validity period",
            v.not_after
        ));
    }
    Ok(())
}

fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    let mut has_cert = false;
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        match item.map_err(|e| format!("not valid PEM ({e})"))? {
            (SectionKind::PrivateKey, der) => return Ok(PrivateKeyDer::Pkcs8(der.into())),
            (SectionKind::RsaPrivateKey, der) => return Ok(PrivateKeyDer::Pkcs1(der.into())),
            (SectionKind::EcPrivateKey, der) => return Ok(PrivateKeyDer::Sec1(der.into())),
            (SectionKind::Certificate, _) => has_cert = true,
            _ => {}
        }
    }
    Err(if has_cert {
        "holds a certificate, not a private key; expected the client certificate's private key (-----BEGIN PRIVATE KEY-----)".into()
    } else {
        "holds no PEM private key; expected the client certificate's private key (-----BEGIN PRIVATE KEY-----)".into()
    })
}

/// `Err` completes "the key in K ... in C".
fn keys_match(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> Result<(), String> {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider.key_provider.load_private_key(key).map_err(|e| {
        format!("cannot be used ({e}); it should be the private key of the certificate")
    })?;
    match rustls::sign::CertifiedKey::new(vec![cert], signing).keys_match() {
        Ok(()) => Ok(()),
        // The provider cannot tell for this key type: nothing to report.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(rustls::Error::InconsistentKeys(_)) => {
            Err("does not match the public key of the certificate".into())
        }
        Err(e) => Err(format!("cannot be checked against the certificate ({e})")),
    }
}
