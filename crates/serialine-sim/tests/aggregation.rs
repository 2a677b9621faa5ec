//! The aggregation camera simulator on its TCP link, parsed the way the
//! daemon parses it (the camera line format `{trigger};{content}`, content
//! split at TAB), and the unit camera's pass-to stream that feeds it.

use std::time::Duration;

use serialine_core::code::{self, Template};
use serialine_devices::camera::{CameraProfile, LineFormat};
use serialine_devices::UnitId;
use serialine_sim::aggregation::{
    AggregationKnobs, AggregationSim, AggregationSimError, CaseFault, CaseRead, NO_READ,
};
use serialine_sim::camera::{CameraKnobs, CameraSim, Verdict};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{self, UnboundedSender};

/// Long enough for a loaded CI machine, short enough to fail a hang.
const WAIT: Duration = Duration::from_secs(10);

/// The profile the daemon reads an aggregation camera with.
fn format() -> LineFormat {
    CameraProfile {
        template: "{trigger};{content}".into(),
        max_line: 65_536,
        ..Default::default()
    }
    .compile()
    .expect("profile")
}

/// The n-th unit's code: a GS1 element string, as the printer prints it.
fn code(n: usize) -> String {
    format!("010950600013435217271231\u{1d}10LOT1\u{1d}21S{n}")
}

fn codes(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(code).collect()
}

/// A client of the aggregation camera's link.
struct Client {
    lines: BufReader<TcpStream>,
    format: LineFormat,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Client {
            lines: BufReader::new(stream),
            format: format(),
        }
    }

    /// The next result line: its case number and its codes.
    async fn case(&mut self) -> (u64, Vec<String>) {
        let mut line = Vec::new();
        let n = tokio::time::timeout(WAIT, self.lines.read_until(b'\n', &mut line))
            .await
            .expect("a result line in time")
            .expect("read");
        assert!(n > 0, "the simulator closed the link");
        assert!(line.ends_with(b"\r\n"), "{line:?}");
        let line = line.strip_suffix(b"\n").expect("line ending");
        let read = self.format.parse(line).expect("parses as a camera line");
        let case = read.unit.expect("a case number");
        let content = read.content.expect("some content");
        (case, content.split('\t').map(str::to_owned).collect())
    }
}

fn send(tx: &UnboundedSender<(UnitId, String)>, range: std::ops::RangeInclusive<usize>) {
    for n in range {
        let unit = UnitId::try_from(n).expect("small");
        tx.send((unit, code(n))).expect("sim running");
    }
}

/// Waits until the simulator logged `cases` reads.
async fn logged(sim: &AggregationSim, cases: usize) -> Vec<CaseRead> {
    tokio::time::timeout(WAIT, async {
        loop {
            let log = sim.log();
            if log.len() >= cases {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("cases read in time")
}

/// A sim with cases of 3 and `knobs`, a client connected, units 1..=`units`
/// sent; the first `cases` lines and the log.
async fn run(
    knobs: AggregationKnobs,
    units: usize,
    cases: usize,
) -> (Vec<(u64, Vec<String>)>, Vec<CaseRead>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (sim, addr) = AggregationSim::listen(
        "127.0.0.1:0",
        AggregationKnobs {
            per_case: 3,
            ..knobs
        },
        rx,
    )
    .await
    .expect("listen");
    let mut client = Client::connect(addr).await;
    send(&tx, 1..=units);
    let mut lines = Vec::new();
    for _ in 0..cases {
        lines.push(client.case().await);
    }
    (lines, logged(&sim, cases).await)
}

#[tokio::test]
async fn clean_cases_of_three_come_in_order() {
    let (lines, log) = run(AggregationKnobs::default(), 9, 3).await;
    assert_eq!(
        lines,
        vec![(1, codes(1..=3)), (2, codes(4..=6)), (3, codes(7..=9))]
    );
    for (i, read) in log.iter().enumerate() {
        assert_eq!(read.case, i as u64 + 1);
        assert_eq!(read.contents, lines[i].1);
        let reported: Vec<Option<String>> = lines[i].1.iter().cloned().map(Some).collect();
        assert_eq!(read.reported, reported);
        assert_eq!(read.fault, None);
        assert!(!read.partial);
        assert!(read.lost.is_empty());
    }
}

#[tokio::test]
async fn a_missing_unit_leaves_the_case_one_code_short_and_is_lost() {
    let knobs = AggregationKnobs {
        missing_at: vec![2],
        ..AggregationKnobs::default()
    };
    let (lines, log) = run(knobs, 9, 3).await;
    assert_eq!(
        lines,
        vec![(1, codes(1..=3)), (2, codes(4..=5)), (3, codes(7..=9))]
    );
    assert_eq!(log[1].fault, Some(CaseFault::Missing));
    assert_eq!(log[1].contents, codes(4..=5));
    assert_eq!(log[1].lost, vec![code(6)]);
    assert!(
        !log[1].partial,
        "a full case that lost a unit, not a short one"
    );
    assert_eq!(log[0].fault, None);
    assert_eq!(log[2].fault, None);
}

#[tokio::test]
async fn a_foreign_unit_is_a_fourth_code_that_parses_as_gs1() {
    let knobs = AggregationKnobs {
        foreign_at: vec![1],
        ..AggregationKnobs::default()
    };
    let (lines, log) = run(knobs, 6, 2).await;
    let (case, got) = &lines[0];
    assert_eq!(*case, 1);
    assert_eq!(got.len(), 4);
    assert_eq!(got[..3], codes(1..=3)[..]);
    let foreign = &got[3];
    assert_eq!(foreign, "010999999999999421FOREIGNCASE1");
    let data = code::parse(&Template::Gs1DataMatrix, foreign).expect("a GS1 element string");
    assert_eq!(data.serial.as_str(), "FOREIGNCASE1");
    assert_eq!(log[0].fault, Some(CaseFault::Foreign));
    assert_eq!(&log[0].contents, got);
    assert!(log[0].lost.is_empty());
    assert_eq!(lines[1], (2, codes(4..=6)));
}

#[tokio::test]
async fn an_already_aggregated_unit_of_case_one_reappears_in_case_two() {
    let knobs = AggregationKnobs {
        // Case 1 has no earlier case: the knob cannot apply there.
        already_aggregated_at: vec![1, 2],
        ..AggregationKnobs::default()
    };
    let (lines, log) = run(knobs, 6, 2).await;
    assert_eq!(lines[0], (1, codes(1..=3)));
    assert_eq!(lines[1], (2, vec![code(4), code(5), code(1)]));
    assert!(lines[0].1.contains(&lines[1].1[2]));
    assert_eq!(log[0].fault, None);
    assert_eq!(log[1].fault, Some(CaseFault::AlreadyAggregated));
    assert_eq!(log[1].lost, vec![code(6)], "the displaced unit");
}

#[tokio::test]
async fn a_no_read_is_the_noread_token_in_the_codes_place() {
    let knobs = AggregationKnobs {
        no_read_at: vec![2],
        ..AggregationKnobs::default()
    };
    let (lines, log) = run(knobs, 6, 2).await;
    assert_eq!(lines[0], (1, codes(1..=3)));
    assert_eq!(lines[1], (2, vec![code(4), code(5), NO_READ.to_owned()]));
    assert_eq!(log[1].fault, Some(CaseFault::NoRead));
    assert_eq!(log[1].contents, codes(4..=6), "the unit is in the case");
    assert_eq!(log[1].reported, vec![Some(code(4)), Some(code(5)), None]);
    assert!(log[1].lost.is_empty());
}

#[tokio::test]
async fn the_symbology_id_comes_before_every_decoded_code_only() {
    let knobs = AggregationKnobs {
        symbology_id: Some("]d2".into()),
        no_read_at: vec![1],
        ..AggregationKnobs::default()
    };
    let (lines, log) = run(knobs, 3, 1).await;
    assert_eq!(
        lines[0].1,
        vec![
            format!("]d2{}", code(1)),
            format!("]d2{}", code(2)),
            NO_READ.to_owned()
        ]
    );
    for (n, sent) in lines[0].1[..2].iter().enumerate() {
        let data = code::parse(&Template::Gs1DataMatrix, sent).expect("a GS1 DataMatrix read");
        assert_eq!(data.serial.as_str(), format!("S{}", n + 1));
    }
    // The log keeps the codes without the identifier.
    assert_eq!(log[0].reported[0], Some(code(1)));
}

#[tokio::test]
async fn a_quiet_open_case_is_read_short_after_flush_after() {
    let (tx, rx) = mpsc::unbounded_channel();
    let knobs = AggregationKnobs {
        per_case: 3,
        flush_after: Some(Duration::from_millis(150)),
        ..AggregationKnobs::default()
    };
    let (sim, addr) = AggregationSim::listen("127.0.0.1:0", knobs, rx)
        .await
        .expect("listen");
    let mut client = Client::connect(addr).await;
    send(&tx, 1..=2);
    assert_eq!(client.case().await, (1, codes(1..=2)));
    let log = sim.log();
    assert!(log[0].partial);
    assert_eq!(log[0].fault, None);
    // The next job starts a new case.
    send(&tx, 3..=5);
    assert_eq!(client.case().await, (2, codes(3..=5)));
    assert!(!logged(&sim, 2).await[1].partial);
}

#[tokio::test]
async fn flush_reads_the_open_case_and_an_empty_one_not_at_all() {
    let (tx, rx) = mpsc::unbounded_channel();
    let knobs = AggregationKnobs {
        per_case: 3,
        ..AggregationKnobs::default()
    };
    let (sim, addr) = AggregationSim::listen("127.0.0.1:0", knobs, rx)
        .await
        .expect("listen");
    let mut client = Client::connect(addr).await;
    // Nothing open: no read, no case number used.
    sim.flush();
    // Sent before the flush, so in the case it reads.
    send(&tx, 1..=4);
    sim.flush();
    sim.flush();
    assert_eq!(client.case().await, (1, codes(1..=3)));
    assert_eq!(client.case().await, (2, codes(4..=4)));
    send(&tx, 5..=7);
    assert_eq!(client.case().await, (3, codes(5..=7)));
    let log = logged(&sim, 3).await;
    let partial: Vec<bool> = log.iter().map(|c| c.partial).collect();
    assert_eq!(partial, vec![false, true, false]);
}

#[tokio::test]
async fn cases_read_while_no_one_is_connected_come_on_the_next_connection() {
    let (tx, rx) = mpsc::unbounded_channel();
    let knobs = AggregationKnobs {
        per_case: 3,
        ..AggregationKnobs::default()
    };
    let (sim, addr) = AggregationSim::listen("127.0.0.1:0", knobs, rx)
        .await
        .expect("listen");
    // Before anyone ever connected.
    send(&tx, 1..=6);
    logged(&sim, 2).await;
    let mut client = Client::connect(addr).await;
    assert_eq!(client.case().await, (1, codes(1..=3)));
    assert_eq!(client.case().await, (2, codes(4..=6)));
    // The daemon goes away; a case is read meanwhile.
    drop(client);
    send(&tx, 7..=9);
    logged(&sim, 3).await;
    let mut client = Client::connect(addr).await;
    assert_eq!(client.case().await, (3, codes(7..=9)));
    send(&tx, 10..=12);
    assert_eq!(client.case().await, (4, codes(10..=12)));
}

#[tokio::test]
async fn a_case_of_nothing_is_refused() {
    let (_tx, rx) = mpsc::unbounded_channel();
    let knobs = AggregationKnobs {
        per_case: 0,
        ..AggregationKnobs::default()
    };
    let res = AggregationSim::listen("127.0.0.1:0", knobs, rx).await;
    assert!(
        matches!(res, Err(AggregationSimError::EmptyCase)),
        "{:?}",
        res.err()
    );
}

/// The unit camera passes exactly the units it read good, and those are
/// what the case packer packs.
#[tokio::test]
async fn the_unit_camera_passes_exactly_its_good_units_on_to_the_packer() {
    let (printed_tx, printed) = mpsc::unbounded_channel();
    let (pass_tx, mut passed) = mpsc::unbounded_channel();
    let knobs = CameraKnobs {
        seed: 11,
        no_read_rate: 0.2,
        misread_rate: 0.1,
        low_grade_rate: 0.1,
        double_trigger_rate: 0.2,
        pass_to: Some(pass_tx),
        ..CameraKnobs::default()
    };
    let camera_profile = CameraProfile::default();
    let (camera, camera_addr) =
        CameraSim::listen("127.0.0.1:0", &camera_profile, knobs, printed, None)
            .await
            .expect("camera listens");
    // The camera reports (and so passes units) only to a connected daemon.
    let mut daemon = BufReader::new(TcpStream::connect(camera_addr).await.expect("connect"));
    const UNITS: usize = 40;
    send(&printed_tx, 1..=UNITS);
    let mut lines = 0;
    let reported = loop {
        let log = camera.log();
        if log.len() == lines
            && log
                .iter()
                .filter(|r| r.verdict != Verdict::DoubleTrigger)
                .count()
                == UNITS
        {
            break log;
        }
        let mut line = Vec::new();
        tokio::time::timeout(WAIT, daemon.read_until(b'\n', &mut line))
            .await
            .expect("camera line in time")
            .expect("read");
        lines += 1;
    };
    let good: Vec<(UnitId, String)> = reported
        .iter()
        .filter(|r| r.verdict == Verdict::Good)
        .map(|r| (r.unit, r.printed.clone()))
        .collect();
    assert!(
        (1..UNITS).contains(&good.len()),
        "some units good, some not: {} good",
        good.len()
    );
    let mut got = Vec::new();
    for _ in 0..good.len() {
        let item = tokio::time::timeout(WAIT, passed.recv())
            .await
            .expect("passed in time")
            .expect("camera running");
        got.push(item);
    }
    assert_eq!(got, good);
    // A double trigger of a good unit does not pass it twice.
    assert!(
        reported
            .iter()
            .any(|r| r.verdict == Verdict::DoubleTrigger && r.content.as_ref() == Some(&r.printed)),
        "the seed gives a double trigger of a good read"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(passed.try_recv().is_err(), "nothing but the good units");

    // Into a case packer: the cases hold the good units, in order.
    let (pack_tx, pack_rx) = mpsc::unbounded_channel();
    let (packer, packer_addr) = AggregationSim::listen(
        "127.0.0.1:0",
        AggregationKnobs {
            per_case: 4,
            ..AggregationKnobs::default()
        },
        pack_rx,
    )
    .await
    .expect("packer listens");
    let mut client = Client::connect(packer_addr).await;
    for item in got {
        pack_tx.send(item).expect("packer running");
    }
    packer.flush();
    let mut packed = Vec::new();
    let cases = good.len().div_ceil(4);
    for n in 1..=cases {
        let (case, codes) = client.case().await;
        assert_eq!(case, n as u64);
        packed.extend(codes);
    }
    let good_codes: Vec<String> = good.into_iter().map(|(_, c)| c).collect();
    assert_eq!(packed, good_codes);
}
