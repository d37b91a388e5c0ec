//! JWT verification: any presented text is verified or refused without panicking, what
//! verifies carries Warden's issuer and audience, and a token changed anywhere after
//! signing never verifies to other claims.

use std::sync::OnceLock;

use arbitrary::Unstructured;
use secrecy::{ExposeSecret as _, SecretBox};
use warden_core::jwt::{Claims, KeyMaterial, SigningAlgorithm, VerificationKey, Verifier};

/// The HS256 key of the corpus: tokens in `corpus/jwt/` signed with it verify.
pub const HS256_SECRET: &[u8] = b"warden fuzz corpus hs256 secret, not a real key";
pub const HS256_KID: &str = "k-fuzz-hs";
const EDDSA_KID: &str = "k-fuzz-ed";
pub const ISSUER: &str = "warden";
pub const AUDIENCE: &str = "warden";

struct Keys {
    hs: KeyMaterial,
    ed: KeyMaterial,
    verifier: Verifier,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        warden_core::install_crypto_providers();
        let hs = KeyMaterial::from_stored(
            HS256_KID.into(),
            SigningAlgorithm::HS256,
            HS256_SECRET.to_vec(),
        )
        .unwrap();
        let ed = KeyMaterial::generate(EDDSA_KID.into(), SigningAlgorithm::EdDSA).unwrap();
        let verification = |k: &KeyMaterial| VerificationKey {
            kid: k.kid.clone(),
            algorithm: k.algorithm,
            key: SecretBox::new(Box::new(k.verification.expose_secret().clone())),
        };
        let verifier = Verifier::new(
            ISSUER.into(),
            AUDIENCE.into(),
            30,
            [verification(&hs), verification(&ed)],
        );
        Keys { hs, ed, verifier }
    })
}

/// The verifier of the targets: the corpus key and a fresh EdDSA key, Warden's issuer and
/// audience.
pub fn verifier() -> &'static Verifier {
    &keys().verifier
}

pub fn target(data: &[u8]) {
    let keys = keys();
    let presented = String::from_utf8_lossy(data);
    if let Ok(claims) = keys.verifier.verify(presented.trim()) {
        assert_eq!(
            (claims.iss.as_str(), claims.aud.as_str()),
            (ISSUER, AUDIENCE)
        );
        assert!(!claims.jti.is_empty() && !claims.sub.is_empty());
    }

    // Claims from the input, signed, verified, then changed.
    let mut u = Unstructured::new(data);
    let Ok(claims) = claims(&mut u) else {
        return;
    };
    let key = if u.arbitrary::<bool>().unwrap_or(false) {
        &keys.ed
    } else {
        &keys.hs
    };
    let token = key.sign(&claims).unwrap();
    let token = token.expose_secret();
    if let Ok(verified) = keys.verifier.verify(token) {
        assert_eq!(verified, claims);
    }
    let (Ok(at), Ok(b)) = (
        u.int_in_range(0..=token.len() - 1),
        u.choose(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=\0 "),
    ) else {
        return;
    };
    let mut changed = token.as_bytes().to_vec();
    if changed[at] == *b {
        return;
    }
    changed[at] = *b;
    let changed = String::from_utf8(changed).unwrap();
    if let Ok(verified) = keys.verifier.verify(&changed) {
        assert_eq!(verified, claims, "{changed} verified to other claims");
    }
}

fn claims(u: &mut Unstructured<'_>) -> arbitrary::Result<Claims> {
    let now = warden_core::unix_now();
    let pick = |u: &mut Unstructured<'_>, fixed: &str| -> arbitrary::Result<String> {
        if u.ratio(3, 4)? {
            Ok(fixed.to_owned())
        } else {
            u.arbitrary()
        }
    };
    Ok(Claims {
        iss: pick(u, ISSUER)?,
        sub: pick(u, "svc-a")?,
        aud: pick(u, AUDIENCE)?,
        exp: now + i64::from(u.int_in_range(-120..=3600)?),
        nbf: if u.arbitrary()? {
            Some(now + i64::from(u.int_in_range(-3600..=120)?))
        } else {
            None
        },
        iat: now,
        jti: pick(u, "jti-1")?,
        scope: pick(u, "read write")?,
        models: u.arbitrary()?,
    })
}
