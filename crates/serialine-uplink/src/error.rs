use std::path::PathBuf;
use std::time::Duration;

/// Why the uplink could not start or do what was asked. Failures while
/// running (broker down, bad payloads) are not errors of the API: they are
/// retried, logged and raised as alarms, and never stop the line.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("uplink configuration: {what}")]
    Config { what: String },
    #[error("uplink TLS: cannot read the {what} file {path}: {source}")]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("uplink is configured for line {config:?} but the store at {path} belongs to line {store:?}; blocks sealed for one cannot be used by the other")]
    LineMismatch {
        config: String,
        store: String,
        path: PathBuf,
    },
    #[error("uplink to {host}:{port}: not connected and subscribed within {timeout:?}")]
    NotConnected {
        host: String,
        port: u16,
        timeout: Duration,
    },
}
