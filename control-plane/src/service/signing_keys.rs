//! JWT signing keys: the signer new tokens are signed with, its rotation, and which older
//! keys nodes still need to verify tokens they signed.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use warden_core::jwt::{KeyMaterial, SigningAlgorithm};
use warden_core::unix_now;

use super::{Actor, ControlPlane, new_id};
use crate::config::AuthConfig;
use crate::domain::SigningKey;
use crate::error::ServiceError;
use crate::secrets::SecretStore;
use crate::store::StateStore;

/// A signing key with its role.
#[derive(Debug, Clone)]
pub struct SigningKeyStatus {
    pub record: SigningKey,
    /// Signs new tokens.
    pub active: bool,
    /// Latest expiry of an unrevoked token it signed; 0 = none.
    pub needed_until: i64,
}

/// `meta` key of the signing key that signs new tokens (every new key becomes it).
const ACTIVE_KID: &str = "signing_kid";

impl ControlPlane {
    pub(super) async fn load_or_create_signer(
        store: &dyn StateStore,
        secrets: &dyn SecretStore,
        auth: &AuthConfig,
    ) -> Result<KeyMaterial, ServiceError> {
        if let Some(k) = Self::active_signing_key(store, auth.algorithm).await? {
            return Self::load_key(secrets, &k).await;
        }
        Self::create_signing_key(store, secrets, auth.algorithm).await
    }

    /// The key that signs: the one recorded under [`ACTIVE_KID`] when it has `algorithm`,
    /// else the newest of that algorithm. (Keys made within one second have the same
    /// `created_at`, so the record decides; every replica reads the same one.)
    pub(super) async fn active_signing_key(
        store: &dyn StateStore,
        algorithm: SigningAlgorithm,
    ) -> Result<Option<SigningKey>, ServiceError> {
        let keys = store.list_signing_keys().await?;
        let active = store.get_meta(ACTIVE_KID).await?;
        let of_algorithm = |k: &&SigningKey| k.algorithm == algorithm.as_str();
        Ok(active
            .and_then(|kid| keys.iter().filter(of_algorithm).find(|k| k.kid == kid))
            .or_else(|| keys.iter().rev().find(of_algorithm))
            .cloned())
    }

    pub(super) async fn create_signing_key(
        store: &dyn StateStore,
        secrets: &dyn SecretStore,
        algorithm: SigningAlgorithm,
    ) -> Result<KeyMaterial, ServiceError> {
        let kid = new_id("k");
        let material = KeyMaterial::generate(kid.clone(), algorithm)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let secret_name = format!("warden/jwt/{kid}");
        let encoded = SecretString::from(hex::encode(material.private.expose_secret()));
        secrets.put(&secret_name, &encoded).await?;
        store
            .insert_signing_key(&SigningKey {
                kid,
                algorithm: algorithm.as_str().to_owned(),
                secret_name,
                created_at: unix_now(),
            })
            .await?;
        store.set_meta(ACTIVE_KID, &material.kid).await?;
        Ok(material)
    }

    pub(super) async fn load_key(
        secrets: &dyn SecretStore,
        k: &SigningKey,
    ) -> Result<KeyMaterial, ServiceError> {
        let alg = SigningAlgorithm::parse(&k.algorithm).ok_or_else(|| {
            ServiceError::Internal(format!("signing key {} has bad algorithm", k.kid))
        })?;
        let private = secrets.get(&k.secret_name).await?;
        let raw = hex::decode(private.expose_secret())
            .map_err(|_| ServiceError::Internal(format!("signing key {} is malformed", k.kid)))?;
        KeyMaterial::from_stored(k.kid.clone(), alg, raw)
            .map_err(|e| ServiceError::Internal(format!("signing key {}: {e}", k.kid)))
    }

    /// The signing key currently used for new tokens.
    pub fn signing_key(&self) -> Arc<KeyMaterial> {
        Arc::clone(&self.signer.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Makes a new signing key (of the configured algorithm) the signer. The old keys'
    /// verification parts stay in snapshots until the last unrevoked token each signed has
    /// expired (see [`Self::signing_keys`]).
    pub async fn rotate_signing_key(
        &self,
        actor: &Actor,
    ) -> Result<SigningKeyStatus, ServiceError> {
        let kid_of = |r: &Result<SigningKeyStatus, ServiceError>| {
            r.as_ref().map(|k| k.record.kid.clone()).unwrap_or_default()
        };
        self.audited(actor, "signing_key.rotate", kid_of, async {
            let material = Self::create_signing_key(
                self.store.as_ref(),
                self.secrets.as_ref(),
                self.auth.algorithm,
            )
            .await?;
            let kid = material.kid.clone();
            *self.signer.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(material);
            // Published before it is read back: nodes must know the key before a token
            // signed with it can reach them.
            self.publish().await?;
            self.signing_keys()
                .await?
                .into_iter()
                .find(|k| k.record.kid == kid)
                .ok_or_else(|| ServiceError::Internal("new signing key not listed".into()))
        })
        .await
    }

    /// Every signing key with whether it signs new tokens and until when nodes need it.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyStatus>, ServiceError> {
        let active = self.signing_key().kid.clone();
        let now = unix_now();
        let tokens = self.store.list_tokens().await?;
        Ok(self
            .store
            .list_signing_keys()
            .await?
            .into_iter()
            .map(|k| {
                let needed_until = tokens
                    .iter()
                    .filter(|t| t.kid == k.kid && t.revoked_at.is_none() && t.expires_at > now)
                    .map(|t| t.expires_at)
                    .max()
                    .unwrap_or(0);
                SigningKeyStatus {
                    active: k.kid == active,
                    needed_until,
                    record: k,
                }
            })
            .collect())
    }
}
