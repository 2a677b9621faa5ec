//! Simulated devices for a line: the [`DeviceFactory`] the demo and the
//! bench hand to `serialine_line::open_line`. Each job starts a fresh
//! simulator pair (marking device, camera) on real pseudo-terminals, sockets
//! and a Modbus server, and connects the service's own drivers to them.

use anyhow::Context;
use serialine_devices::camera::{self, CameraProfile};
use serialine_devices::laser::{self, LaserRegisterMap, LaserSettings};
use serialine_devices::printer::{self, FramedProfile};
use serialine_devices::transport::{Link, TcpSettings, TransportSettings};
use serialine_line::{DeviceError, DeviceFactory, Devices};
use serialine_sim::camera::{CameraKnobs, CameraSim};
use serialine_sim::laser::{LaserSim, LaserSimConfig, LaserSimMap};
use serialine_sim::printer::{PrinterKnobs, PrinterSim};
use std::time::Duration;
use tokio::sync::mpsc;

const PRINTER_PROFILE: &str = include_str!("../../../config/printer-cij-stx.toml");
const LASER_MAP: &str = include_str!("../../../config/laser-modbus.toml");

/// The marking device of a simulated line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// A framed-ASCII inkjet and a camera, each on a pty.
    Inkjet,
    /// A Modbus TCP laser marker and a TCP camera.
    Laser,
}

/// A simulated line's devices.
#[derive(Debug, Clone)]
pub struct SimulatedDevices {
    pub marker: Marker,
    /// Seeds the printer simulator's draws.
    pub seed: u64,
    /// The simulated inkjet's time per unit (zero: at once).
    pub print_time: Duration,
    /// The simulated camera's faults.
    pub camera: CameraKnobs,
}

impl DeviceFactory for SimulatedDevices {
    async fn spawn(&self, _line: &str) -> Result<Devices, DeviceError> {
        let devices = match self.marker {
            Marker::Inkjet => inkjet_line(self.seed, self.print_time, self.camera.clone()).await,
            Marker::Laser => laser_line(self.camera.clone()).await,
        };
        devices.map_err(Into::into)
    }
}

/// Inkjet on a pty, camera on a pty; the printer simulator hands each printed
/// code to the camera simulator, as the product would.
async fn inkjet_line(
    seed: u64,
    print_time: Duration,
    camera: CameraKnobs,
) -> anyhow::Result<Devices> {
    let profile: FramedProfile =
        toml::from_str(PRINTER_PROFILE).context("embedded printer profile")?;
    let (host_side, device_side) =
        tokio_serial::SerialStream::pair().context("opening the printer pty pair")?;
    let (printed_tx, printed_rx) = mpsc::unbounded_channel();
    let knobs = PrinterKnobs {
        print_time,
        buffer_depth: Some(profile.buffer_depth),
        seed,
        ..PrinterKnobs::default()
    };
    let sim = PrinterSim::spawn(device_side, &profile, knobs, Some(printed_tx), None)?;
    std::mem::forget(sim); // runs for the life of the process
    let cam_profile = CameraProfile::default();
    let (cam_host, cam_device) =
        tokio_serial::SerialStream::pair().context("opening the camera pty pair")?;
    let cam = CameraSim::spawn(cam_device, &cam_profile, camera, printed_rx, None)?;
    std::mem::forget(cam);
    let printer = printer::spawn("inkjet", Link::open(host_side), &profile)?;
    let camera = camera::spawn("camera-1", Link::open(cam_host), &cam_profile)?;
    Ok(Devices {
        printer,
        camera,
        names: vec!["inkjet (pty)".into(), "camera-1 (pty)".into()],
    })
}

/// Laser on a Modbus TCP server, camera on TCP.
async fn laser_line(camera: CameraKnobs) -> anyhow::Result<Devices> {
    let mut map: LaserRegisterMap = toml::from_str(LASER_MAP).context("embedded laser map")?;
    // The simulated marker answers at once; poll it as fast as it can answer.
    map.poll_interval_ms = 1;
    // The demo's job is a GS1 element string: the marker's code object is
    // in GS1 mode (the shipped map is set up for a Digital Link line).
    map.fnc1 = Some(serialine_devices::printer::Fnc1::Printer);
    let sim_map: LaserSimMap = toml::from_str(LASER_MAP).context("embedded laser map")?;
    let (marks_tx, marks_rx) = mpsc::unbounded_channel();
    let sim = LaserSim::start(LaserSimConfig::new(sim_map), marks_tx)
        .await
        .context("starting the laser simulator")?;
    let addr = sim.addr();
    std::mem::forget(sim);
    let cam_profile = CameraProfile::default();
    let (cam, cam_addr) =
        CameraSim::listen("127.0.0.1:0", &cam_profile, camera, marks_rx, None).await?;
    std::mem::forget(cam);
    let printer = laser::spawn("laser", LaserSettings::tcp(addr), map)?;
    let camera = camera::spawn(
        "camera-2",
        Link::from(TransportSettings::Tcp(TcpSettings::new(
            cam_addr.to_string(),
        ))),
        &cam_profile,
    )?;
    Ok(Devices {
        printer,
        camera,
        names: vec![
            format!("laser (modbus {addr})"),
            format!("camera-2 (tcp {cam_addr})"),
        ],
    })
}
