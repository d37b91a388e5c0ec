//! JWTs: issuing them (signed by the current signing key, with an optional policy for
//! their subject), revoking them on every node, and verifying one against the current
//! snapshot.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretBox, SecretString};
use warden_core::audit_detail::Detail;
use warden_core::jwt::{self, Claims, SigningAlgorithm, VerificationKey};
use warden_core::unix_now;

use super::grants::{parse_models, parse_scopes};
use super::{Actor, ControlPlane};
use crate::domain::{Limits, PolicyTarget, Source, TokenRecord};
use crate::error::ServiceError;

/// Longest text of a requested value kept in the audit row of a refused issue.
const ASKED_MAX_CHARS: usize = 256;

/// The `token.issue` row of an issued token: what it grants and until when.
fn issued_detail(t: &TokenRecord) -> Detail {
    Detail::new()
        .with("subject", &t.subject)
        .with("scopes", t.scopes.join(","))
        .with("models", t.models.join(","))
        .with("ttl_s", t.expires_at.saturating_sub(t.issued_at))
        .with("expires_at", t.expires_at)
        .with("kid", &t.kid)
}

/// The `token.issue` row of a refused issue: what was asked for (clipped).
fn asked_detail(
    subject: &str,
    scopes: &[String],
    models: &[String],
    ttl: Option<Duration>,
) -> Detail {
    let clip = |s: String| s.chars().take(ASKED_MAX_CHARS).collect::<String>();
    Detail::new()
        .with("subject", clip(subject.to_owned()))
        .with("scopes", clip(scopes.join(",")))
        .with("models", clip(models.join(",")))
        .with_opt("ttl_s", ttl.map(|t| t.as_secs()))
}

impl ControlPlane {
    /// Issues a JWT. `ttl` of `None` takes the configured default.
    pub async fn issue_token(
        &self,
        actor: &Actor,
        subject: &str,
        scopes: &[String],
        models: &[String],
        ttl: Option<Duration>,
        policy: Option<Limits>,
    ) -> Result<(SecretString, TokenRecord), ServiceError> {
        let jti_of = |r: &Result<(SecretString, TokenRecord), ServiceError>| {
            r.as_ref().map(|(_, r)| r.jti.clone()).unwrap_or_default()
        };
        let detail = |r: &Result<(SecretString, TokenRecord), ServiceError>| match r {
            Ok((_, t)) => issued_detail(t),
            Err(_) => asked_detail(subject, scopes, models, ttl),
        };
        self.audited_with(actor, "token.issue", jti_of, detail, async {
            if subject.trim().is_empty() || subject.len() > 128 {
                return Err(ServiceError::InvalidArgument(
                    "subject must be 1 to 128 characters".into(),
                ));
            }
            if subject.chars().any(char::is_control) {
                return Err(ServiceError::InvalidArgument(
                    "subject must not contain control characters".into(),
                ));
            }
            let scopes = parse_scopes(scopes)?;
            let models = parse_models(models)?;
            let ttl = ttl.unwrap_or(self.auth.default_ttl);
            if ttl.is_zero() || ttl > self.auth.max_ttl {
                return Err(ServiceError::InvalidArgument(format!(
                    "ttl must be between 1s and {}",
                    humantime::format_duration(self.auth.max_ttl)
                )));
            }
            let now = unix_now();
            let exp = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
            let jti = uuid::Uuid::new_v4().to_string();
            let claims = Claims {
                iss: self.auth.issuer.clone(),
                sub: subject.to_owned(),
                aud: self.auth.audience.clone(),
                exp,
                nbf: Some(now),
                iat: now,
                jti: jti.clone(),
                scope: scopes.join(" "),
                models: models.clone(),
            };
            let signer = self.signing_key();
            let token = signer
                .sign(&claims)
                .map_err(|e| ServiceError::Internal(format!("signing failed: {e}")))?;
            let size = token.expose_secret().len();
            if size > jwt::MAX_TOKEN_BYTES {
                return Err(ServiceError::InvalidArgument(format!(
                    "the token would be {size} bytes, more than the {} bytes nodes accept: \
                     grant fewer models or scopes (`*` or `provider:*` cover many)",
                    jwt::MAX_TOKEN_BYTES
                )));
            }
            let record = TokenRecord {
                jti,
                subject: subject.to_owned(),
                scopes,
                models,
                kid: signer.kid.clone(),
                issued_at: now,
                expires_at: exp,
                revoked_at: None,
            };
            self.store.insert_token(&record).await?;
            if let Some(limits) = policy {
                self.set_policy(
                    actor,
                    &PolicyTarget::Subject(subject.to_owned()),
                    limits,
                    Source::Admin,
                )
                .await?;
            }
            Ok((token, record))
        })
        .await
    }

    /// Revokes a JWT by id on every node.
    pub async fn revoke_token(&self, actor: &Actor, jti: &str) -> Result<(), ServiceError> {
        self.mutate(actor, "token.revoke", jti, async {
            let token = self
                .store
                .get_token(jti)
                .await?
                .ok_or_else(|| ServiceError::NotFound(format!("no token with id {jti}")))?;
            if token.revoked_at.is_some() {
                return Err(ServiceError::AlreadyExists(format!(
                    "token {jti} is already revoked"
                )));
            }
            self.store.revoke_token(jti, unix_now()).await?;
            Ok(())
        })
        .await
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>, ServiceError> {
        Ok(self.store.list_tokens().await?)
    }

    /// Verifies a JWT against the EdDSA signing keys and the revocations of the current
    /// snapshot. HS256 keys are left out: their secret is on every node, so the control
    /// plane never accepts a token they sign (nodes keep verifying them for the data path
    /// while the signing-key grace rule lists them).
    pub(super) async fn verify_jwt(&self, token: &str) -> Result<Claims, jwt::VerifyError> {
        let snapshot = self.snapshot_tx.borrow().clone();
        let verifier = jwt::Verifier::new(
            self.auth.issuer.clone(),
            self.auth.audience.clone(),
            self.auth.leeway.as_secs(),
            snapshot.jwt_keys.iter().filter_map(|k| {
                Some(VerificationKey {
                    kid: k.kid.clone(),
                    algorithm: SigningAlgorithm::parse(&k.algorithm)
                        .filter(|a| *a == SigningAlgorithm::EdDSA)?,
                    key: SecretBox::new(Box::new(k.key.expose_secret().clone())),
                })
            }),
        );
        let claims = verifier.verify(token)?;
        if snapshot
            .revoked_tokens
            .iter()
            .any(|(jti, _)| *jti == claims.jti)
        {
            return Err(jwt::VerifyError::BadSignature);
        }
        Ok(claims)
    }
}
