//! The node's link to shared state in Redis: connection (standalone, `rediss://`,
//! Sentinel or Cluster), health tracking and automatic recovery. Limits
//! ([`crate::limits`]) and key rotation ([`crate::upstream`]) go through it and fall back
//! to per-node state while it is unhealthy.

pub mod redis;
