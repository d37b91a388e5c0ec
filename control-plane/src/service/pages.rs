//! Paged reads of the big listings for the Admin API (`crate::page`): each reads one page
//! from the store by keyset (one row more than the page, to know whether another follows).

use super::ControlPlane;
use super::nodes::NodeStatus;
use crate::domain::{
    AuditRecord, CredentialRecord, CredentialTable, TokenRecord, VirtualKeyRecord,
};
use crate::error::ServiceError;
use crate::page::{Listing, MAX_PAGE_SIZE, Page, PageKey, PageRequest};

/// `ListAudit`'s `limit` when the caller leaves it at 0.
pub const DEFAULT_AUDIT_LIMIT: u32 = 100;

impl ControlPlane {
    pub async fn virtual_keys_page(
        &self,
        page_size: u32,
        token: &str,
    ) -> Result<Page<VirtualKeyRecord>, ServiceError> {
        let listing = Listing::new("virtual_keys");
        let req = listing.request(page_size, token)?;
        let rows = self
            .store
            .page_virtual_keys(req.after.as_ref(), req.size + 1)
            .await?;
        Ok(listing.page_from(&req, rows, |k| PageKey::new(k.created_at, k.id.clone())))
    }

    pub async fn tokens_page(
        &self,
        page_size: u32,
        token: &str,
    ) -> Result<Page<TokenRecord>, ServiceError> {
        let listing = Listing::new("tokens");
        let req = listing.request(page_size, token)?;
        let rows = self
            .store
            .page_tokens(req.after.as_ref(), req.size + 1)
            .await?;
        Ok(listing.page_from(&req, rows, |t| PageKey::new(t.issued_at, t.jti.clone())))
    }

    /// A page of `table`'s credentials with when each was last used (see
    /// [`ControlPlane::list_credentials`]).
    pub async fn credentials_page(
        &self,
        table: CredentialTable,
        page_size: u32,
        token: &str,
    ) -> Result<Page<(CredentialRecord, Option<i64>)>, ServiceError> {
        let listing = Listing::new(match table {
            CredentialTable::Admin => "admin_credentials",
            CredentialTable::Node => "node_credentials",
        });
        let req = listing.request(page_size, token)?;
        let rows = self
            .store
            .page_credentials(table, req.after.as_ref(), req.size + 1)
            .await?;
        let page = listing.page_from(&req, rows, |c| PageKey::new(c.created_at, c.id.clone()));
        let items = self.with_last_used(table, page.items).await?;
        Ok(Page {
            items,
            next_token: page.next_token,
        })
    }

    pub async fn nodes_page(
        &self,
        page_size: u32,
        token: &str,
    ) -> Result<Page<NodeStatus>, ServiceError> {
        let listing = Listing::new("nodes");
        let req = listing.request(page_size, token)?;
        let rows = self
            .store
            .page_nodes(req.after.as_ref(), req.size + 1)
            .await?;
        let page = listing.page_from(&req, rows, |n| PageKey::name(n.node_id.clone()));
        Ok(Page {
            items: self.node_statuses(page.items),
            next_token: page.next_token,
        })
    }

    /// A page of audit records, newest first, only `action` when given. `limit` (0 =
    /// [`DEFAULT_AUDIT_LIMIT`]) bounds the whole listing: the page that reaches it is the
    /// last. With `page_size` 0 a page holds up to `limit` records (at most
    /// [`MAX_PAGE_SIZE`]). A token holds only for the same `limit` and `action`.
    pub async fn audit_page(
        &self,
        limit: u32,
        action: Option<&str>,
        page_size: u32,
        token: &str,
    ) -> Result<Page<AuditRecord>, ServiceError> {
        let limit = if limit == 0 {
            DEFAULT_AUDIT_LIMIT
        } else {
            limit
        };
        let listing = Listing::filtered("audit", format!("{limit}\n{}", action.unwrap_or("")));
        let size = if page_size == 0 {
            limit.min(MAX_PAGE_SIZE)
        } else {
            page_size
        };
        let mut req: PageRequest = listing.request(size, token)?;
        let remaining = u64::from(limit).saturating_sub(req.returned);
        req.size = req.size.min(u32::try_from(remaining).unwrap_or(u32::MAX));
        if req.size == 0 {
            return Ok(Page {
                items: Vec::new(),
                next_token: String::new(),
            });
        }
        let rows = self
            .store
            .page_audit(action, req.after.as_ref(), req.size + 1)
            .await?;
        let mut page =
            listing.page_from(&req, rows, |r| PageKey::new(r.timestamp_ms, r.id.clone()));
        if req.returned + page.items.len() as u64 >= u64::from(limit) {
            page.next_token.clear();
        }
        Ok(page)
    }
}
