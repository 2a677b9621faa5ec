//! `serialine-lab record`: a transparent tap between the daemon and a device
//! that records their conversation, byte for byte, for replay in hil-tests.
//!
//! The tap connects to the device (TCP or a serial port) and offers the
//! daemon a stand-in: a TCP listener, or a pseudo-terminal whose path is
//! linked where the daemon's config expects the port. Bytes pass through
//! unchanged and are written to the recording as they pass, in the
//! simulators' format (`serialine_sim::recording`): `rx` what the device
//! received, `tx` what it sent.

use anyhow::{bail, Context};
use serialine_devices::transport::{BoxedStream, SerialSettings, TcpSettings, TransportSettings};
use serialine_sim::recording::{Direction, Recorder};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// The device: tcp:HOST:PORT or serial:PATH (e.g. serial:/dev/ttyUSB0).
    #[arg(long, value_name = "tcp:HOST:PORT|serial:PATH")]
    device: String,
    /// Serial line speed, for a serial device.
    #[arg(long, default_value_t = 115_200)]
    baud: u32,
    /// Where the daemon connects instead: tcp:ADDR (a listener; port 0 picks
    /// one and prints it) or pty:PATH (a pseudo-terminal linked at PATH, to
    /// put in the daemon's serial transport).
    #[arg(long, value_name = "tcp:ADDR|pty:PATH")]
    listen: String,
    /// The recording to write (replaced if it exists).
    #[arg(long, short, value_name = "FILE")]
    out: PathBuf,
    /// Stop after this long (e.g. 10m); default: until Ctrl-C or SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
}

/// Bytes through the tap, each way.
#[derive(Default)]
struct Totals {
    to_device: AtomicU64,
    from_device: AtomicU64,
    sessions: AtomicU64,
}

pub async fn run(args: RecordArgs) -> anyhow::Result<()> {
    let device = parse_device(&args.device, args.baud)?;
    let recorder = Recorder::create(&args.out)
        .with_context(|| format!("creating the recording {}", args.out.display()))?;
    let totals = Arc::new(Totals::default());
    let tap = tap(&args.listen, device, recorder, totals.clone());
    let started = Instant::now();
    let progress = progress(totals.clone(), started);
    tokio::select! {
        r = tap => r?,
        _ = progress => {}
        _ = stop_signal() => eprintln!("serialine-lab record: stopping"),
        _ = sleep_or_forever(args.duration) => eprintln!("serialine-lab record: --duration reached"),
    }
    eprintln!(
        "serialine-lab record: {} session(s), {} bytes to the device, {} from it, in {:.1} s; recording {}",
        totals.sessions.load(Ordering::Relaxed),
        totals.to_device.load(Ordering::Relaxed),
        totals.from_device.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

fn parse_device(spec: &str, baud: u32) -> anyhow::Result<TransportSettings> {
    match spec.split_once(':') {
        Some(("tcp", addr)) if !addr.is_empty() => {
            Ok(TransportSettings::Tcp(TcpSettings::new(addr)))
        }
        Some(("serial", path)) if !path.is_empty() => {
            let mut s = SerialSettings::new(path);
            s.baud = baud;
            Ok(TransportSettings::Serial(s))
        }
        _ => bail!("--device {spec:?}: expected tcp:HOST:PORT or serial:PATH"),
    }
}

async fn tap(
    listen: &str,
    device: TransportSettings,
    recorder: Recorder,
    totals: Arc<Totals>,
) -> anyhow::Result<()> {
    match listen.split_once(':') {
        Some(("tcp", addr)) if !addr.is_empty() => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("--listen: cannot listen on {addr}"))?;
            let local = listener.local_addr()?;
            eprintln!(
                "serialine-lab record: listening on {local} for the daemon; device {}",
                device.describe()
            );
            // One daemon connection at a time, each with a fresh device
            // connection, as the daemon's own reconnects would make.
            loop {
                let (daemon, peer) = listener.accept().await.context("accepting the daemon")?;
                let _ = daemon.set_nodelay(true);
                eprintln!("serialine-lab record: daemon connected from {peer}");
                session(Box::new(daemon), &device, &recorder, &totals).await;
            }
        }
        Some(("pty", link)) if !link.is_empty() => {
            let (master, slave) =
                tokio_serial::SerialStream::pair().context("opening a pseudo-terminal pair")?;
            let slave_path = tokio_serial::SerialPort::name(&slave)
                .context("the pseudo-terminal has no name")?;
            link_pty(Path::new(link), Path::new(&slave_path))?;
            eprintln!(
                "serialine-lab record: pseudo-terminal {slave_path} linked at {link}; device {}",
                device.describe()
            );
            // The slave stays open here so the master does not see a hangup
            // before the daemon opens it.
            let _slave = slave;
            session(Box::new(master), &device, &recorder, &totals).await;
            let _ = std::fs::remove_file(link);
            bail!("the pseudo-terminal session ended; start the tap again to record more")
        }
        _ => bail!("--listen {listen:?}: expected tcp:ADDR or pty:PATH"),
    }
}

/// Points `link` at the pseudo-terminal, replacing an earlier link (not a
/// regular file: that is somebody's data).
fn link_pty(link: &Path, target: &Path) -> anyhow::Result<()> {
    if let Ok(meta) = std::fs::symlink_metadata(link) {
        if !meta.file_type().is_symlink() {
            bail!(
                "--listen pty:{}: exists and is not a symbolic link",
                link.display()
            );
        }
        std::fs::remove_file(link).with_context(|| format!("replacing {}", link.display()))?;
    }
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("linking {} to {}", link.display(), target.display()))
}

/// Pumps one daemon connection to a fresh device connection until either
/// side closes; closing one side closes the other, as a pulled cable would.
async fn session(daemon: BoxedStream, device: &TransportSettings, rec: &Recorder, t: &Totals) {
    let dev = match device.connect().await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("serialine-lab record: {e}; dropping the daemon's connection");
            return;
        }
    };
    t.sessions.fetch_add(1, Ordering::Relaxed);
    let (daemon_rd, daemon_wr) = tokio::io::split(daemon);
    let (dev_rd, dev_wr) = tokio::io::split(dev);
    let why = tokio::select! {
        r = pump(daemon_rd, dev_wr, Direction::Rx, rec, &t.to_device) => ("daemon", r),
        r = pump(dev_rd, daemon_wr, Direction::Tx, rec, &t.from_device) => ("device", r),
    };
    match why {
        (side, Ok(())) => eprintln!("serialine-lab record: the {side} closed the connection"),
        (side, Err(e)) => eprintln!("serialine-lab record: {side} side: {e}"),
    }
}

async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    dir: Direction,
    rec: &Recorder,
    count: &AtomicU64,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 8192];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        // Recorded before it is passed on: a reply can never be recorded
        // ahead of the bytes that caused it.
        rec.record(dir, &buf[..n]);
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// A line on stderr every 10 s while bytes flow.
async fn progress(t: Arc<Totals>, started: Instant) {
    let mut last = (0, 0);
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let now = (
            t.to_device.load(Ordering::Relaxed),
            t.from_device.load(Ordering::Relaxed),
        );
        if now != last {
            eprintln!(
                "serialine-lab record: {:.0} s, {} bytes to the device, {} from it",
                started.elapsed().as_secs_f64(),
                now.0,
                now.1
            );
            last = now;
        }
    }
}

async fn sleep_or_forever(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
