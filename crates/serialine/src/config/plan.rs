//! From configuration to a [`LinePlan`]: each section builds its own piece
//! (the store options, the uplink settings, the prefetch marks, the pipeline
//! settings), so no caller maps configuration fields by hand.

use super::{
    BufferConfig, Config, ConfigError, LineConfig, MqttConfig, PipelineConfig, StoreConfig,
    TlsConfig,
};
use serialine_line::{LinePlan, PipelinePlan};
use serialine_store::StoreOptions;
use serialine_uplink::{AckAuth, CommandAuth, PrefetchConfig, TlsPaths, UplinkConfig};
use std::path::PathBuf;
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

impl StoreConfig {
    /// A line's ledger options: its path and fence file, its secret, and
    /// this section's commit mode and batch bound.
    pub fn store_options(
        &self,
        path: PathBuf,
        line: &str,
        secret: &[u8],
        fence: PathBuf,
    ) -> StoreOptions {
        let mut opts = StoreOptions::new(path, line, secret);
        opts.commit = self.commit;
        opts.max_batch = self.max_batch as usize;
        // A restored or rolled-back ledger never reissues a serial.
        opts.fence = Some(fence);
        opts
    }
}

impl TlsConfig {
    pub fn paths(&self) -> TlsPaths {
        TlsPaths {
            ca: self.ca_file.clone(),
            client_cert: self.client_cert_file.clone(),
            client_key: self.client_key_file.clone(),
        }
    }
}

impl BufferConfig {
    /// The uplink's prefetch marks for this buffer.
    pub fn prefetch(&self) -> PrefetchConfig {
        PrefetchConfig {
            low_water_serials: self.low_water_serials,
            low_water_minutes: f64::from(self.low_water_minutes),
            high_water_serials: self.high_water_serials,
            high_water_minutes: 2.0 * f64::from(self.low_water_minutes),
            // "Never hold more than high_water_serials."
            max_buffer_serials: self.high_water_serials,
            ..PrefetchConfig::default()
        }
    }
}

impl MqttConfig {
    /// Line `line`'s uplink on this broker (prefetch and product are the
    /// line's, set by [`Config::line_plan`]).
    pub fn uplink(&self, site: &str, line: &str, auth: &SiteAuth) -> UplinkConfig {
        let mut up = UplinkConfig::new(self.host.clone(), self.port, site, line);
        up.client_id = self.client_id_for_line(site, line);
        up.keep_alive = Duration::from_secs(self.keep_alive_secs.into());
        up.clean_session = self.clean_session;
        up.username = self.username.clone();
        up.password = auth.password.clone();
        up.tls = self.tls.as_ref().map(TlsConfig::paths);
        up.command_auth = auth.command.clone();
        up.ack_auth = auth.ack.clone();
        // A stop or drain answers once the line has drained.
        up.command_timeout = STOP_BOUND + Duration::from_secs(15);
        up.command_max_age = Duration::from_secs(self.command_max_age_secs.into());
        up.command_max_skew = Duration::from_secs(self.command_max_skew_secs.into());
        up
    }
}

impl PipelineConfig {
    /// The pipeline's settings; the camera's own `deadline_ms`, where set,
    /// overrides the read deadline.
    pub fn plan(&self, line: &LineConfig) -> PipelinePlan {
        PipelinePlan {
            min_grade: line.min_grade,
            camera_window: self.camera_window,
            read_deadline: Duration::from_millis(
                line.camera.deadline_ms.unwrap_or(self.read_deadline_ms),
            ),
            starve_timeout: Duration::from_secs(self.starve_timeout_secs),
        }
    }
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
