//! Stable drivers of the fuzz targets: each target replays its checked-in corpus
//! (`fuzzing/corpus/<target>/`), then runs a property pass of random and mutated inputs
//! from a seeded generator, bounded by a count and a time.
//!
//! - `WARDEN_FUZZ_CASES` (default 2000): inputs per target in the property pass;
//! - `WARDEN_FUZZ_SECONDS` (default 5): time cap per target;
//! - `WARDEN_FUZZ_SEED` (default fixed): the generator's seed, to explore elsewhere.
//!
//! A failing input is written to `target/fuzz-failures/<target>-<n>` so that it can be
//! replayed (copy it into the corpus as a regression case once fixed).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "test code: a failed step should fail the test loudly, and report its counts"
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use warden_fuzzing::{TARGETS, Target, target};

fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name)
}

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `t` on `input`; on a panic, saves the input and returns where.
fn run(t: Target, input: &[u8]) -> Result<(), PathBuf> {
    if std::panic::catch_unwind(|| (t.run)(input)).is_ok() {
        return Ok(());
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-failures");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}-{:016x}", t.name, fnv(input)));
    std::fs::write(&path, input).unwrap();
    Err(path)
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn replay(name: &str) {
    let t = target(name).unwrap();
    let seeds = corpus(name);
    assert!(!seeds.is_empty(), "no corpus for {name}");
    for (i, input) in seeds.iter().enumerate() {
        if let Err(saved) = run(t, input) {
            panic!(
                "{name}: corpus entry {i} failed (input saved as {})",
                saved.display()
            );
        }
    }
}

/// One mutated or random input.
fn next_input(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if seeds.is_empty() || rng.random_ratio(1, 4) {
        let len = if rng.random_ratio(1, 8) {
            rng.random_range(0..16_384)
        } else {
            rng.random_range(0..512)
        };
        let mut v = vec![0u8; len];
        rng.fill_bytes(&mut v);
        return v;
    }
    let mut v = seeds[rng.random_range(0..seeds.len())].clone();
    for _ in 0..rng.random_range(1..=4) {
        let len = v.len();
        match rng.random_range(0..7) {
            // Flip a bit.
            0 if len > 0 => v[rng.random_range(0..len)] ^= 1 << rng.random_range(0..8),
            // Replace a byte with an interesting one.
            1 if len > 0 => {
                const BYTES: &[u8] = b"\0\r\n \"\\{}[]:,.=-_+0199\xff\xc3\xe2\x80";
                v[rng.random_range(0..len)] = BYTES[rng.random_range(0..BYTES.len())];
            }
            // Delete a range.
            2 if len > 0 => {
                let at = rng.random_range(0..len);
                let end = (at + rng.random_range(1..=16)).min(len);
                v.drain(at..end);
            }
            // Insert random bytes.
            3 => {
                let at = rng.random_range(0..=len);
                let n = rng.random_range(1..=16);
                let mut bytes = vec![0u8; n];
                rng.fill_bytes(&mut bytes);
                v.splice(at..at, bytes);
            }
            // Duplicate a range (deepens nesting, repeats fields).
            4 if len > 0 => {
                let at = rng.random_range(0..len);
                let end = (at + rng.random_range(1..=64)).min(len);
                let piece = v[at..end].to_vec();
                v.splice(at..at, piece);
            }
            // Splice with another seed.
            5 => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                let cut = rng.random_range(0..=len);
                let from = rng.random_range(0..=other.len());
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            // Truncate.
            _ if len > 0 => v.truncate(rng.random_range(0..len)),
            _ => {}
        }
    }
    v
}

fn property(name: &str) {
    let t = target(name).unwrap();
    let seeds = corpus(name);
    let cases: u64 = env_or("WARDEN_FUZZ_CASES", 2000);
    let limit = Duration::from_secs_f64(env_or("WARDEN_FUZZ_SECONDS", 5.0));
    let seed: u64 = env_or("WARDEN_FUZZ_SEED", 0x5761_7264_656e);
    // Each target its own stream, so adding a target changes no other's inputs.
    let mut rng = StdRng::seed_from_u64(seed ^ fnv(name.as_bytes()));
    let started = Instant::now();
    let mut ran = 0u64;
    let mut failures = Vec::new();
    while ran < cases && started.elapsed() < limit {
        let input = next_input(&mut rng, &seeds);
        ran += 1;
        if let Err(saved) = run(t, &input) {
            failures.push(saved);
            if failures.len() >= 5 {
                break;
            }
        }
    }
    eprintln!(
        "fuzz {name}: {ran} cases in {:.1} s (seed {seed:#x}), {} failed",
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{name}: {} inputs failed, saved as {failures:?}",
        failures.len()
    );
}

macro_rules! targets {
    ($($name:ident),* $(,)?) => {
        mod replay {
            $(#[test] fn $name() { super::replay(stringify!($name)); })*
        }
        mod property {
            $(#[test] fn $name() { super::property(stringify!($name)); })*
        }
        #[test]
        fn every_target_is_tested() {
            let tested = [$(stringify!($name)),*];
            for t in TARGETS {
                assert!(tested.contains(&t.name), "{} has no test", t.name);
            }
        }
    };
}

targets!(
    credential,
    jwt,
    request,
    translate_request,
    translate_response,
    sse,
    audit_detail,
    cipher,
);

/// The seeds are real: the valid token verifies and the sealed values open, so the targets'
/// mutations start from inputs that reach the end of each parser.
#[test]
fn seeds_reach_the_end_of_their_parsers() {
    let token = std::fs::read_to_string(corpus_dir("jwt").join("seed-valid")).unwrap();
    let claims = warden_fuzzing::jwt::verifier().verify(&token).unwrap();
    assert_eq!(claims.sub, "svc-a");
    for i in 0..2 {
        for v in ["v1", "v2"] {
            let sealed =
                std::fs::read_to_string(corpus_dir("cipher").join(format!("seed-{v}-{i}")))
                    .unwrap();
            warden_fuzzing::cipher::ring()
                .decrypt("n", &sealed)
                .unwrap();
        }
    }
    let chat = std::fs::read(corpus_dir("request").join("seed-chat")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&chat).unwrap();
    warden_data_plane::translate::openai_to_anthropic::request(&v).unwrap();
}
