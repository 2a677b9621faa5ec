//! The devices a job runs on, and where they come from.
//!
//! A line does not own its devices between jobs: each job spawns its
//! marking device and camera afresh from the line's [`DeviceFactory`] (a
//! finished job's drivers end with it). The service's factory is the
//! configuration's [`DeviceSpec`], which spawns the real drivers; the demo,
//! the bench and tests pass a factory that starts simulators and connects the
//! same drivers to them.

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
}

/// A factory shared with whoever else holds it (a test that counts spawns).
impl<D: DeviceFactory> DeviceFactory for std::sync::Arc<D> {
    fn spawn(&self, line: &str) -> impl Future<Output = Result<Devices, DeviceError>> + Send {
        D::spawn(self, line)
    }
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

/// A line's devices as the configuration names them: the factory of the
/// service.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub marker: MarkerSpec,
    pub camera_transport: TransportSettings,
    pub camera: CameraProfile,
}

async fn resolve(what: &str, addr: &str) -> Result<SocketAddr, DeviceError> {
    tokio::net::lookup_host(addr)
        .await
        .map_err(|e| failed(what, format!("cannot resolve {addr}: {e}")))?
        .next()
        .ok_or_else(|| failed(what, format!("{addr} resolves to no address")))
}

impl DeviceFactory for DeviceSpec {
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
