//! The pipeline against real simulated devices (printer and camera on pty
//! pairs) and a real ledger: serials are bound to their block's product
//! (issue 13, section 3), and a code that does not render leaves its serial
//! in the pool, counted (issue 13, section 5).

use serialine_core::code::Template;
use serialine_core::{Block, BlockKey, Expiry, Grade, Gtin, Job, Lot, Serial, UnitState};
use serialine_devices::camera::{self, CameraProfile};
use serialine_devices::printer::{self, FramedProfile};
use serialine_devices::transport::Link;
use serialine_line::pipeline::{run_line, Alarm, AlarmKind, LineReport, LineSpec, Progress};
use serialine_sim::camera::{CameraKnobs, CameraSim};
use serialine_sim::printer::{PrinterKnobs, PrinterSim};
use serialine_store::{Store, StoreOptions};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

const LINE: &str = "line-p";
const SECRET: &[u8] = b"pipeline product test secret";
const PRINTER_PROFILE: &str = include_str!("../../../config/printer-cij-stx.toml");

fn gtin_a() -> Gtin {
    Gtin::parse("09506000134352").unwrap()
}

fn gtin_b() -> Gtin {
    Gtin::parse("04006381333931").unwrap()
}

async fn add_block(store: &Store, block_id: u64, gtin: Gtin, serials: &[String]) {
    let block = Block {
        block_id,
        line_id: LINE.into(),
        gtin,
        serials: serials
            .iter()
            .map(|s| Serial::new(s.as_str()).unwrap())
            .collect(),
        issued_at: 1_790_000_000,
    };
    let mut nonce = [7u8; 24];
    nonce[..8].copy_from_slice(&block_id.to_be_bytes());
    let sealed = BlockKey::derive(SECRET).seal(&block, nonce).unwrap();
    store.add_block(&sealed).await.unwrap();
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:06}")).collect()
}

/// Runs `job` on simulated devices to its end; returns the report and
/// every alarm raised.
async fn run_job(store: &Store, job: Job) -> (LineReport, Vec<Alarm>) {
    let profile: FramedProfile = toml::from_str(PRINTER_PROFILE).unwrap();
    let (host_side, device_side) = tokio_serial::SerialStream::pair().unwrap();
    let (printed_tx, printed_rx) = mpsc::unbounded_channel();
    let knobs = PrinterKnobs {
        buffer_depth: Some(profile.buffer_depth),
        ..PrinterKnobs::default()
    };
    let _printer_sim =
        PrinterSim::spawn(device_side, &profile, knobs, Some(printed_tx), None).unwrap();
    let cam_profile = CameraProfile::default();
    let (cam_host, cam_device) = tokio_serial::SerialStream::pair().unwrap();
    let _camera_sim = CameraSim::spawn(
        cam_device,
        &cam_profile,
        CameraKnobs::default(),
        printed_rx,
        None,
    )
    .unwrap();
    let printer = printer::spawn("printer", Link::open(host_side), &profile).unwrap();
    let camera = camera::spawn("camera", Link::open(cam_host), &cam_profile).unwrap();
    let spec = LineSpec {
        line_id: LINE.into(),
        job,
        min_grade: Grade::C,
        camera_window: 8,
        read_deadline: Duration::from_millis(2_000),
        // Short: a job whose product has no serials left stops soon.
        starve_timeout: Duration::from_millis(500),
        heartbeat: Default::default(),
        job_number: None,
        committed_to: None,
    };
    let (alarm_tx, mut alarm_rx) = mpsc::unbounded_channel();
    let (progress_tx, _progress_rx) = watch::channel(Progress::default());
    let (_stop_tx, stop_rx) = watch::channel(false);
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        run_line(
            spec,
            store.clone(),
            printer,
            camera,
            alarm_tx,
            progress_tx,
            stop_rx,
        ),
    )
    .await
    .expect("the job ends")
    .expect("the job runs");
    let mut alarms = Vec::new();
    while let Ok(a) = alarm_rx.try_recv() {
        alarms.push(a);
    }
    (report, alarms)
}

fn job(gtin: Gtin, template: Template, quantity: u64) -> Job {
    Job::new(
        gtin,
        Lot::new("LOT-P1").unwrap(),
        Expiry::parse("271231").unwrap(),
        template,
        quantity,
    )
    .unwrap()
}

fn open(dir: &std::path::Path) -> Store {
    Store::open(StoreOptions::new(dir.join("ledger"), LINE, SECRET))
        .unwrap()
        .0
}

/// Changeover A -> B with A's blocks buffered: B's job prints only B's
/// serials and stops when they run out, A's stay for A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_prints_only_serials_sealed_for_its_product() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = names("A", 40);
    let b = names("B", 15);
    add_block(&store, 1, gtin_a(), &a[..20]).await;
    add_block(&store, 2, gtin_b(), &b).await;
    add_block(&store, 3, gtin_a(), &a[20..]).await;

    // Job A: 10 units.
    let (r, _) = run_job(&store, job(gtin_a(), Template::Gs1DataMatrix, 10)).await;
    assert_eq!(r.committed, 10);
    // Job B asks for 25 units with 30 of A's serials buffered: only B's 15
    // are used, then the job stops for want of B's serials.
    let (r, alarms) = run_job(&store, job(gtin_b(), Template::Gs1DataMatrix, 25)).await;
    assert_eq!(r.sent, 15, "{r:?}");
    assert_eq!(r.committed, 15);
    assert!(alarms
        .iter()
        .any(|a| a.kind == AlarmKind::LowBuffer && a.message.contains("04006381333931")));
    for s in &b {
        let st = store.state_of(&Serial::new(s.as_str()).unwrap()).unwrap();
        assert!(matches!(st, UnitState::Committed), "{s}: {st}");
    }
    let a_used = a
        .iter()
        .filter(|s| {
            store.state_of(&Serial::new(s.as_str()).unwrap()).unwrap() != UnitState::Available
        })
        .count();
    assert_eq!(a_used, 10, "only job A used A's serials");
    assert_eq!(store.buffer_depth_for(&gtin_a()).unwrap(), 30);
    assert_eq!(store.buffer_depth_for(&gtin_b()).unwrap(), 0);
}

/// Serials whose code does not render (a '(' in a plain-text code) are
/// alarmed once, never sent, and stay in the pool and in the buffer count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrenderable_serials_stay_in_the_pool_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut serials = names("G", 20);
    let bad = vec![
        "BAD(1)".to_string(),
        "BAD(2)".to_string(),
        "BAD(3)".to_string(),
    ];
    serials.insert(2, bad[0].clone());
    serials.insert(9, bad[1].clone());
    serials.push(bad[2].clone());
    add_block(&store, 1, gtin_a(), &serials).await;
    assert_eq!(store.buffer_depth_for(&gtin_a()).unwrap(), 23);

    // Asks for more than can be rendered: the 20 good ones go out, then
    // only unrenderable serials are left and the job stops (starved).
    let (r, alarms) = run_job(&store, job(gtin_a(), Template::PlainText, 22)).await;
    assert_eq!(r.sent, 20, "{r:?}");
    let render: Vec<_> = alarms
        .iter()
        .filter(|a| a.kind == AlarmKind::RenderError)
        .collect();
    assert_eq!(
        render.len(),
        3,
        "one alarm per unrenderable serial: {render:?}"
    );
    for s in &bad {
        let s = Serial::new(s.as_str()).unwrap();
        assert_eq!(store.state_of(&s).unwrap(), UnitState::Available, "{s}");
    }
    // Before the fix these stayed reserved, out of the count for good.
    assert_eq!(store.buffer_depth_for(&gtin_a()).unwrap(), 3);
    assert_eq!(store.buffer_depth(), 3);
    let again = store.reserve_for(10, &gtin_a()).unwrap();
    assert_eq!(again.len(), 3);
}
