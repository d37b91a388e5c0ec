//! Provider-key secrets as the backends hold them: every key read at start-up (or served
//! from the encrypted start-up cache), and re-read by the rotation poll, which records and
//! audits a changed value and puts a key the provider had rejected back into service.

use warden_core::audit_detail::Detail;

use super::ControlPlane;
use super::providers::REJECTED_PREFIX;
use crate::domain::ProviderKey;
use crate::error::ServiceError;
use crate::secrets::SecretError;
use crate::secrets::manager::{Refresh, StartLoad};
use crate::secrets::reference::SecretReference;

/// How many provider-key secrets are read at once.
const POLL_CONCURRENCY: usize = 8;

impl ControlPlane {
    /// Reads every upstream key from its backend at start-up, then publishes the first
    /// snapshot. A key that cannot be read stops the start (naming its reference) unless
    /// the encrypted start-up cache holds its last value, or `tolerate` is set (dev mode:
    /// the key is left out of snapshots until it can be read).
    pub async fn load_provider_keys(&self, tolerate: bool) -> Result<(), ServiceError> {
        use futures::StreamExt as _;
        let reads: Vec<Result<_, ServiceError>> =
            futures::stream::iter(self.store.list_provider_keys().await?)
                .map(|k| async move {
                    let reference = k.parsed_reference()?;
                    let read = self.keys.load_at_start(&reference).await;
                    Ok((k, reference, read))
                })
                .buffer_unordered(POLL_CONCURRENCY)
                .collect()
                .await;
        for r in reads {
            let (k, reference, read) = r?;
            match read {
                Ok(StartLoad::Fresh) => {
                    self.note_key_value(&k, &reference).await?;
                }
                Ok(StartLoad::FromCache(e)) => {
                    tracing::warn!(reference = %reference, error = %e, "secret backend unavailable at start: serving the cached value");
                    self.keys.mark_failing(&reference.to_string());
                    self.audit_unavailable(&k, &reference, &e, Some("start-up cache"))
                        .await;
                }
                Err(e) => {
                    self.audit_unavailable(&k, &reference, &e, None).await;
                    // A refused reference (stored before the reference rules) stays out of
                    // service but does not stop the start: the admin removes the key.
                    if !tolerate && !matches!(e, SecretError::Refused { .. }) {
                        return Err(ServiceError::Unavailable(format!(
                            "upstream key {}/{} cannot be read at start-up: {e} (set [secrets] startup = \"cache\" to start from the encrypted cache)",
                            k.provider, k.id
                        )));
                    }
                    self.keys.mark_failing(&reference.to_string());
                    tracing::warn!(reference = %reference, error = %e, "upstream key left out until it can be read");
                }
            }
        }
        self.publish().await?;
        Ok(())
    }

    /// Audits that `k`'s secret could not be read (naming the reference, never a value),
    /// and what serves meanwhile.
    async fn audit_unavailable(
        &self,
        k: &ProviderKey,
        reference: &SecretReference,
        e: &SecretError,
        served_from: Option<&str>,
    ) {
        self.audit(
            "secret.unavailable",
            "system:secrets",
            &format!("{}/{} ref={reference}", k.provider, k.id),
            e.metric_label(),
            &Detail::new()
                .with("error", e)
                .with_opt("served_from", served_from)
                .build(),
        )
        .await;
    }

    /// After a fresh read: records a changed fingerprint. Returns whether it changed.
    async fn note_key_value(
        &self,
        k: &ProviderKey,
        reference: &SecretReference,
    ) -> Result<bool, ServiceError> {
        let Some(fp) = self.keys.fingerprint(&reference.to_string()) else {
            return Ok(false);
        };
        if fp == k.fingerprint {
            return Ok(false);
        }
        self.store
            .set_provider_key_fingerprint(&k.provider, &k.id, &fp)
            .await?;
        Ok(true)
    }

    /// Re-reads every upstream key from its backend (the rotation poll). A new value is
    /// recorded and audited (`secret.rotate`), a key the provider had rejected is put back
    /// into service, and one snapshot carries all changes. A backend failure is audited
    /// once per failure spell (`secret.unavailable`) and the last value keeps serving.
    /// Returns how many keys changed.
    pub async fn poll_provider_keys(&self) -> Result<usize, ServiceError> {
        use futures::StreamExt as _;
        // Backends are read concurrently (a few at a time), so one slow or unreachable
        // backend costs one timeout per poll, not one per key.
        let reads: Vec<Result<_, ServiceError>> =
            futures::stream::iter(self.store.list_provider_keys().await?)
                .map(|k| async move {
                    let reference = k.parsed_reference()?;
                    let was_failing = self.keys.is_failing(&reference.to_string());
                    let read = self.keys.refresh(&reference).await;
                    Ok((k, reference, was_failing, read))
                })
                .buffer_unordered(POLL_CONCURRENCY)
                .collect()
                .await;
        let mut changed = 0;
        for r in reads {
            let (k, reference, was_failing, read) = r?;
            match read {
                Ok(outcome) => {
                    if was_failing {
                        tracing::info!(reference = %reference, "secret backend readable again");
                        self.audit(
                            "secret.available",
                            "system:secrets",
                            &format!("{}/{} ref={reference}", k.provider, k.id),
                            "ok",
                            "",
                        )
                        .await;
                    }
                    if self
                        .apply_key_refresh(&k, &reference, &outcome, "system:secrets")
                        .await?
                    {
                        changed += 1;
                    }
                    // Recorded for the other replicas, which re-read it before publishing,
                    // through the leader's store: fenced, so a deposed leader cannot.
                    let text = reference.to_string();
                    if let (Some(fp), Some(store)) =
                        (self.keys.fingerprint(&text), self.leader_store())
                    {
                        store.record_secret_version(&text, &fp).await?;
                    }
                }
                Err(e) => {
                    if self.keys.mark_failing(&reference.to_string()) {
                        tracing::error!(reference = %reference, error = %e, "cannot read upstream key; the last known value keeps serving");
                        self.audit_unavailable(&k, &reference, &e, Some("last known value"))
                            .await;
                    }
                }
            }
        }
        if changed > 0 {
            self.tell_replicas(super::replicas::SECRETS_CHANNEL, &changed.to_string())
                .await;
            self.publish().await?;
        }
        Ok(changed)
    }

    /// Records what a fresh read found: a new fingerprint (audited as a rotation) and, for
    /// a key the provider had rejected, a return to service with a fresh health record.
    /// Returns whether the snapshot must change.
    pub(super) async fn apply_key_refresh(
        &self,
        k: &ProviderKey,
        reference: &SecretReference,
        outcome: &Refresh,
        actor: &str,
    ) -> Result<bool, ServiceError> {
        let fingerprint_changed = self.note_key_value(k, reference).await?;
        if matches!(outcome, Refresh::Unchanged) && !fingerprint_changed {
            return Ok(false);
        }
        let new_fp = self
            .keys
            .fingerprint(&reference.to_string())
            .unwrap_or_default();
        let reenabled = fingerprint_changed
            && k.disabled_reason
                .as_deref()
                .is_some_and(|r| r.starts_with(REJECTED_PREFIX));
        if reenabled {
            self.store
                .set_provider_key_state(&k.provider, &k.id, None, None, true)
                .await?;
        }
        if fingerprint_changed {
            tracing::info!(provider = %k.provider, key = %k.id, reference = %reference, from = %k.fingerprint, to = %new_fp, "upstream key rotated");
            self.audit(
                "secret.rotate",
                actor,
                &format!("{}/{} ref={reference}", k.provider, k.id),
                "ok",
                &Detail::new()
                    .with("from_fp", &k.fingerprint)
                    .with("to_fp", &new_fp)
                    .with("reenabled", reenabled)
                    .build(),
            )
            .await;
        }
        // A first read (Loaded) with the stored fingerprint changes nothing on the nodes
        // unless the key was missing from the last snapshot.
        Ok(true)
    }
}
