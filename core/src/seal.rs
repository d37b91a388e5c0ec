//! Sealed delivery of secrets from the control plane to one data-plane node.
//!
//! A node makes an X25519 key pair when it starts ([`NodeKeyPair::generate`]; held in memory
//! only, the private half zeroized on drop) and sends the public half in `NodeHello`. The
//! control plane seals every secret of a snapshot (provider keys, the virtual-key pepper,
//! HS256 secrets) to that key with HPKE (RFC 9180), so that a snapshot copied from the wire,
//! from a log or from another node opens nowhere else.
//!
//! Suite: mode Base, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305 — one
//! single-shot encapsulation per sealed value ([`NodePublicKey::seal`],
//! [`NodeKeyPair::open`]).
//!
//! - `info` is the fixed protocol label [`INFO`].
//! - The AAD is the value's [`Binding`]: node id, snapshot version and the field's identity
//!   ([`Field`]), each part prefixed by its length as a big-endian `u32`, so a sealed value
//!   replayed into another field, another version or to another node fails to open.
//!
//! Base mode does not authenticate the sender: anyone who knows a node's public key can seal
//! a value to it. Confidentiality comes from HPKE; that a snapshot comes from the control
//! plane still rests on the (m)TLS channel and the node credential.

use std::fmt;

use hpke::{Deserializable as _, Kem as _, OpModeR, OpModeS, Serializable as _};
use secrecy::SecretBox;
use zeroize::Zeroizing;

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::ChaCha20Poly1305;

/// HPKE `info`: binds every sealed value to this protocol and its purpose.
pub const INFO: &[u8] = b"warden.sync.v1 sealed secret";

/// Length of a node's X25519 public key, and of an encapsulated key.
pub const PUBLIC_KEY_LEN: usize = 32;

/// Why sealing or opening failed. Never carries key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("public key must be {PUBLIC_KEY_LEN} bytes, got {0}")]
    PublicKeyLength(usize),
    #[error("public key is not usable for X25519 (low-order point)")]
    WeakPublicKey,
    #[error("operating system random generator failed")]
    Random,
    #[error("sealing failed")]
    Seal,
    #[error("sealed value for {0} is malformed")]
    Malformed(String),
    #[error(
        "sealed value for {0} does not open (sealed to another node key, bound to another node, version or field, or altered)"
    )]
    Open(String),
}

/// Which snapshot field a sealed value belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field<'a> {
    /// An upstream provider key.
    UpstreamKey { provider: &'a str, key_id: &'a str },
    /// The pepper under which virtual keys are HMAC'd.
    VkeyPepper,
    /// A shared JWT verification secret (HS256).
    Jwt { kid: &'a str },
}

impl Field<'_> {
    fn parts(&self) -> Vec<&[u8]> {
        match self {
            Self::UpstreamKey { provider, key_id } => vec![
                b"upstream_key".as_slice(),
                provider.as_bytes(),
                key_id.as_bytes(),
            ],
            Self::VkeyPepper => vec![b"vkey_pepper".as_slice()],
            Self::Jwt { kid } => vec![b"jwt".as_slice(), kid.as_bytes()],
        }
    }
}

/// For logs and errors: `upstream_key/<provider>/<key id>`, `vkey_pepper`, `jwt/<kid>`.
impl fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UpstreamKey { provider, key_id } => write!(f, "upstream_key/{provider}/{key_id}"),
            Self::VkeyPepper => f.write_str("vkey_pepper"),
            Self::Jwt { kid } => write!(f, "jwt/{kid}"),
        }
    }
}

/// Where a sealed value may be opened: the AAD of its encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding<'a> {
    pub node_id: &'a str,
    pub version: u64,
    pub field: Field<'a>,
}

impl Binding<'_> {
    /// `len ‖ node_id ‖ len ‖ version (u64 BE) ‖ len ‖ part …` with every `len` a `u32` BE.
    fn aad(&self) -> Vec<u8> {
        let version = self.version.to_be_bytes();
        let mut parts = vec![self.node_id.as_bytes(), version.as_slice()];
        parts.extend(self.field.parts());
        let mut aad = Vec::with_capacity(parts.iter().map(|p| 4 + p.len()).sum());
        for part in parts {
            // Names are at most a few hundred bytes; saturating keeps this total.
            let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
            aad.extend_from_slice(&len.to_be_bytes());
            aad.extend_from_slice(part);
        }
        aad
    }
}

/// One sealed value: the HPKE encapsulated key and the AEAD ciphertext (tag included).
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub encapped_key: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// A node's public key: what the control plane seals to.
#[derive(Clone, PartialEq, Eq)]
pub struct NodePublicKey(<Kem as hpke::Kem>::PublicKey);

impl NodePublicKey {
    /// Reads a raw 32-byte X25519 public key and checks that it can be sealed to (a
    /// low-order point would make every shared secret zero).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        if bytes.len() != PUBLIC_KEY_LEN {
            return Err(SealError::PublicKeyLength(bytes.len()));
        }
        let key = <Kem as hpke::Kem>::PublicKey::from_bytes(bytes)
            .map_err(|_| SealError::PublicKeyLength(bytes.len()))?;
        let key = Self(key);
        let probe = Binding {
            node_id: "",
            version: 0,
            field: Field::VkeyPepper,
        };
        key.seal(&probe, &[])
            .map_err(|_| SealError::WeakPublicKey)?;
        Ok(key)
    }

    /// The raw 32 bytes, as sent in `NodeHello`.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0.to_bytes().into()
    }

    /// Short stable fingerprint for logs and audit rows.
    pub fn fingerprint(&self) -> String {
        crate::fingerprint::of(&self.to_bytes())
    }

    /// Seals `plaintext` to this key, bound to `binding`.
    pub fn seal(&self, binding: &Binding<'_>, plaintext: &[u8]) -> Result<Sealed, SealError> {
        let (encapped_key, ciphertext) = hpke::single_shot_seal::<Aead, Kdf, Kem>(
            &OpModeS::Base,
            &self.0,
            INFO,
            plaintext,
            &binding.aad(),
        )
        .map_err(|_| SealError::Seal)?;
        Ok(Sealed {
            encapped_key: encapped_key.to_bytes().to_vec(),
            ciphertext,
        })
    }
}

impl fmt::Debug for NodePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("NodePublicKey")
            .field(&self.fingerprint())
            .finish()
    }
}

/// A node's key pair. The private key never leaves this value: it is not serialisable,
/// not printable, and zeroized when dropped (x25519-dalek's `StaticSecret`).
pub struct NodeKeyPair {
    secret: <Kem as hpke::Kem>::PrivateKey,
    public: NodePublicKey,
}

impl NodeKeyPair {
    /// A fresh key pair from the operating system's random generator.
    pub fn generate() -> Result<Self, SealError> {
        use aws_lc_rs::rand::SecureRandom as _;
        let mut seed = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::SystemRandom::new()
            .fill(seed.as_mut_slice())
            .map_err(|_| SealError::Random)?;
        Ok(Self::from_seed(&seed))
    }

    /// The key pair RFC 9180's `DeriveKeyPair` makes from `seed` (32 random bytes in
    /// [`NodeKeyPair::generate`]; a fixed seed in test fixtures).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let (secret, public) = Kem::derive_keypair(seed);
        Self {
            secret,
            public: NodePublicKey(public),
        }
    }

    /// The public half, to send in `NodeHello`.
    pub fn public_key(&self) -> &NodePublicKey {
        &self.public
    }

    /// Opens a value sealed to this key pair under `binding`.
    pub fn open(
        &self,
        binding: &Binding<'_>,
        sealed: &Sealed,
    ) -> Result<SecretBox<Vec<u8>>, SealError> {
        let encapped_key = <Kem as hpke::Kem>::EncappedKey::from_bytes(&sealed.encapped_key)
            .map_err(|_| SealError::Malformed(binding.field.to_string()))?;
        hpke::single_shot_open::<Aead, Kdf, Kem>(
            &OpModeR::Base,
            &self.secret,
            &encapped_key,
            INFO,
            &sealed.ciphertext,
            &binding.aad(),
        )
        .map(|plaintext| SecretBox::new(Box::new(plaintext)))
        .map_err(|_| SealError::Open(binding.field.to_string()))
    }
}

impl fmt::Debug for NodeKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    const SECRET: &[u8] = b"sk-seal-test-0123456789abcdef";

    fn key_binding(version: u64) -> Binding<'static> {
        Binding {
            node_id: "node-1",
            version,
            field: Field::UpstreamKey {
                provider: "openai",
                key_id: "key_1",
            },
        }
    }

    #[test]
    fn round_trip() {
        let node = NodeKeyPair::generate().unwrap();
        let sealed = node.public_key().seal(&key_binding(7), SECRET).unwrap();
        assert_eq!(sealed.encapped_key.len(), PUBLIC_KEY_LEN);
        assert!(!sealed.ciphertext.windows(SECRET.len()).any(|w| w == SECRET));
        let opened = node.open(&key_binding(7), &sealed).unwrap();
        assert_eq!(opened.expose_secret().as_slice(), SECRET);
        // Through the wire form of the public key, as the control plane receives it.
        let public = NodePublicKey::from_bytes(&node.public_key().to_bytes()).unwrap();
        let sealed = public.seal(&key_binding(7), b"").unwrap();
        assert!(
            node.open(&key_binding(7), &sealed)
                .unwrap()
                .expose_secret()
                .is_empty()
        );
    }

    #[test]
    fn another_nodes_key_does_not_open() {
        let node = NodeKeyPair::generate().unwrap();
        let other = NodeKeyPair::generate().unwrap();
        let sealed = node.public_key().seal(&key_binding(7), SECRET).unwrap();
        assert_eq!(
            other.open(&key_binding(7), &sealed).unwrap_err(),
            SealError::Open("upstream_key/openai/key_1".into())
        );
    }

    #[test]
    fn another_binding_does_not_open() {
        let node = NodeKeyPair::generate().unwrap();
        let sealed = node.public_key().seal(&key_binding(7), SECRET).unwrap();
        let others = [
            // another version
            key_binding(8),
            // another node
            Binding {
                node_id: "node-2",
                ..key_binding(7)
            },
            // another key of the same provider, another provider, another kind of field
            Binding {
                field: Field::UpstreamKey {
                    provider: "openai",
                    key_id: "key_2",
                },
                ..key_binding(7)
            },
            Binding {
                field: Field::UpstreamKey {
                    provider: "anthropic",
                    key_id: "key_1",
                },
                ..key_binding(7)
            },
            // the same bytes split differently ("openai/key" + "_1" vs "openai" + "key_1")
            Binding {
                field: Field::UpstreamKey {
                    provider: "openaikey_1",
                    key_id: "",
                },
                ..key_binding(7)
            },
            Binding {
                field: Field::VkeyPepper,
                ..key_binding(7)
            },
            Binding {
                field: Field::Jwt { kid: "key_1" },
                ..key_binding(7)
            },
        ];
        for binding in others {
            assert!(
                matches!(node.open(&binding, &sealed), Err(SealError::Open(_))),
                "{binding:?} opened a value sealed for {:?}",
                key_binding(7)
            );
        }
    }

    #[test]
    fn altered_values_do_not_open() {
        let node = NodeKeyPair::generate().unwrap();
        let sealed = node.public_key().seal(&key_binding(7), SECRET).unwrap();
        for i in 0..sealed.ciphertext.len() {
            let mut altered = sealed.clone();
            altered.ciphertext[i] ^= 0x01;
            assert!(node.open(&key_binding(7), &altered).is_err(), "byte {i}");
        }
        let mut truncated = sealed.clone();
        truncated.ciphertext.pop();
        assert!(node.open(&key_binding(7), &truncated).is_err());
        let mut altered = sealed.clone();
        altered.encapped_key[0] ^= 0x01;
        assert!(node.open(&key_binding(7), &altered).is_err());
        let mut short = sealed;
        short.encapped_key.pop();
        assert_eq!(
            node.open(&key_binding(7), &short).unwrap_err(),
            SealError::Malformed("upstream_key/openai/key_1".into())
        );
    }

    #[test]
    fn bad_public_keys_are_refused() {
        assert_eq!(
            NodePublicKey::from_bytes(&[]).unwrap_err(),
            SealError::PublicKeyLength(0)
        );
        assert_eq!(
            NodePublicKey::from_bytes(&[9; 33]).unwrap_err(),
            SealError::PublicKeyLength(33)
        );
        // The identity point and another low-order point of Curve25519.
        assert_eq!(
            NodePublicKey::from_bytes(&[0; 32]).unwrap_err(),
            SealError::WeakPublicKey
        );
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(
            NodePublicKey::from_bytes(&one).unwrap_err(),
            SealError::WeakPublicKey
        );
    }

    #[test]
    fn a_fixed_seed_gives_the_same_key_pair() {
        let a = NodeKeyPair::from_seed(&[5; 32]);
        let b = NodeKeyPair::from_seed(&[5; 32]);
        assert_eq!(a.public_key(), b.public_key());
        let sealed = a.public_key().seal(&key_binding(1), SECRET).unwrap();
        assert!(b.open(&key_binding(1), &sealed).is_ok());
        assert_ne!(
            NodeKeyPair::generate().unwrap().public_key(),
            NodeKeyPair::generate().unwrap().public_key()
        );
    }

    #[test]
    fn debug_output_holds_no_key_material() {
        let seed = [0x42; 32];
        let node = NodeKeyPair::from_seed(&seed);
        let mut secret = [0u8; 32];
        hpke::Serializable::write_exact(&node.secret, &mut secret);
        let public = node.public_key().to_bytes();
        let sealed = node.public_key().seal(&key_binding(1), SECRET).unwrap();
        let shown = format!("{node:?} {:?} {sealed:?} {:#?}", node.public_key(), node);
        for material in [&secret[..], &public[..], &seed[..]] {
            for encoded in [
                hex::encode(material),
                format!("{material:?}"),
                format!("{material:02x?}"),
            ] {
                assert!(!shown.contains(&encoded), "{shown}");
            }
        }
        for bytes in [&sealed.ciphertext, &sealed.encapped_key] {
            assert!(!shown.contains(&format!("{bytes:?}")), "{shown}");
        }
        assert!(shown.contains(&node.public_key().fingerprint()), "{shown}");
    }
}
