//! Opaque credentials (`wk_`, `wa_`, `wn_`): the format check runs on whatever a caller
//! presents, before any lookup. A well-formed credential built from the input passes, and
//! any one character changed in it fails (the CRC-32 catches every change of up to 32 bits).

use arbitrary::Unstructured;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use warden_core::credential::{Kind, check_format, hash_str, hashes_equal, kind_of};

const KINDS: [Kind; 3] = [Kind::VirtualKey, Kind::Admin, Kind::Node];
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub fn target(data: &[u8]) {
    // As presented: any text.
    let presented = String::from_utf8_lossy(data);
    for kind in KINDS {
        if check_format(kind, &presented).is_ok() {
            assert_eq!(kind_of(&presented), Some(kind));
        }
    }
    let a = hash_str(b"pepper", &presented);
    assert!(hashes_equal(&a, &hash_str(b"pepper", &presented)));
    assert!(!hashes_equal(&a, &hash_str(b"other pepper", &presented)));

    // Built from the input: well-formed, then one character changed.
    let mut u = Unstructured::new(data);
    let Ok(random) = u.arbitrary::<[u8; 32]>() else {
        return;
    };
    let Ok(kind) = u.choose(&KINDS).copied() else {
        return;
    };
    let mut raw = random.to_vec();
    raw.extend_from_slice(&crc32fast_hash(&random).to_be_bytes());
    let good = format!("{}{}", kind.prefix(), URL_SAFE_NO_PAD.encode(&raw));
    assert_eq!(check_format(kind, &good), Ok(()), "{good}");
    let (Ok(at), Ok(&c)) = (
        u.int_in_range(kind.prefix().len()..=good.len() - 1),
        u.choose(ALPHABET),
    ) else {
        return;
    };
    let mut bad = good.clone().into_bytes();
    if bad[at] == c {
        return;
    }
    bad[at] = c;
    let bad = String::from_utf8(bad).unwrap();
    assert!(check_format(kind, &bad).is_err(), "{bad} passed as {good}");
}

/// CRC-32 (IEEE), as the credential format uses it.
fn crc32fast_hash(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
