//! From configuration to a [`LinePlan`]. Each section builds its own piece
//! beside its definition (`StoreConfig::store_options`, `MqttConfig::uplink`,
//! `TlsConfig::paths` in `schema.rs`; `BufferConfig::prefetch`,
//! `PipelineConfig::plan` in `line.rs`), so no caller maps configuration
//! fields by hand; here they are put together per line.

use super::{Config, ConfigError};
use serialine_line::LinePlan;
use serialine_uplink::{AckAuth, CommandAuth};
use std::time::Duration;

/// Longest a stopping job may take to drain (units in flight get their
/// verdict or are voided at the read deadline well within this).
pub const STOP_BOUND: Duration = Duration::from_secs(30);

/// What every line of a site shares on its uplink: the broker password and
/// the command and ack keys, each read once from its file.
#[derive(Clone, Default)]
pub struct SiteAuth {
    pub password: Option<String>,
    pub command: Option<CommandAuth>,
    pub ack: Option<AckAuth>,
}

impl Config {
    /// The site's uplink credentials, each file read once. Refuses a
    /// configuration without a command or ack key unless it explicitly
    /// allows unsigned ones (check-config reports the same).
    pub fn site_auth(&self) -> Result<SiteAuth, ConfigError> {
        let (missing, _) = self.auth_issues();
        if !missing.is_empty() {
            return Err(ConfigError::Files(missing));
        }
        let password = match self.mqtt_password()? {
            Some((secret, _)) => Some(
                std::str::from_utf8(secret.expose())
                    .map_err(|_| {
                        ConfigError::Files(vec![self
                            .origin
                            .issue("mqtt.password_file", "the password is not UTF-8 text")])
                    })?
                    .to_string(),
            ),
            None => None,
        };
        Ok(SiteAuth {
            password,
            command: self.command_key()?.map(|(key, _)| CommandAuth { key }),
            ack: self.ack_key()?.map(|(key, _)| AckAuth { key }),
        })
    }

    /// Line `index`'s plan: its ledger (secret read from its file), its
    /// uplink, its pipeline and its default job. Its devices are
    /// [`Config::line_devices`].
    pub fn line_plan(&self, index: usize, auth: &SiteAuth) -> Result<LinePlan, ConfigError> {
        let line = &self.lines[index];
        let (secret, _) = self.line_secret(index)?;
        let store = self.store.store_options(
            self.line_ledger_path(&line.id),
            &line.id,
            secret.expose(),
            self.line_fence_path(&line.id),
        );
        let default_job = match &line.job {
            Some(j) => Some(j.to_job().map_err(|e| {
                ConfigError::Files(vec![self
                    .origin
                    .issue(&format!("line[{index}].job"), e.to_string())])
            })?),
            None => None,
        };
        let mut uplink = self.mqtt.uplink(&self.site.id, &line.id, auth);
        uplink.prefetch = line.buffer.prefetch();
        // Prefetch for the default job's product from the first request on.
        uplink.product = default_job.as_ref().map(|j| j.gtin);
        Ok(LinePlan {
            id: line.id.clone(),
            store,
            uplink,
            pipeline: line.pipeline.plan(line),
            default_job,
        })
    }
}
