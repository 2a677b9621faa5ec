//! Reading what the configuration names: the line secrets, the MQTT
//! password, the command and ack keys, the TLS files and each line's device
//! files (printer profile, laser register map, label template). Loading
//! never reads them; [`Config::check_files`] checks them all the way
//! `serialine check-config` does, and the daemon reads each where it needs
//! it. Every error names the file and the config key that names it.

use super::{CommandKey, Config, ConfigError, Issue, LabelSource, PrinterKind};
use serde::de::DeserializeOwned;
use serialine_devices::label::LabelTemplate;
use serialine_devices::laser::LaserRegisterMap;
use serialine_devices::printer::FramedProfile;
use serialine_line::LevelDeviceSpec;
use std::fmt;
use std::fs;
use std::io;
use std::path::Path;

/// A line secret shorter than this draws a warning.
pub const MIN_SECRET_LEN: usize = 16;

/// Secret bytes read from a file. `Debug` never shows them; the bytes are
/// overwritten when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // SAFETY: `b` is a valid, aligned, exclusive reference.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// What a line's device files hold, read and checked
/// ([`Config::line_devices`]): the line crate's device factory.
pub use serialine_line::{DeviceSpec, Gs1ModeIssue, MarkerSpec};

impl Config {
    /// Reads the secret file `path` that config key `key` names (display
    /// form, e.g. `line[0].secret_file`). One trailing line ending is
    /// dropped. Errors name the file and the key; the returned warnings flag
    /// a file that group or others may access (mode & 0o077 != 0).
    pub fn read_secret(&self, key: &str, path: &Path) -> Result<(Secret, Vec<Issue>), ConfigError> {
        let fail = |message: String| ConfigError::Files(vec![self.origin.issue(key, message)]);
        let shown = path.display();
        let meta = fs::metadata(path).map_err(|e| fail(file_error("secret", path, &e)))?;
        if !meta.is_file() {
            return Err(fail(format!(
                "secret file {shown} is not a regular file; expected a file holding the secret"
            )));
        }
        let mut bytes = fs::read(path).map_err(|e| fail(file_error("secret", path, &e)))?;
        if bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
        let secret = Secret::new(bytes);
        if secret.is_empty() {
            return Err(fail(format!(
                "secret file {shown} is empty; expected the secret in it"
            )));
        }
        let mut warnings = Vec::new();
        if let Some(w) = self.mode_warning(key, path, &meta) {
            warnings.push(w);
        }
        Ok((secret, warnings))
    }

    /// The block secret of line `index`.
    pub fn line_secret(&self, index: usize) -> Result<(Secret, Vec<Issue>), ConfigError> {
        self.read_secret(
            &format!("line[{index}].secret_file"),
            &self.lines[index].secret_file,
        )
    }

    /// Line `index`'s devices: the printer's profile, register map or label
    /// file read, parsed and checked, and the camera profile. Errors name
    /// the file and the key that names it (`line[0].printer.profile`).
    pub fn line_devices(&self, index: usize) -> Result<DeviceSpec, ConfigError> {
        let line = &self.lines[index];
        let p = &line.printer;
        let key = |k: &str| format!("line[{index}].printer.{k}");
        let fail = |k: &str, message: String| {
            ConfigError::Files(vec![self.origin.issue(&key(k), message)])
        };
        let missing = |k: &str| {
            fail(
                k,
                format!("missing; required when printer.kind = \"{}\"", p.kind),
            )
        };
        fn parse<T: DeserializeOwned>(what: &str, path: &Path) -> Result<T, String> {
            let text = fs::read_to_string(path).map_err(|e| file_error(what, path, &e))?;
            toml::from_str(&text).map_err(|e| {
                format!(
                    "{what} file {} is not valid: {}",
                    path.display(),
                    e.to_string().trim_end()
                )
            })
        }
        let printer = match p.kind {
            PrinterKind::Framed => {
                let path = p.profile.as_deref().ok_or_else(|| missing("profile"))?;
                let profile: FramedProfile =
                    parse("printer profile", path).map_err(|m| fail("profile", m))?;
                profile
                    .compile()
                    .map_err(|e| fail("profile", format!("{}: {e}", path.display())))?;
                MarkerSpec::Framed {
                    transport: p.transport.clone().ok_or_else(|| missing("transport"))?,
                    profile,
                }
            }
            PrinterKind::Laser => {
                let path = p.map.as_deref().ok_or_else(|| missing("map"))?;
                let map: LaserRegisterMap =
                    parse("laser register map", path).map_err(|m| fail("map", m))?;
                map.validate()
                    .map_err(|e| fail("map", format!("{}: {e}", path.display())))?;
                MarkerSpec::Laser {
                    addr: p.addr.clone().ok_or_else(|| missing("addr"))?,
                    map,
                }
            }
            PrinterKind::Zpl => {
                let label = match p.label.as_ref().ok_or_else(|| missing("label"))? {
                    LabelSource::Inline(t) => t.clone(),
                    LabelSource::File(path) => {
                        let t: LabelTemplate =
                            parse("label template", path).map_err(|m| fail("label", m))?;
                        t.validate()
                            .map_err(|e| fail("label", format!("{}: {e}", path.display())))?;
                        t
                    }
                };
                MarkerSpec::Zpl {
                    addr: p.addr.clone().ok_or_else(|| missing("addr"))?,
                    label,
                }
            }
        };
        let mut levels = Vec::with_capacity(line.aggregation.len());
        for (j, a) in line.aggregation.iter().enumerate() {
            let k = format!("line[{index}].aggregation[{j}].label");
            let label = match &a.label {
                LabelSource::Inline(t) => t.clone(),
                LabelSource::File(path) => {
                    let fail = |m: String| ConfigError::Files(vec![self.origin.issue(&k, m)]);
                    let t: LabelTemplate = parse("label template", path).map_err(fail)?;
                    t.validate()
                        .map_err(|e| fail(format!("{}: {e}", path.display())))?;
                    t
                }
            };
            levels.push(LevelDeviceSpec {
                name: a.level.clone(),
                label_addr: a.label_printer.clone(),
                label,
                scanner_transport: a.scanner.transport.clone(),
                scanner: a.scanner.profile(),
                camera: a
                    .camera
                    .as_ref()
                    .map(|c| (c.transport.clone(), c.profile())),
            });
        }
        Ok(DeviceSpec {
            marker: printer,
            camera_transport: line.camera.transport.clone(),
            camera: line.camera.profile(),
            levels,
        })
    }

    /// The command key, if `mqtt.command_key_file` is set: 64 hex digits
    /// (the 32-byte key operators sign commands with).
    pub fn command_key(&self) -> Result<Option<(CommandKey, Vec<Issue>)>, ConfigError> {
        self.mqtt
            .command_key_file
            .as_deref()
            .map(|path| self.read_key("mqtt.command_key_file", "a command key", path))
            .transpose()
    }

    /// The ack key, if `mqtt.ack_key_file` is set: 64 hex digits (the
    /// 32-byte key upstream signs `events/ack` with).
    pub fn ack_key(&self) -> Result<Option<(CommandKey, Vec<Issue>)>, ConfigError> {
        self.mqtt
            .ack_key_file
            .as_deref()
            .map(|path| self.read_key("mqtt.ack_key_file", "an ack key", path))
            .transpose()
    }

    /// A 32-byte key written as 64 hex digits in the secret file `path`
    /// that `key` names; `what` says which key in the message.
    fn read_key(
        &self,
        key: &str,
        what: &str,
        path: &Path,
    ) -> Result<(CommandKey, Vec<Issue>), ConfigError> {
        let (secret, warnings) = self.read_secret(key, path)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(secret.expose().trim_ascii(), &mut bytes).map_err(|_| {
            ConfigError::Files(vec![self.origin.issue(
                key,
                format!(
                    "{} does not hold {what}; expected 64 hex digits (32 bytes)",
                    path.display()
                ),
            )])
        })?;
        Ok((bytes, warnings))
    }

    /// The MQTT password, if `mqtt.password_file` is set.
    pub fn mqtt_password(&self) -> Result<Option<(Secret, Vec<Issue>)>, ConfigError> {
        self.mqtt
            .password_file
            .as_deref()
            .map(|p| self.read_secret("mqtt.password_file", p))
            .transpose()
    }

    /// Checks every file the config names: line secrets, the MQTT password
    /// and TLS key are read (present, non-empty; warning if group/other may
    /// access them), the TLS CA and client certificate must be readable,
    /// parse and be within their validity period, the TLS key must be the
    /// client certificate's ([`serialine_uplink::check_tls_files`]), and
    /// each line's device files (printer profile, laser map, label file) must
    /// read, parse and check ([`Config::line_devices`]).
    /// The command and ack keys must be set (and hold 64 hex digits) unless
    /// their `allow_unsigned_*` allowance is, which is a warning
    /// ([`Config::auth_issues`]).
    /// Returns the warnings, or every problem found.
    pub fn check_files(&self) -> Result<Vec<Issue>, ConfigError> {
        let mut warnings = Vec::new();
        let mut errors = Vec::new();
        let mut secret = |key: String, path: &Path, min_len: Option<usize>| match self
            .read_secret(&key, path)
        {
            Ok((s, w)) => {
                warnings.extend(w);
                if let Some(min) = min_len.filter(|m| s.len() < *m) {
                    warnings.push(self.origin.issue(
                            &key,
                            format!(
                                "secret file {} holds only {} bytes; expected at least {min} random bytes (32 recommended)",
                                path.display(),
                                s.len()
                            ),
                        ));
                }
            }
            Err(e) => errors.extend(e.issues().iter().cloned()),
        };
        for (i, line) in self.lines.iter().enumerate() {
            secret(
                format!("line[{i}].secret_file"),
                &line.secret_file,
                Some(MIN_SECRET_LEN),
            );
        }
        if let Some(p) = &self.mqtt.password_file {
            secret("mqtt.password_file".into(), p, None);
        }
        // A disabled server reads no file.
        if self.opcua.enabled {
            for (i, u) in self.opcua.users.iter().enumerate() {
                secret(
                    format!("opcua.user[{i}].password_file"),
                    &u.password_file,
                    None,
                );
            }
            if let Some(p) = &self.opcua.private_key_file {
                secret("opcua.private_key_file".into(), p, None);
            }
        }
        if let Some(tls) = &self.mqtt.tls {
            if let Some(p) = &tls.client_key_file {
                secret("mqtt.tls.client_key_file".into(), p, None);
            }
            let public = [
                ("mqtt.tls.ca_file", Some(&tls.ca_file)),
                ("mqtt.tls.client_cert_file", tls.client_cert_file.as_ref()),
            ];
            for (key, path) in public {
                if let Some(path) = path {
                    if let Err(e) = fs::File::open(path) {
                        errors.push(self.origin.issue(key, file_error("certificate", path, &e)));
                    }
                }
            }
            // The contents: certificates that parse and are within their
            // validity period, a key file holding the certificate's key.
            // (Files that cannot be read are reported above.)
            let paths = serialine_uplink::TlsPaths {
                ca: tls.ca_file.clone(),
                client_cert: tls.client_cert_file.clone(),
                client_key: tls.client_key_file.clone(),
            };
            for p in serialine_uplink::check_tls_files(&paths, std::time::SystemTime::now()) {
                let key = match p.file {
                    serialine_uplink::TlsFile::Ca => "mqtt.tls.ca_file",
                    serialine_uplink::TlsFile::ClientCert => "mqtt.tls.client_cert_file",
                    serialine_uplink::TlsFile::ClientKey => "mqtt.tls.client_key_file",
                };
                errors.push(self.origin.issue(key, p.message));
            }
        }
        match self.command_key() {
            Ok(Some((_, w))) => warnings.extend(w),
            Ok(None) => {}
            Err(e) => errors.extend(e.issues().iter().cloned()),
        }
        match self.ack_key() {
            Ok(Some((_, w))) => warnings.extend(w),
            Ok(None) => {}
            Err(e) => errors.extend(e.issues().iter().cloned()),
        }
        let (e, w) = self.auth_issues();
        errors.extend(e);
        warnings.extend(w);
        for i in 0..self.lines.len() {
            match self.line_devices(i) {
                Ok(devices) => {
                    let (e, w) = self.fnc1_issues(i, &devices);
                    errors.extend(e);
                    warnings.extend(w);
                }
                Err(e) => errors.extend(e.issues().iter().cloned()),
            }
        }
        if errors.is_empty() {
            Ok(warnings)
        } else {
            Err(ConfigError::Files(errors))
        }
    }

    /// Line `index`'s printer's GS1 mode against its default job's
    /// template ([`MarkerSpec::gs1_mode_issue`]): errors for a setting
    /// that contradicts the job, a warning when the profile does not say.
    /// Jobs started over MQTT are checked when they start
    /// (`serialine_line::Line::start_job`).
    fn fnc1_issues(&self, index: usize, devices: &DeviceSpec) -> (Vec<Issue>, Vec<Issue>) {
        let (mut errors, mut warnings) = (Vec::new(), Vec::new());
        let Some(job) = &self.lines[index].job else {
            return (errors, warnings);
        };
        let issue = devices
            .marker
            .gs1_mode_issue(&job.template, &format!("line[{index}].job"));
        let key = format!("line[{index}].printer.{}", devices.marker.file_key());
        match issue {
            Some(Gs1ModeIssue::Unset(m)) => warnings.push(self.origin.issue(&key, m)),
            Some(Gs1ModeIssue::Contradiction(m)) => errors.push(self.origin.issue(&key, m)),
            None => {}
        }
        (errors, warnings)
    }

    #[cfg(unix)]
    fn mode_warning(&self, key: &str, path: &Path, meta: &fs::Metadata) -> Option<Issue> {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        (mode & 0o077 != 0).then(|| {
            self.origin.issue(
                key,
                format!(
                    "secret file {} has mode {mode:04o}, so group or others may access it; \
                     expected 0600 or 0400 owned by the daemon's user (chmod 600 {})",
                    path.display(),
                    path.display()
                ),
            )
        })
    }

    #[cfg(not(unix))]
    fn mode_warning(&self, _: &str, _: &Path, _: &fs::Metadata) -> Option<Issue> {
        None
    }
}

fn file_error(what: &str, path: &Path, e: &io::Error) -> String {
    let shown = path.display();
    match e.kind() {
        io::ErrorKind::NotFound => {
            format!("{what} file {shown} does not exist; expected a readable file")
        }
        io::ErrorKind::PermissionDenied => format!(
            "{what} file {shown} cannot be read: permission denied; expected it readable by the daemon's user"
        ),
        _ => format!("{what} file {shown} cannot be read: {e}"),
    }
}
