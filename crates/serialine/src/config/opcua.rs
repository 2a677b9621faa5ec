//! `[opcua]` into the server's settings ([`serialine_opcua::OpcuaConfig`]):
//! the password files are read here, when the service starts the server.

use super::{Config, ConfigError, OpcuaSection};

impl Config {
    /// The OPC UA server's settings, `None` when `[opcua]` is not enabled.
    /// Reads every user's password file; errors name the file and its key.
    pub fn opcua_server(&self) -> Result<Option<serialine_opcua::OpcuaConfig>, ConfigError> {
        let o = &self.opcua;
        if !o.enabled {
            return Ok(None);
        }
        let listen = o.listen.parse().map_err(|_| {
            ConfigError::Invalid(vec![self
                .origin
                .issue("opcua.listen", format!("invalid address {:?}", o.listen))])
        })?;
        let mut users = Vec::with_capacity(o.users.len());
        for (i, u) in o.users.iter().enumerate() {
            let key = format!("opcua.user[{i}].password_file");
            let (secret, warnings) = self.read_secret(&key, &u.password_file)?;
            for w in warnings {
                tracing::warn!("{w}");
            }
            let password = String::from_utf8(secret.expose().to_vec()).map_err(|_| {
                ConfigError::Files(vec![self.origin.issue(
                    &key,
                    format!("{} is not UTF-8 text", u.password_file.display()),
                )])
            })?;
            if password.is_empty() {
                return Err(ConfigError::Files(vec![self.origin.issue(
                    &key,
                    format!(
                        "{} is empty; expected a password",
                        u.password_file.display()
                    ),
                )]));
            }
            users.push(serialine_opcua::OpcuaUser {
                name: u.name.clone(),
                password,
            });
        }
        Ok(Some(serialine_opcua::OpcuaConfig {
            listen,
            host_name: o.host_name.clone(),
            pki_dir: OpcuaSection::pki_dir(&self.daemon.state_dir),
            certificate: o.certificate_file.clone().zip(o.private_key_file.clone()),
            trust_client_certs: o.trust_client_certs,
            users,
            anonymous_read: o.anonymous_read,
            anonymous_methods: o.anonymous_methods,
            insecure_endpoint: o.insecure_endpoint,
        }))
    }
}
