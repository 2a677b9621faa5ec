//! MQTT over TLS with client certificates, against Mosquitto configured for
//! mutual TLS. The certificates (a CA, the broker's, a client's) are made by
//! the test with rcgen. Mosquitto must be installed (`.ci/run` installs it);
//! where it is not, the tests fail: a skip would pass without proving anything.

mod common;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serialine_uplink::TlsPaths;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Mosquitto binary. Missing is a failure, not a skip: a test that
/// passes without running proves nothing, and CI installs it.
fn mosquitto() -> PathBuf {
    [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect(
        "mosquitto is not installed: these tests need it (.ci/run installs it; \
         locally: apt-get install mosquitto)",
    )
}

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    rogue_cert: PathBuf,
    rogue_key: PathBuf,
    rogue_ca: PathBuf,
    expired_cert: PathBuf,
    expired_key: PathBuf,
    other_name_cert: PathBuf,
    other_name_key: PathBuf,
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
    let (rogue_ca, rogue_issuer) = ca("not the plant's CA");
    let (rogue, rogue_key) = leaf(&rogue_issuer, &[], "intruder");
    let (expired, expired_key) = expired_leaf(&issuer, "serialine-line-1");
    let (other, other_key) = leaf(&issuer, &["broker.elsewhere.example"], "elsewhere");
    Pki {
        rogue_ca: write(dir, "rogue-ca.pem", rogue_ca),
        expired_cert: write(dir, "expired.pem", expired),
        expired_key: write(dir, "expired.key", expired_key),
        other_name_cert: write(dir, "other-name.pem", other),
        other_name_key: write(dir, "other-name.key", other_key),
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
    (start_tls_broker_on(bin, dir, pki, port), port)
}

fn start_tls_broker_on(bin: &Path, dir: &Path, pki: &Pki, port: u16) -> Broker {
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
    broker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_connects_with_the_plant_ca_and_refuses_strangers() {
    let bin = mosquitto();
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

    assert!(good.link_fault().borrow().is_none(), "connected: no fault");

    // Refused by the broker's TLS itself, not by any failure to connect: the
    // uplink's link fault names the TLS alert the broker sent.
    let (anonymous, _c2) = connect("anon", None, None);
    let anon = refusal(&anonymous, "anonymous").await;
    assert_eq!(
        anon.cause, "BrokerAlert(CertificateRequired)",
        "a client without a certificate: {anon:?}"
    );

    let (rogue, _c3) = connect("rogue", Some(&pki.rogue_cert), Some(&pki.rogue_key));
    let rogue_fault = refusal(&rogue, "rogue").await;
    assert_eq!(
        rogue_fault.cause, "BrokerAlert(UnknownCA)",
        "a certificate from another CA: {rogue_fault:?}"
    );
    for h in [good, anonymous, rogue] {
        h.abort();
    }
}

/// The fault an uplink reports when it is not let in, within 15 s; it must
/// not be connected meanwhile.
async fn refusal(h: &serialine_uplink::UplinkHandle, name: &str) -> serialine_uplink::LinkFault {
    let mut rx = h.link_fault();
    let fault = tokio::time::timeout(Duration::from_secs(15), rx.wait_for(|f| f.is_some()))
        .await
        .unwrap_or_else(|_| panic!("{name}: no link fault reported within 15 s"))
        .expect("uplink running")
        .clone()
        .expect("a fault");
    assert!(!h.is_connected(), "{name}: must not be connected");
    fault
}

fn expired_leaf(issuer: &Issuer<'static, KeyPair>, cn: &str) -> (String, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Starts an uplink with the given TLS files and waits until it reports why
/// it cannot connect, at most 15 s.
async fn fault_of(
    dir: &Path,
    port: u16,
    name: &str,
    tls: TlsPaths,
) -> (serialine_uplink::UplinkHandle, serialine_uplink::LinkFault) {
    let store = common::open_store(&dir.join(name), "line-1");
    let mut cfg = common::config("127.0.0.1", port, "tls-site", "line-1");
    cfg.client_id = format!("serialine-tls-{name}");
    cfg.tls = Some(tls);
    let (h, _cmds) = serialine_uplink::start(cfg, store).expect("uplink starts");
    let mut rx = h.link_fault();
    let fault = tokio::time::timeout(Duration::from_secs(15), rx.wait_for(|f| f.is_some()))
        .await
        .unwrap_or_else(|_| panic!("{name}: no link fault reported within 15 s"))
        .expect("uplink running")
        .clone()
        .expect("a fault");
    assert!(!h.is_connected(), "{name}: must not be connected");
    (h, fault)
}

/// Issue 13 §6.1: each failure an operator could not see names its cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_failures_name_their_cause() {
    let bin = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (_broker, port) = start_tls_broker(&bin, dir.path(), &pki);

    // Our CA file is not the one that signed the broker's certificate.
    let (_, wrong_ca) = fault_of(
        dir.path(),
        port,
        "wrong-ca",
        TlsPaths {
            ca: pki.rogue_ca.clone(),
            client_cert: Some(pki.client_cert.clone()),
            client_key: Some(pki.client_key.clone()),
        },
    )
    .await;
    assert_eq!(wrong_ca.cause, "UnknownIssuer", "{wrong_ca:?}");
    assert!(wrong_ca.needs_operator());

    // The plant CA signed our certificate, but it has expired: the broker
    // refuses it with a TLS alert that names the reason.
    let (_, expired) = fault_of(
        dir.path(),
        port,
        "expired",
        TlsPaths {
            ca: pki.ca.clone(),
            client_cert: Some(pki.expired_cert.clone()),
            client_key: Some(pki.expired_key.clone()),
        },
    )
    .await;
    assert_eq!(
        expired.cause, "BrokerAlert(CertificateExpired)",
        "{expired:?}"
    );

    // A certificate from another CA: the broker does not know its issuer.
    let (_, rogue) = fault_of(
        dir.path(),
        port,
        "rogue",
        TlsPaths {
            ca: pki.ca.clone(),
            client_cert: Some(pki.rogue_cert.clone()),
            client_key: Some(pki.rogue_key.clone()),
        },
    )
    .await;
    assert_eq!(rogue.cause, "BrokerAlert(UnknownCA)", "{rogue:?}");

    // The key file holds the certificate instead of the key.
    let (_, no_key) = fault_of(
        dir.path(),
        port,
        "cert-as-key",
        TlsPaths {
            ca: pki.ca.clone(),
            client_cert: Some(pki.client_cert.clone()),
            client_key: Some(pki.client_cert.clone()),
        },
    )
    .await;
    assert_eq!(no_key.cause, "KeyFileHoldsNoKey", "{no_key:?}");
}

/// Issue 13 §6.1: the broker presents a certificate for another name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_certificate_for_another_name_is_a_name_mismatch() {
    let bin = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let mut pki = pki(dir.path());
    pki.server_cert = pki.other_name_cert.clone();
    pki.server_key = pki.other_name_key.clone();
    let (_broker, port) = start_tls_broker(&bin, dir.path(), &pki);
    let (_, f) = fault_of(
        dir.path(),
        port,
        "name",
        TlsPaths {
            ca: pki.ca.clone(),
            client_cert: Some(pki.client_cert.clone()),
            client_key: Some(pki.client_key.clone()),
        },
    )
    .await;
    assert_eq!(f.cause, "NameMismatch", "{f:?}");
}

/// Issue 13 §6.1: once the broker can be reached after failures a retry does
/// not cure, an `uplink-connect-failed` alarm names them on `alarms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_after_certificate_failures_raises_an_alarm_naming_them() {
    let bin = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let good = pki(dir.path());
    // First the broker presents a certificate from a CA we do not trust...
    let mut bad = pki(&{
        let d = dir.path().join("bad");
        std::fs::create_dir_all(&d).unwrap();
        d
    });
    bad.ca = good.ca.clone();
    let (broker, port) = start_tls_broker(&bin, &dir.path().join("bad"), &bad);
    let (h, f) = fault_of(
        dir.path(),
        port,
        "recovers",
        TlsPaths {
            ca: good.ca.clone(),
            client_cert: Some(good.client_cert.clone()),
            client_key: Some(good.client_key.clone()),
        },
    )
    .await;
    // Both CAs are named alike, so the broker's certificate appears issued
    // by ours but its signature does not verify: "wrongly signed".
    assert_eq!(f.cause, "BadSignature", "{f:?}");
    // ... then the right one, on the same port.
    drop(broker);
    let _broker = start_tls_broker_on(&bin, dir.path(), &good, port);
    let mut sub = mqtt_tls_subscriber(port, &good, "serialine/tls-site/line-1/alarms").await;
    h.wait_connected(Duration::from_secs(30))
        .await
        .expect("connects once the broker's certificate is right");
    assert!(
        h.link_fault().borrow().is_none(),
        "fault cleared once connected"
    );
    let alarm = tokio::time::timeout(Duration::from_secs(15), sub.recv())
        .await
        .expect("an alarm within 15 s")
        .expect("subscriber running");
    assert_eq!(alarm["kind"], "uplink-connect-failed", "{alarm}");
    let msg = alarm["message"].as_str().unwrap_or_default();
    assert!(msg.contains("BadSignature"), "{msg}");
    h.abort();
}

/// A subscriber over mutual TLS; sends each payload (JSON) it receives.
async fn mqtt_tls_subscriber(
    port: u16,
    pki: &Pki,
    topic: &str,
) -> tokio::sync::mpsc::UnboundedReceiver<serde_json::Value> {
    use rumqttc::{Event, Packet, QoS, Transport};
    let mut o = rumqttc::MqttOptions::new("tls-sub", "127.0.0.1", port);
    o.set_transport(Transport::tls(
        std::fs::read(&pki.ca).unwrap(),
        Some((
            std::fs::read(&pki.client_cert).unwrap(),
            std::fs::read(&pki.client_key).unwrap(),
        )),
        None,
    ));
    let (client, mut el) = rumqttc::AsyncClient::new(o, 16);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (sub_tx, sub_rx) = tokio::sync::oneshot::channel();
    let mut sub_tx = Some(sub_tx);
    let topic = topic.to_string();
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe(topic.clone(), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(t) = sub_tx.take() {
                        let _ = t.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let v = serde_json::from_slice(&p.payload).unwrap_or_default();
                    if tx.send(v).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(15), sub_rx)
        .await
        .expect("test subscriber subscribed within 15 s")
        .expect("subscriber task");
    rx
}

/// `check_tls_files`, the check behind `check-config` (issue 13 §6.2).
#[test]
fn tls_file_check_names_each_problem() {
    use serialine_uplink::{check_tls_files, TlsFile};
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let now = std::time::SystemTime::now();
    let paths = |ca: &PathBuf, cert: &PathBuf, key: &PathBuf| TlsPaths {
        ca: ca.clone(),
        client_cert: Some(cert.clone()),
        client_key: Some(key.clone()),
    };
    assert_eq!(
        check_tls_files(&paths(&pki.ca, &pki.client_cert, &pki.client_key), now),
        vec![],
        "the good files pass"
    );
    let one = |p: TlsPaths| {
        let v = check_tls_files(&p, now);
        assert_eq!(v.len(), 1, "{v:?}");
        v.into_iter().next().unwrap()
    };
    let p = one(paths(&pki.ca, &pki.client_cert, &pki.client_cert));
    assert_eq!(p.file, TlsFile::ClientKey);
    assert!(
        p.message.contains("holds a certificate, not a private key"),
        "{}",
        p.message
    );
    let p = one(paths(&pki.ca, &pki.client_cert, &pki.rogue_key));
    assert_eq!(p.file, TlsFile::ClientKey);
    assert!(p.message.contains("does not match"), "{}", p.message);
    let p = one(paths(&pki.ca, &pki.expired_cert, &pki.expired_key));
    assert_eq!(p.file, TlsFile::ClientCert);
    assert!(p.message.contains("expired on"), "{}", p.message);
    let p = one(paths(&pki.client_key, &pki.client_cert, &pki.client_key));
    assert_eq!(p.file, TlsFile::Ca);
    assert!(
        p.message.contains("holds no PEM certificate"),
        "{}",
        p.message
    );
    let p = one(paths(&pki.ca, &pki.client_key, &pki.client_key));
    assert_eq!(p.file, TlsFile::ClientCert);
    assert!(
        p.message.contains("a private key, not a certificate"),
        "{}",
        p.message
    );
    // Not valid yet (a CA made with a clock far ahead).
    let future_ca = ca_valid_from("CA from the future", 2100);
    let future_ca = write(dir.path(), "future-ca.pem", future_ca);
    let p = one(paths(&future_ca, &pki.client_cert, &pki.client_key));
    assert_eq!(p.file, TlsFile::Ca);
    assert!(p.message.contains("not valid yet"), "{}", p.message);
}

fn ca_valid_from(name: &str, year: i32) -> String {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.not_before = rcgen::date_time_ymd(year, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
    let key = KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().pem()
}
