//! The server through the stack's own client (async-opcua): a real ledger,
//! a real uplink (its broker never answers: the server must not need it),
//! the line's command receiver played by the test as the supervisor.

use opcua::client::{ClientBuilder, IdentityToken, Session};
use opcua::crypto::SecurityPolicy;
use opcua::types::{
    CallMethodRequest, MessageSecurityMode, NodeId, ReadValueId, StatusCode, TimestampsToReturn,
    UserTokenPolicy, UserTokenType, Variant,
};
use serialine_opcua::{LineSource, OpcuaConfig, OpcuaUser, ReturnStatus};
use serialine_store::{Store, StoreOptions};
use serialine_uplink::{Command, JobInfo, LineState, StatusSnapshot, UplinkConfig};
use std::sync::Arc;
use std::time::Duration;

const LINE: &str = "line-t";

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address").port()
}

async fn connect(
    url: &str,
    pki: &std::path::Path,
    secure: bool,
    identity: IdentityToken,
) -> Arc<Session> {
    let mut client = ClientBuilder::new()
        .application_name("serialine-opcua test client")
        .application_uri("urn:serialine:opcua-test-client")
        .pki_dir(pki)
        .create_sample_keypair(true)
        .trust_server_certs(true)
        .session_retry_limit(3)
        .client()
        .expect("client config");
    let (policy, mode, token) = if secure {
        (
            SecurityPolicy::Basic256Sha256,
            MessageSecurityMode::SignAndEncrypt,
            UserTokenPolicy {
                token_type: UserTokenType::UserName,
                ..UserTokenPolicy::anonymous()
            },
        )
    } else {
        (
            SecurityPolicy::None,
            MessageSecurityMode::None,
            UserTokenPolicy::anonymous(),
        )
    };
    let (session, event_loop) = client
        .connect_to_matching_endpoint((url, policy.to_str(), mode, token), identity)
        .await
        .expect("endpoint found");
    event_loop.spawn();
    tokio::time::timeout(Duration::from_secs(20), session.wait_for_connection())
        .await
        .expect("connected");
    session
}

async fn read(session: &Session, ns: u16, path: &str) -> Variant {
    let r = session
        .read(
            &[ReadValueId::from(NodeId::new(ns, format!("{LINE}.{path}")))],
            TimestampsToReturn::Neither,
            0.0,
        )
        .await
        .expect("read");
    r[0].value.clone().unwrap_or_default()
}

fn start_job_args(gtin: &str) -> Vec<Variant> {
    vec![
        gtin.into(),
        "LOT-9".into(),
        "271231".into(),
        Variant::from(250u64),
        "gs1-data-matrix".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_methods_and_refusals_through_the_stack_client() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(StoreOptions::new(
        dir.path().join("ledger"),
        LINE,
        b"opcua unit-test secret, 32 bytes",
    ))
    .expect("ledger opens");
    // Nothing listens on this port: the uplink retries in the background.
    let cfg = UplinkConfig::new("127.0.0.1", free_port(), "site-t", LINE);
    let (uplink, mut commands) = serialine_uplink::start(cfg, store.clone()).expect("uplink");
    let port = free_port();
    let server = serialine_opcua::serve(
        OpcuaConfig {
            listen: format!("127.0.0.1:{port}").parse().unwrap(),
            host_name: None,
            pki_dir: dir.path().join("server-pki"),
            certificate: None,
            trust_client_certs: true,
            users: vec![OpcuaUser {
                name: "mes".into(),
                password: "pw-1".into(),
            }],
            anonymous_read: true,
            anonymous_methods: false,
            insecure_endpoint: true,
        },
        vec![LineSource {
            id: LINE.into(),
            store: store.clone(),
            uplink: uplink.clone(),
            accepts_commands: true,
        }],
    )
    .await
    .expect("server starts");
    assert!(
        dir.path().join("server-pki/own/cert.der").is_file(),
        "certificate made on first start"
    );
    let url = server.endpoint_url.clone();

    // The test plays the supervisor: every command it receives is answered.
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = received.clone();
    tokio::spawn(async move {
        while let Some(req) = commands.recv().await {
            seen.lock().unwrap().push(req.command.clone());
            let answer = match req.command {
                Command::StartJob(_) => Ok(()),
                _ => Err("no job is running here".into()),
            };
            req.respond(answer);
        }
    });

    let anon = connect(
        &url,
        &dir.path().join("client-pki"),
        false,
        IdentityToken::Anonymous,
    )
    .await;
    let ns = anon
        .get_namespace_index(serialine_opcua::NAMESPACE_URI)
        .await
        .expect("namespace");

    // A status the pipeline publishes shows up within a sample.
    uplink.publish_status(StatusSnapshot {
        state: LineState::Running,
        job: Some(JobInfo {
            gtin: "09506000134352".into(),
            lot: "LOT-9".into(),
            expiry: "271231".into(),
            quantity: 250,
        }),
        devices: Vec::new(),
    });
    let mut state = Variant::Empty;
    for _ in 0..40 {
        state = read(&anon, ns, "State").await;
        if state == Variant::from("starved") || state == Variant::from("running") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Running with an empty buffer reads `running`: only a paused line starves.
    assert_eq!(state, Variant::from("running"));
    assert_eq!(
        read(&anon, ns, "Job.GTIN").await,
        Variant::from("09506000134352")
    );
    assert_eq!(
        read(&anon, ns, "Counters.Committed").await,
        Variant::from(0u64)
    );

    // Anonymous: refused before anything runs.
    let line_obj = NodeId::new(ns, LINE);
    let start = NodeId::new(ns, format!("{LINE}.StartJob"));
    let r = anon
        .call_one(CallMethodRequest {
            object_id: line_obj.clone(),
            method_id: start.clone(),
            input_arguments: Some(start_job_args("09506000134352")),
        })
        .await
        .expect("call answered");
    assert_eq!(r.status_code, StatusCode::BadUserAccessDenied);
    assert!(received.lock().unwrap().is_empty());

    // A user over SignAndEncrypt.
    let user = connect(
        &url,
        &dir.path().join("client-pki"),
        true,
        IdentityToken::new_user_name("mes", "pw-1".to_string()),
    )
    .await;
    let call = |args: Vec<Variant>, method: NodeId| CallMethodRequest {
        object_id: line_obj.clone(),
        method_id: method,
        input_arguments: Some(args),
    };
    let r = user
        .call_one(call(start_job_args("09506000134353"), start.clone()))
        .await
        .expect("call answered");
    assert_eq!(r.status_code, StatusCode::Good);
    let out = r.output_arguments.unwrap_or_default();
    assert_eq!(
        out[0],
        Variant::from(ReturnStatus::InvalidSelectionCriteria as i32)
    );
    assert!(
        matches!(&out[1], Variant::String(s) if s.as_ref().contains("check digit")),
        "{out:?}"
    );
    assert!(
        received.lock().unwrap().is_empty(),
        "a refused job never reaches the line"
    );

    let r = user
        .call_one(call(start_job_args("09506000134352"), start.clone()))
        .await
        .expect("call answered");
    let out = r.output_arguments.unwrap_or_default();
    assert_eq!(
        out[0],
        Variant::from(ReturnStatus::NoError as i32),
        "{out:?}"
    );
    match received.lock().unwrap().as_slice() {
        [Command::StartJob(job)] => {
            assert_eq!(job.gtin.as_string(), "09506000134352");
            assert_eq!(job.quantity, 250);
        }
        other => panic!("the line received {other:?}"),
    }

    // The line's refusal reaches the caller with its reason.
    let r = user
        .call_one(call(Vec::new(), NodeId::new(ns, format!("{LINE}.StopJob"))))
        .await
        .expect("call answered");
    let out = r.output_arguments.unwrap_or_default();
    assert_eq!(out[0], Variant::from(ReturnStatus::LineRefused as i32));
    assert_eq!(out[1], Variant::from("no job is running here"));

    let _ = anon.disconnect().await;
    let _ = user.disconnect().await;
    server.shutdown(Duration::from_secs(2)).await;
    uplink.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_client_certificate_is_refused_and_kept_for_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(StoreOptions::new(
        dir.path().join("ledger"),
        LINE,
        b"opcua unit-test secret, 32 bytes",
    ))
    .expect("ledger opens");
    let cfg = UplinkConfig::new("127.0.0.1", free_port(), "site-t", LINE);
    let (uplink, _commands) = serialine_uplink::start(cfg, store.clone()).expect("uplink");
    let port = free_port();
    let server = serialine_opcua::serve(
        OpcuaConfig {
            listen: format!("127.0.0.1:{port}").parse().unwrap(),
            host_name: None,
            pki_dir: dir.path().join("server-pki"),
            certificate: None,
            trust_client_certs: false,
            users: vec![OpcuaUser {
                name: "mes".into(),
                password: "pw-1".into(),
            }],
            anonymous_read: false,
            anonymous_methods: false,
            insecure_endpoint: false,
        },
        vec![LineSource {
            id: LINE.into(),
            store,
            uplink: uplink.clone(),
            accepts_commands: true,
        }],
    )
    .await
    .expect("server starts");
    let url = server.endpoint_url.clone();
    let pki = dir.path().join("client-pki");
    // `connect` panics when the endpoint refuses; a spawned task turns
    // that into an error here.
    let attempt = tokio::spawn(async move {
        tokio::time::timeout(
            Duration::from_secs(10),
            connect(
                &url,
                &pki,
                true,
                IdentityToken::new_user_name("mes", "pw-1".to_string()),
            ),
        )
        .await
        .is_ok()
    });
    let connected = attempt.await.unwrap_or(false);
    assert!(!connected, "an untrusted client got a session");
    let rejected: Vec<_> = std::fs::read_dir(dir.path().join("server-pki/rejected"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(
        rejected.len(),
        1,
        "the refused certificate is kept for the operator"
    );
    server.shutdown(Duration::from_secs(2)).await;
    uplink.abort();
}
