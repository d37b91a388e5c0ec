//! Admin and node credentials: checking a presented one (every failure audited with its
//! reason, the caller told only that it failed), the bootstrap admin credential, and
//! issuing and replacing them. Credentials are stored as peppered hashes; the pepper is
//! created here on first start.

use secrecy::{ExposeSecret, SecretString};
use warden_core::audit_detail::Detail;
use warden_core::credential::{self, Kind};
use warden_core::jwt::Scope;
use warden_core::{fingerprint, unix_now};

use std::net::IpAddr;
use std::time::Instant;

use super::login_guard;
use super::{Actor, ControlPlane, new_id};
use crate::domain::{CredentialRecord, CredentialTable, Role, validate_name};
use crate::error::ServiceError;
use crate::secrets::{SecretError, SecretStore};

const PEPPER_SECRET: &str = "warden/credential-pepper";

/// The kind of credential `table` holds.
fn kind(table: CredentialTable) -> Kind {
    match table {
        CredentialTable::Admin => Kind::Admin,
        CredentialTable::Node => Kind::Node,
    }
}

/// What the connection a credential came over proved about its caller: the key of the
/// verified client certificate it presented (SHA-256 of the SubjectPublicKeyInfo, hex), and
/// whether this caller had to present one (nodes, when the control plane checks client
/// certificates). A credential bound to a key ([`CredentialRecord::cert_spki_sha256`]) is
/// accepted only with a certificate of that key.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientKey<'a> {
    pub spki_sha256: Option<&'a str>,
    pub required: bool,
}

impl ClientKey<'_> {
    /// Why `record` may not be used over this connection, if it may not.
    fn refuses(&self, record: &CredentialRecord) -> Option<&'static str> {
        match (&record.cert_spki_sha256, self.spki_sha256) {
            (Some(bound), Some(presented)) if credential::hashes_equal(bound, presented) => None,
            (Some(_), Some(_)) => Some("certificate_mismatch"),
            (Some(_), None) => Some("certificate_required"),
            (None, _) => None,
        }
    }
}

/// The certificate binding asked for at issue: `pem` (a client certificate) as the hash of
/// its key, or `None` for an unbound credential.
fn binding_of(pem: Option<&str>) -> Result<Option<String>, ServiceError> {
    let Some(pem) = pem.filter(|p| !p.trim().is_empty()) else {
        return Ok(None);
    };
    crate::tls::spki_sha256_of_pem(pem.as_bytes())
        .map(Some)
        .map_err(|e| ServiceError::InvalidArgument(format!("client_certificate: {e}")))
}

/// A peer address as logged.
fn login_guard_label(peer: Option<IpAddr>) -> String {
    peer.map_or_else(|| "-".to_owned(), |ip| ip.to_string())
}

/// How a refused credential appears in its audit row: its fingerprint, never its value.
fn shown(presented: Option<&str>) -> String {
    presented.map_or_else(
        || "-".to_owned(),
        |p| format!("fp:{}", fingerprint::of(p.as_bytes())),
    )
}

impl ControlPlane {
    /// The pepper credential hashes are keyed with, created on first start.
    pub(super) async fn load_or_create_pepper(
        secrets: &dyn SecretStore,
    ) -> Result<Vec<u8>, ServiceError> {
        let pepper = match secrets.get(PEPPER_SECRET).await {
            Ok(p) => p,
            Err(SecretError::NotFound { .. }) => {
                let fresh = credential::generate_pepper();
                let encoded = SecretString::from(hex::encode(&fresh[..]));
                // Another control plane sharing the store may have made one first: use it.
                secrets.put_if_absent(PEPPER_SECRET, &encoded).await?
            }
            Err(e) => return Err(e.into()),
        };
        hex::decode(pepper.expose_secret())
            .map_err(|_| ServiceError::Internal("stored pepper is malformed".into()))
    }

    /// Checks an admin credential (`wa_…` of the `admin` role, or an EdDSA JWT with the
    /// `admin` scope) presented in-process (no peer address). Failures are audited with the
    /// reason; the caller learns only that it failed.
    pub async fn authenticate_admin(
        &self,
        presented: Option<&str>,
        action: &str,
    ) -> Result<Actor, ServiceError> {
        self.authenticate_role(
            None,
            ClientKey::default(),
            presented,
            action,
            &[Role::Admin],
        )
        .await
        .map(|(actor, _)| actor)
    }

    /// Checks a credential that may read the audit log: an admin credential (`wa_…`) of
    /// the `admin` or `auditor` role, or an EdDSA JWT with the `audit` scope. A JWT without
    /// it, or an `operator` credential, is refused (and audited) with permission denied.
    pub async fn authenticate_audit_reader(
        &self,
        peer: Option<IpAddr>,
        client: ClientKey<'_>,
        presented: Option<&str>,
        action: &str,
    ) -> Result<Actor, ServiceError> {
        let roles = [Role::Admin, Role::Auditor];
        self.authenticate_role(peer, client, presented, action, &roles)
            .await
            .map(|(actor, _)| actor)
    }

    /// Checks an admin credential (`wa_…`) or EdDSA JWT from `peer` and that its role is
    /// one of `allowed` (a JWT with the `admin` scope is `admin`; reading the audit log
    /// needs its `audit` scope, which makes it `auditor` there). A JWT signed with anything
    /// but EdDSA (HS256: every node holds that secret) is refused before it is verified.
    /// Failures are counted per peer address ([`login_guard::LoginGuard`]): past the limit the peer is
    /// refused with `RESOURCE_EXHAUSTED` before any lookup; they are audited in bounded
    /// form. An unknown, revoked or expired credential is `Unauthenticated`, a role not
    /// allowed `PermissionDenied` naming the role. An admin credential bound to a
    /// certificate key is refused (`certificate_mismatch`/`certificate_required`) unless
    /// `client` presented that key.
    pub async fn authenticate_role(
        &self,
        peer: Option<IpAddr>,
        client: ClientKey<'_>,
        presented: Option<&str>,
        action: &str,
        allowed: &[Role],
    ) -> Result<(Actor, Role), ServiceError> {
        self.refuse_if_throttled(peer, "auth.admin", presented, action)
            .await?;
        let reason = match self.check_admin(client, presented, allowed).await {
            Ok((actor, role)) if allowed.contains(&role) => return Ok((actor, role)),
            Ok((actor, role)) => {
                return Err(self
                    .refuse_role(&actor, role, action, "role_not_allowed")
                    .await);
            }
            Err(reason) => reason,
        };
        self.login_failed(peer, "auth.admin", reason, presented, action)
            .await;
        tracing::warn!(reason, action, peer = %login_guard_label(peer), "admin authentication failed");
        match reason {
            "missing_audit_scope" => Err(ServiceError::PermissionDenied(
                "reading the audit log needs the `audit` scope".into(),
            )),
            "jwt_not_eddsa" => Err(ServiceError::PermissionDenied(
                "HS256 tokens are not accepted by the control plane: the Admin and Audit APIs take an admin credential (wa_…) or an EdDSA-signed JWT".into(),
            )),
            _ => Err(ServiceError::Unauthenticated),
        }
    }

    /// Refuses a login attempt from `peer` past its failure limit, before any credential
    /// lookup (counted and audited as reason `throttled`).
    async fn refuse_if_throttled(
        &self,
        peer: Option<IpAddr>,
        action: &'static str,
        presented: Option<&str>,
        subject: &str,
    ) -> Result<(), ServiceError> {
        let Err(retry) = self.logins.check(peer, Instant::now()) else {
            return Ok(());
        };
        self.login_failed(peer, action, "throttled", presented, subject)
            .await;
        let secs = retry.as_secs().max(1);
        Err(ServiceError::RateLimited(format!(
            "too many failed logins from this address; retry in {secs}s (retry-after: {secs})"
        )))
    }

    /// Counts a failed login and writes its audit row when one is due (the first of its
    /// address and reason at once, then one a minute with the count).
    async fn login_failed(
        &self,
        peer: Option<IpAddr>,
        action: &'static str,
        reason: &'static str,
        presented: Option<&str>,
        subject: &str,
    ) {
        self.metrics.failed_login(action, reason);
        if let Some(report) = self.logins.failed(
            peer,
            action,
            reason,
            &shown(presented),
            subject,
            Instant::now(),
        ) {
            self.audit_login_report(&report).await;
        }
    }

    /// Writes one audit row for failed logins.
    pub(super) async fn audit_login_report(&self, r: &login_guard::Report) {
        self.audit(
            r.action,
            &r.actor,
            &r.subject,
            "denied",
            &Detail::new()
                .with("reason", r.reason)
                .with("client_ip", &r.client_ip)
                .with("count", r.count)
                .with("window_s", login_guard::WINDOW.as_secs())
                .build(),
        )
        .await;
    }

    /// Writes the counted failed-login rows that are due (every few seconds, from
    /// `lib.rs`); forgets idle addresses.
    pub async fn flush_failed_logins(&self) {
        for report in self.logins.due(Instant::now()) {
            self.audit_login_report(&report).await;
        }
    }

    /// Sets how many failed logins a minute one address may make before it is throttled.
    pub fn set_failed_login_limit(&self, limit: u32) {
        self.logins.set_limit(limit);
    }

    /// Refuses `actor` of `role` the call `action` (audited as `auth.admin`, denied, with
    /// the reason and the role): permission denied.
    pub async fn refuse_role(
        &self,
        actor: &Actor,
        role: Role,
        action: &str,
        reason: &str,
    ) -> ServiceError {
        self.audit(
            "auth.admin",
            &actor.0,
            action,
            "denied",
            &Detail::new()
                .with("reason", reason)
                .with("role", role.as_str())
                .build(),
        )
        .await;
        tracing::warn!(reason, action, role = role.as_str(), "admin call refused");
        ServiceError::PermissionDenied(format!(
            "the `{}` role may not call {action}",
            role.as_str()
        ))
    }

    /// The actor and role `presented` authenticates as. A JWT is `auditor` where the audit
    /// log is read (`allowed` holds `auditor`) and it has the `audit` scope, else `admin`
    /// with the `admin` scope: an `admin` JWT without `audit` does not read the log.
    async fn check_admin(
        &self,
        client: ClientKey<'_>,
        presented: Option<&str>,
        allowed: &[Role],
    ) -> Result<(Actor, Role), &'static str> {
        let presented = presented.ok_or("missing_credential")?;
        if credential::kind_of(presented) == Some(Kind::Admin) {
            let record = self.find_live(CredentialTable::Admin, presented).await?;
            if let Some(reason) = client.refuses(&record) {
                return Err(reason);
            }
            let role = Role::parse(&record.role).ok_or("unknown_role")?;
            return Ok((Actor(format!("admin:{}", record.id)), role));
        }
        if presented.starts_with("eyJ") {
            // Only EdDSA: an HS256 secret is on every node, so such a token proves nothing
            // about an admin. Decided from the header, before any verification.
            let header = jsonwebtoken::decode_header(presented).map_err(|_| "malformed_jwt")?;
            if header.alg != jsonwebtoken::Algorithm::EdDSA {
                return Err("jwt_not_eddsa");
            }
            let claims = self.verify_jwt(presented).await.map_err(|e| e.reason())?;
            let scopes = claims.scopes();
            let role = if allowed.contains(&Role::Auditor) {
                if !scopes.contains(&Scope::Audit) {
                    return Err("missing_audit_scope");
                }
                Role::Auditor
            } else if scopes.contains(&Scope::Admin) {
                Role::Admin
            } else {
                return Err("missing_admin_scope");
            };
            return Ok((Actor(format!("jwt:{}", claims.sub)), role));
        }
        Err("unrecognised_credential")
    }

    /// Checks a node credential (`wn_…`) from `peer` and returns its record. Failures are
    /// counted per peer address and audited in bounded form, like admin logins. When
    /// `client.required`, a connection without a client certificate is refused before any
    /// lookup (`certificate_required`, permission denied); a credential bound to a
    /// certificate key needs a certificate of that key (`certificate_mismatch`).
    pub async fn authenticate_node(
        &self,
        peer: Option<IpAddr>,
        client: ClientKey<'_>,
        presented: Option<&str>,
        node_id: &str,
    ) -> Result<CredentialRecord, ServiceError> {
        self.refuse_if_throttled(peer, "auth.node", presented, node_id)
            .await?;
        if client.required && client.spki_sha256.is_none() {
            let reason = "certificate_required";
            self.login_failed(peer, "auth.node", reason, presented, node_id)
                .await;
            tracing::warn!(reason, node_id, peer = %login_guard_label(peer), "node refused: no client certificate");
            return Err(ServiceError::PermissionDenied(
                "this control plane checks client certificates: a node must connect with one (--cp-client-cert-file, --cp-client-key-file)".into(),
            ));
        }
        let outcome = match presented {
            Some(p) => match self.find_live(CredentialTable::Node, p).await {
                Ok(record) => match client.refuses(&record) {
                    Some(reason) => Err(reason),
                    None => Ok(record),
                },
                Err(reason) => Err(reason),
            },
            None => Err("missing_credential"),
        };
        match outcome {
            Ok(r) => Ok(r),
            Err(reason) => {
                self.login_failed(peer, "auth.node", reason, presented, node_id)
                    .await;
                tracing::warn!(reason, node_id, peer = %login_guard_label(peer), "node authentication failed");
                Err(ServiceError::Unauthenticated)
            }
        }
    }

    /// The unrevoked credential of `table` that `presented` is, or why it is refused.
    async fn find_live(
        &self,
        table: CredentialTable,
        presented: &str,
    ) -> Result<CredentialRecord, &'static str> {
        credential::check_format(kind(table), presented).map_err(|_| "malformed_credential")?;
        let hash = credential::hash_str(self.pepper.expose_secret(), presented);
        let record = self
            .store
            .find_credential(table, &hash)
            .await
            .map_err(|_| "store_error")?
            .ok_or("unknown_credential")?;
        if !credential::hashes_equal(&record.hash, &hash) {
            return Err("unknown_credential");
        }
        if record.revoked_at.is_some() {
            return Err("revoked_credential");
        }
        if record.expires_at.is_some_and(|at| at <= unix_now()) {
            return Err("expired_credential");
        }
        Ok(record)
    }

    /// A new credential for `table` (the secret is returned once; its hash is stored).
    async fn issue_opaque(
        &self,
        table: CredentialTable,
        name: &str,
        role: &str,
        expires_at: Option<i64>,
        cert_spki_sha256: Option<String>,
    ) -> Result<(SecretString, CredentialRecord), ServiceError> {
        let secret = credential::generate(kind(table));
        let record = CredentialRecord {
            id: new_id(match table {
                CredentialTable::Admin => "adm_",
                CredentialTable::Node => "node_",
            }),
            hash: credential::hash(self.pepper.expose_secret(), &secret),
            name: name.to_owned(),
            created_at: unix_now(),
            revoked_at: None,
            role: role.to_owned(),
            expires_at,
            cert_spki_sha256,
        };
        self.store.insert_credential(table, &record).await?;
        Ok((secret, record))
    }

    /// Creates the first admin credential when none exists and none was ever bootstrapped
    /// in this database; returns it (shown once). Replicas starting at once race on a guard
    /// row: exactly one issues it.
    pub async fn bootstrap_admin(&self) -> Result<Option<SecretString>, ServiceError> {
        if self.store.count_credentials(CredentialTable::Admin).await? > 0 {
            return Ok(None);
        }
        let secret = credential::generate(Kind::Admin);
        let record = CredentialRecord {
            id: new_id("adm_"),
            hash: credential::hash(self.pepper.expose_secret(), &secret),
            name: "bootstrap".to_owned(),
            created_at: unix_now(),
            revoked_at: None,
            role: Role::Admin.as_str().to_owned(),
            expires_at: None,
            cert_spki_sha256: None,
        };
        if !self.store.insert_bootstrap_admin(&record).await? {
            return Ok(None);
        }
        self.audit(
            "admin_credential.create",
            "system",
            &record.id,
            "ok",
            "bootstrap",
        )
        .await;
        Ok(Some(secret))
    }

    /// Revokes earlier admin or node credentials named `name` and issues a new one (used by
    /// `wardenctl dev`, which prints a fresh admin credential at every start and gives its
    /// embedded node a fresh node credential).
    pub async fn replace_credential(
        &self,
        table: CredentialTable,
        name: &str,
    ) -> Result<SecretString, ServiceError> {
        let revoked = self
            .store
            .revoke_credentials_named(table, name, unix_now())
            .await?;
        let action = match table {
            CredentialTable::Admin => "admin_credential",
            CredentialTable::Node => "node_credential",
        };
        if revoked > 0 {
            self.audit(
                &format!("{action}.revoke"),
                "system",
                name,
                "ok",
                "replaced",
            )
            .await;
        }
        let role = match table {
            CredentialTable::Admin => Role::Admin.as_str(),
            CredentialTable::Node => "node",
        };
        let (secret, record) = self.issue_opaque(table, name, role, None, None).await?;
        self.audit(
            &format!("{action}.create"),
            "system",
            &record.id,
            "ok",
            name,
        )
        .await;
        Ok(secret)
    }

    /// Issues a node credential (shown once), bound to the key of `client_cert` (a PEM
    /// certificate) when given: it is then accepted only over a connection that presents a
    /// certificate of that key.
    pub async fn issue_node_credential(
        &self,
        actor: &Actor,
        name: &str,
        client_cert: Option<&str>,
    ) -> Result<(SecretString, String), ServiceError> {
        let id_of = |r: &Result<(SecretString, String), ServiceError>| {
            r.as_ref().map(|(_, id)| id.clone()).unwrap_or_default()
        };
        let shown_name = if name.is_empty() { "node" } else { name };
        let binding = binding_of(client_cert);
        let bound = binding.as_ref().ok().cloned().flatten();
        let detail = |_: &Result<(SecretString, String), ServiceError>| {
            Detail::new()
                .with("name", shown_name.chars().take(128).collect::<String>())
                .with_opt("cert_spki_sha256", bound.clone())
        };
        self.audited_with(actor, "node_credential.create", id_of, detail, async {
            let name = if name.is_empty() { "node" } else { name };
            validate_name(name).map_err(|e| ServiceError::InvalidArgument(format!("name: {e}")))?;
            let (secret, record) = self
                .issue_opaque(CredentialTable::Node, name, "node", None, binding?)
                .await?;
            Ok((secret, record.id))
        })
        .await
    }

    /// Issues an admin credential of `role`, valid for `ttl` (default: until revoked);
    /// shown once. Bound to the key of `client_cert` when given, as a second factor: it is
    /// then accepted only over a connection that presents a certificate of that key.
    pub async fn issue_admin_credential(
        &self,
        actor: &Actor,
        name: &str,
        role: &str,
        ttl: Option<std::time::Duration>,
        client_cert: Option<&str>,
    ) -> Result<(SecretString, String), ServiceError> {
        let binding = binding_of(client_cert);
        let bound = binding.as_ref().ok().cloned().flatten();
        let id_of = |r: &Result<(SecretString, String), ServiceError>| {
            r.as_ref().map(|(_, id)| id.clone()).unwrap_or_default()
        };
        let detail = |_: &Result<(SecretString, String), ServiceError>| {
            Detail::new()
                .with(
                    "name",
                    (if name.is_empty() { "admin" } else { name })
                        .chars()
                        .take(128)
                        .collect::<String>(),
                )
                .with(
                    "role",
                    (if role.is_empty() { "admin" } else { role })
                        .chars()
                        .take(32)
                        .collect::<String>(),
                )
                .with_opt("ttl_s", ttl.map(|t| t.as_secs()))
                .with_opt("cert_spki_sha256", bound.clone())
        };
        self.audited_with(actor, "admin_credential.create", id_of, detail, async {
            let name = if name.is_empty() { "admin" } else { name };
            validate_name(name).map_err(|e| ServiceError::InvalidArgument(format!("name: {e}")))?;
            let role = if role.is_empty() { "admin" } else { role };
            let role = Role::parse(role).ok_or_else(|| {
                ServiceError::InvalidArgument(format!(
                    "role: `{role}` is not one of admin, operator, auditor"
                ))
            })?;
            let expires_at = ttl
                .map(|t| i64::try_from(t.as_secs()).map(|s| unix_now().saturating_add(s)))
                .transpose()
                .map_err(|_| ServiceError::InvalidArgument("ttl: too long".into()))?;
            let (secret, record) = self
                .issue_opaque(
                    CredentialTable::Admin,
                    name,
                    role.as_str(),
                    expires_at,
                    binding?,
                )
                .await?;
            Ok((secret, record.id))
        })
        .await
    }
}

/// The audit action family of `table`'s credentials.
fn action_family(table: CredentialTable) -> &'static str {
    match table {
        CredentialTable::Admin => "admin_credential",
        CredentialTable::Node => "node_credential",
    }
}

impl ControlPlane {
    /// A token cancelled when the credential `credential_id` is revoked, for a stream it
    /// opens (`Sync.Watch`, `AuditStream.Subscribe`); refused when it already is.
    pub fn open_credential_stream(
        &self,
        credential_id: &str,
    ) -> Result<tokio_util::sync::CancellationToken, ServiceError> {
        self.live
            .open(credential_id)
            .ok_or(ServiceError::Unauthenticated)
    }

    /// Whether `credential_id` was revoked through this process: a set lookup, checked by
    /// a stream before each message it sends.
    pub fn credential_revoked(&self, credential_id: &str) -> bool {
        self.live.is_revoked(credential_id)
    }

    /// Whether the node credential `record` is still live, checked before each snapshot a
    /// `Sync.Watch` stream sends: revoked through this process (a set lookup), or in the
    /// store (revoked through another replica; then this process's streams of it end too).
    /// A store error keeps the stream: its node could not reconnect either.
    pub async fn node_credential_live(&self, record: &CredentialRecord) -> bool {
        if self.live.is_revoked(&record.id) {
            return false;
        }
        match self
            .store
            .find_credential(CredentialTable::Node, &record.hash)
            .await
        {
            Ok(Some(r)) if r.revoked_at.is_none() => true,
            Ok(_) => {
                self.live.revoke(&record.id);
                false
            }
            Err(error) => {
                tracing::warn!(%error, credential = %record.id, "could not re-check a node credential");
                true
            }
        }
    }

    /// Every credential of `table` with when it was last used (node credentials: the
    /// latest `last_seen` of a node that connected with it; admin credentials: unknown).
    pub async fn list_credentials(
        &self,
        table: CredentialTable,
    ) -> Result<Vec<(CredentialRecord, Option<i64>)>, ServiceError> {
        let records = self.store.list_credentials(table).await?;
        self.with_last_used(table, records).await
    }

    /// `records` of `table` with when each was last used (see [`Self::list_credentials`]).
    pub(super) async fn with_last_used(
        &self,
        table: CredentialTable,
        records: Vec<CredentialRecord>,
    ) -> Result<Vec<(CredentialRecord, Option<i64>)>, ServiceError> {
        let nodes = match table {
            CredentialTable::Node => self.store.list_nodes().await?,
            CredentialTable::Admin => Vec::new(),
        };
        Ok(records
            .into_iter()
            .map(|r| {
                let last = nodes
                    .iter()
                    .filter(|n| n.credential_id == r.id)
                    .map(|n| n.last_seen)
                    .max();
                (r, last)
            })
            .collect())
    }

    /// Revokes the credential `id` of `table`, or (with `id` empty) every live credential
    /// named `name`; ends every stream they opened. Returns the revoked ids; audited as
    /// `<admin|node>_credential.revoke` with the ids.
    pub async fn revoke_credentials(
        &self,
        actor: &Actor,
        table: CredentialTable,
        id: &str,
        name: &str,
    ) -> Result<Vec<String>, ServiceError> {
        let asked = if id.is_empty() {
            format!("name:{name}")
        } else {
            id.to_owned()
        };
        let subject = |r: &Result<Vec<String>, ServiceError>| match r {
            Ok(ids) => ids.join(","),
            Err(_) => asked.clone(),
        };
        let action = format!("{}.revoke", action_family(table));
        self.audited(actor, &action, subject, async {
            let targets = match (id.is_empty(), name.is_empty()) {
                (false, true) => vec![id.to_owned()],
                (true, false) => self
                    .store
                    .list_credentials(table)
                    .await?
                    .into_iter()
                    .filter(|c| c.name == name && c.revoked_at.is_none())
                    .map(|c| c.id)
                    .collect(),
                _ => {
                    return Err(ServiceError::InvalidArgument(
                        "give exactly one of id or name".into(),
                    ));
                }
            };
            let now = unix_now();
            let mut revoked = Vec::new();
            for target in targets {
                if self.store.revoke_credential(table, &target, now).await? {
                    revoked.push(target.clone());
                }
                // Streams of a credential already revoked (by another replica) end too.
                self.live.revoke(&target);
                self.tell_replicas(super::replicas::CREDENTIALS_CHANNEL, &target)
                    .await;
            }
            if revoked.is_empty() {
                return Err(ServiceError::NotFound(format!(
                    "no live {} credential {asked}",
                    match table {
                        CredentialTable::Admin => "admin",
                        CredentialTable::Node => "node",
                    }
                )));
            }
            Ok(revoked)
        })
        .await
    }
}
