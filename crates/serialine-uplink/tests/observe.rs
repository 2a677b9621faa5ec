//! The local observation and command API (for the OPC UA server): status
//! and alarms as the operator topics get them, commands into the same
//! receiver as `cmd/#`. No broker: none of it may depend on one.

use serialine_store::{Store, StoreOptions};
use serialine_uplink::{Alarm, AlarmKind, Command, LineState, StatusSnapshot, UplinkConfig};
use std::time::Duration;

fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn status_alarms_and_local_commands_without_a_broker() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(StoreOptions::new(
        dir.path().join("ledger"),
        "line-o",
        b"observe test secret, 32 bytes!!!",
    ))
    .unwrap();
    let cfg = UplinkConfig::new("127.0.0.1", dead_port(), "site-o", "line-o");
    let (uplink, mut commands) = serialine_uplink::start(cfg, store).unwrap();

    let mut status = uplink.watch_status();
    uplink.publish_status(StatusSnapshot {
        state: LineState::Faulted,
        ..Default::default()
    });
    tokio::time::timeout(Duration::from_secs(5), status.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.borrow().state, LineState::Faulted);

    let mut tap = uplink.alarm_tap();
    uplink.raise_alarm(Alarm::new(AlarmKind::StoreError, "disk full").with_serial("S1"));
    let a = tokio::time::timeout(Duration::from_secs(5), tap.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (a.kind, a.message.as_str(), a.serial.as_deref()),
        (AlarmKind::StoreError, "disk full", Some("S1"))
    );

    let answer = tokio::spawn({
        let uplink = uplink.clone();
        async move { uplink.submit_command(Command::StopJob).await }
    });
    let req = tokio::time::timeout(Duration::from_secs(5), commands.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(req.command, Command::StopJob);
    req.respond(Err("busy".into()));
    assert_eq!(answer.await.unwrap(), Err("busy".to_string()));

    // Nobody consumes the commands any more: said at once.
    drop(commands);
    assert_eq!(
        uplink.submit_command(Command::StopJob).await,
        Err("the line is not accepting commands".to_string())
    );
    uplink.abort();
}
