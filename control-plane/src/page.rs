//! Paging of the Admin API's list calls (AIP-158), free of proto types.
//!
//! A listing is read in pages of [`page_size`] items in one fixed order; each page but the
//! last hands back a token that says where the next one starts. The token is opaque to
//! callers: base64url of a small JSON object holding the listing's name, the filters it was
//! issued for, the sort key of the last item returned ([`PageKey`]) and how many items the
//! listing returned so far (for `ListAudit`'s `limit`). [`Listing::request`] checks it: a
//! malformed token, or one presented to another listing or with other filters, is an
//! invalid argument naming `page_token`. A token grants nothing: it only says where to
//! resume a listing the caller may already read whole.
//!
//! The big tables (virtual keys, tokens, credentials, nodes, audit rows) page in the store
//! by keyset (`WHERE (key) > (after) ORDER BY key LIMIT n + 1`); the small ones page in
//! memory with [`Listing::page_in_memory`].

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::error::ServiceError;

/// Items per page when the caller asks for 0.
pub const DEFAULT_PAGE_SIZE: u32 = 500;
/// The most items one page holds, whatever the caller asks for.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Token format version; a token of another version is refused as malformed.
const TOKEN_VERSION: u8 = 1;
/// Longest token accepted (real ones are a few hundred bytes).
const MAX_TOKEN_LEN: usize = 4096;

/// The page size to serve for a requested `page_size`: 0 is the default, capped at the max.
pub fn page_size(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

/// Where an item sits in its listing's order: a time (or 0 for listings ordered by name
/// alone) then a unique text id. Ordered like the listing (ascending; audit reads it
/// descending).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct PageKey {
    pub at: i64,
    pub id: String,
}

impl PageKey {
    pub fn new(at: i64, id: impl Into<String>) -> Self {
        Self { at, id: id.into() }
    }

    /// A key for listings ordered by one name.
    pub fn name(id: impl Into<String>) -> Self {
        Self::new(0, id)
    }
}

/// One page to read: how many items, after which key, and how many the listing returned
/// before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub size: u32,
    pub after: Option<PageKey>,
    pub returned: u64,
}

/// One page read: the items and, unless it is the last, the token of the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_token: String,
}

/// A listing (its name and the filters of one call), which issues and checks its tokens.
#[derive(Debug, Clone)]
pub struct Listing {
    name: &'static str,
    filter: String,
}

#[derive(Serialize, Deserialize)]
struct Token {
    v: u8,
    /// The listing.
    l: String,
    /// The filters it was issued for.
    f: String,
    /// The last key returned.
    a: i64,
    i: String,
    /// Items returned so far.
    n: u64,
}

impl Listing {
    /// A listing without filters.
    pub fn new(name: &'static str) -> Self {
        Self::filtered(name, String::new())
    }

    /// A listing whose tokens hold only for this `filter` (its filters, encoded).
    pub fn filtered(name: &'static str, filter: String) -> Self {
        Self { name, filter }
    }

    /// The page a call asks for: its size and, from `token` (empty = the first page),
    /// where it starts.
    pub fn request(&self, page_size: u32, token: &str) -> Result<PageRequest, ServiceError> {
        let size = self::page_size(page_size);
        if token.is_empty() {
            return Ok(PageRequest {
                size,
                after: None,
                returned: 0,
            });
        }
        let malformed = || {
            ServiceError::InvalidArgument(
                "page_token is malformed (pass next_page_token unchanged)".into(),
            )
        };
        if token.len() > MAX_TOKEN_LEN {
            return Err(malformed());
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| malformed())?;
        let t: Token = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
        if t.v != TOKEN_VERSION {
            return Err(malformed());
        }
        if t.l != self.name || t.f != self.filter {
            return Err(ServiceError::InvalidArgument(
                "page_token was issued for another listing or other filters (send the same filters as the first page)"
                    .into(),
            ));
        }
        Ok(PageRequest {
            size,
            after: Some(PageKey::new(t.a, t.i)),
            returned: t.n,
        })
    }

    /// The token of the page after `last`, when `returned` items have been listed.
    pub fn token(&self, last: &PageKey, returned: u64) -> String {
        let t = Token {
            v: TOKEN_VERSION,
            l: self.name.to_owned(),
            f: self.filter.clone(),
            a: last.at,
            i: last.id.clone(),
            n: returned,
        };
        // Serialising a struct of strings and integers cannot fail.
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&t).unwrap_or_default())
    }

    /// A page from what the store returned for `req`: up to `req.size + 1` items in order
    /// (one more than the page, to know whether another follows).
    pub fn page_from<T>(
        &self,
        req: &PageRequest,
        mut items: Vec<T>,
        key: impl Fn(&T) -> PageKey,
    ) -> Page<T> {
        let size = usize::try_from(req.size).unwrap_or(usize::MAX);
        let more = items.len() > size;
        items.truncate(size);
        let next_token = match items.last() {
            Some(last) if more => self.token(&key(last), req.returned + items.len() as u64),
            _ => String::new(),
        };
        Page { items, next_token }
    }

    /// A page of a listing read whole (the small tables): sorted by `key`, the items after
    /// the request's key.
    pub fn page_in_memory<T>(
        &self,
        req: &PageRequest,
        mut items: Vec<T>,
        key: impl Fn(&T) -> PageKey,
    ) -> Page<T> {
        items.sort_by_key(|item| key(item));
        if let Some(after) = &req.after {
            items.retain(|item| key(item) > *after);
        }
        let size = usize::try_from(req.size).unwrap_or(usize::MAX);
        items.truncate(size.saturating_add(1));
        self.page_from(req, items, key)
    }
}

/// One page of listing `name` read whole (a small table): the page `page_size` and `token`
/// ask for, of `items` in `key` order.
pub fn page_whole<T>(
    name: &'static str,
    page_size: u32,
    token: &str,
    items: Vec<T>,
    key: impl Fn(&T) -> PageKey,
) -> Result<Page<T>, ServiceError> {
    let listing = Listing::new(name);
    let req = listing.request(page_size, token)?;
    Ok(listing.page_in_memory(&req, items, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_defaults_and_caps() {
        assert_eq!(page_size(0), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(7), 7);
        assert_eq!(page_size(1000), 1000);
        assert_eq!(page_size(5000), MAX_PAGE_SIZE);
    }

    #[test]
    fn pages_in_memory_cover_every_item_once() {
        let listing = Listing::new("providers");
        let items: Vec<String> = (0..25).rev().map(|i| format!("p{i:02}")).collect();
        let mut seen = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let req = listing.request(10, &token).unwrap();
            let page = listing.page_in_memory(&req, items.clone(), |s| PageKey::name(s.clone()));
            pages += 1;
            seen.extend(page.items);
            if page.next_token.is_empty() {
                break;
            }
            token = page.next_token;
        }
        assert_eq!(pages, 3);
        let mut want: Vec<String> = items;
        want.sort();
        assert_eq!(seen, want);
    }

    #[test]
    fn an_exact_multiple_ends_without_an_empty_page() {
        let listing = Listing::new("models");
        let items: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
        let req = listing.request(10, "").unwrap();
        let page = listing.page_in_memory(&req, items, |s| PageKey::name(s.clone()));
        assert_eq!(page.items.len(), 10);
        assert!(page.next_token.is_empty());
    }

    #[test]
    fn bad_and_foreign_tokens_are_refused_naming_the_field() {
        let listing = Listing::filtered("audit", "a".into());
        for bad in ["%%%", "bm90IGpzb24", &"A".repeat(5000)] {
            let e = listing.request(0, bad).unwrap_err();
            assert!(
                matches!(&e, ServiceError::InvalidArgument(m) if m.contains("page_token")),
                "{e}"
            );
        }
        let token = listing.token(&PageKey::new(5, "x"), 3);
        let req = listing.request(0, &token).unwrap();
        assert_eq!(req.after, Some(PageKey::new(5, "x")));
        assert_eq!(req.returned, 3);
        for other in [
            Listing::filtered("audit", "b".into()),
            Listing::new("virtual_keys"),
        ] {
            let e = other.request(0, &token).unwrap_err();
            assert!(
                matches!(&e, ServiceError::InvalidArgument(m) if m.contains("page_token")),
                "{e}"
            );
        }
    }
}
