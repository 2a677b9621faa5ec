//! MQTT over TLS with client certificates, against Mosquitto configured for
//! mutual TLS. The certificates (a CA, the broker's, a client's) are made by
//! the test with rcgen. Mosquitto must be installed (`.ci/run` installs it);
//! where it is not, the test says so and passes without running.

mod common;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serialine_uplink::TlsPaths;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn mosquitto() -> Option<PathBuf> {
    [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    rogue_cert: PathBuf,
    rogue_key: PathBuf,
}

fn write(dir: &Path, name: &str, pem: String) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, pem).unwrap();
    p
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

fn leaf(issuer: &Issuer<'static, KeyPair>, names: &[&str], cn: &str) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn pki(dir: &Path) -> Pki {
    let (ca_pem, issuer) = ca("serialine test CA");
    let (server, server_key) = leaf(&issuer, &["127.0.0.1", "localhost"], "broker");
    let (client, client_key) = leaf(&issuer, &[], "serialine-line-1");
    let (_, rogue_issuer) = ca("not the plant's CA");
    let (rogue, rogue_key) = leaf(&rogue_issuer, &[], "intruder");
    Pki {
        ca: write(dir, "ca.pem", ca_pem),
        server_cert: write(dir, "server.pem", server),
        server_key: write(dir, "server.key", server_key),
        client_cert: write(dir, "client.pem", client),
        client_key: write(dir, "client.key", client_key),
        rogue_cert: write(dir, "rogue.pem", rogue),
        rogue_key: write(dir, "rogue.key", rogue_key),
    }
}

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_tls_broker(bin: &Path, dir: &Path, pki: &Pki) -> (Broker, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\n\
             cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            pki.ca.display(),
            pki.server_cert.display(),
            pki.server_key.display()
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto starts");
    let broker = Broker(child);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "mosquitto did not listen on {port} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (broker, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_connects_with_the_plant_ca_and_refuses_strangers() {
    let Some(bin) = mosquitto() else {
        eprintln!("SKIPPED: mosquitto is not installed here (.ci/run installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (_broker, port) = start_tls_broker(&bin, dir.path(), &pki);

    let connect = |name: &str, cert: Option<&PathBuf>, key: Option<&PathBuf>| {
        let store_dir = dir.path().join(name);
        let store = common::open_store(&store_dir, "line-1");
        let mut cfg = common::config("127.0.0.1", port, "tls-site", "line-1");
        cfg.client_id = format!("serialine-tls-{name}");
        cfg.tls = Some(TlsPaths {
            ca: pki.ca.clone(),
            client_cert: cert.cloned(),
            client_key: key.cloned(),
        });
        serialine_uplink::start(cfg, store).expect("uplink starts")
    };

    let (good, _cmds) = connect("good", Some(&pki.client_cert), Some(&pki.client_key));
    good.wait_connected(Duration::from_secs(15))
        .await
        .expect("a client certificate from the plant CA is accepted over TLS");

    let (anonymous, _c2) = connect("anon", None, None);
    assert!(
        anonymous
            .wait_connected(Duration::from_secs(3))
            .await
            .is_err(),
        "a client without a certificate must be refused"
    );

    let (rogue, _c3) = connect("rogue", Some(&pki.rogue_cert), Some(&pki.rogue_key));
    assert!(
        rogue.wait_connected(Duration::from_secs(3)).await.is_err(),
        "a certificate from another CA must be refused"
    );
    for h in [good, anonymous, rogue] {
        h.abort();
    }
}
