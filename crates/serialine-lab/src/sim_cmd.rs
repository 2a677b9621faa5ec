//! `serialine-lab sim ...`: the simulators as standalone processes for bench
//! setups and QA, each on 127.0.0.1 (or the address given) until Ctrl-C.

use anyhow::Context;
use serialine_devices::camera::CameraProfile;
use serialine_devices::printer::FramedProfile;
use serialine_sim::broker::{EmbeddedBroker, MqttTarget};
use serialine_sim::camera::{CameraKnobs, CameraSim};
use serialine_sim::issuer::Issuer;
use serialine_sim::laser::{LaserSim, LaserSimConfig, LaserSimMap};
use serialine_sim::printer::{PrinterKnobs, PrinterSim};
use serialine_sim::upstream::Upstream;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

const PRINTER_PROFILE: &str = include_str!("../../../config/printer-cij-stx.toml");
const LASER_MAP: &str = include_str!("../../../config/laser-modbus.toml");

#[derive(Debug, clap::Subcommand)]
pub enum Sim {
    /// A framed-ASCII printer on TCP, and the camera that reads what it prints.
    Printer {
        #[arg(long, default_value = "127.0.0.1:9100")]
        listen: String,
        /// Printer profile (TOML); default: the shipped CIJ profile.
        #[arg(long)]
        profile: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:9200")]
        camera_listen: String,
        /// Milliseconds to print one unit.
        #[arg(long, default_value_t = 0)]
        print_ms: u64,
        /// Share of codes answered with NAK (0..1).
        #[arg(long, default_value_t = 0.0)]
        nak_rate: f64,
        #[command(flatten)]
        camera: CameraArgs,
    },
    /// A laser marker on Modbus TCP, and the camera that reads its marks.
    Laser {
        /// Register map (TOML); default: the shipped map.
        #[arg(long)]
        map: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:9200")]
        camera_listen: String,
        /// Milliseconds to mark one unit.
        #[arg(long, default_value_t = 0)]
        mark_ms: u64,
        #[command(flatten)]
        camera: CameraArgs,
    },
    /// An MQTT broker (rumqttd) on 127.0.0.1.
    Broker {
        #[arg(long, default_value_t = 1883)]
        port: u16,
    },
    /// The upstream issuer: answers block requests with sealed blocks.
    Issuer {
        #[arg(long, default_value = "127.0.0.1:1883")]
        broker: String,
        /// Line and its secret file, as LINE=FILE; repeat for more lines.
        #[arg(long = "line", value_name = "LINE=FILE", required = true)]
        lines: Vec<String>,
        #[arg(long, default_value_t = 10_000)]
        block_size: u32,
        #[arg(long, default_value = "serialine-sim")]
        seed: String,
    },
    /// The upstream consumer: acknowledges event batches, deduplicates by id.
    Upstream {
        #[arg(long, default_value = "127.0.0.1:1883")]
        broker: String,
        /// Sign acks with this key file (64 hex digits): the lines'
        /// `mqtt.ack_key_file`. Without it acks are unsigned, which a line
        /// accepts only with `mqtt.allow_unsigned_acks = true`.
        #[arg(long, value_name = "FILE")]
        ack_key_file: Option<std::path::PathBuf>,
    },
}

/// The camera's faults, each a probability per unit (0 to 1, checked in
/// this order, at most one per unit), and its timing.
#[derive(Debug, clap::Args)]
pub struct CameraArgs {
    /// Report no code for the unit.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    no_read_rate: f64,
    /// Report the code with one character changed.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    misread_rate: f64,
    /// Report a code never printed on this line.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    foreign_rate: f64,
    /// Report an earlier unit's code again, for this unit's trigger.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    duplicate_rate: f64,
    /// Read the unit's code from a plain Data Matrix (`]d1`: the printer
    /// lost GS1 mode for that pack).
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    plain_symbol_rate: f64,
    /// Report the right code with grade D.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    low_grade_rate: f64,
    /// An unparseable line before the unit's result.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    garbage_rate: f64,
    /// The unit's result line sent twice (a double trigger).
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    double_trigger_rate: f64,
    /// An extra result line, without trigger id, with a code read good
    /// earlier (a pack back on the belt).
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    refed_rate: f64,
    /// The AIM symbology identifier put before every read, e.g. `]d2`
    /// (GS1 DataMatrix) or `]Q3` (GS1 QR Code); default none.
    #[arg(long, value_name = "ID")]
    symbology_id: Option<String>,
    /// Milliseconds from a unit's print to its result line (the belt from
    /// marker to camera, and the decode). It delays results without
    /// slowing the line; keep it under the line's `read_deadline_ms`.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    read_latency_ms: u64,
    /// Seed of the fault draws: the same seed, the same faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// A probability flag's value: a number from 0 to 1.
fn probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        Ok(p) => Err(format!("{p} is not a probability: expected 0 to 1")),
        Err(e) => Err(format!("{s:?}: {e}")),
    }
}

impl CameraArgs {
    fn knobs(&self) -> CameraKnobs {
        CameraKnobs {
            seed: self.seed,
            no_read_rate: self.no_read_rate,
            misread_rate: self.misread_rate,
            foreign_rate: self.foreign_rate,
            duplicate_rate: self.duplicate_rate,
            plain_symbol_rate: self.plain_symbol_rate,
            low_grade_rate: self.low_grade_rate,
            garbage_rate: self.garbage_rate,
            double_trigger_rate: self.double_trigger_rate,
            refed_rate: self.refed_rate,
            symbology_id: self.symbology_id.clone(),
            read_latency: Duration::from_millis(self.read_latency_ms),
            ..CameraKnobs::default()
        }
    }
}

/// The camera that reads what a printer or laser simulator put on the product.
async fn camera_on(
    addr: &str,
    args: &CameraArgs,
    printed: mpsc::UnboundedReceiver<(u64, String)>,
) -> anyhow::Result<(CameraSim, std::net::SocketAddr)> {
    Ok(CameraSim::listen(addr, &CameraProfile::default(), args.knobs(), printed, None).await?)
}

fn broker_target(addr: &str, id: &str) -> anyhow::Result<MqttTarget> {
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("--broker {addr:?}: expected HOST:PORT"))?;
    let port = port
        .parse()
        .with_context(|| format!("--broker {addr:?}: bad port"))?;
    Ok(MqttTarget::new(host, port, id))
}

fn read_toml<T: serde::de::DeserializeOwned>(
    path: Option<&PathBuf>,
    default: &str,
) -> anyhow::Result<T> {
    let text = match path {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => default.to_string(),
    };
    toml::from_str(&text).with_context(|| match path {
        Some(p) => format!("parsing {}", p.display()),
        None => "parsing the built-in default".into(),
    })
}

pub async fn run(sim: Sim) -> anyhow::Result<()> {
    match sim {
        Sim::Printer {
            listen,
            profile,
            camera_listen,
            print_ms,
            nak_rate,
            camera,
        } => {
            let profile: FramedProfile = read_toml(profile.as_ref(), PRINTER_PROFILE)?;
            let (tx, rx) = mpsc::unbounded_channel();
            let knobs = PrinterKnobs {
                print_time: Duration::from_millis(print_ms),
                nak_rate,
                buffer_depth: Some(profile.buffer_depth),
                ..PrinterKnobs::default()
            };
            let (_p, addr) = PrinterSim::listen(&listen, &profile, knobs, Some(tx), None).await?;
            let (_c, cam) = camera_on(&camera_listen, &camera, rx).await?;
            eprintln!("printer simulator on {addr}, camera simulator on {cam}; Ctrl-C stops");
            tokio::signal::ctrl_c().await?;
        }
        Sim::Laser {
            map,
            camera_listen,
            mark_ms,
            camera,
        } => {
            let map: LaserSimMap = read_toml(map.as_ref(), LASER_MAP)?;
            let (tx, rx) = mpsc::unbounded_channel();
            let mut cfg = LaserSimConfig::new(map);
            cfg.mark_time = Duration::from_millis(mark_ms);
            let laser = LaserSim::start(cfg, tx).await?;
            let (_c, cam) = camera_on(&camera_listen, &camera, rx).await?;
            eprintln!(
                "laser simulator on modbus {}, camera simulator on {cam}; Ctrl-C stops",
                laser.addr()
            );
            tokio::signal::ctrl_c().await?;
        }
        Sim::Broker { port } => {
            let b = EmbeddedBroker::start_on_port(port).context("starting the broker")?;
            eprintln!("MQTT broker on 127.0.0.1:{}; Ctrl-C stops", b.port);
            tokio::signal::ctrl_c().await?;
        }
        Sim::Issuer {
            broker,
            lines,
            block_size,
            seed,
        } => {
            let issuer = Issuer::new(seed.as_bytes(), block_size);
            for spec in &lines {
                let (line, file) = spec
                    .split_once('=')
                    .with_context(|| format!("--line {spec:?}: expected LINE=SECRET_FILE"))?;
                let mut secret =
                    std::fs::read(file).with_context(|| format!("reading secret file {file}"))?;
                // Same rule as the daemon: one trailing newline is not part of it.
                if secret.last() == Some(&b'\n') {
                    secret.pop();
                }
                issuer.add_line(line, &secret);
            }
            let _task = issuer
                .spawn(&broker_target(&broker, "serialine-sim-issuer")?, None)
                .await?;
            eprintln!(
                "issuer serving {} line(s) via {broker}; Ctrl-C stops",
                lines.len()
            );
            tokio::signal::ctrl_c().await?;
        }
        Sim::Upstream {
            broker,
            ack_key_file,
        } => {
            let upstream = Upstream::new();
            if let Some(path) = &ack_key_file {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the ack key {}", path.display()))?;
                let mut key = [0u8; 32];
                hex::decode_to_slice(text.trim(), &mut key).map_err(|_| {
                    anyhow::anyhow!(
                        "{} does not hold an ack key; expected 64 hex digits",
                        path.display()
                    )
                })?;
                upstream.set_ack_key(Some(key));
            }
            let _task = upstream
                .spawn(&broker_target(&broker, "serialine-sim-upstream")?, None)
                .await?;
            eprintln!("upstream consumer on {broker}; Ctrl-C stops");
            tokio::signal::ctrl_c().await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Camera {
        #[command(flatten)]
        camera: CameraArgs,
    }

    #[test]
    fn camera_flags_reach_the_simulator_knobs() {
        let c = Camera::try_parse_from([
            "sim",
            "--double-trigger-rate",
            "0.01",
            "--refed-rate",
            "0.02",
            "--garbage-rate",
            "0.03",
            "--plain-symbol-rate",
            "0.005",
            "--symbology-id",
            "]d2",
            "--read-latency-ms",
            "250",
            "--seed",
            "7",
        ])
        .expect("flags parse");
        let k = c.camera.knobs();
        assert_eq!(k.double_trigger_rate, 0.01);
        assert_eq!(k.refed_rate, 0.02);
        assert_eq!(k.garbage_rate, 0.03);
        assert_eq!(k.plain_symbol_rate, 0.005);
        assert_eq!(k.symbology_id.as_deref(), Some("]d2"));
        assert_eq!(k.read_latency, Duration::from_millis(250));
        assert_eq!(k.seed, 7);
    }

    #[test]
    fn a_rate_outside_0_to_1_is_refused_naming_the_flag() {
        let err = Camera::try_parse_from(["sim", "--no-read-rate", "1.5"])
            .expect_err("1.5 is not a probability")
            .to_string();
        assert!(err.contains("--no-read-rate"), "{err}");
        assert!(err.contains("expected 0 to 1"), "{err}");
    }
}
