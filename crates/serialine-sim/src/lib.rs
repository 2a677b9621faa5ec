//! Simulators: line equipment and upstream, each speaking the same wire
//! protocol as the real thing on a real pty, TCP socket, Modbus server or
//! MQTT broker, with knobs for faults, and recording every byte for replay.

pub mod broker;
pub mod cable;
pub mod camera;
pub mod fence;
pub mod issuer;
pub mod label;
pub mod laser;
pub mod printer;
pub mod recording;
pub mod replay;
pub mod upstream;
