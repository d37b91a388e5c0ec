//! What sealing costs per snapshot: times `NodePublicKey::seal` (control plane, once per
//! secret per node per delivery) and `NodeKeyPair::open` (node, once per secret per
//! snapshot) for snapshots of 1, 10 and 100 upstream keys plus the pepper.
//!
//! `cargo run --release -p warden-core --example seal_cost`

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    reason = "a measurement tool"
)]

use std::time::{Duration, Instant};

use warden_core::seal::{Binding, Field, NodeKeyPair};

fn main() {
    let node = NodeKeyPair::generate().unwrap();
    let secret = [b'k'; 51]; // the length of an OpenAI project key
    let ids: Vec<String> = (0..100).map(|i| format!("key_{i}")).collect();
    let rounds = 200;
    for keys in [1usize, 10, 100] {
        let binding = |i: usize| Binding {
            node_id: "node-1",
            version: 42,
            field: if i == keys {
                Field::VkeyPepper
            } else {
                Field::UpstreamKey {
                    provider: "openai",
                    key_id: &ids[i],
                }
            },
        };
        let (mut seal, mut open) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..rounds {
            let start = Instant::now();
            let sealed: Vec<_> = (0..=keys)
                .map(|i| node.public_key().seal(&binding(i), &secret).unwrap())
                .collect();
            seal += start.elapsed();
            let start = Instant::now();
            for (i, s) in sealed.iter().enumerate() {
                node.open(&binding(i), s).unwrap();
            }
            open += start.elapsed();
        }
        let per = |d: Duration| d / rounds;
        println!(
            "{keys:>3} keys + pepper: seal {:>9.1?} per node per snapshot ({:.1?} per secret), open {:>9.1?} per snapshot",
            per(seal),
            per(seal) / u32::try_from(keys + 1).unwrap(),
            per(open),
        );
    }
}
