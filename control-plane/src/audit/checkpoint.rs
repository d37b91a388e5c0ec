//! Signed checkpoints: the control plane signs the chain head `(seq_upto, hash)` with an
//! Ed25519 key at an interval, so that an attacker with write access to the database
//! cannot rewrite the chain up to a checkpoint and recompute every hash after it unnoticed,
//! and so that retention can delete rows up to a checkpoint while keeping the rest
//! verifiable.
//!
//! # Signed message (version 1)
//!
//! ```text
//! field("warden.audit.checkpoint.v1") ‖ u64be(seq_upto) ‖ raw 32 bytes of hash
//!   ‖ i64be(created_at_ms) ‖ field(key_id)
//! field(s) = u64be(byte length) ‖ UTF-8 bytes
//! ```
//!
//! The signature is stored as lowercase hex; the public key that checks it is the raw
//! 32-byte Ed25519 key registered under `key_id`.

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, UnparsedPublicKey};

use super::{AuditCheckpoint, AuditError, chain};
use crate::store::StateStore;

/// The version tag that starts every signed checkpoint message.
pub const CHECKPOINT_VERSION: &str = "warden.audit.checkpoint.v1";

/// The bytes a checkpoint's signature covers (see the module docs).
pub fn signed_message(
    seq_upto: u64,
    hash: &str,
    created_at_ms: i64,
    key_id: &str,
) -> Result<Vec<u8>, chain::MalformedHash> {
    let raw = chain::decode_hash(hash)?;
    let mut out = Vec::with_capacity(96 + key_id.len());
    out.extend_from_slice(&(CHECKPOINT_VERSION.len() as u64).to_be_bytes());
    out.extend_from_slice(CHECKPOINT_VERSION.as_bytes());
    out.extend_from_slice(&seq_upto.to_be_bytes());
    out.extend_from_slice(&raw);
    out.extend_from_slice(&created_at_ms.to_be_bytes());
    out.extend_from_slice(&(key_id.len() as u64).to_be_bytes());
    out.extend_from_slice(key_id.as_bytes());
    Ok(out)
}

/// Whether `cp`'s signature verifies under the raw Ed25519 `public_key`.
pub fn signature_valid(cp: &AuditCheckpoint, public_key: &[u8]) -> bool {
    let Ok(message) = signed_message(cp.seq_upto, &cp.hash, cp.created_at_ms, &cp.key_id) else {
        return false;
    };
    let Ok(signature) = hex::decode(&cp.signature) else {
        return false;
    };
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(&message, &signature)
        .is_ok()
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Signs the current chain head with `signing_key` and stores the checkpoint under
/// `key_id`. Returns `None` when there is nothing new to sign: the chain is empty, or this
/// key already signed the current head.
pub async fn sign_checkpoint(
    store: &dyn StateStore,
    signing_key: &Ed25519KeyPair,
    key_id: &str,
) -> Result<Option<AuditCheckpoint>, AuditError> {
    let head = store.audit_head().await?;
    if head.seq == 0 {
        return Ok(None);
    }
    let signed = store.list_checkpoints(head.seq).await?;
    if signed
        .iter()
        .any(|c| c.seq_upto == head.seq && c.key_id == key_id)
    {
        return Ok(None);
    }
    let created_at_ms = now_ms();
    let message = signed_message(head.seq, &head.hash, created_at_ms, key_id)
        .map_err(|e| AuditError::Malformed(e.to_string()))?;
    let signature = signing_key.sign(&message);
    let cp = AuditCheckpoint {
        seq_upto: head.seq,
        hash: head.hash,
        signature: hex::encode(signature.as_ref()),
        key_id: key_id.to_owned(),
        created_at_ms,
    };
    store.insert_checkpoint(&cp).await?;
    Ok(Some(cp))
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::signature::KeyPair as _;

    use super::*;

    #[test]
    fn signature_covers_every_field() {
        let key = Ed25519KeyPair::generate().unwrap();
        let public = key.public_key().as_ref().to_vec();
        let hash = "ab".repeat(32);
        let message = signed_message(42, &hash, 1000, "k1").unwrap();
        let cp = AuditCheckpoint {
            seq_upto: 42,
            hash: hash.clone(),
            signature: hex::encode(key.sign(&message).as_ref()),
            key_id: "k1".into(),
            created_at_ms: 1000,
        };
        assert!(signature_valid(&cp, &public));
        assert!(!signature_valid(
            &AuditCheckpoint {
                seq_upto: 43,
                ..cp.clone()
            },
            &public
        ));
        assert!(!signature_valid(
            &AuditCheckpoint {
                hash: "cd".repeat(32),
                ..cp.clone()
            },
            &public
        ));
        assert!(!signature_valid(
            &AuditCheckpoint {
                created_at_ms: 1001,
                ..cp.clone()
            },
            &public
        ));
        assert!(!signature_valid(
            &AuditCheckpoint {
                key_id: "k2".into(),
                ..cp.clone()
            },
            &public
        ));
        let other = Ed25519KeyPair::generate().unwrap();
        assert!(!signature_valid(&cp, other.public_key().as_ref()));
        assert!(!signature_valid(
            &AuditCheckpoint {
                signature: "not hex".into(),
                ..cp
            },
            &public
        ));
    }
}
