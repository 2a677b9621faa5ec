//! Laser marker over Modbus (TCP, or RTU on a serial port).
//!
//! The register map comes from config ([`LaserRegisterMap`], see
//! `config/laser-modbus.toml`). Per unit the driver waits until the marker is
//! not busy, writes the code text (and length), pulses the trigger, reports
//! `Accepted`, then polls the mark counter and reports `Printed` when it
//! advances. One unit is in flight at a time.
//!
//! Faults (error bit, open interlock, lost link, unconfirmed mark) are
//! reported with the in-flight unit as `unknown`; the driver then waits for
//! the marker to recover and reports `Ready`. It never writes a code again.

mod driver;
pub mod map;

pub use driver::{spawn, LaserError, LaserLink, LaserSettings};
pub use map::{
    counter_delta, decode_status, pack_code, unpack_code, CodeError, LaserRegisterMap, LaserState,
    LaserStatus, MapError, StatusBits, Trigger,
};
