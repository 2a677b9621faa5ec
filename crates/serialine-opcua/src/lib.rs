//! Serialine's OPC UA server (issue 18): every line as an object with its
//! state, current job, ledger counters, buffer and outbox depths and device
//! states; the uplink's alarms as OPC UA events; `StartJob` / `StopJob`
//! methods that hand the same [`serialine_uplink::Command`] as `cmd/job/*`
//! to the same consumer (the service's supervisor).
//!
//! Names follow Open-SCS (OPC 30260) where it has one: the methods answer
//! an `OPENSCSReturnEnum` value (`ReturnStatus`) and a `Message`.
//!
//! Security: a `Basic256Sha256` / `SignAndEncrypt` endpoint carries user
//! name / password identities (and anonymous sessions when allowed); an
//! optional unsecured endpoint carries anonymous sessions only, so a
//! password never travels in clear. Anonymous sessions may browse and read
//! but never call a method unless configured to. The server's certificate is
//! made on first start in the PKI directory when none is configured.
//!
//! The stack is `async-opcua` (MPL-2.0, unmodified).

mod alarms;
mod methods;
mod nodes;
mod security;
mod server;
mod values;

pub use methods::ReturnStatus;
pub use server::{serve, OpcuaError, OpcuaServer};

use serialine_store::Store;
use serialine_uplink::UplinkHandle;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The namespace of Serialine's nodes.
pub const NAMESPACE_URI: &str = "urn:serialine:opcua";

/// How often counters and depths are read from the ledger.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// What the server needs; built by the service from `[opcua]` and by the lab
/// demo from its flag.
#[derive(Debug, Clone)]
pub struct OpcuaConfig {
    /// Where the server listens (`opc.tcp://<listen>/`).
    pub listen: SocketAddr,
    /// The host name in endpoint URLs and the certificate (defaults to the
    /// listen address).
    pub host_name: Option<String>,
    /// Holds `own/cert.der`, `private/private.pem` (made on first start when
    /// `certificate` is not set), `trusted/` and `rejected/` client
    /// certificates.
    pub pki_dir: PathBuf,
    /// The server's certificate (DER) and private key (PEM), when not made.
    pub certificate: Option<(PathBuf, PathBuf)>,
    /// Accept any client application certificate (the user identity still
    /// decides what a session may do). Otherwise only those in
    /// `<pki_dir>/trusted/`.
    pub trust_client_certs: bool,
    /// User name / password identities.
    pub users: Vec<OpcuaUser>,
    /// Sessions without an identity may browse and read.
    pub anonymous_read: bool,
    /// Sessions without an identity may also call methods (never the
    /// default).
    pub anonymous_methods: bool,
    /// Offer an unsecured endpoint (security policy None) for anonymous
    /// sessions only: for tools that cannot do SignAndEncrypt.
    pub insecure_endpoint: bool,
}

/// One user name / password identity. `Debug` hides the password.
#[derive(Clone)]
pub struct OpcuaUser {
    pub name: String,
    pub password: String,
}

impl std::fmt::Debug for OpcuaUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpcuaUser")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A line the server shows.
#[derive(Clone)]
pub struct LineSource {
    pub id: String,
    pub store: Store,
    pub uplink: UplinkHandle,
    /// Whether something consumes the line's commands (the service's
    /// supervisor). Without it (the lab demo) `StartJob` / `StopJob` answer
    /// that they are not supported here.
    pub accepts_commands: bool,
}
