//! The devices a job runs on, and where they come from.
//!
//! A line does not own its devices between jobs: each job spawns its
//! marking device and camera afresh from the line's [`DeviceFactory`] (a
//! finished job's drivers end with it). The service's factory is the
//! configuration's [`DeviceSpec`], which spawns the real drivers; the demo,
//! the bench and tests pass a factory that starts simulators and connects the
//! same drivers to them.

use crate::aggregation::{LevelDevices, LevelPlan};
use serialine_core::Template;
use serialine_devices::camera::{self, CameraProfile};
use serialine_devices::label::{self, LabelTemplate};
use serialine_devices::laser::{self, LaserRegisterMap, LaserSettings};
use serialine_devices::printer::{self, FramedProfile};
use serialine_devices::transport::{Link, TransportSettings};
use serialine_devices::{CameraHandle, PrinterHandle};
use std::future::Future;
use std::net::SocketAddr;

/// The devices one job runs on: the marking device, the camera, and how the
/// daemon describes each (in that order) in logs and the status topic.
pub struct Devices {
    pub printer: PrinterHandle,
    pub camera: CameraHandle,
    pub names: Vec<String>,
}

/// Why a job's devices could not be spawned, from whichever factory.
pub type DeviceError = Box<dyn std::error::Error + Send + Sync>;

/// Spawns a line's devices for one job. They connect (and reconnect) in the
/// background; an error here is a device that cannot even be described (an
/// address that does not resolve, a profile its driver refuses) or a
/// simulator that cannot start.
pub trait DeviceFactory: Send + Sync + 'static {
    fn spawn(&self, line: &str) -> impl Future<Output = Result<Devices, DeviceError>> + Send;

    /// The devices of the line's packaging levels (`levels`, from cases
    /// up), in the same order: each level's label printer and scanner, and
    /// its aggregation camera when it scans. A factory that has none
    /// refuses a line that aggregates.
    fn spawn_levels(
        &self,
        line: &str,
        levels: &[LevelPlan],
    ) -> impl Future<Output = Result<Vec<LevelDevices>, DeviceError>> + Send {
        let wanted = levels.len();
        let line = line.to_string();
        async move {
            match wanted {
                0 => Ok(Vec::new()),
                n => Err(failed(
                    &format!("line {line}"),
                    format!("{n} packaging levels configured, but no devices for them (label printer, scanner)"),
                )),
            }
        }
    }

    /// Whether the marking device makes the symbol a job with `template`
    /// needs (its GS1 mode, FNC1), as far as the factory knows; `None`
    /// when it fits or cannot say. Checked before every job starts.
    fn gs1_mode_issue(&self, _template: &Template) -> Option<(&'static str, Gs1ModeIssue)> {
        None
    }
}

/// A factory shared with whoever else holds it (a test that counts spawns).
impl<D: DeviceFactory> DeviceFactory for std::sync::Arc<D> {
    fn spawn(&self, line: &str) -> impl Future<Output = Result<Devices, DeviceError>> + Send {
        D::spawn(self, line)
    }

    fn spawn_levels(
        &self,
        line: &str,
        levels: &[LevelPlan],
    ) -> impl Future<Output = Result<Vec<LevelDevices>, DeviceError>> + Send {
        D::spawn_levels(self, line, levels)
    }

    fn gs1_mode_issue(&self, template: &Template) -> Option<(&'static str, Gs1ModeIssue)> {
        D::gs1_mode_issue(self, template)
    }
}

/// A factory with devices for `have` packaging levels, asked for `wanted`.
pub fn levels_match(line: &str, wanted: usize, have: usize) -> Result<(), DeviceError> {
    if wanted == have {
        return Ok(());
    }
    Err(failed(
        &format!("line {line}"),
        format!("{wanted} packaging levels, devices for {have}"),
    ))
}

/// `what: cause`, as a [`DeviceError`].
fn failed(what: &str, cause: impl std::fmt::Display) -> DeviceError {
    format!("{what}: {cause}").into()
}

/// The marking device of a line as the configuration names it, its files
/// read and checked.
#[derive(Debug, Clone)]
pub enum MarkerSpec {
    /// A framed-ASCII inkjet (continuous or thermal) on a serial line or TCP.
    Framed {
        transport: TransportSettings,
        profile: FramedProfile,
    },
    /// A laser marker over Modbus TCP.
    Laser { addr: String, map: LaserRegisterMap },
    /// A ZPL label printer over TCP.
    Zpl { addr: String, label: LabelTemplate },
}

/// A printer's GS1 mode (FNC1) that does not fit a job's template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gs1ModeIssue {
    /// The profile does not say (`fnc1` unset) and the job is GS1.
    Unset(String),
    /// The setting makes the wrong kind of symbol for the job.
    Contradiction(String),
}

impl MarkerSpec {
    /// The config key under `printer` naming this device's file.
    pub fn file_key(&self) -> &'static str {
        match self {
            MarkerSpec::Framed { .. } => "profile",
            MarkerSpec::Laser { .. } => "map",
            MarkerSpec::Zpl { .. } => "label",
        }
    }

    /// Whether this printer makes the symbol a job with `template` needs
    /// (`job` names the job in messages): a GS1 element string must start
    /// with FNC1, or the camera reads a plain Data Matrix (`]d1`) and every
    /// unit is rejected; a Digital Link or plain text must not.
    pub fn gs1_mode_issue(&self, template: &Template, job: &str) -> Option<Gs1ModeIssue> {
        use serialine_devices::label::Symbology as LabelSymbology;
        use serialine_devices::printer::Fnc1;
        let gs1_job = matches!(template, Template::Gs1DataMatrix);
        let (setting, fnc1) = match self {
            MarkerSpec::Framed { profile, .. } => ("fnc1", profile.fnc1),
            MarkerSpec::Laser { map, .. } => ("fnc1", map.fnc1),
            // The label's gs1 flag adds FNC1 (ZPL `_1`) to a Data Matrix only.
            MarkerSpec::Zpl { label, .. } => (
                "gs1",
                Some(
                    if label.gs1 && label.symbology == LabelSymbology::DataMatrix {
                        Fnc1::Escape
                    } else {
                        Fnc1::None
                    },
                ),
            ),
        };
        let label = matches!(self, MarkerSpec::Zpl { .. });
        match (gs1_job, fnc1) {
            (true, None) => Some(Gs1ModeIssue::Unset(format!(
                "does not say how the printer is put in GS1 mode ({setting} is not set); \
                 {job} is a GS1 element string, which the printer must start with FNC1, or it \
                 prints a plain Data Matrix (]d1) that the line rejects; expected \
                 fnc1 = \"printer\" (the printer's code object is GS1 DataMatrix), \"escape\" \
                 (with fnc1_escape) or \"none\""
            ))),
            (true, Some(Fnc1::None)) => Some(Gs1ModeIssue::Contradiction(format!(
                "{setting} says the printer prints plain symbols, but {job} is a GS1 element \
                 string: every code would be a plain Data Matrix (]d1), which the line rejects; \
                 expected the printer in GS1 mode ({})",
                if label {
                    "gs1 = true with symbology = \"data_matrix\""
                } else {
                    "fnc1 = \"printer\" or \"escape\""
                }
            ))),
            (false, Some(Fnc1::Escape | Fnc1::Printer)) => {
                Some(Gs1ModeIssue::Contradiction(format!(
                    "{setting} makes every code a GS1 symbol (FNC1 first), but {job} is not a GS1 \
                     element string (a Digital Link or plain text goes in a plain symbol); \
                     expected {}",
                    if label {
                        "gs1 = false"
                    } else {
                        "fnc1 = \"none\""
                    }
                )))
            }
            _ => None,
        }
    }
}

/// A line's devices as the configuration names them: the factory of the
/// service.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub marker: MarkerSpec,
    pub camera_transport: TransportSettings,
    pub camera: CameraProfile,
    /// The packaging levels' devices, from cases up.
    pub levels: Vec<LevelDeviceSpec>,
}

/// One packaging level's devices as the configuration names them.
#[derive(Debug, Clone)]
pub struct LevelDeviceSpec {
    /// The level's name ("case"), in the devices' names.
    pub name: String,
    /// `host:port` of its ZPL label printer.
    pub label_addr: String,
    pub label: LabelTemplate,
    pub scanner_transport: TransportSettings,
    pub scanner: CameraProfile,
    /// The aggregation camera, when the level scans.
    pub camera: Option<(TransportSettings, CameraProfile)>,
}

async fn resolve(what: &str, addr: &str) -> Result<SocketAddr, DeviceError> {
    tokio::net::lookup_host(addr)
        .await
        .map_err(|e| failed(what, format!("cannot resolve {addr}: {e}")))?
        .next()
        .ok_or_else(|| failed(what, format!("{addr} resolves to no address")))
}

impl DeviceFactory for DeviceSpec {
    fn gs1_mode_issue(&self, template: &Template) -> Option<(&'static str, Gs1ModeIssue)> {
        self.marker
            .gs1_mode_issue(template, "the job")
            .map(|issue| (self.marker.file_key(), issue))
    }

    async fn spawn_levels(
        &self,
        line: &str,
        levels: &[LevelPlan],
    ) -> Result<Vec<LevelDevices>, DeviceError> {
        levels_match(line, levels.len(), self.levels.len())?;
        let mut out = Vec::with_capacity(self.levels.len());
        for l in &self.levels {
            let what = format!("{} label printer address", l.name);
            let sock = resolve(&what, &l.label_addr).await?;
            let label = label::spawn(format!("{line}/{}-label", l.name), sock, l.label.clone())
                .map_err(|e| failed(&format!("{} label template", l.name), e))?;
            let scanner = camera::spawn(
                format!("{line}/{}-scanner", l.name),
                Link::from(l.scanner_transport.clone()),
                &l.scanner,
            )
            .map_err(|e| failed(&format!("{} scanner profile", l.name), e))?;
            let mut names = vec![
                format!("{} label printer (tcp {sock})", l.name),
                format!("{} scanner ({})", l.name, l.scanner_transport.describe()),
            ];
            let camera = match &l.camera {
                Some((transport, profile)) => {
                    names.push(format!(
                        "{} aggregation camera ({})",
                        l.name,
                        transport.describe()
                    ));
                    Some(
                        camera::spawn(
                            format!("{line}/{}-camera", l.name),
                            Link::from(transport.clone()),
                            profile,
                        )
                        .map_err(|e| failed(&format!("{} camera profile", l.name), e))?,
                    )
                }
                None => None,
            };
            out.push(LevelDevices {
                label,
                scanner,
                camera,
                names,
            });
        }
        Ok(out)
    }

    async fn spawn(&self, line: &str) -> Result<Devices, DeviceError> {
        let (printer, printer_name) = match &self.marker {
            MarkerSpec::Framed { transport, profile } => (
                printer::spawn(
                    format!("{line}/printer"),
                    Link::from(transport.clone()),
                    profile,
                )
                .map_err(|e| failed("printer profile", e))?,
                format!("printer ({})", transport.describe()),
            ),
            MarkerSpec::Laser { addr, map } => {
                let sock = resolve("laser address", addr).await?;
                (
                    laser::spawn(
                        format!("{line}/laser"),
                        LaserSettings::tcp(sock),
                        map.clone(),
                    )
                    .map_err(|e| failed("laser register map", e))?,
                    format!("laser (modbus tcp {sock})"),
                )
            }
            MarkerSpec::Zpl { addr, label } => {
                let sock = resolve("label printer address", addr).await?;
                (
                    label::spawn(format!("{line}/label"), sock, label.clone())
                        .map_err(|e| failed("label template", e))?,
                    format!("label printer (tcp {sock})"),
                )
            }
        };
        let camera = camera::spawn(
            format!("{line}/camera"),
            Link::from(self.camera_transport.clone()),
            &self.camera,
        )
        .map_err(|e| failed("camera profile", e))?;
        let names = vec![
            printer_name,
            format!("camera ({})", self.camera_transport.describe()),
        ];
        Ok(Devices {
            printer,
            camera,
            names,
        })
    }
}
