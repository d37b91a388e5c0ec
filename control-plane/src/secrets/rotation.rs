//! Master key rotation (`warden-cp migrate rotate-master-key --new-key-file F`): every value
//! sealed under the master key is re-encrypted under the new one — the encrypted secret
//! files (the `file` backend, the start-up cache) and the state store's `warden_secrets`
//! table ([`super::own`]). `env://` values live in the environment, which Warden does not
//! write: [`Rotation::reissue_env`] names the variables to re-issue with `warden-cp
//! encrypt-value`.
//!
//! Each value names its key (`enc:v2:<kid>:`, [`super::cipher`]), so values under the old
//! and the new key coexist: a control plane given the new key as master key and the old one
//! in `previous_master_key_files` reads both while the rotation runs. The rotation is
//! idempotent and resumable: values already under the new key are left alone, a file is
//! rewritten in one atomic rename, a table row by compare-and-swap.

use std::collections::HashMap;
use std::path::PathBuf;

use super::SecretError;
use super::cipher::{MasterKey, Resealed, is_encrypted};
use super::file::FileSecretStore;
use super::own::OwnSecrets;

/// What a rotation did (counts and names only, never a value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rotation {
    /// The key ids values were read under (the old master key and any previous ones).
    pub from: Vec<String>,
    /// The id of the new master key.
    pub to: String,
    /// Per secret file: what was re-encrypted.
    pub files: Vec<(PathBuf, Resealed)>,
    /// The `warden_secrets` table.
    pub table: Resealed,
    /// Environment variables holding an `enc:` value not under the new key: re-issue each
    /// with `warden-cp encrypt-value --name VAR` before the old key goes.
    pub reissue_env: Vec<String>,
}

impl Rotation {
    /// Totals over the files and the table.
    pub fn total(&self) -> Resealed {
        let mut total = self.table;
        for (_, counts) in &self.files {
            total += *counts;
        }
        total
    }

    /// The audit row's detail (`master_key.rotate`).
    pub fn audit_detail(&self) -> String {
        let total = self.total();
        warden_core::audit_detail::Detail::new()
            .with("from", self.from.join(","))
            .with("to", &self.to)
            .with("resealed", total.resealed)
            .with("already_current", total.current)
            .with("plaintext", total.plaintext)
            .with("files", self.files.len())
            .with("table_resealed", self.table.resealed)
            .with("reissue_env", self.reissue_env.join(","))
            .build()
    }
}

/// Re-encrypts `files` and the table behind `own` under the current key of `ring` (which
/// must also hold the keys the values are under now), and lists the variables of `env` to
/// re-issue. Stops at the first value no key of `ring` opens, naming it.
pub async fn rotate(
    files: &[FileSecretStore],
    own: &OwnSecrets,
    env: &HashMap<String, String>,
    ring: &MasterKey,
) -> Result<Rotation, SecretError> {
    let mut rotation = Rotation {
        to: ring.kid().to_owned(),
        from: ring.kids().skip(1).map(str::to_owned).collect(),
        ..Rotation::default()
    };
    for file in files {
        let counts = file.reseal_all().await?;
        rotation.files.push((file.path().to_path_buf(), counts));
    }
    rotation.table = own.reseal_all().await?;
    rotation.reissue_env = stale_env(env, ring);
    Ok(rotation)
}

/// The variables of `env` whose value is encrypted but not under the current key of
/// `ring`, sorted.
pub fn stale_env(env: &HashMap<String, String>, ring: &MasterKey) -> Vec<String> {
    let mut vars: Vec<String> = env
        .iter()
        .filter(|(_, v)| is_encrypted(v) && !ring.is_current(v))
        .map(|(k, _)| k.clone())
        .collect();
    vars.sort();
    vars
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretBox;

    #[test]
    fn env_values_not_under_the_new_key_are_named() {
        let key = |b: &str| MasterKey::from_base64(&SecretBox::from(b)).unwrap();
        let old_b64 = MasterKey::generate_base64();
        let new_b64 = MasterKey::generate_base64();
        let env = HashMap::from([
            (
                "OLD".to_owned(),
                key(&old_b64).encrypt("OLD", b"sk-a").unwrap(),
            ),
            (
                "NEW".to_owned(),
                key(&new_b64).encrypt("NEW", b"sk-b").unwrap(),
            ),
            ("PLAIN".to_owned(), "sk-plain".to_owned()),
        ]);
        let ring = key(&new_b64).with_previous([key(&old_b64)]);
        assert_eq!(stale_env(&env, &ring), vec!["OLD".to_owned()]);
    }
}
