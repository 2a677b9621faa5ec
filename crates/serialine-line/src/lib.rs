//! A Serialine line: the unit pipeline between a marking device and a camera,
//! on top of the ledger (`serialine-store`) and the uplink
//! (`serialine-uplink`).
//!
//! ```text
//! LinePlan (pure, from one [[line]] of the configuration, or built by hand)
//!    │
//!    ▼  open_line(plan, devices)
//! OpenLine: ledger opened (recovery, fence), serials left in flight voided,
//!           uplink started (prefetch, outbox, status, commands)
//!    │
//!    ▼  OpenLine::start_job(job)  — devices come from the DeviceFactory
//! RunningLine:
//!    feeder:  reserve serial -> render code -> durable Sent -> printer
//!    verdict: printer Printed + camera read -> match -> durable Committed | Rejected
//!    side:    alarms -> uplink alarms topic; progress -> retained status, metrics
//!    │
//!    ▼  RunningLine::ended() fires when the job is over; finish() gives the report
//! ```
//!
//! Invariants this crate adds to the ledger's (which are stated and enforced
//! in `serialine-store`):
//!
//! - a code goes to the marking device only after its `Sent` is durable;
//! - a device fault never makes the pipeline resend a code: units of unknown
//!   fate stay `Sent` until a late read decides them or the job's end (or the
//!   next start) voids them;
//! - a camera read decides only the unit whose serial it names; a read of a
//!   code not in flight decides nothing and raises an alarm and a counted
//!   reject signal; content-free reads are matched by trigger id where the
//!   device defines one;
//! - the units in flight never exceed the printer's buffer plus the camera's
//!   window (backpressure through a semaphore);
//! - a job only takes serials from blocks issued for its product.
//!
//! The service (`serialine run`), the demo, the bench and the tests all
//! assemble a line through [`open_line`]; only the [`DeviceFactory`] differs
//! (real drivers from the configuration, or simulators).

pub mod aggregation;
mod assembly;
pub mod devices;
pub mod health;
pub mod pipeline;
pub mod plan;
pub mod prometheus;
pub mod running;

pub use assembly::{open_line, Line, LineError};
pub use devices::{
    DeviceError, DeviceFactory, DeviceSpec, Devices, Gs1ModeIssue, LevelDeviceSpec, MarkerSpec,
};
pub use health::Heartbeat;
pub use plan::{LinePlan, PipelinePlan};
pub use running::{LineRun, RunningLine};
