//! The one assembly, `open_line(plan, devices)`, against a real embedded
//! broker, the simulated issuer, a real ledger and simulated devices on pty
//! pairs: a line opens, runs two jobs one after the other (each on devices
//! spawned afresh by its factory), and tells when each has ended; a factory or
//! a ledger that fails is an error naming the line.

use serialine_core::{Expiry, Grade, Gtin, Job, Lot, Template};
use serialine_devices::camera::{self, CameraProfile};
use serialine_devices::printer::{self, FramedProfile};
use serialine_devices::transport::Link;
use serialine_line::{
    open_line, DeviceError, DeviceFactory, Devices, LineError, LinePlan, PipelinePlan,
};
use serialine_sim::broker::{EmbeddedBroker, MqttTarget};
use serialine_sim::camera::{CameraKnobs, CameraSim};
use serialine_sim::issuer::Issuer;
use serialine_sim::printer::{PrinterKnobs, PrinterSim};
use serialine_store::StoreOptions;
use serialine_uplink::{PrefetchConfig, UplinkConfig};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

const SITE: &str = "assembly";
const PRINTER_PROFILE: &str = include_str!("../../../config/printer-cij-stx.toml");

/// Simulated printer and camera on pty pairs, started afresh for each job.
#[derive(Default)]
struct PtyDevices {
    spawned: AtomicUsize,
    /// The simulators live as long as the factory.
    sims: Mutex<Vec<(PrinterSim, CameraSim)>>,
}

impl PtyDevices {
    fn start(&self) -> Result<Devices, DeviceError> {
        let profile: FramedProfile = toml::from_str(PRINTER_PROFILE)?;
        let (host_side, device_side) = tokio_serial::SerialStream::pair()?;
        let (printed_tx, printed_rx) = mpsc::unbounded_channel();
        let knobs = PrinterKnobs {
            buffer_depth: Some(profile.buffer_depth),
            ..PrinterKnobs::default()
        };
        let printer_sim = PrinterSim::spawn(device_side, &profile, knobs, Some(printed_tx), None)?;
        let cam_profile = CameraProfile::default();
        let (cam_host, cam_device) = tokio_serial::SerialStream::pair()?;
        let camera_sim = CameraSim::spawn(
            cam_device,
            &cam_profile,
            CameraKnobs::default(),
            printed_rx,
            None,
        )?;
        let printer = printer::spawn("printer", Link::open(host_side), &profile)?;
        let camera = camera::spawn("camera", Link::open(cam_host), &cam_profile)?;
        self.sims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((printer_sim, camera_sim));
        self.spawned.fetch_add(1, Ordering::SeqCst);
        Ok(Devices {
            printer,
            camera,
            names: vec!["printer (pty)".into(), "camera (pty)".into()],
        })
    }
}

impl DeviceFactory for PtyDevices {
    async fn spawn(&self, _line: &str) -> Result<Devices, DeviceError> {
        self.start()
    }
}

/// Devices that cannot be had (an address that does not resolve, say).
struct Unreachable;

impl DeviceFactory for Unreachable {
    async fn spawn(&self, _line: &str) -> Result<Devices, DeviceError> {
        Err("printer address: cannot resolve printer.invalid:9100".into())
    }
}

fn job(quantity: u64) -> Job {
    Job::new(
        Gtin::parse("09506000134352").unwrap(),
        Lot::new("LOT-A1").unwrap(),
        Expiry::parse("271231").unwrap(),
        Template::Gs1DataMatrix,
        quantity,
    )
    .unwrap()
}

fn plan(ledger: std::path::PathBuf, line: &str, secret: &[u8], port: u16) -> LinePlan {
    let mut uplink = UplinkConfig::new("127.0.0.1", port, SITE, line);
    uplink.prefetch = PrefetchConfig {
        low_water_serials: 100,
        high_water_serials: 1_000,
        low_water_minutes: 0.0,
        high_water_minutes: 0.0,
        max_buffer_serials: 1_000,
        check_interval: Duration::from_millis(50),
        ..PrefetchConfig::default()
    };
    uplink.product = Some(job(1).gtin);
    LinePlan {
        id: line.into(),
        store: StoreOptions::new(ledger, line, secret),
        uplink,
        pipeline: PipelinePlan {
            min_grade: Grade::C,
            camera_window: 8,
            read_deadline: Duration::from_millis(2_000),
            starve_timeout: Duration::from_secs(10),
            aggregation: Vec::new(),
        },
        default_job: Some(job(20)),
    }
}

async fn wait_until(mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("condition met within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_opens_runs_two_jobs_on_fresh_devices_and_says_when_each_ends() {
    let dir = tempfile::tempdir().unwrap();
    let broker = EmbeddedBroker::start().unwrap();
    let line = "line-a";
    let secret = [11u8; 32];
    let issuer = Issuer::new(b"assembly test seed", 500);
    issuer.add_line(line, &secret);
    let _issuer_task = issuer
        .spawn(
            &MqttTarget::new("127.0.0.1", broker.port, "assembly-issuer"),
            Some(SITE),
        )
        .await
        .unwrap();
    let devices = Arc::new(PtyDevices::default());
    let plan = plan(
        dir.path().join("ledger").join(line),
        line,
        &secret,
        broker.port,
    );
    let mut opened = open_line(plan, devices.clone(), || {}).await.unwrap();
    assert_eq!(opened.id, line);
    assert_eq!(opened.voided_at_open, 0);
    let default = opened
        .default_job()
        .cloned()
        .expect("the plan's default job");
    assert_eq!(default.quantity, 20);
    let store = opened.store.clone();
    wait_until(|| store.buffer_depth() >= 100).await;

    for (n, quantity) in [(1, 20), (2, 7)] {
        let running = opened.start_job(job(quantity)).await.unwrap();
        assert_eq!(
            devices.spawned.load(Ordering::SeqCst),
            n,
            "devices spawned per job"
        );
        tokio::time::timeout(Duration::from_secs(60), running.ended())
            .await
            .expect("ended() fires when the job is over");
        let (run, report) = running.finish().await.unwrap();
        assert_eq!(report.committed, quantity, "job {n}: {report:?}");
        assert_eq!(report.sent, quantity);
        assert_eq!(run.device_names, ["printer (pty)", "camera (pty)"]);
    }
    let c = store.counts();
    assert_eq!(c.committed + c.synced, 27);
    opened.uplink.clone().shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_that_cannot_be_had_are_an_error_naming_the_line_and_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let broker = EmbeddedBroker::start().unwrap();
    let plan = plan(
        dir.path().join("ledger").join("line-u"),
        "line-u",
        &[5u8; 32],
        broker.port,
    );
    let mut opened = open_line(plan, Unreachable, || {}).await.unwrap();
    let err = match opened.start_job(job(5)).await {
        Ok(_) => panic!("a job without devices started"),
        Err(e) => e,
    };
    assert!(matches!(err, LineError::Devices { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("line line-u"), "{text}");
    assert!(text.contains("printer.invalid:9100"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_that_cannot_be_created_is_an_error_naming_the_line_and_the_path() {
    let dir = tempfile::tempdir().unwrap();
    // The ledger's parent directory is a regular file.
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, b"x").unwrap();
    let broker = EmbeddedBroker::start().unwrap();
    let plan = plan(blocker.join("line-x"), "line-x", &[6u8; 32], broker.port);
    let err = match open_line(plan, Unreachable, || {}).await {
        Ok(_) => panic!("a ledger opened under a regular file"),
        Err(e) => e,
    };
    let text = err.to_string();
    assert!(text.contains("line line-x"), "{text}");
    assert!(text.contains("not-a-directory"), "{text}");
}
