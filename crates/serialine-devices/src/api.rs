//! The contract between the pipeline and every driver.

use serialine_core::Grade;
use tokio::sync::mpsc;

/// One unit's identity along the line, assigned by the pipeline. Drivers
/// carry it to the device where the protocol allows (message id, trigger id)
/// and report it back with each event.
pub type UnitId = u64;

/// A code for one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrintRequest {
    pub unit: UnitId,
    /// The rendered code (GS1 element string, Digital Link URI or text).
    pub code: String,
}

/// What a printer, laser marker or label printer reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrinterEvent {
    /// The device took the code into its buffer (ACK).
    Accepted(UnitId),
    /// The device refused the code (NAK, error response): it will not print it.
    Refused { unit: UnitId, reason: String },
    /// The device reports the unit printed / marked.
    Printed(UnitId),
    /// The device faulted or the link dropped. `unknown` lists units sent
    /// whose printing is unconfirmed; the driver will not resend them.
    Fault {
        reason: String,
        unknown: Vec<UnitId>,
    },
    /// Connected (again) and ready for codes.
    Ready,
}

/// One camera verification result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraRead {
    /// Trigger / unit id, when the camera reports one.
    pub unit: Option<UnitId>,
    /// Decoded content; `None` is a no-read.
    pub content: Option<String>,
    /// ISO/IEC 15415 overall grade, when reported.
    pub grade: Option<Grade>,
}

/// What a camera driver reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CameraEvent {
    Read(CameraRead),
    /// A line the driver could not parse: reported, never fatal.
    Garbage {
        line: String,
        reason: String,
    },
    Fault {
        reason: String,
    },
    Ready,
}

/// A running printer-like driver.
pub struct PrinterHandle {
    pub name: String,
    /// Codes to print, in unit order.
    pub requests: mpsc::Sender<PrintRequest>,
    pub events: mpsc::Receiver<PrinterEvent>,
    /// How many codes may be queued in the device at once (its buffer).
    pub capacity: usize,
}

/// A running camera driver.
pub struct CameraHandle {
    pub name: String,
    pub events: mpsc::Receiver<CameraEvent>,
}
