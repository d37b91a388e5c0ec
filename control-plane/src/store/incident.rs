//! The state store's side of incident response: suspensions of client credentials, the
//! gateway-wide lockdown, and the one transaction of `credentials revoke-all`. A supertrait
//! of [`super::StateStore`], implemented for [`super::SqlStore`] in `sql/incident.rs`.

use super::StoreError;
use crate::domain::{Lockdown, Suspension, SuspensionTarget};

/// What `revoke_all_client_credentials` changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RevokedAll {
    /// Tokens newly marked revoked.
    pub tokens: u64,
    /// Virtual keys newly revoked.
    pub virtual_keys: u64,
    /// Signing keys newly retired.
    pub signing_keys: u64,
}

#[async_trait::async_trait]
pub trait IncidentStore: Send + Sync {
    /// Records a suspension; false when one of the same target exists (left unchanged).
    async fn insert_suspension(&self, s: &Suspension) -> Result<bool, StoreError>;
    /// Lifts a suspension; false when there was none.
    async fn delete_suspension(&self, target: &SuspensionTarget) -> Result<bool, StoreError>;
    /// Every suspension in force, oldest first.
    async fn list_suspensions(&self) -> Result<Vec<Suspension>, StoreError>;

    async fn get_lockdown(&self) -> Result<Option<Lockdown>, StoreError>;
    /// Turns the lockdown on; false when it already was (left unchanged).
    async fn insert_lockdown(&self, l: &Lockdown) -> Result<bool, StoreError>;
    /// Lifts the lockdown; false when it was not on.
    async fn delete_lockdown(&self) -> Result<bool, StoreError>;

    /// In one transaction: marks every unrevoked token and virtual key revoked at `at`, and
    /// retires every signing key but `keep_kid`.
    async fn revoke_all_client_credentials(
        &self,
        keep_kid: &str,
        at: i64,
    ) -> Result<RevokedAll, StoreError>;
    /// The kids of retired signing keys (never again in a snapshot).
    async fn retired_signing_keys(&self) -> Result<Vec<String>, StoreError>;
}
