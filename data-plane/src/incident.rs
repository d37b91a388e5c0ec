//! Incident response on the node, from the snapshot: the lockdown flag (every client
//! request refused before its credential is looked up: [`crate::error::ApiError::locked_down`])
//! and the suspended client credentials (refused once authenticated:
//! [`crate::error::ApiError::credential_suspended`]).
//!
//! The per-request cost is a bool, and for a JWT a hash lookup of its subject (plus a scan
//! of the prefix suspensions, usually none); a virtual key's suspension is worked out here,
//! once per snapshot, into a set of suspended key ids.

use std::collections::HashSet;

use warden_proto::sync::v1 as pb;

/// What a snapshot says about lockdown and suspensions.
#[derive(Debug, Default)]
pub struct Incident {
    /// `wardenctl lockdown` is on.
    pub locked_down: bool,
    /// JWT subjects suspended by name.
    subjects: HashSet<String>,
    /// Prefixes: JWT subjects starting with one are suspended.
    prefixes: Vec<String>,
    /// Ids of suspended virtual keys (by id or owner prefix).
    virtual_keys: HashSet<String>,
}

impl Incident {
    /// From a snapshot's `lockdown`, `suspensions` and virtual keys. A suspension with
    /// neither field set (from a newer control plane, say) is ignored.
    pub fn compile(
        lockdown: bool,
        suspensions: Vec<pb::Suspension>,
        keys: &[pb::VirtualKey],
    ) -> Self {
        let mut incident = Self {
            locked_down: lockdown,
            ..Self::default()
        };
        for s in suspensions {
            if !s.subject.is_empty() {
                incident.subjects.insert(s.subject);
            } else if !s.prefix.is_empty() {
                incident.prefixes.push(s.prefix);
            }
        }
        incident.virtual_keys = keys
            .iter()
            .filter(|k| {
                incident
                    .prefixes
                    .iter()
                    .any(|p| k.id.starts_with(p.as_str()) || k.owner.starts_with(p.as_str()))
            })
            .map(|k| k.id.clone())
            .collect();
        incident
    }

    /// Whether JWTs of subject `sub` are suspended.
    pub fn subject_suspended(&self, sub: &str) -> bool {
        (!self.subjects.is_empty() && self.subjects.contains(sub))
            || self.prefixes.iter().any(|p| sub.starts_with(p.as_str()))
    }

    /// Whether the virtual key `id` is suspended.
    pub fn virtual_key_suspended(&self, id: &str) -> bool {
        !self.virtual_keys.is_empty() && self.virtual_keys.contains(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, owner: &str) -> pb::VirtualKey {
        pb::VirtualKey {
            id: id.into(),
            owner: owner.into(),
            ..Default::default()
        }
    }

    #[test]
    fn subjects_match_exactly_and_prefixes_cover_subjects_key_ids_and_owners() {
        let suspensions = vec![
            pb::Suspension {
                subject: "alice".into(),
                prefix: String::new(),
            },
            pb::Suspension {
                subject: String::new(),
                prefix: "team-a".into(),
            },
            pb::Suspension {
                subject: String::new(),
                prefix: "vk_dead".into(),
            },
            pb::Suspension::default(),
        ];
        let keys = [
            key("vk_deadbeef00000000", "bob"),
            key("vk_0123456789abcdef", "team-a@example.com"),
            key("vk_fedcba9876543210", "team-b"),
        ];
        let i = Incident::compile(false, suspensions, &keys);
        assert!(!i.locked_down);
        assert!(i.subject_suspended("alice"));
        assert!(!i.subject_suspended("alice2"));
        assert!(!i.subject_suspended("alic"));
        assert!(i.subject_suspended("team-a-batch"));
        assert!(!i.subject_suspended("team-b"));
        assert!(i.virtual_key_suspended("vk_deadbeef00000000"));
        assert!(i.virtual_key_suspended("vk_0123456789abcdef"));
        assert!(!i.virtual_key_suspended("vk_fedcba9876543210"));
        let none = Incident::compile(true, Vec::new(), &keys);
        assert!(none.locked_down);
        assert!(!none.subject_suspended("alice"));
        assert!(!none.virtual_key_suspended("vk_deadbeef00000000"));
    }
}
