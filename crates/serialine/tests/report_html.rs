//! `serialine report --html`: a job's reconciliation as a self-contained
//! page, read by a real browser. With `REPORT_BROWSER` (Chromium; `.ci/run`
//! installs it from Debian's packages) the page is loaded headless: the
//! DOM it builds holds the charts' bars, and its screenshot shows them in
//! their colours. Without it the browser part says it was skipped.

// The store's own fixtures: blocks sealed one way.
#[path = "offline/mod.rs"]
mod offline;

#[path = "../../serialine-store/tests/common/fixtures.rs"]
#[allow(dead_code)]
mod fixtures;

use fixtures::{gtin, seal_block};
use offline::{serialine, LINE};
use serialine_core::{BlockKey, Expiry, Job, Lot, RejectReason, Serial, Template, UnitState};
use serialine_store::{Store, StoreOptions, Transition};
use std::path::Path;
use std::process::Command;

const SECRET: &[u8] = b"report-test line secret, 32 B!!!";
const BROWSER_VAR: &str = "REPORT_BROWSER";

/// One job: 100 units sent, 80 committed, 8 no-reads, 4 low grades, 8
/// voided; ended. The rest of the block stays buffered.
fn fill_ledger(path: &Path) {
    let (store, _) = Store::open(StoreOptions::new(path, LINE, SECRET)).expect("ledger opens");
    let key = BlockKey::derive(SECRET);
    let serials = (0..150)
        .map(|n| Serial::new(format!("H{n:05}")).expect("serial"))
        .collect();
    store
        .add_block_blocking(&seal_block(&key, LINE, 1, serials))
        .expect("block added");
    let job = Job::new(
        gtin(),
        Lot::new("HTML<&>1").expect("lot"),
        Expiry::parse("271231").expect("expiry"),
        Template::Gs1DataMatrix,
        100,
    )
    .expect("job");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let number = runtime.block_on(store.begin_job(&job)).expect("job begun");
    let taken = store.reserve_for(100, &gtin()).expect("reserve");
    let apply = |serials: &[Serial], to: UnitState| {
        let ts: Vec<_> = serials
            .iter()
            .map(|s| Transition::in_job(s.clone(), to, Some(number)))
            .collect();
        for r in store.apply_blocking(&ts) {
            r.expect("transition");
        }
    };
    apply(&taken, UnitState::Sent);
    apply(&taken[..80], UnitState::Committed);
    apply(&taken[80..88], UnitState::Rejected(RejectReason::NoRead));
    apply(&taken[88..92], UnitState::Rejected(RejectReason::LowGrade));
    apply(&taken[92..], UnitState::Voided);
    runtime
        .block_on(store.end_job(number, "job complete"))
        .expect("job ended");
}

#[test]
fn the_html_report_balances_and_a_browser_draws_its_charts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = std::fs::canonicalize(dir.path()).expect("path");
    fill_ledger(&root.join("ledger").join(LINE));
    let config = offline::write_config(&root, SECRET, "");
    let page = root.join("job-1.html");
    let out = serialine(
        &config,
        &["report", "--html", page.to_str().expect("UTF-8")],
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&page).expect("the page is written");
    for needle in [
        r#"<td id="sent">100</td>"#,
        r#"<td id="committed">80 "#,
        "no-read 8",
        "low-grade 4",
        r#"<td id="voided">8</td>"#,
        "Balanced: sent = committed + rejected + voided + in flight.",
        // The lot is escaped, never markup.
        "lot HTML&lt;&amp;&gt;1",
    ] {
        assert!(html.contains(needle), "{needle:?} missing:\n{html}");
    }
    assert_eq!(html.matches("<svg").count(), 2, "two charts");

    let Some(browser) = std::env::var_os(BROWSER_VAR) else {
        println!(
            "SKIPPED the browser part: {BROWSER_VAR} is not set (Chromium; .ci/run installs it)"
        );
        return;
    };
    let url = format!("file://{}", page.display());
    let headless = |extra: &[&str]| {
        Command::new(&browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=1000,1100",
            ])
            .args(extra)
            .arg(&url)
            .output()
            .expect("the browser runs")
    };
    // The DOM the browser built: both charts, with their bars.
    let dom = headless(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.matches("class=\"bar\"").count() >= 4,
        "bars in the browser's DOM:\n{dom}"
    );
    // The screenshot: the committed bars' green and the no-read orange
    // are on the page as drawn.
    let shot = root.join("job-1.png");
    let out = headless(&[&format!("--screenshot={}", shot.display())]);
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&shot).expect("screenshot"),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    assert!(info.width >= 900 && info.height >= 600, "{info:?}");
    let channels = info.color_type.samples();
    let count = |rgb: [u8; 3]| {
        buf[..info.buffer_size()]
            .chunks(channels)
            .filter(|p| p[..3] == rgb)
            .count()
    };
    let green = count([0x27, 0xae, 0x60]);
    let orange = count([0xe6, 0x7e, 0x22]);
    println!(
        "screenshot {}x{}: {green} green and {orange} orange pixels",
        info.width, info.height
    );
    // To look at them: REPORT_HTML_KEEP=DIR keeps the page and its screenshot.
    if let Some(keep) = std::env::var_os("REPORT_HTML_KEEP") {
        let keep = Path::new(&keep);
        std::fs::create_dir_all(keep).expect("keep dir");
        std::fs::copy(&page, keep.join("job-1.html")).expect("page kept");
        std::fs::copy(&shot, keep.join("job-1.png")).expect("screenshot kept");
    }
    assert!(green > 500, "committed bars drawn: {green} pixels");
    assert!(orange > 20, "no-read bars drawn: {orange} pixels");
}
