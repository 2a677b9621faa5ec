//! The simulated plant around `serialine run` that the service's tests share:
//! an embedded MQTT broker, the upstream issuer (sealing blocks with the line
//! secret) and consumer (signing its acks), and a framed inkjet on TCP whose
//! printed codes reach a camera on TCP.

// Each test binary that includes this module uses a part of it.
#![allow(dead_code)]

use serialine_devices::camera::CameraProfile;
use serialine_devices::printer::FramedProfile;
use serialine_sim::broker::{EmbeddedBroker, MqttTarget};
use serialine_sim::camera::{CameraKnobs, CameraSim};
use serialine_sim::issuer::{Issuer, IssuerTask};
use serialine_sim::printer::{PrinterKnobs, PrinterSim};
use serialine_sim::upstream::{Upstream, UpstreamTask};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The ack key upstream signs with; the config's `ack.key` holds it in hex.
pub const ACK_KEY: [u8; 32] = [0x5a; 32];

pub fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../config")
        .join(name)
}

pub struct Plant {
    pub broker: EmbeddedBroker,
    pub issuer: Issuer,
    pub upstream: Upstream,
    pub printer: PrinterSim,
    pub printer_addr: SocketAddr,
    pub camera: CameraSim,
    pub camera_addr: SocketAddr,
    _issuer_task: IssuerTask,
    _upstream_task: UpstreamTask,
}

impl Plant {
    /// Starts the plant for `line` of `site`, whose blocks the issuer seals
    /// with `secret` (`seed` seeds its serials).
    pub async fn start(site: &str, line: &str, secret: &[u8], seed: &[u8]) -> Plant {
        let broker = EmbeddedBroker::start().expect("embedded broker starts");
        let target = |id: &str| MqttTarget::new("127.0.0.1", broker.port, id);
        let issuer = Issuer::new(seed, 100);
        issuer.add_line(line, secret);
        let issuer_task = issuer
            .spawn(&target("test-issuer"), Some(site))
            .await
            .expect("issuer connects");
        let upstream = Upstream::new();
        // Production settings: upstream signs its acks, commands need a key.
        upstream.set_ack_key(Some(ACK_KEY));
        let upstream_task = upstream
            .spawn(&target("test-upstream"), Some(site))
            .await
            .expect("upstream consumer connects");
        let profile: FramedProfile =
            toml::from_str(&std::fs::read_to_string(shipped("printer-cij-stx.toml")).unwrap())
                .unwrap();
        let (printed_tx, printed_rx) = tokio::sync::mpsc::unbounded_channel();
        let knobs = PrinterKnobs {
            buffer_depth: Some(profile.buffer_depth),
            ..PrinterKnobs::default()
        };
        let (printer, printer_addr) =
            PrinterSim::listen("127.0.0.1:0", &profile, knobs, Some(printed_tx), None)
                .await
                .expect("printer simulator listens");
        let (camera, camera_addr) = CameraSim::listen(
            "127.0.0.1:0",
            &CameraProfile::default(),
            CameraKnobs::default(),
            printed_rx,
            None,
        )
        .await
        .expect("camera simulator listens");
        Plant {
            broker,
            issuer,
            upstream,
            printer,
            printer_addr,
            camera,
            camera_addr,
            _issuer_task: issuer_task,
            _upstream_task: upstream_task,
        }
    }
}
