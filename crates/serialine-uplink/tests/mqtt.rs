//! The uplink against a real broker (embedded rumqttd, or the broker named by
//! `SERIALINE_TEST_MQTT=host:port`), with the simulated issuer and upstream.

mod common;

use common::*;
use serde_json::json;
use serialine_sim::issuer::Fault;
use serialine_store::event_id;
use serialine_uplink::{
    sign_ack, sign_command, sign_command_at, start, AckAuth, Alarm, AlarmKind, Command,
    CommandAuth, LineState, Metrics, StatusSnapshot,
};
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_fills_the_buffer_to_low_water_with_issued_blocks() {
    let (host, port) = broker();
    let (site, line) = (unique("site"), unique("line"));
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &line);
    let (issuer, _it) = issuer(&host, port, &site, &line, 100).await;
    let mut cfg = config(&host, port, &site, &line);
    cfg.prefetch.low_water_serials = 250;
    cfg.prefetch.high_water_serials = 400;
    assert_eq!(store.buffer_depth(), 0);

    let (uplink, _cmds) = start(cfg, store.clone()).unwrap();
    eventually(WAIT, "buffer at the high-water mark", || {
        store.buffer_depth() >= 400
    })
    .await;
    // Every stored block is acknowledged upstream, after it was stored.
    eventually(WAIT, "block acks", || {
        issuer.acked(&line).len() as u64 == store.counts().blocks
    })
    .await;
    let acked = issuer.acked(&line);
    assert!(acked.windows(2).all(|w| w[0] < w[1]), "{acked:?}");
    assert_eq!(store.counts().issued, 400);

    // Units drawn from the buffer were issued to this line.
    let issued = issuer.issued(&line);
    let made = produce(&store, 200).await;
    assert!(made.iter().all(|(s, _)| issued.contains(s)));

    // Below low water again (200 < 250): refilled to high water.
    eventually(WAIT, "refill after consumption", || {
        store.buffer_depth() >= 400
    })
    .await;
    uplink.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_wrong_line_blocks_raise_alarms_and_change_nothing() {
    let (host, port) = broker();
    let (site, line) = (unique("site"), unique("line"));
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &line);
    let (issuer, _it) = issuer(&host, port, &site, &line, 100).await;
    for f in [Fault::Forge, Fault::Honest, Fault::Replay, Fault::WrongLine] {
        issuer.push_fault(&line, f);
    }
    let mut alarms = Watcher::start(&host, port, &format!("serialine/{site}/{line}/alarms")).await;
    let mut cfg = config(&host, port, &site, &line);
    cfg.prefetch.low_water_serials = 250;
    cfg.prefetch.high_water_serials = 300;
    let (uplink, _cmds) = start(cfg, store.clone()).unwrap();

    let forged = alarms
        .next_where("forged-block alarm", |m| {
            m.json["kind"] == AlarmKind::ForgedBlock.as_str()
        })
        .await;
    assert!(!forged.retain);
    assert!(
        forged.json["message"]
            .as_str()
            .unwrap()
            .contains("authentication"),
        "{:?}",
        forged.json
    );
    alarms
        .next_where("replayed-block alarm", |m| {
            m.json["kind"] == AlarmKind::ReplayedBlock.as_str()
        })
        .await;
    alarms
        .next_where("wrong-line-block alarm", |m| {
            m.json["kind"] == AlarmKind::WrongLineBlock.as_str()
        })
        .await;
    eventually(WAIT, "buffer refilled with honest blocks", || {
        store.buffer_depth() >= 300
    })
    .await;

    let blocks = issuer.blocks(&line);
    let honest: Vec<u64> = blocks
        .iter()
        .filter(|b| b.fault == Fault::Honest)
        .map(|b| b.block_id)
        .collect();
    let faulty: HashSet<u64> = blocks
        .iter()
        .filter(|b| matches!(b.fault, Fault::Forge | Fault::WrongLine))
        .map(|b| b.block_id)
        .collect();
    let c = store.counts();
    assert_eq!(
        c.blocks,
        honest.len() as u64,
        "only honest blocks stored: {blocks:?}"
    );
    assert_eq!(c.issued, 100 * honest.len() as u64);
    eventually(WAIT, "acks", || issuer.acked(&line).len() == honest.len()).await;
    let acked = issuer.acked(&line);
    assert_eq!(acked, honest, "only stored blocks are acknowledged");
    assert!(acked.iter().all(|id| !faulty.contains(id)));
    uplink.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_keeps_the_line_running_and_the_outbox_drains_in_order() {
    let (host, port) = broker();
    let (site, line) = (unique("site"), unique("line"));
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &line);
    let (issuer, _it) = issuer(&host, port, &site, &line, 1000).await;
    preload(&store, &issuer, &line, 2).await;
    let (up, _ut) = upstream(&host, port, &site).await;
    let proxy = proxy(&host, port).await;

    let (uplink, _cmds) =
        start(config("127.0.0.1", proxy.port, &site, &line), store.clone()).unwrap();
    uplink.wait_connected(WAIT).await.unwrap();
    let mut made = produce(&store, 300).await;
    up.wait_for(&line, WAIT, "first 300 events", |l| l.unique() == 300)
        .await
        .unwrap();
    eventually(WAIT, "outbox drained before the outage", || {
        store.outbox_depth() == 0
    })
    .await;

    proxy.cut();
    let mut link = uplink.link();
    within(
        WAIT,
        "uplink to notice the outage",
        link.wait_for(|l| !l.ready),
    )
    .await
    .unwrap();
    // Production goes on, unblocked, while the broker is unreachable.
    let during = within(WAIT, "production during the outage", produce(&store, 700)).await;
    made.extend(during);
    uplink.publish_status(StatusSnapshot {
        state: LineState::Running,
        ..Default::default()
    });
    uplink.raise_alarm(Alarm::new(AlarmKind::DeviceFault, "raised while offline"));
    assert_eq!(
        store.outbox_depth(),
        700,
        "the outbox holds what could not be sent"
    );
    assert_eq!(up.line(&line).unique(), 300);

    let mut alarms = Watcher::start(&host, port, &format!("serialine/{site}/{line}/alarms")).await;
    proxy.restore();
    let got = up
        .wait_for(&line, WAIT, "all 1000 events after reconnect", |l| {
            l.unique() == 1000
        })
        .await
        .unwrap();
    eventually(WAIT, "outbox drained after reconnect", || {
        store.outbox_depth() == 0
    })
    .await;
    alarms
        .next_where("alarm queued during the outage", |m| {
            m.json["kind"] == "device-fault" && m.json["message"] == "raised while offline"
        })
        .await;

    assert_eq!(got.conflicts, 0);
    let expected: Vec<String> = made
        .iter()
        .map(|(s, st)| hex::encode(event_id(&line, s, *st)))
        .collect();
    assert_eq!(
        got.order, expected,
        "upstream first saw the events in production order"
    );
    // Counters follow the flush that made the acks durable, a moment after
    // the outbox entries disappear.
    eventually(WAIT, "900 synced and 100 reported", || {
        let c = store.counts();
        c.synced == 900 && c.reported == 100
    })
    .await;
    uplink.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_publish_loses_nothing_and_duplicates_only_as_repeated_ids() {
    let (host, port) = broker();
    let (site, line) = (unique("site"), unique("line"));
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &line);
    let (issuer, _it) = issuer(&host, port, &site, &line, 1000).await;
    preload(&store, &issuer, &line, 3).await;
    let made = produce(&store, 3000).await;
    let (up, _ut) = upstream(&host, port, &site).await;
    // Upstream receives but does not acknowledge: when the uplink dies,
    // batches are delivered and still in the outbox.
    up.set_acking(false);

    let cfg = config(&host, port, &site, &line);
    let (first, _c1) = start(cfg.clone(), store.clone()).unwrap();
    up.wait_for(&line, WAIT, "two batches delivered", |l| {
        l.raw_deliveries >= 2000
    })
    .await
    .unwrap();
    first.abort(); // killed mid-drain
    drop(first);
    assert_eq!(
        store.outbox_depth(),
        3000,
        "nothing acknowledged, nothing removed"
    );

    up.set_acking(true);
    let (second, _c2) = start(cfg, store.clone()).unwrap();
    eventually(WAIT, "outbox drained by the restarted uplink", || {
        store.outbox_depth() == 0
    })
    .await;
    let got = up.line(&line);
    assert_eq!(got.unique(), 3000, "every event reached upstream");
    assert!(
        got.raw_deliveries >= 5000,
        "redelivered after the kill: {}",
        got.raw_deliveries
    );
    assert_eq!(
        got.conflicts, 0,
        "a repeated id always carries the same event"
    );
    for (serial, state) in &made {
        let id = hex::encode(event_id(&line, serial, *state));
        let (s, st) = &got.events[&id];
        assert_eq!((s.as_str(), st.as_str()), (serial.as_str(), state.name()));
    }
    eventually(WAIT, "every outcome synced or reported", || {
        let c = store.counts();
        c.synced + c.reported == 3000 && c.committed == 0
    })
    .await;
    second.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_validated_delivered_and_answered() {
    let (host, port) = broker();
    let (site, line) = (unique("site"), unique("line"));
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &line);
    let (uplink, mut cmds) = start(config(&host, port, &site, &line), store).unwrap();
    uplink.wait_connected(WAIT).await.unwrap();
    let prefix = format!("serialine/{site}/{line}/");
    let mut replies = Watcher::start(&host, port, &format!("{prefix}cmd/#")).await;
    let client = replies.client.clone();
    let send = |topic: &str, mut body: serde_json::Value| {
        let c = client.clone();
        let topic = format!("{prefix}{topic}");
        body["issued_at"] = json!(now_ms());
        async move {
            c.publish(topic, rumqttc::QoS::AtLeastOnce, false, body.to_string())
                .await
                .unwrap()
        }
    };

    // Valid start: delivered to the pipeline, its answer goes back.
    let start_job = json!({"request_id": "r1", "gtin": "09506000134352", "lot": "LOT-7",
        "expiry": "271231", "quantity": 500, "template": {"kind": "gs1-data-matrix"}});
    send("cmd/job/start", start_job.clone()).await;
    let req = within(WAIT, "command delivered to the pipeline", cmds.recv())
        .await
        .unwrap();
    match &req.command {
        Command::StartJob(job) => {
            assert_eq!(job.lot.as_str(), "LOT-7");
            assert_eq!(job.quantity, 500);
        }
        other => panic!("expected StartJob, got {other:?}"),
    }
    req.respond(Ok(()));
    let r = replies
        .next_where("reply to r1", |m| {
            m.topic.ends_with("cmd/job/start/reply") && m.json["request_id"] == "r1"
        })
        .await;
    assert_eq!(r.json["ok"], true);

    // Bad GTIN: answered with an error, never reaches the pipeline.
    let mut bad = start_job.clone();
    bad["request_id"] = json!("r2");
    bad["gtin"] = json!("09506000134353");
    send("cmd/job/start", bad).await;
    let r = replies
        .next_where("reply to r2", |m| {
            m.topic.ends_with("/reply") && m.json["request_id"] == "r2"
        })
        .await;
    assert_eq!(r.json["ok"], false);
    assert!(
        r.json["error"].as_str().unwrap().contains("gtin"),
        "{:?}",
        r.json
    );

    // Malformed JSON: an error reply, no panic.
    replies
        .client
        .publish(
            format!("{prefix}cmd/drain"),
            rumqttc::QoS::AtLeastOnce,
            false,
            "{not json",
        )
        .await
        .unwrap();
    let r = replies
        .next_where("reply to malformed", |m| {
            m.topic.ends_with("cmd/drain/reply")
        })
        .await;
    assert_eq!(r.json["ok"], false);

    // The pipeline refuses: the refusal is the reply.
    send("cmd/job/stop", json!({"request_id": "r3"})).await;
    let req = within(WAIT, "stop delivered", cmds.recv()).await.unwrap();
    assert_eq!(req.command, Command::StopJob);
    req.respond(Err("no job running".into()));
    let r = replies
        .next_where("reply to r3", |m| {
            m.topic.ends_with("/reply") && m.json["request_id"] == "r3"
        })
        .await;
    assert_eq!(
        r.json,
        json!({"request_id": "r3", "ok": false, "error": "no job running"})
    );
    assert!(
        cmds.try_recv().is_err(),
        "nothing else reached the pipeline"
    );
    uplink.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_commands_required_when_a_key_is_configured() {
    let (host, port) = broker();
    let (site, line) = (unique("site"), unique("line"));
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &line);
    let key = [0x42; 32];
    let mut cfg = config(&host, port, &site, &line);
    cfg.command_auth = Some(CommandAuth { key });
    let (uplink, mut cmds) = start(cfg, store).unwrap();
    uplink.wait_connected(WAIT).await.unwrap();
    let prefix = format!("serialine/{site}/{line}/");
    let mut watch = Watcher::start(&host, port, &format!("{prefix}#")).await;
    let client = watch.client.clone();
    let publish = |body: serde_json::Value| {
        let c = client.clone();
        let topic = format!("{prefix}cmd/drain");
        async move {
            c.publish(topic, rumqttc::QoS::AtLeastOnce, false, body.to_string())
                .await
                .unwrap()
        }
    };

    publish(json!({"request_id": "unsigned"})).await;
    // The reply and the alarm go out on different paths: either may come first.
    let is_reply =
        |m: &common::Msg| m.topic.ends_with("/reply") && m.json["request_id"] == "unsigned";
    let is_alarm = |m: &common::Msg| {
        m.topic.ends_with("/alarms") && m.json["kind"] == AlarmKind::CommandRefused.as_str()
    };
    let (mut reply, mut alarmed) = (None, false);
    while reply.is_none() || !alarmed {
        let m = watch
            .next_where("reply to unsigned and command-refused alarm", |m| {
                is_reply(m) || is_alarm(m)
            })
            .await;
        if is_reply(&m) {
            reply = Some(m);
        } else {
            alarmed = true;
        }
    }
    let r = reply.expect("the reply");
    assert_eq!(r.json["ok"], false);
    assert!(
        r.json["error"].as_str().unwrap().starts_with("refused"),
        "{:?}",
        r.json
    );

    let drain_topic = format!("{prefix}cmd/drain");
    let signed = sign_command(
        &[0x43; 32],
        &drain_topic,
        json!({"request_id": "wrong-key"}),
        "n1",
    );
    publish(signed).await;
    let r = watch
        .next_where("reply to wrong key", |m| {
            m.topic.ends_with("/reply") && m.json["request_id"] == "wrong-key"
        })
        .await;
    assert_eq!(r.json["ok"], false);

    // Signed with the right key, but for another line's topic.
    let other_line = format!("serialine/{site}/other-line/cmd/drain");
    let signed = sign_command(
        &key,
        &other_line,
        json!({"request_id": "other-line"}),
        "n-other",
    );
    publish(signed).await;
    let r = watch
        .next_where("reply to another line's command", |m| {
            m.topic.ends_with("/reply") && m.json["request_id"] == "other-line"
        })
        .await;
    assert_eq!(r.json["ok"], false);
    assert!(
        r.json["error"].as_str().unwrap().contains("bad MAC"),
        "{:?}",
        r.json
    );

    let signed = sign_command(&key, &drain_topic, json!({"request_id": "good"}), "n2");
    publish(signed.clone()).await;
    let req = within(WAIT, "signed drain delivered", cmds.recv())
        .await
        .unwrap();
    assert_eq!(req.command, Command::Drain);
    req.respond(Ok(()));
    let r = watch
        .next_where("reply to good", |m| {
            m.json["request_id"] == "good" && m.topic.ends_with("/reply")
        })
        .await;
    assert_eq!(r.json["ok"], true);

    // The same signed message again is a replay.
    publish(signed).await;
    let r = watch
        .next_where("reply to replay", |m| {
            m.json["request_id"] == "good" && m.topic.ends_with("/reply")
        })
        .await;
    assert_eq!(r.json["ok"], false);
    assert!(
        r.json["error"].as_str().unwrap().contains("replay"),
        "{:?}",
        r.json
    );
    assert!(cmds.try_recv().is_err());
    uplink.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_metrics_alarms_and_last_will() {
    let (host, port) = broker();
    let (site, line) = (unique("site"), unique("line"));
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &line);
    let (issuer, _it) = issuer(&host, port, &site, &line, 100).await;
    preload(&store, &issuer, &line, 1).await;
    produce(&store, 10).await;
    let prefix = format!("serialine/{site}/{line}/");

    let (uplink, _cmds) = start(config(&host, port, &site, &line), store.clone()).unwrap();
    uplink.wait_connected(WAIT).await.unwrap();
    uplink.publish_metrics(Metrics {
        units_per_minute: 45.0,
        latency_p50_ms: 3.0,
        latency_p99_ms: 9.5,
        ..Default::default()
    });
    uplink.publish_status(StatusSnapshot {
        state: LineState::Running,
        job: None,
        devices: vec![serialine_uplink::DeviceStatus {
            name: "printer-1".into(),
            state: "ok".into(),
            detail: None,
            since_ms: None,
        }],
    });
    uplink.raise_alarm(Alarm::new(AlarmKind::DuplicateRead, "code read twice").with_serial("ABC"));

    // A late subscriber gets the retained status.
    let mut w = Watcher::start(&host, port, &format!("{prefix}#")).await;
    let s = w
        .next_where("retained running status", |m| {
            m.topic.ends_with("/status") && m.json["state"] == "running"
        })
        .await;
    assert_eq!(s.json["devices"][0]["name"], "printer-1");
    assert_eq!(s.json["buffer"]["serials"], 90);
    assert_eq!(s.json["buffer"]["minutes"], 2.0);
    assert_eq!(
        s.json["counts"]["committed"].as_u64().unwrap()
            + s.json["counts"]["synced"].as_u64().unwrap(),
        9
    );
    let m = w
        .next_where("metrics", |m| m.topic.ends_with("/metrics"))
        .await;
    assert_eq!(m.json["latency_p99_ms"], 9.5);
    assert!(m.json["outbox_depth"].is_u64());

    uplink.raise_alarm(Alarm::new(AlarmKind::DuplicateRead, "code read twice").with_serial("ABC"));
    let a = w
        .next_where("alarm", |m| {
            m.topic.ends_with("/alarms") && m.json["kind"] == "duplicate-read"
        })
        .await;
    assert_eq!(a.json["serial"], "ABC");

    // Killed: the broker publishes the retained last will.
    uplink.abort();
    drop(uplink);
    let s = w
        .next_where("last will", |m| {
            m.topic.ends_with("/status") && m.json["state"] == "offline"
        })
        .await;
    assert_eq!(s.json, json!({"state": "offline"}));
}

#[tokio::test]
async fn configuration_errors_name_what_and_where() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), "line-a");
    let cfg = serialine_uplink::UplinkConfig::new("127.0.0.1", 1, "s", "line-b");
    let e = start(cfg, store.clone()).unwrap_err().to_string();
    assert!(e.contains("line-b") && e.contains("line-a"), "{e}");

    let mut cfg = serialine_uplink::UplinkConfig::new("127.0.0.1", 1, "s", "line-a");
    cfg.tls = Some(serialine_uplink::TlsPaths {
        ca: dir.path().join("missing-ca.pem"),
        client_cert: None,
        client_key: None,
    });
    let e = start(cfg, store.clone()).unwrap_err().to_string();
    assert!(e.contains("missing-ca.pem") && e.contains("CA"), "{e}");

    let cfg = serialine_uplink::UplinkConfig::new("127.0.0.1", 1, "s/x", "line-a");
    assert!(start(cfg, store).unwrap_err().to_string().contains("site"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_shutdown_publishes_offline_and_returns() {
    let (host, port) = broker();
    let (site, line) = (unique("site"), unique("line"));
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &line);
    let (uplink, _cmds) = start(config(&host, port, &site, &line), store).unwrap();
    uplink.wait_connected(WAIT).await.unwrap();
    let mut w = Watcher::start(&host, port, &format!("serialine/{site}/{line}/status")).await;
    w.next_where("stopped status on connect", |m| {
        m.json["state"] == "stopped"
    })
    .await;
    within(WAIT, "shutdown", uplink.shutdown(Duration::from_secs(5))).await;
    let s = w
        .next_where("offline status", |m| m.json["state"] == "offline")
        .await;
    assert_eq!(s.json, json!({"state": "offline"}));
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn publish_raw(
    client: &rumqttc::AsyncClient,
    topic: &str,
    retain: bool,
    body: impl Into<Vec<u8>>,
) {
    client
        .publish(topic, rumqttc::QoS::AtLeastOnce, retain, body.into())
        .await
        .unwrap();
}

/// Issue 13: a retained command would run again at every (re)start with
/// `clean_session = true`. It is answered with an error and never executed,
/// signed and fresh though it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_command_is_refused_and_never_executed() {
    let (host, port) = broker();
    let (site, line) = (unique("site"), unique("line"));
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &line);
    let key = [0x21; 32];
    let prefix = format!("serialine/{site}/{line}/");
    let topic = format!("{prefix}cmd/drain");
    // Replies and alarms on their own watchers: their relative order is
    // not fixed, and a watcher skips what it is not waiting for.
    let mut watch = Watcher::start(&host, port, &format!("{prefix}cmd/#")).await;
    let mut alarms = Watcher::start(&host, port, &format!("{prefix}alarms")).await;
    // Published retained before the line is up: what the broker hands to
    // the uplink when it subscribes.
    let signed = sign_command(&key, &topic, json!({"request_id": "kept"}), "r-1");
    publish_raw(&watch.client, &topic, true, signed.to_string()).await;
    // The publish above is only queued in the watcher's client. The broker
    // has stored it once it comes back on the watcher's own subscription;
    // an uplink subscribing before that would get it live (retain flag 0),
    // as a new command (seen once against Mosquitto under load).
    watch
        .next_where("the retained command at the broker", |m| m.topic == topic)
        .await;

    let mut cfg = config(&host, port, &site, &line);
    cfg.command_auth = Some(CommandAuth { key });
    for round in 0..2 {
        let (uplink, mut cmds) = start(cfg.clone(), store.clone()).unwrap();
        let r = watch
            .next_where("reply to the retained command", |m| {
                m.topic.ends_with("cmd/drain/reply") && m.json["request_id"] == "kept"
            })
            .await;
        assert_eq!(r.json["ok"], false, "round {round}");
        assert!(
            r.json["error"].as_str().unwrap().contains("retained"),
            "{:?}",
            r.json
        );
        alarms
            .next_where("command-refused alarm", |m| {
                m.json["kind"] == AlarmKind::CommandRefused.as_str()
                    && m.json["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("retained")
            })
            .await;
        uplink.wait_connected(WAIT).await.unwrap();
        assert!(cmds.try_recv().is_err(), "round {round}: nothing executed");
        uplink.abort();
    }
    // Clear it, so a persistent external broker does not keep it.
    publish_raw(&watch.client, &topic, true, Vec::new()).await;
    assert_eq!(
        store.nonce_count().unwrap(),
        0,
        "a refused command leaves no nonce"
    );
}

/// Issue 13: too old (by the signed `issued_at`), from the future, or
/// without `issued_at`: refused, signed or unsigned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_future_and_undated_commands_are_refused() {
    let (host, port) = broker();
    let (site, line) = (unique("site"), unique("line"));
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &line);
    let key = [0x22; 32];
    let prefix = format!("serialine/{site}/{line}/");
    let topic = format!("{prefix}cmd/drain");
    let mut watch = Watcher::start(&host, port, &format!("{prefix}#")).await;
    let mut cfg = config(&host, port, &site, &line);
    cfg.command_auth = Some(CommandAuth { key });
    let (uplink, mut cmds) = start(cfg.clone(), store.clone()).unwrap();
    uplink.wait_connected(WAIT).await.unwrap();

    let cases = [
        ("stale", now_ms() - 31_000, "stale"),
        ("future", now_ms() + 60_000, "ahead"),
    ];
    for (rid, at, why) in cases {
        let body = sign_command_at(&key, &topic, json!({"request_id": rid}), rid, at);
        publish_raw(&watch.client, &topic, false, body.to_string()).await;
        let r = watch
            .next_where(rid, |m| {
                m.topic.ends_with("/reply") && m.json["request_id"] == rid
            })
            .await;
        assert_eq!(r.json["ok"], false);
        assert!(
            r.json["error"].as_str().unwrap().contains(why),
            "{:?}",
            r.json
        );
    }
    uplink.abort();
    drop(uplink);

    // Unsigned mode (allow_unsigned_commands): no issued_at, or a stale
    // one, is refused too.
    let mut cfg = config(&host, port, &site, &line);
    cfg.command_auth = None;
    let (uplink, mut cmds2) = start(cfg, store.clone()).unwrap();
    uplink.wait_connected(WAIT).await.unwrap();
    for (rid, body) in [
        ("undated", json!({"request_id": "undated"})),
        (
            "old",
            json!({"request_id": "old", "issued_at": now_ms() - 31_000}),
        ),
    ] {
        publish_raw(&watch.client, &topic, false, body.to_string()).await;
        let r = watch
            .next_where(rid, |m| {
                m.topic.ends_with("/reply") && m.json["request_id"] == rid
            })
            .await;
        assert_eq!(r.json["ok"], false, "{:?}", r.json);
    }
    // A fresh one runs.
    let body = json!({"request_id": "fresh", "issued_at": now_ms()});
    publish_raw(&watch.client, &topic, false, body.to_string()).await;
    let req = within(WAIT, "fresh unsigned drain", cmds2.recv())
        .await
        .unwrap();
    assert_eq!(req.command, Command::Drain);
    req.respond(Ok(()));
    assert!(cmds.try_recv().is_err());
    uplink.abort();
}

/// Issue 13, reproduced: a command published while the line was down was
/// queued by the broker for its persistent session and ran on reconnect.
/// Delivered after its allowed age, it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_queued_for_a_persistent_session_while_down_is_refused_late() {
    let (host, port) = broker();
    let (site, line) = (unique("site"), unique("line"));
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &line);
    let key = [0x23; 32];
    let prefix = format!("serialine/{site}/{line}/");
    let topic = format!("{prefix}cmd/job/stop");
    let mut cfg = config(&host, port, &site, &line);
    cfg.command_auth = Some(CommandAuth { key });
    cfg.clean_session = false;
    cfg.command_max_age = Duration::from_secs(1);
    let (uplink, cmds) = start(cfg.clone(), store.clone()).unwrap();
    uplink.wait_connected(WAIT).await.unwrap();
    uplink.abort(); // killed: the broker keeps the session
    drop((uplink, cmds));
    let mut watch = Watcher::start(&host, port, &format!("{prefix}#")).await;
    // Fresh when published; the line is down.
    let body = sign_command(&key, &topic, json!({"request_id": "queued"}), "q-1");
    publish_raw(&watch.client, &topic, false, body.to_string()).await;
    // At the broker (back on the watcher's own subscription), so queued for
    // the session before the clock below starts.
    watch
        .next_where("the command at the broker", |m| m.topic == topic)
        .await;
    // Longer than the allowed age before the line is back.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (uplink, mut cmds) = start(cfg, store.clone()).unwrap();
    let r = watch
        .next_where("reply to the queued command", |m| {
            m.topic.ends_with("/reply") && m.json["request_id"] == "queued"
        })
        .await;
    assert_eq!(r.json["ok"], false);
    assert!(
        r.json["error"].as_str().unwrap().contains("stale"),
        "{:?}",
        r.json
    );
    assert!(cmds.try_recv().is_err(), "the late command did not run");
    uplink.abort();
}

/// Issue 13: the nonces of signed commands are in the ledger, so a
/// captured command replayed after a restart (within its allowed age) is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_a_restart_is_refused() {
    let (host, port) = broker();
    let (site, line) = (unique("site"), unique("line"));
    let dir = tempfile::tempdir().unwrap();
    let key = [0x24; 32];
    let prefix = format!("serialine/{site}/{line}/");
    let topic = format!("{prefix}cmd/drain");
    let mut watch = Watcher::start(&host, port, &format!("{prefix}#")).await;
    let mut cfg = config(&host, port, &site, &line);
    cfg.command_auth = Some(CommandAuth { key });
    let body = sign_command(&key, &topic, json!({"request_id": "once"}), "once-1");
    {
        let store = open_store(dir.path(), &line);
        let (uplink, mut cmds) = start(cfg.clone(), store.clone()).unwrap();
        uplink.wait_connected(WAIT).await.unwrap();
        publish_raw(&watch.client, &topic, false, body.to_string()).await;
        let req = within(WAIT, "first delivery runs", cmds.recv())
            .await
            .unwrap();
        req.respond(Ok(()));
        let r = watch
            .next_where("first reply", |m| {
                m.topic.ends_with("/reply") && m.json["request_id"] == "once"
            })
            .await;
        assert_eq!(r.json["ok"], true);
        uplink.abort();
    }
    // A new process on the same ledger.
    let store = open_store(dir.path(), &line);
    assert_eq!(store.nonce_count().unwrap(), 1);
    let (uplink, mut cmds) = start(cfg, store.clone()).unwrap();
    uplink.wait_connected(WAIT).await.unwrap();
    publish_raw(&watch.client, &topic, false, body.to_string()).await;
    let r = watch
        .next_where("reply to the replay", |m| {
            m.topic.ends_with("/reply") && m.json["request_id"] == "once"
        })
        .await;
    assert_eq!(r.json["ok"], false);
    assert!(
        r.json["error"].as_str().unwrap().contains("replay"),
        "{:?}",
        r.json
    );
    assert!(cmds.try_recv().is_err());
    uplink.abort();
}

/// Issue 13, 6.4: a MAC made exactly as the crate README describes it (full
/// topic, a newline, the canonical JSON without "mac"), from literal
/// strings, is accepted by a running uplink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mac_built_from_the_readme_is_accepted() {
    let (host, port) = broker();
    let (site, line) = (unique("site"), unique("line"));
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &line);
    let key = [0x25; 32];
    let topic = format!("serialine/{site}/{line}/cmd/job/stop");
    let mut watch = Watcher::start(&host, port, &format!("serialine/{site}/{line}/#")).await;
    let mut cfg = config(&host, port, &site, &line);
    cfg.command_auth = Some(CommandAuth { key });
    let (uplink, mut cmds) = start(cfg, store).unwrap();
    uplink.wait_connected(WAIT).await.unwrap();
    let at = now_ms();
    let canonical = format!(r#"{{"issued_at":{at},"nonce":"readme-1","request_id":"readme"}}"#);
    let msg = format!("{topic}\n{canonical}");
    let mac = hex::encode(blake3::keyed_hash(&key, msg.as_bytes()).as_bytes());
    // Key order and spacing of what is sent do not matter.
    let sent = format!(
        r#"{{ "request_id": "readme", "mac": "{mac}", "nonce": "readme-1", "issued_at": {at} }}"#
    );
    publish_raw(&watch.client, &topic, false, sent).await;
    let req = within(WAIT, "README-signed stop", cmds.recv())
        .await
        .unwrap();
    assert_eq!(req.command, Command::StopJob);
    req.respond(Ok(()));
    let r = watch
        .next_where("reply", |m| {
            m.topic.ends_with("/reply") && m.json["request_id"] == "readme"
        })
        .await;
    assert_eq!(r.json["ok"], true);
    uplink.abort();
}

/// The upstream simulator signs acks exactly as the uplink checks them.
#[test]
fn the_simulated_upstream_signs_acks_as_the_uplink_checks_them() {
    let key = [5u8; 32];
    let topic = "serialine/s/l/events/ack";
    let ids = vec!["ab".to_string(), "cd\"quoted\"".to_string()];
    let sim = serialine_sim::upstream::ack_mac(&key, topic, "l:0-1", &ids);
    let signed = sign_ack(&key, topic, json!({"ids": ids, "batch_id": "l:0-1"}));
    assert_eq!(signed["mac"], json!(sim));
}

/// Issue 13: `events/ack` drops outbox events as synced, so it must come
/// from upstream: with an ack key, an unsigned or forged ack, or a signed
/// one naming events this line never sent, is refused with an alarm and
/// removes nothing; upstream's signed acks still drain the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_never_sent_acks_are_refused_with_an_alarm() {
    let (host, port) = broker();
    let (site, line) = (unique("site"), unique("line"));
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &line);
    let (issuer, _it) = issuer(&host, port, &site, &line, 100).await;
    preload(&store, &issuer, &line, 1).await;
    let (up, _ut) = upstream(&host, port, &site).await;
    let key = [0x26; 32];
    up.set_ack_key(Some(key));
    up.set_acking(false);
    let prefix = format!("serialine/{site}/{line}/");
    let ack_topic = format!("{prefix}events/ack");
    let mut watch = Watcher::start(&host, port, &format!("{prefix}alarms")).await;
    let mut cfg = config(&host, port, &site, &line);
    cfg.ack_auth = Some(AckAuth { key });
    cfg.outbox.ack_timeout = Duration::from_millis(500);
    let (uplink, _cmds) = start(cfg, store.clone()).unwrap();
    uplink.wait_connected(WAIT).await.unwrap();
    produce(&store, 20).await;
    let got = up
        .wait_for(&line, WAIT, "20 events delivered", |l| l.unique() == 20)
        .await
        .unwrap();
    let ids = got.order.clone();

    let forgeries = [
        ("unsigned", json!({"batch_id": "x", "ids": ids})),
        (
            "wrong key",
            sign_ack(
                &[0x27; 32],
                &ack_topic,
                json!({"batch_id": "x", "ids": ids}),
            ),
        ),
        (
            "another line's topic",
            sign_ack(
                &key,
                &format!("serialine/{site}/other/events/ack"),
                json!({"batch_id": "x", "ids": ids}),
            ),
        ),
        (
            "never sent",
            sign_ack(
                &key,
                &ack_topic,
                json!({"batch_id": "x", "ids": [hex::encode([9u8; 32])]}),
            ),
        ),
        (
            "never sent among sent ones",
            sign_ack(
                &key,
                &ack_topic,
                json!({"batch_id": "x", "ids": [ids[0].clone(), hex::encode([8u8; 32])]}),
            ),
        ),
    ];
    for (what, body) in forgeries {
        publish_raw(&watch.client, &ack_topic, false, body.to_string()).await;
        let a = watch
            .next_where(what, |m| m.json["kind"] == AlarmKind::AckRefused.as_str())
            .await;
        if what.starts_with("never") {
            assert!(
                a.json["message"].as_str().unwrap().contains("never sent"),
                "{what}: {:?}",
                a.json
            );
        }
        assert_eq!(store.outbox_depth(), 20, "{what}: nothing removed");
    }
    assert_eq!(store.counts().synced, 0);

    // Upstream's own signed acks drain it (batches are published again on
    // the ack timeout).
    up.set_acking(true);
    eventually(WAIT, "outbox drained by signed acks", || {
        store.outbox_depth() == 0
    })
    .await;
    uplink.abort();
}

/// Issue 13 §2: the fence handshake. The line tells upstream its ledger and
/// positions; upstream's answer fences a restored ledger whose local fence
/// is gone, and invalidates what a wiped ledger can no longer report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_handshake_fences_a_restored_ledger_and_a_wiped_one() {
    let (host, port) = broker();
    let (site, line) = (unique("site"), unique("line"));
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("state/ledger");
    let fence_file = dir.path().join("fence/line.fence");
    let open = || {
        let mut o = serialine_store::StoreOptions::new(&ledger, &line, SECRET);
        o.fence = Some(fence_file.clone());
        serialine_store::Store::open(o).unwrap_or_else(|e| panic!("open store: {e}"))
    };
    let (issuer, _it) = issuer(&host, port, &site, &line, 100).await;
    let (up, _ut) = upstream(&host, port, &site).await;
    let mut cfg = config(&host, port, &site, &line);
    cfg.prefetch.low_water_serials = 250;
    cfg.prefetch.high_water_serials = 300;

    // An empty ledger holds until upstream answers; then blocks come.
    let (store, _) = open();
    assert!(store.fence_holding());
    let (uplink, _cmds) = start(cfg.clone(), store.clone()).unwrap();
    eventually(WAIT, "buffer filled after the handshake", || {
        store.buffer_depth() >= 300
    })
    .await;
    let answers = issuer.fence_answers(&line);
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert!(!answers[0].known, "a new line has no history upstream");
    assert!(!store.fence_holding());
    eventually(WAIT, "blocks acknowledged", || {
        issuer.acked(&line).len() == 3
    })
    .await;
    uplink.abort();
    drop(store);
    closed(&fence_file).await;

    // A copy of the ledger with its blocks and nothing used.
    let backup = dir.path().join("backup");
    copy_dir(&ledger, &backup);

    // 200 units, reported upstream.
    let (store, _) = open();
    let (uplink, _cmds) = start(cfg.clone(), store.clone()).unwrap();
    let made = produce(&store, 200).await;
    eventually(WAIT, "200 outcomes upstream and seen by the issuer", || {
        up.line(&line).unique() == 200 && issuer.reported(&line).len() == 200
    })
    .await;
    eventually(WAIT, "outbox drained", || store.outbox_depth() == 0).await;
    uplink.abort();
    drop(store);
    closed(&fence_file).await;

    // The copy comes back and the local fence is lost with it: only
    // upstream knows. The line holds until it answers, then voids the 200.
    std::fs::remove_dir_all(&ledger).unwrap();
    copy_dir(&backup, &ledger);
    std::fs::remove_file(&fence_file).unwrap();
    let (store, rec) = open();
    assert!(rec.fence.unwrap().hold.is_some());
    assert!(store.reserve(1).unwrap().is_empty());
    let (uplink, _cmds) = start(cfg.clone(), store.clone()).unwrap();
    eventually(WAIT, "handshake applied", || !store.fence_holding()).await;
    for (s, _) in &made {
        match store.entry(s).unwrap() {
            serialine_store::SerialEntry::Recorded(r) => {
                assert!(
                    r.fenced && r.state == serialine_core::UnitState::Voided,
                    "{s}: {r:?}"
                )
            }
            other => panic!("{s} not fenced: {other:?}"),
        }
    }
    let made_set: HashSet<_> = made.iter().map(|(s, _)| s.clone()).collect();
    let next = store.reserve(50).unwrap();
    assert_eq!(next.len(), 50);
    assert!(next.iter().all(|s| !made_set.contains(s)));
    store.release(&next);
    // The fenced voids reach upstream with reason "fenced"; the committed
    // outcomes it holds stay (their ids differ).
    eventually(WAIT, "fenced voids upstream", || {
        up.line(&line).unique() == 400
    })
    .await;
    uplink.abort();
    drop(store);
    closed(&fence_file).await;

    // The whole state wiped: an empty ledger, no fence. Upstream invalidates
    // the serials it issued, saw acknowledged and never got a report for.
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    std::fs::remove_dir_all(dir.path().join("fence")).unwrap();
    let (store, _) = open();
    assert!(store.fence_holding());
    let (uplink, _cmds) = start(cfg, store.clone()).unwrap();
    eventually(WAIT, "fresh blocks after the handshake", || {
        store.buffer_depth() >= 300
    })
    .await;
    let last = issuer.fence_answers(&line).pop().unwrap();
    assert!(last.known);
    // Every block the line acknowledged and no longer holds (here, all of
    // them) had its unreported serials invalidated; reported ones are kept.
    assert!(last.invalidated > 0);
    let invalid = issuer.invalidated(&line);
    assert!(invalid.len() as u64 >= last.invalidated);
    assert!(invalid.iter().all(|s| !made_set.contains(s)));
    let fresh = store.reserve(300).unwrap();
    assert!(fresh
        .iter()
        .all(|s| !made_set.contains(s) && !invalid.contains(s)));
    uplink.abort();
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// The aborted uplink's tasks drop their store handles a moment later; the
/// last one closes the ledger and marks the fence clean.
async fn closed(fence: &std::path::Path) {
    eventually(WAIT, "ledger closed (fence marked clean)", || {
        std::fs::read_to_string(fence).is_ok_and(|t| !t.contains("clean -"))
    })
    .await;
}

/// Issue 13, section 5: requests are sent only while buffered + requested
/// and unanswered < high water, each asking for exactly the room left, so
/// with an issuer that honours `serials_wanted` the buffer never exceeds the
/// high-water mark (it used to reach 12,000 with a limit of 10,000 and
/// blocks of 4,000). Section 3: requests carry the running job's GTIN, and a
/// changeover keeps the other product's blocks for its own job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_stays_under_high_water_and_fetches_for_the_jobs_product() {
    use serialine_core::Gtin;
    let (host, port) = broker();
    let (site, line) = (unique("site"), unique("line"));
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &line);
    let (issuer, _it) = issuer(&host, port, &site, &line, 4_000).await;
    // The issuer's own GTIN is A; the job makes B.
    let gtin_a = Gtin::parse(serialine_sim::issuer::DEFAULT_GTIN).unwrap();
    let gtin_b = Gtin::parse("04006381333931").unwrap();
    let mut cfg = config(&host, port, &site, &line);
    cfg.prefetch.low_water_serials = 5_000;
    cfg.prefetch.high_water_serials = 10_000;
    cfg.product = Some(gtin_b);
    let (uplink, _cmds) = start(cfg, store.clone()).unwrap();

    let high = 10_000;
    eventually(WAIT, "B's buffer at high water", || {
        store.buffer_depth_for(&gtin_b).unwrap() >= high
    })
    .await;
    // The counters are published after each flush, a moment after the
    // block is readable: wait for them too.
    eventually(WAIT, "block acks", || {
        let c = store.counts();
        c.issued >= high && issuer.acked(&line).len() as u64 == c.blocks
    })
    .await;
    // Everything asked for is stored and acknowledged: nothing more may come.
    let requests = issuer.requests(&line);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        issuer.requests(&line),
        requests,
        "no request past high water"
    );
    assert_eq!(store.counts().issued, high, "{:?}", issuer.blocks(&line));
    let sizes: Vec<u32> = issuer.blocks(&line).iter().map(|b| b.serials).collect();
    assert_eq!(sizes, vec![4_000, 4_000, 2_000]);
    assert!(issuer.blocks(&line).iter().all(|b| b.gtin == gtin_b));

    // Below low water again: refilled to exactly high water, never above.
    let made = produce(&store, 6_000).await;
    assert_eq!(made.len(), 6_000);
    eventually(WAIT, "refill", || {
        store.buffer_depth_for(&gtin_b).unwrap() >= high
    })
    .await;
    eventually(WAIT, "block acks", || {
        let c = store.counts();
        c.issued >= high + 6_000 && issuer.acked(&line).len() as u64 == c.blocks
    })
    .await;
    assert_eq!(store.buffer_depth_for(&gtin_b).unwrap(), high);
    assert_eq!(store.counts().issued, high + 6_000);

    // Changeover to A: A's buffer fills to its own high water, B's blocks
    // stay stored for B's next job, and no serial of B can feed A.
    uplink.set_product(Some(gtin_a));
    eventually(WAIT, "A's buffer at high water", || {
        store.buffer_depth_for(&gtin_a).unwrap() >= high
    })
    .await;
    eventually(WAIT, "block acks", || {
        let c = store.counts();
        c.issued >= 2 * high + 6_000 && issuer.acked(&line).len() as u64 == c.blocks
    })
    .await;
    assert_eq!(store.counts().issued, 2 * high + 6_000);
    assert_eq!(store.buffer_depth_for(&gtin_a).unwrap(), high);
    assert_eq!(store.buffer_depth_for(&gtin_b).unwrap(), high);
    let a = store.reserve_for(20_000, &gtin_a).unwrap();
    assert_eq!(a.len() as u64, high);
    let issued_b: std::collections::HashSet<_> = issuer
        .blocks(&line)
        .iter()
        .filter(|b| b.gtin == gtin_b)
        .map(|b| b.block_id)
        .collect();
    for s in &a {
        match store.entry(s).unwrap() {
            serialine_store::SerialEntry::Available { block_id } => {
                assert!(!issued_b.contains(&block_id), "{s} is B's")
            }
            other => panic!("{s}: {other:?}"),
        }
    }
    store.release(&a);
    uplink.abort();
}

/// Issue 14: the case labels' product is kept in stock beside the job's,
/// and asked for as soon as the job's buffer is above its low mark, not
/// only once it is full (a line topping up in small answers would starve
/// its labels).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_keeps_the_case_labels_in_stock_beside_the_jobs_product() {
    use serialine_core::Gtin;
    use serialine_uplink::ParentStock;
    let (host, port) = broker();
    let (site, line) = (unique("site"), unique("line"));
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &line);
    let (issuer, _it) = issuer(&host, port, &site, &line, 4_000).await;
    let product = Gtin::parse("04006381333931").unwrap();
    let case = Gtin::parse("19506000134359").unwrap();
    let mut cfg = config(&host, port, &site, &line);
    cfg.prefetch.low_water_serials = 5_000;
    cfg.prefetch.high_water_serials = 10_000;
    cfg.product = Some(product);
    let (uplink, _cmds) = start(cfg, store.clone()).unwrap();
    uplink.set_parent_products(vec![ParentStock {
        gtin: case,
        low: 50,
        high: 100,
    }]);
    eventually(WAIT, "both buffers at high water", || {
        store.buffer_depth_for(&product).unwrap() >= 10_000
            && store.buffer_depth_for(&case).unwrap() >= 100
    })
    .await;
    let blocks: Vec<(Gtin, u32)> = issuer
        .blocks(&line)
        .iter()
        .map(|b| (b.gtin, b.serials))
        .collect();
    // Below low: the product's first. The labels' once the product's
    // serials in stock and asked for reach its low mark, which may be
    // while its first request is still being answered (an issuer answers
    // 10,000 asked in blocks of 4,000): before the product's high mark,
    // never before its first block. Both filled to their high marks.
    assert_eq!(blocks.first(), Some(&(product, 4_000)), "{blocks:?}");
    let labels: Vec<usize> = (0..blocks.len()).filter(|&i| blocks[i].0 == case).collect();
    assert_eq!(labels.len(), 1, "{blocks:?}");
    assert_eq!(blocks[labels[0]].1, 100, "{blocks:?}");
    assert!(
        labels[0] < blocks.len() - 1,
        "labels before the product's last block: {blocks:?}"
    );
    let product_total: u32 = blocks.iter().filter(|b| b.0 == product).map(|b| b.1).sum();
    assert_eq!(product_total, 10_000, "{blocks:?}");
    uplink.abort();
}

/// Issue 13, section 3: a block sealed for another product than requested
/// is kept (stored and acknowledged: its serials are issued to this line)
/// with a `wrong-product-block` alarm, never counted in or used for the
/// requested product's buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_for_another_product_is_kept_alarmed_and_never_used_for_this_one() {
    use serialine_core::Gtin;
    let (host, port) = broker();
    let (site, line) = (unique("site"), unique("line"));
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &line);
    let (issuer, _it) = issuer(&host, port, &site, &line, 100).await;
    issuer.push_fault(&line, Fault::WrongProduct);
    let gtin_b = Gtin::parse("04006381333931").unwrap();
    let other = Gtin::parse(serialine_sim::issuer::WRONG_PRODUCT_GTIN).unwrap();
    let mut alarms = Watcher::start(&host, port, &format!("serialine/{site}/{line}/alarms")).await;
    let mut cfg = config(&host, port, &site, &line);
    cfg.prefetch.low_water_serials = 250;
    cfg.prefetch.high_water_serials = 300;
    cfg.product = Some(gtin_b);
    let (uplink, _cmds) = start(cfg, store.clone()).unwrap();

    let alarm = alarms
        .next_where("wrong-product-block alarm", |m| {
            m.json["kind"] == AlarmKind::WrongProductBlock.as_str()
        })
        .await;
    let message = alarm.json["message"].as_str().unwrap_or_default();
    assert!(message.contains("00012345600012"), "{message}");
    eventually(WAIT, "B's buffer at high water", || {
        store.buffer_depth_for(&gtin_b).unwrap() >= 300
    })
    .await;
    eventually(WAIT, "every block stored and acknowledged", || {
        let c = store.counts();
        c.issued >= 400 && issuer.acked(&line).len() as u64 == c.blocks
    })
    .await;
    assert_eq!(store.counts().blocks, 4, "{:?}", issuer.blocks(&line));
    assert_eq!(store.buffer_depth_for(&other).unwrap(), 100);
    assert_eq!(store.buffer_depth_for(&gtin_b).unwrap(), 300);
    let wrong_block = issuer.blocks(&line)[0].block_id;
    assert_eq!(issuer.blocks(&line)[0].gtin, other);
    let b = store.reserve_for(1_000, &gtin_b).unwrap();
    assert_eq!(b.len(), 300);
    for s in &b {
        match store.entry(s).unwrap() {
            serialine_store::SerialEntry::Available { block_id } => {
                assert_ne!(block_id, wrong_block)
            }
            o => panic!("{s}: {o:?}"),
        }
    }
    store.release(&b);
    uplink.abort();
}
