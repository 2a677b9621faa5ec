//! Simulators: line equipment and upstream, each speaking the same wire
//! protocol as the real thing on a real pty, TCP socket, Modbus server or
//! MQTT broker, with knobs for faults, and recording every byte for replay.

pub mod aggregation;
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
pub mod unserved;
pub mod upstream;

/// Binds a simulator's listener; an error names the address, so a simulator
/// that cannot listen says where.
pub(crate) async fn listen_on(
    addr: std::net::SocketAddr,
) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}
