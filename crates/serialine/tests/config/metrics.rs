//! `[metrics]`: absent by default (no endpoint), `listen` required when the
//! table is there, a fixed port, strict keys, and the environment override.

use crate::{load, load_err, minimal_with, refused, MINIMAL};

#[test]
fn metrics_are_off_unless_the_table_is_there() {
    let c = load(MINIMAL).unwrap();
    assert!(c.metrics.is_none());
    let c = load(&minimal_with("[metrics]\nlisten = \"127.0.0.1:9898\"")).unwrap();
    assert_eq!(c.metrics.unwrap().listen.to_string(), "127.0.0.1:9898");
    let c = load(&minimal_with("[metrics]\nlisten = \"[::1]:9898\"")).unwrap();
    assert_eq!(c.metrics.unwrap().listen.port(), 9898);
}

#[test]
fn metrics_listen_is_required_fixed_and_an_address() {
    let (_, _, msg) = load_err(&minimal_with("[metrics]"));
    assert!(msg.contains("metrics") && msg.contains("listen"), "{msg}");
    refused(
        &minimal_with("[metrics]\nlisten = \"127.0.0.1:0\""),
        "metrics.listen",
        &["port 0", "127.0.0.1:9898"],
    );
    let (_, _, msg) = load_err(&minimal_with("[metrics]\nlisten = \"localhost\""));
    assert!(msg.contains("metrics.listen"), "{msg}");
    let (_, _, msg) = load_err(&minimal_with(
        "[metrics]\nlisten = \"127.0.0.1:9898\"\nlisen = 1",
    ));
    assert!(msg.contains("lisen"), "{msg}");
}

#[test]
#[allow(clippy::result_large_err)] // figment::Jail's closure returns figment::Result
fn metrics_listen_from_the_environment() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("serialine.toml", MINIMAL)?;
        jail.set_env("SERIALINE_METRICS__LISTEN", "127.0.0.1:9899");
        let path = jail.directory().join("serialine.toml");
        let c = serialine::config::Config::load(&path).map_err(|e| e.to_string())?;
        assert_eq!(
            c.metrics.map(|m| m.listen.to_string()).as_deref(),
            Some("127.0.0.1:9899")
        );
        Ok(())
    });
}

/// `serialine run` with `[metrics]` on a port already taken: exit 1 (it may
/// be free on the next start, so systemd may restart), the address named,
/// before any ledger is opened.
#[test]
fn run_fails_naming_a_metrics_address_it_cannot_bind() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (dir, path) = crate::keyed_config(0o600);
    let state = dir.path().join("state");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[daemon]\nstate_dir = \"{}\"\nwatchdog = false\n\n[metrics]\nlisten = \"{addr}\"\n",
        state.display()
    ));
    std::fs::write(&path, text).unwrap();
    let run = crate::run_daemon(&path);
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(&addr.to_string()) && run.stderr.contains("metrics"),
        "{}",
        run.stderr
    );
    assert!(!state.join("ledger").exists(), "no ledger opened");
}
