//! Endpoints and identities. Passwords travel only inside a
//! SignAndEncrypt channel: the unsecured endpoint, when offered, takes
//! anonymous sessions only. Method calls need an identity unless
//! `anonymous_methods` is set.

use crate::OpcuaConfig;
use async_trait::async_trait;
use opcua::crypto::{SecurityPolicy, Thumbprint};
use opcua::server::authenticator::{AuthManager, DefaultAuthenticator, Password, UserToken};
use opcua::server::{ServerEndpoint, ServerUserToken, ANONYMOUS_USER_TOKEN_ID};
use opcua::types::{Error, MessageSecurityMode, NodeId, UserTokenPolicy};
use std::collections::BTreeMap;

/// Endpoint ids in the stack's configuration.
pub const SECURE_ENDPOINT: &str = "basic256sha256_sign_encrypt";
pub const INSECURE_ENDPOINT: &str = "none";

/// The user token id of user `name` (the stack keys identities by id).
pub fn user_token_id(name: &str) -> String {
    format!("user:{name}")
}

pub fn user_tokens(cfg: &OpcuaConfig) -> BTreeMap<String, ServerUserToken> {
    cfg.users
        .iter()
        .map(|u| {
            (
                user_token_id(&u.name),
                ServerUserToken::user_pass(u.name.clone(), u.password.clone()),
            )
        })
        .collect()
}

pub fn endpoints(cfg: &OpcuaConfig) -> Vec<(&'static str, ServerEndpoint)> {
    let mut secure_ids: Vec<String> = cfg.users.iter().map(|u| user_token_id(&u.name)).collect();
    if cfg.anonymous_read {
        secure_ids.push(ANONYMOUS_USER_TOKEN_ID.to_string());
    }
    let mut out = vec![(
        SECURE_ENDPOINT,
        ServerEndpoint::new(
            "/",
            SecurityPolicy::Basic256Sha256,
            MessageSecurityMode::SignAndEncrypt,
            &secure_ids,
        ),
    )];
    if cfg.insecure_endpoint && cfg.anonymous_read {
        out.push((
            INSECURE_ENDPOINT,
            ServerEndpoint::new_none("/", &[ANONYMOUS_USER_TOKEN_ID.to_string()]),
        ));
    }
    out
}

/// The stack's authenticator for the configured users, which also refuses
/// anonymous method calls (the call then fails with `BadUserAccessDenied`).
pub struct SerialineAuth {
    inner: DefaultAuthenticator,
    anonymous_methods: bool,
}

impl SerialineAuth {
    pub fn new(cfg: &OpcuaConfig) -> Self {
        SerialineAuth {
            inner: DefaultAuthenticator::new(user_tokens(cfg)),
            anonymous_methods: cfg.anonymous_methods,
        }
    }
}

#[async_trait]
impl AuthManager for SerialineAuth {
    async fn authenticate_anonymous_token(&self, endpoint: &ServerEndpoint) -> Result<(), Error> {
        self.inner.authenticate_anonymous_token(endpoint).await
    }

    async fn authenticate_username_identity_token(
        &self,
        endpoint: &ServerEndpoint,
        username: &str,
        password: &Password,
    ) -> Result<UserToken, Error> {
        let r = self
            .inner
            .authenticate_username_identity_token(endpoint, username, password)
            .await;
        match &r {
            Ok(_) => tracing::info!(user = username, "OPC UA session authenticated"),
            Err(_) => tracing::warn!(user = username, "OPC UA identity refused"),
        }
        r
    }

    async fn authenticate_x509_identity_token(
        &self,
        endpoint: &ServerEndpoint,
        signing_thumbprint: &Thumbprint,
    ) -> Result<UserToken, Error> {
        self.inner
            .authenticate_x509_identity_token(endpoint, signing_thumbprint)
            .await
    }

    fn is_user_executable(&self, token: &UserToken, _method_id: &NodeId) -> bool {
        self.anonymous_methods || !token.is_anonymous()
    }

    fn user_token_policies(&self, endpoint: &ServerEndpoint) -> Vec<UserTokenPolicy> {
        self.inner.user_token_policies(endpoint)
    }
}
