//! Hot-path cost of a secret access: decrypting an `enc:v1:` value (AES-256-GCM under the
//! master key, the name bound as associated data) and exposing it, as the control plane does
//! for an `env://` reference or a file-store entry. Prints p50/p99 over 100 000 accesses.
//!
//! ```sh
//! cargo run --release -p warden-control-plane --example secret_access_bench
//! ```

#![allow(clippy::print_stdout, reason = "a benchmark prints its results")]

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret as _, SecretBox};
use warden_control_plane::secrets::cipher::MasterKey;
use warden_control_plane::secrets::reference::resolve_env;

const ITERATIONS: usize = 100_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    let total: Duration = samples.iter().sum();
    println!(
        "{label:<40} p50 {:>7.2?}  p99 {:>7.2?}  p99.9 {:>7.2?}  max {:>8.2?}  mean {:>7.2?}  (n = {})",
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        percentile(&samples, 0.999),
        samples.last().copied().unwrap_or_default(),
        total / samples.len().max(1) as u32,
        samples.len()
    );
}

fn measure(mut f: impl FnMut() -> usize) -> Vec<Duration> {
    for _ in 0..10_000 {
        black_box(f());
    }
    let mut samples = Vec::with_capacity(ITERATIONS);
    for _ in 0..ITERATIONS {
        let start = Instant::now();
        black_box(f());
        samples.push(start.elapsed());
    }
    samples
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let encoded = MasterKey::generate_base64();
    let master = MasterKey::from_base64(&SecretBox::from(encoded.as_str()))?;
    // A provider key of realistic length (OpenAI project keys are ~164 characters).
    let value = format!("sk-proj-{}", "A1b2C3d4".repeat(20));
    let name = "OPENAI_API_KEY";
    let sealed = master.encrypt(name, value.as_bytes())?;
    let env = HashMap::from([(name.to_owned(), sealed.clone())]);

    println!(
        "secret access, {ITERATIONS} iterations after 10 000 warm-up, value {} bytes",
        value.len()
    );
    report(
        "decrypt enc:v1: (MasterKey::decrypt)",
        measure(|| master.decrypt(name, &sealed).map(|p| p.len()).unwrap_or(0)),
    );
    report(
        "env:// resolve (decrypt + SecretString)",
        measure(|| {
            resolve_env(name, &env, Some(&master))
                .map(|s| s.expose_secret().len())
                .unwrap_or(0)
        }),
    );
    Ok(())
}
