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

#[derive(Debug, clap::Args)]
pub struct CameraArgs {
    #[arg(long, default_value_t = 0.0)]
    no_read_rate: f64,
    #[arg(long, default_value_t = 0.0)]
    misread_rate: f64,
    #[arg(long, default_value_t = 0.0)]
    low_grade_rate: f64,
    #[arg(long, default_value_t = 0.0)]
    duplicate_rate: f64,
    #[arg(long, default_value_t = 0.0)]
    foreign_rate: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl CameraArgs {
    fn knobs(&self) -> CameraKnobs {
        CameraKnobs {
            seed: self.seed,
            no_read_rate: self.no_read_rate,
            misread_rate: self.misread_rate,
            low_grade_rate: self.low_grade_rate,
            duplicate_rate: self.duplicate_rate,
            foreign_rate: self.foreign_rate,
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
