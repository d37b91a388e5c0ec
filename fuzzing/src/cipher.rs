//! The `enc:v1`/`enc:v2` codec of values at rest: any stored text decrypts or fails
//! cleanly; a value sealed under a name opens under that name only, and a changed
//! character never opens to other plaintext.

use std::sync::OnceLock;

use arbitrary::Unstructured;
use secrecy::SecretBox;
use warden_core::cipher::{MasterKey, PREFIX_V1, PREFIX_V2, is_encrypted, key_id_of};

/// A fixed key (base64 of 32 bytes `0x42`), so corpus entries sealed under it open.
pub const KEY_BASE64: &str = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";
/// The previous key of the ring (32 bytes `0x07`), for `enc:v1` values under either.
const PREVIOUS_BASE64: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

/// The key ring of the target: [`KEY_BASE64`] and a previous key.
pub fn ring() -> &'static MasterKey {
    static RING: OnceLock<MasterKey> = OnceLock::new();
    RING.get_or_init(|| {
        let key = |b: &str| MasterKey::from_base64(&SecretBox::from(b)).unwrap();
        key(KEY_BASE64).with_previous([key(PREVIOUS_BASE64)])
    })
}

pub fn target(data: &[u8]) {
    let ring = ring();
    // As stored: `name\0value` or just a value (under the name "n").
    let text = String::from_utf8_lossy(data);
    let (name, value) = text.split_once('\0').unwrap_or(("n", &text));
    let _ = is_encrypted(value);
    let _ = key_id_of(value);
    let _ = ring.is_current(value);
    if let Ok(plain) = ring.decrypt(name, value) {
        assert!(is_encrypted(value));
        assert_eq!(
            ring.reseal(name, value).map(|r| r.is_some()),
            Ok(!ring.is_current(value))
        );
        let _ = plain;
    }

    // Sealed from the input, then opened, under another name, and changed.
    let mut u = Unstructured::new(data);
    let (Ok(name), Ok(plain)) = (u.arbitrary::<String>(), u.arbitrary::<Vec<u8>>()) else {
        return;
    };
    let sealed = ring.encrypt(&name, &plain).unwrap();
    assert!(ring.is_current(&sealed) && is_encrypted(&sealed));
    assert_eq!(&ring.decrypt(&name, &sealed).unwrap()[..], &plain[..]);
    let other = format!("{name}x");
    assert!(ring.decrypt(&other, &sealed).is_err());
    let encoded = sealed
        .strip_prefix(PREFIX_V2)
        .and_then(|r| r.split_once(':'))
        .map(|(_, e)| e)
        .unwrap();
    let v1 = format!("{PREFIX_V1}{encoded}");
    assert_eq!(&ring.decrypt(&name, &v1).unwrap()[..], &plain[..]);
    let (Ok(at), Ok(c)) = (u.int_in_range(0..=sealed.len() - 1), u.arbitrary::<char>()) else {
        return;
    };
    let Some((at, old)) = sealed.char_indices().nth(at) else {
        return;
    };
    if old == c {
        return;
    }
    let mut changed = sealed.clone();
    changed.replace_range(at..at + old.len_utf8(), c.encode_utf8(&mut [0; 4]));
    if let Ok(opened) = ring.decrypt(&name, &changed) {
        panic!(
            "{changed} (changed at {at}) opened to {} bytes",
            opened.len()
        );
    }
}
