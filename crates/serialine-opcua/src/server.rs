//! Building, starting and stopping the server.

use crate::nodes::{SerialineNodeManager, SerialineNodesBuilder};
use crate::security::{self, SerialineAuth};
use crate::{alarms, values, LineSource, OpcuaConfig};
use opcua::server::node_manager::memory::InMemoryNodeManagerBuilder;
use opcua::server::ServerBuilder;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum OpcuaError {
    #[error("OPC UA: cannot create or restrict {path}: {source}")]
    Pki {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("OPC UA: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("OPC UA: invalid server configuration: {0}")]
    Build(String),
}

fn restrict(path: &std::path::Path, mode: u32) -> Result<(), OpcuaError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        OpcuaError::Pki {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// A running server; [`OpcuaServer::shutdown`] closes every session.
pub struct OpcuaServer {
    pub endpoint_url: String,
    stop: CancellationToken,
    server: JoinHandle<Result<(), String>>,
    tasks: Vec<JoinHandle<()>>,
}

impl OpcuaServer {
    pub async fn shutdown(self, timeout: Duration) {
        self.stop.cancel();
        let mut server = self.server;
        if tokio::time::timeout(timeout, &mut server).await.is_err() {
            server.abort();
            let _ = server.await;
        }
        // Awaited, so that their clones of each line's ledger are dropped
        // before the caller closes it.
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

/// Starts the server for `lines` on the current runtime. Fails at once if
/// the address is taken or the configuration is invalid; the server's
/// certificate is made (first start) before this returns.
pub async fn serve(cfg: OpcuaConfig, lines: Vec<LineSource>) -> Result<OpcuaServer, OpcuaError> {
    for sub in ["", "own", "private", "trusted", "rejected"] {
        let path = cfg.pki_dir.join(sub);
        std::fs::create_dir_all(&path).map_err(|source| OpcuaError::Pki { path, source })?;
    }
    // The stack writes the key it makes with the process umask (0644 under
    // the default): the directory and the key are the server's alone.
    let private = cfg.pki_dir.join("private");
    restrict(&private, 0o700)?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| OpcuaError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let host = cfg
        .host_name
        .clone()
        .unwrap_or_else(|| cfg.listen.ip().to_string());
    let port = listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or(cfg.listen.port());
    let endpoint_url = format!("opc.tcp://{host}:{port}/");
    let stop = CancellationToken::new();

    let mut builder = ServerBuilder::new()
        .application_name("Serialine")
        .application_uri(format!("urn:serialine:{host}"))
        .product_uri("urn:serialine")
        .host(host.clone())
        .port(port)
        .pki_dir(cfg.pki_dir.clone())
        .trust_client_certs(cfg.trust_client_certs)
        .discovery_urls(vec![endpoint_url.clone()])
        .token(stop.clone())
        .with_authenticator(Arc::new(SerialineAuth::new(&cfg)))
        .with_node_manager(InMemoryNodeManagerBuilder::new(SerialineNodesBuilder {
            lines: lines.clone(),
            anonymous_methods: cfg.anonymous_methods,
        }));
    builder = match &cfg.certificate {
        Some((cert, key)) => builder
            .create_sample_keypair(false)
            .certificate_path(cert.clone())
            .private_key_path(key.clone()),
        // Made by the stack on first start, then reused: kept in the PKI
        // directory under the state directory.
        None => builder
            .create_sample_keypair(true)
            .certificate_path("own/cert.der")
            .private_key_path("private/private.pem"),
    };
    for (name, token) in security::user_tokens(&cfg) {
        builder = builder.add_user_token(name, token);
    }
    for (name, ep) in security::endpoints(&cfg) {
        builder = builder.add_endpoint(name, ep);
    }
    builder = builder.default_endpoint(security::SECURE_ENDPOINT);
    let (server, handle) = builder.build().map_err(OpcuaError::Build)?;
    let made_key = private.join("private.pem");
    if cfg.certificate.is_none() && made_key.exists() {
        restrict(&made_key, 0o600)?;
    }

    let manager = handle
        .node_managers()
        .get_of_type::<SerialineNodeManager>()
        .ok_or_else(|| OpcuaError::Build("Serialine's node manager is missing".into()))?;
    let ns = handle
        .get_namespace_index(crate::NAMESPACE_URI)
        .ok_or_else(|| OpcuaError::Build("Serialine's namespace is missing".into()))?;
    let subscriptions = handle.subscriptions().clone();
    let mut tasks = Vec::new();
    for line in lines {
        tasks.push(tokio::spawn(values::run(
            line.clone(),
            ns,
            manager.clone(),
            subscriptions.clone(),
            stop.clone(),
        )));
        tasks.push(tokio::spawn(alarms::run(
            line,
            ns,
            subscriptions.clone(),
            stop.clone(),
        )));
    }
    let server = tokio::spawn(server.run_with(listener));
    tracing::info!(
        endpoint = %endpoint_url,
        anonymous_read = cfg.anonymous_read,
        anonymous_methods = cfg.anonymous_methods,
        users = cfg.users.len(),
        "OPC UA server listening (Basic256Sha256 SignAndEncrypt{})",
        if cfg.insecure_endpoint { ", and an unsecured endpoint for anonymous reading" } else { "" }
    );
    Ok(OpcuaServer {
        endpoint_url,
        stop,
        server,
        tasks,
    })
}
