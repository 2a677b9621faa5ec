//! A simulator that cannot listen where it was told fails, naming the
//! address, instead of reporting a port someone else holds as its own.

use std::net::TcpListener;

use serialine_devices::camera::CameraProfile;
use serialine_devices::printer::FramedProfile;
use serialine_sim::broker::{BrokerError, EmbeddedBroker};
use serialine_sim::camera::{CameraKnobs, CameraSim};
use serialine_sim::printer::{PrinterKnobs, PrinterSim};

/// The case that lied: another broker holds the port, so a readiness probe
/// gets a real CONNACK, from the wrong broker.
#[test]
fn broker_on_a_port_another_broker_holds_fails_with_the_address() {
    let other = EmbeddedBroker::start().expect("first broker");
    let err = EmbeddedBroker::start_on_port(other.port).expect_err("port is taken");
    let addr = format!("127.0.0.1:{}", other.port);
    assert!(matches!(err, BrokerError::Bind { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr), "{err}");
}

#[test]
fn broker_on_a_port_a_plain_listener_holds_fails_with_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("local addr").port();
    let err = EmbeddedBroker::start_on_port(port).expect_err("port is taken");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn printer_sim_on_a_taken_port_fails_with_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("local addr").to_string();
    let profile: FramedProfile = serde_json::from_value(serde_json::json!({
        "message": "P{id:04}|{code}",
        "complete": "D{id:04}",
        "buffer_depth": 4,
    }))
    .expect("profile");
    let res = PrinterSim::listen(&addr, &profile, PrinterKnobs::default(), None, None).await;
    let err = res.err().expect("port is taken");
    assert!(err.to_string().contains(&addr), "{err}");
}

#[tokio::test]
async fn camera_sim_on_a_taken_port_fails_with_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("local addr").to_string();
    let (_tx, printed) = tokio::sync::mpsc::unbounded_channel();
    let res = CameraSim::listen(
        &addr,
        &CameraProfile::default(),
        CameraKnobs::default(),
        printed,
        None,
    )
    .await;
    let err = res.err().expect("port is taken");
    assert!(err.to_string().contains(&addr), "{err}");
}
