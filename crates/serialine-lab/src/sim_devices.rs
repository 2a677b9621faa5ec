//! Simulated devices for a line: the [`DeviceFactory`] the demo and the
//! bench hand to `serialine_line::open_line`. Each job starts a fresh
//! simulator pair (marking device, camera) on real pseudo-terminals, sockets
//! and a Modbus server, and connects the service's own drivers to them.

use anyhow::Context;
use serialine_devices::camera::{self, CameraProfile};
use serialine_devices::label::{self, LabelTemplate, Symbology};
use serialine_devices::laser::{self, LaserRegisterMap, LaserSettings};
use serialine_devices::printer::{self, FramedProfile};
use serialine_devices::transport::{Link, TcpSettings, TransportSettings};
use serialine_devices::UnitId;
use serialine_line::aggregation::{LevelDevices, LevelPlan};
use serialine_line::{DeviceError, DeviceFactory, Devices};
use serialine_sim::aggregation::{AggregationKnobs, AggregationSim};
use serialine_sim::camera::{CameraKnobs, CameraSim};
use serialine_sim::label::{LabelSim, LabelSimConfig};
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
    /// The packaging levels' simulators, from cases up (empty: none).
    pub levels: Vec<SimLevel>,
    /// The units the unit camera read good, from `spawn` to the case
    /// level's aggregation camera in `spawn_levels`.
    pub passed: std::sync::Arc<std::sync::Mutex<Option<Passed>>>,
}

/// Codes that passed a camera, on their way down the line.
pub type Passed = mpsc::UnboundedReceiver<(UnitId, String)>;

/// One simulated packaging level: a case packer (or pallet station) whose
/// aggregation camera reads each full case, a ZPL label printer, and the
/// scanner that reads each label back.
#[derive(Debug, Clone)]
pub struct SimLevel {
    /// The case packer's size and faults (scanning levels).
    pub packer: AggregationKnobs,
    /// Whether the level scans (a case packer with its camera) or counts.
    pub scans: bool,
    /// The label scanner's faults.
    pub scanner: CameraKnobs,
}

/// The aggregation camera's result lines: the codes of a case, by TAB.
pub fn aggregation_profile() -> CameraProfile {
    CameraProfile {
        template: "{trigger};{content}".into(),
        max_line: 65_536,
        ..CameraProfile::default()
    }
}

impl DeviceFactory for SimulatedDevices {
    async fn spawn(&self, _line: &str) -> Result<Devices, DeviceError> {
        let mut camera = self.camera.clone();
        // Units read good go on into the case packer.
        if self.levels.first().is_some_and(|l| l.scans) {
            let (tx, rx) = mpsc::unbounded_channel();
            camera.pass_to = Some(tx);
            if let Ok(mut p) = self.passed.lock() {
                *p = Some(rx);
            }
        }
        let devices = match self.marker {
            Marker::Inkjet => inkjet_line(self.seed, self.print_time, camera).await,
            Marker::Laser => laser_line(camera).await,
        };
        devices.map_err(Into::into)
    }

    async fn spawn_levels(
        &self,
        line: &str,
        levels: &[LevelPlan],
    ) -> Result<Vec<LevelDevices>, DeviceError> {
        serialine_line::devices::levels_match(line, levels.len(), self.levels.len())?;
        let mut passed = self.passed.lock().ok().and_then(|mut p| p.take());
        let mut out = Vec::new();
        for (i, (plan, sim)) in levels.iter().zip(&self.levels).enumerate() {
            let next_scans = self.levels.get(i + 1).is_some_and(|l| l.scans);
            let devices = sim_level(line, plan, sim, passed.take(), next_scans).await?;
            passed = devices.1;
            out.push(devices.0);
        }
        Ok(out)
    }
}

/// One level's simulators and the service's drivers on them; returns the
/// labels its scanner read good when the next level scans them.
async fn sim_level(
    line: &str,
    plan: &LevelPlan,
    sim: &SimLevel,
    passed: Option<Passed>,
    next_scans: bool,
) -> anyhow::Result<(LevelDevices, Option<Passed>)> {
    let name = &plan.name;
    let mut names = Vec::new();
    let camera = if sim.scans {
        let rx = passed.with_context(|| format!("{line}: nothing feeds the {name} packer"))?;
        let (packer, addr) = AggregationSim::listen("127.0.0.1:0", sim.packer.clone(), rx)
            .await
            .with_context(|| format!("starting the {name} packer simulator"))?;
        std::mem::forget(packer);
        names.push(format!("{name} aggregation camera (tcp {addr})"));
        Some(camera::spawn(
            format!("{line}/{name}-camera"),
            Link::from(TransportSettings::Tcp(TcpSettings::new(addr.to_string()))),
            &aggregation_profile(),
        )?)
    } else {
        None
    };
    let (printed_tx, printed_rx) = mpsc::unbounded_channel();
    let label_sim = LabelSim::start(LabelSimConfig::default(), printed_tx)
        .await
        .with_context(|| format!("starting the {name} label printer simulator"))?;
    let label_addr = label_sim.addr();
    std::mem::forget(label_sim);
    let template = LabelTemplate {
        symbology: Symbology::DataMatrix,
        module_size: 6,
        x: 50,
        y: 50,
        gs1: true,
        text: None,
        // The simulated printer answers at once: poll as fast as it can.
        poll_interval_ms: 1,
    };
    let label = label::spawn(format!("{line}/{name}-label"), label_addr, template)?;
    let mut scanner_knobs = sim.scanner.clone();
    let next = if next_scans {
        let (tx, rx) = mpsc::unbounded_channel();
        scanner_knobs.pass_to = Some(tx);
        Some(rx)
    } else {
        None
    };
    let profile = CameraProfile::default();
    let (scanner_sim, scanner_addr) =
        CameraSim::listen("127.0.0.1:0", &profile, scanner_knobs, printed_rx, None).await?;
    std::mem::forget(scanner_sim);
    let scanner = camera::spawn(
        format!("{line}/{name}-scanner"),
        Link::from(TransportSettings::Tcp(TcpSettings::new(
            scanner_addr.to_string(),
        ))),
        &profile,
    )?;
    names.insert(0, format!("{name} label printer (tcp {label_addr})"));
    names.insert(1, format!("{name} scanner (tcp {scanner_addr})"));
    Ok((
        LevelDevices {
            label,
            scanner,
            camera,
            names,
        },
        next,
    ))
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
