//! `wardenctl` over paged Admin listings: with more virtual keys than one page holds,
//! `vkey list` still shows every key once (it follows `next_page_token`), at the default
//! page size and with `--page-size`; `audit list --limit` still bounds the listing.

use std::collections::HashSet;

use serde_json::Value;
use warden_control_plane::domain::VirtualKeyRecord;
use warden_control_plane::store::StateStore as _;
use warden_tests::cluster::TestCluster;

const KEYS: usize = 1200;

fn ids_of(json: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(json).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn vkey_list_shows_every_key_across_pages() {
    let c = TestCluster::start(0).await.unwrap();
    // Seeded through the store (one API call each would take minutes), then one through
    // the API, so the listing mixes both.
    let store = warden_control_plane::store::sqlite::SqliteStore::open(
        &c.dir.path().join("cp-data").join("state.db"),
    )
    .await
    .unwrap();
    let now = warden_core::unix_now();
    let mut want: HashSet<String> = HashSet::new();
    for i in 0..KEYS - 1 {
        let id = format!("vk_seeded{i:05}");
        store
            .insert_virtual_key(&VirtualKeyRecord {
                id: id.clone(),
                hash: format!("seeded-hash-{i}"),
                name: format!("seeded-{i}"),
                owner: "team-paging".into(),
                scopes: vec!["chat".into()],
                models: Vec::new(),
                // Ten keys per second of creation time, in the past.
                created_at: now - 1000 + (i / 10) as i64,
                expires_at: 0,
                revoked_at: None,
                previous_hash: None,
                previous_expires_at: 0,
            })
            .await
            .unwrap();
        want.insert(id);
    }
    drop(store);
    let created = c
        .ctl_ok(&["vkey", "create", "--name", "by-api", "-o", "json"], None)
        .unwrap();
    let created: Value = serde_json::from_str(&created).unwrap();
    want.insert(created["id"].as_str().unwrap().to_owned());
    assert_eq!(want.len(), KEYS);

    for page_size in [None, Some("1000"), Some("7")] {
        let mut args = vec!["vkey", "list", "-o", "json"];
        if let Some(n) = page_size {
            args.extend(["--page-size", n]);
        }
        let ids = ids_of(&c.ctl_ok(&args, None).unwrap());
        assert_eq!(ids.len(), KEYS, "page size {page_size:?}: every key");
        assert_eq!(
            ids.iter().cloned().collect::<HashSet<_>>(),
            want,
            "page size {page_size:?}: each key once"
        );
        // Oldest first, as before paging: the key made through the API comes last.
        assert_eq!(
            ids.last(),
            created["id"].as_str().map(str::to_owned).as_ref()
        );
    }
    // The table shows them all too: a header and one line per key.
    let table = c.ctl_ok(&["vkey", "list"], None).unwrap();
    assert_eq!(
        table.lines().count(),
        KEYS + 1,
        "{}",
        &table[..200.min(table.len())]
    );

    // `--page-size` out of range is a usage error.
    let out = c.ctl(&["vkey", "list", "--page-size", "0"], None).unwrap();
    assert!(!out.status.success());

    // `audit list --limit` bounds the listing across pages.
    let json = c
        .ctl_ok(
            &[
                "audit",
                "list",
                "--limit",
                "5",
                "--page-size",
                "2",
                "-o",
                "json",
            ],
            None,
        )
        .unwrap();
    let records: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(records.as_array().unwrap().len(), 5, "{json}");
}
