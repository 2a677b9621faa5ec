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
    /// The device reports the unit marked, as its `index`-th mark: a laser
    /// marker's mark counter after this mark. A camera triggered by the
    /// marker numbers its results with this index (see [`TriggerIds`]).
    Marked { unit: UnitId, index: u64 },
}

/// How a camera result's trigger id names a unit, for a camera triggered by
/// this device. Only content-free results (no-read, unparseable) need it: a
/// read with a code names its unit by the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerIds {
    /// The trigger id is the unit id as the device numbers its messages:
    /// modulo `modulus` (10^N for an N-digit message id), or whole.
    UnitId { modulus: Option<u64> },
    /// The trigger id is the mark index the device reports with
    /// [`PrinterEvent::Marked`], modulo `modulus` (the counter's wrap).
    MarkIndex { modulus: u64 },
    /// Not known: content-free results are matched by position.
    Unknown,
}

impl TriggerIds {
    /// `id` reduced the way this device wraps it.
    pub fn reduce(&self, id: u64) -> u64 {
        match *self {
            TriggerIds::UnitId { modulus: Some(m) } | TriggerIds::MarkIndex { modulus: m } => {
                id % m.max(1)
            }
            TriggerIds::UnitId { modulus: None } | TriggerIds::Unknown => id,
        }
    }
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
    /// What a camera triggered by this device reports as its trigger id.
    pub trigger_ids: TriggerIds,
}

/// A running camera driver.
pub struct CameraHandle {
    pub name: String,
    pub events: mpsc::Receiver<CameraEvent>,
}
