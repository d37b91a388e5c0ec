//! JWT credentials: the claims Warden puts in them, signing (control plane only) and
//! verification (every node, and the control plane for admin-scoped tokens).
//!
//! EdDSA (Ed25519) is the default: nodes hold only public keys and cannot mint tokens.
//! HS256 is selectable; with it every verifier holds the signing secret (the README says
//! what that costs). Verification rejects `alg: none`, any algorithm other than the one
//! registered for the token's `kid`, unknown `kid`s, bad signatures, expired and
//! not-yet-valid tokens, and tokens missing `exp`, `sub`, `aud`, `iss` or `jti`.

use std::collections::{HashMap, HashSet};

use aws_lc_rs::{rand::SecureRandom, signature::KeyPair as _};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Serialize};

/// The longest credential a node reads from a request header (a JWT or a virtual key), in
/// bytes; longer ones are refused as malformed. The control plane refuses to issue a JWT
/// longer than this.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// List models.
    Read,
    /// Call models (completions).
    Write,
    /// Use the Admin API.
    Admin,
    /// Read the audit log (`AuditStream`, `wardenctl audit …`).
    Audit,
    /// Keep state at the provider through `/v1/responses` (`store`, `background`,
    /// `previous_response_id`): every client shares Warden's provider key, so that state
    /// is reachable by any holder of this scope.
    #[serde(rename = "responses_state")]
    ResponsesState,
}

impl Scope {
    /// Parses `read`, `write`, `admin`, `audit` or `responses_state`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            "admin" => Some(Self::Admin),
            "audit" => Some(Self::Audit),
            "responses_state" => Some(Self::ResponsesState),
            _ => None,
        }
    }

    /// The scope's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
            Self::Audit => "audit",
            Self::ResponsesState => "responses_state",
        }
    }
}

/// The claims of a Warden JWT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    #[serde(default)]
    pub nbf: Option<i64>,
    pub iat: i64,
    pub jti: String,
    /// Space-separated scopes (OAuth 2.0 convention).
    pub scope: String,
    /// Model aliases the token may use; `*` = all.
    pub models: Vec<String>,
}

impl Claims {
    /// The scopes, ignoring unknown names.
    pub fn scopes(&self) -> HashSet<Scope> {
        self.scope
            .split_whitespace()
            .filter_map(Scope::parse)
            .collect()
    }
}

/// The signing algorithms Warden issues with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SigningAlgorithm {
    EdDSA,
    HS256,
}

impl SigningAlgorithm {
    /// Parses `EdDSA` or `HS256`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "EdDSA" => Some(Self::EdDSA),
            "HS256" => Some(Self::HS256),
            _ => None,
        }
    }

    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::HS256 => "HS256",
        }
    }

    fn jose(self) -> Algorithm {
        match self {
            Self::EdDSA => Algorithm::EdDSA,
            Self::HS256 => Algorithm::HS256,
        }
    }
}

/// Key material of one signing key, as stored (encrypted) by the control plane.
pub struct KeyMaterial {
    pub kid: String,
    pub algorithm: SigningAlgorithm,
    /// EdDSA: PKCS#8 document of the key pair. HS256: the shared secret.
    pub private: SecretBox<Vec<u8>>,
    /// EdDSA: the raw 32-byte public key. HS256: the shared secret again (verifiers need it).
    pub verification: SecretBox<Vec<u8>>,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Errors creating key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("could not generate a signing key")]
    Generate,
    #[error("stored signing key is malformed")]
    Malformed,
}

impl KeyMaterial {
    /// Generates a fresh key of `algorithm` with key id `kid`.
    pub fn generate(kid: String, algorithm: SigningAlgorithm) -> Result<Self, KeyError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        match algorithm {
            SigningAlgorithm::EdDSA => {
                let pkcs8 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|_| KeyError::Generate)?;
                Self::from_stored(kid, algorithm, pkcs8.as_ref().to_vec())
            }
            SigningAlgorithm::HS256 => {
                let mut secret = vec![0u8; 32];
                rng.fill(&mut secret).map_err(|_| KeyError::Generate)?;
                Self::from_stored(kid, algorithm, secret)
            }
        }
    }

    /// Rebuilds key material from its stored private part.
    pub fn from_stored(
        kid: String,
        algorithm: SigningAlgorithm,
        private: Vec<u8>,
    ) -> Result<Self, KeyError> {
        let verification = match algorithm {
            SigningAlgorithm::EdDSA => {
                let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(&private)
                    .map_err(|_| KeyError::Malformed)?;
                pair.public_key().as_ref().to_vec()
            }
            SigningAlgorithm::HS256 => private.clone(),
        };
        Ok(Self {
            kid,
            algorithm,
            private: SecretBox::new(Box::new(private)),
            verification: SecretBox::new(Box::new(verification)),
        })
    }

    /// Signs `claims` with this key, setting `kid` and `alg` in the header.
    pub fn sign(&self, claims: &Claims) -> Result<SecretString, jsonwebtoken::errors::Error> {
        let key = match self.algorithm {
            SigningAlgorithm::EdDSA => EncodingKey::from_ed_der(self.private.expose_secret()),
            SigningAlgorithm::HS256 => EncodingKey::from_secret(self.private.expose_secret()),
        };
        let mut header = Header::new(self.algorithm.jose());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &key).map(SecretString::from)
    }
}

/// Why a presented JWT was rejected. Never shown to the caller beyond "invalid token";
/// the variant goes to logs and audit as a reason code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("token names no key id")]
    MissingKid,
    #[error("token names an unknown key id")]
    UnknownKid,
    #[error("token algorithm does not match its key")]
    AlgorithmMismatch,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token issuer or audience is wrong")]
    WrongIssuerOrAudience,
    #[error("token lacks a required claim")]
    MissingClaim,
}

impl VerifyError {
    /// Low-cardinality reason code for logs, metrics and audit.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed => "jwt_malformed",
            Self::MissingKid => "jwt_missing_kid",
            Self::UnknownKid => "jwt_unknown_kid",
            Self::AlgorithmMismatch => "jwt_alg_mismatch",
            Self::BadSignature => "jwt_bad_signature",
            Self::Expired => "jwt_expired",
            Self::NotYetValid => "jwt_not_yet_valid",
            Self::WrongIssuerOrAudience => "jwt_wrong_iss_or_aud",
            Self::MissingClaim => "jwt_missing_claim",
        }
    }
}

/// One verification key as distributed to verifiers.
pub struct VerificationKey {
    pub kid: String,
    pub algorithm: SigningAlgorithm,
    /// EdDSA: raw public key. HS256: shared secret.
    pub key: SecretBox<Vec<u8>>,
}

/// Verifies Warden JWTs against a fixed key set. Built once per snapshot.
pub struct Verifier {
    keys: HashMap<String, (Algorithm, DecodingKey)>,
    issuer: String,
    audience: String,
    leeway: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

impl Verifier {
    /// A verifier for tokens issued by `issuer` for `audience`, signed by one of `keys`.
    pub fn new(
        issuer: String,
        audience: String,
        leeway_seconds: u64,
        keys: impl IntoIterator<Item = VerificationKey>,
    ) -> Self {
        let keys = keys
            .into_iter()
            .map(|k| {
                let decoding = match k.algorithm {
                    SigningAlgorithm::EdDSA => DecodingKey::from_ed_der(k.key.expose_secret()),
                    SigningAlgorithm::HS256 => DecodingKey::from_secret(k.key.expose_secret()),
                };
                (k.kid, (k.algorithm.jose(), decoding))
            })
            .collect();
        Self {
            keys,
            issuer,
            audience,
            leeway: leeway_seconds,
        }
    }

    /// The last second at which a verified token of expiry `exp` is still accepted: `exp`
    /// plus the leeway, as [`Verifier::verify`] counts it (a cached verification must
    /// expire exactly when a fresh one would fail).
    pub fn accepted_until(&self, exp: i64) -> i64 {
        exp.saturating_add(i64::try_from(self.leeway).unwrap_or(i64::MAX))
    }

    /// Verifies `token` and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        // An unknown `alg` (including "none") fails to parse here.
        let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Malformed)?;
        let kid = header.kid.as_deref().ok_or(VerifyError::MissingKid)?;
        let (alg, key) = self.keys.get(kid).ok_or(VerifyError::UnknownKid)?;
        if header.alg != *alg {
            return Err(VerifyError::AlgorithmMismatch);
        }
        let mut validation = Validation::new(*alg);
        validation.leeway = self.leeway;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => VerifyError::BadSignature,
                ErrorKind::ExpiredSignature => VerifyError::Expired,
                ErrorKind::ImmatureSignature => VerifyError::NotYetValid,
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                    VerifyError::WrongIssuerOrAudience
                }
                ErrorKind::MissingRequiredClaim(_) => VerifyError::MissingClaim,
                ErrorKind::InvalidAlgorithm => VerifyError::AlgorithmMismatch,
                _ => VerifyError::Malformed,
            }
        })?;
        if data.claims.jti.is_empty() || data.claims.sub.is_empty() {
            return Err(VerifyError::MissingClaim);
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn claims(now: i64) -> Claims {
        Claims {
            iss: "warden".into(),
            sub: "svc-a".into(),
            aud: "warden".into(),
            exp: now + 600,
            nbf: Some(now),
            iat: now,
            jti: "jti-1".into(),
            scope: "read write".into(),
            models: vec!["*".into()],
        }
    }

    fn verifier_for(k: &KeyMaterial) -> Verifier {
        Verifier::new(
            "warden".into(),
            "warden".into(),
            0,
            [VerificationKey {
                kid: k.kid.clone(),
                algorithm: k.algorithm,
                key: SecretBox::new(Box::new(k.verification.expose_secret().clone())),
            }],
        )
    }

    fn setup() -> (KeyMaterial, Verifier, i64) {
        crate::install_crypto_providers();
        let k = KeyMaterial::generate("k1".into(), SigningAlgorithm::EdDSA).unwrap();
        let v = verifier_for(&k);
        (k, v, crate::unix_now())
    }

    #[test]
    fn eddsa_round_trip() {
        let (k, v, now) = setup();
        let t = k.sign(&claims(now)).unwrap();
        let c = v.verify(t.expose_secret()).unwrap();
        assert_eq!(c.sub, "svc-a");
        assert!(c.scopes().contains(&Scope::Write));
    }

    #[test]
    fn hs256_round_trip() {
        crate::install_crypto_providers();
        let k = KeyMaterial::generate("h1".into(), SigningAlgorithm::HS256).unwrap();
        let v = verifier_for(&k);
        let t = k.sign(&claims(crate::unix_now())).unwrap();
        assert!(v.verify(t.expose_secret()).is_ok());
    }

    #[test]
    fn rejects_alg_none() {
        let (_, v, now) = setup();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(now)).unwrap());
        assert_eq!(
            v.verify(&format!("{header}.{body}.")),
            Err(VerifyError::Malformed)
        );
    }

    #[test]
    fn rejects_hs256_signed_with_the_public_key() {
        // The classic confusion attack: HMAC with the EdDSA public key as secret.
        let (k, v, now) = setup();
        let forged = KeyMaterial::from_stored(
            "k1".into(),
            SigningAlgorithm::HS256,
            k.verification.expose_secret().clone(),
        )
        .unwrap();
        let t = forged.sign(&claims(now)).unwrap();
        assert_eq!(
            v.verify(t.expose_secret()),
            Err(VerifyError::AlgorithmMismatch)
        );
    }

    #[test]
    fn rejects_unknown_kid_and_missing_kid() {
        let (_, v, now) = setup();
        let other = KeyMaterial::generate("k2".into(), SigningAlgorithm::EdDSA).unwrap();
        let t = other.sign(&claims(now)).unwrap();
        assert_eq!(v.verify(t.expose_secret()), Err(VerifyError::UnknownKid));
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(now)).unwrap());
        assert_eq!(
            v.verify(&format!("{header}.{body}.AAAA")),
            Err(VerifyError::MissingKid)
        );
    }

    #[test]
    fn rejects_bad_signature() {
        let (k, v, now) = setup();
        let imposter = KeyMaterial::generate("k1".into(), SigningAlgorithm::EdDSA).unwrap();
        let t = imposter.sign(&claims(now)).unwrap();
        assert_eq!(v.verify(t.expose_secret()), Err(VerifyError::BadSignature));
        // A tampered payload with the original signature fails too.
        let good = k.sign(&claims(now)).unwrap();
        let parts: Vec<&str> = good.expose_secret().split('.').collect();
        let mut c = claims(now);
        c.models = vec!["gpt-4o".into(), "*".into()];
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
        assert_eq!(
            v.verify(&format!("{}.{body}.{}", parts[0], parts[2])),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn rejects_expired_and_not_yet_valid() {
        let (k, v, now) = setup();
        let mut c = claims(now);
        c.exp = now - 10;
        assert_eq!(
            v.verify(k.sign(&c).unwrap().expose_secret()),
            Err(VerifyError::Expired)
        );
        let mut c = claims(now);
        c.nbf = Some(now + 300);
        assert_eq!(
            v.verify(k.sign(&c).unwrap().expose_secret()),
            Err(VerifyError::NotYetValid)
        );
    }

    #[test]
    fn rejects_wrong_audience() {
        let (k, v, now) = setup();
        let mut c = claims(now);
        c.aud = "someone-else".into();
        assert_eq!(
            v.verify(k.sign(&c).unwrap().expose_secret()),
            Err(VerifyError::WrongIssuerOrAudience)
        );
    }

    #[test]
    fn key_material_debug_hides_secrets() {
        let (k, _, _) = setup();
        let dbg = format!("{k:?}");
        assert!(dbg.contains("k1"));
        assert!(!dbg.contains("private"));
    }
}
