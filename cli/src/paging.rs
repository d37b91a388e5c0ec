//! Following the Admin API's paged listings: every `list` command reads all pages (each
//! `next_page_token` until an empty one) and shows them as one listing. `--page-size`
//! sets how many items each call asks for.

use tonic::{Response, Status};
use warden_proto::admin::v1 as pb;

use crate::session::Session;

/// A list request that can ask for one page.
pub trait PagedRequest: Clone {
    fn with_page(self, page_size: u32, page_token: String) -> Self;
}

/// A list response: where the next page starts, and how to add the next page to it.
pub trait PagedResponse {
    fn next_page_token(&self) -> &str;
    fn append(&mut self, next: Self);
}

macro_rules! paged {
    ($request:ty, $response:ty, [$($items:ident),+]) => {
        impl PagedRequest for $request {
            fn with_page(mut self, page_size: u32, page_token: String) -> Self {
                self.page_size = page_size;
                self.page_token = page_token;
                self
            }
        }
        impl PagedResponse for $response {
            fn next_page_token(&self) -> &str {
                &self.next_page_token
            }
            fn append(&mut self, next: Self) {
                $(self.$items.extend(next.$items);)+
                self.next_page_token = next.next_page_token;
            }
        }
    };
}

paged!(
    pb::ListProvidersRequest,
    pb::ListProvidersResponse,
    [providers]
);
paged!(pb::ListModelsRequest, pb::ListModelsResponse, [models]);
paged!(pb::ListTokensRequest, pb::ListTokensResponse, [tokens]);
paged!(
    pb::ListVirtualKeysRequest,
    pb::ListVirtualKeysResponse,
    [keys]
);
paged!(
    pb::ListSigningKeysRequest,
    pb::ListSigningKeysResponse,
    [keys]
);
paged!(pb::ListNodesRequest, pb::ListNodesResponse, [nodes]);
paged!(pb::ListAuditRequest, pb::ListAuditResponse, [records]);
paged!(
    pb::ListCredentialsRequest,
    pb::ListCredentialsResponse,
    [credentials]
);
paged!(
    pb::ListSuspensionsRequest,
    pb::ListSuspensionsResponse,
    [suspensions]
);
paged!(
    pb::ListIpBlocksRequest,
    pb::ListIpBlocksResponse,
    [manual, automatic]
);
paged!(pb::ListDlpRulesRequest, pb::ListDlpRulesResponse, [rules]);

impl Session {
    /// Every page of a listing, merged into one response: `call` sends `request` asking
    /// for one page (`--page-size`, and the token of the page before).
    pub async fn list_all<Q, R, F, Fut>(&self, request: Q, mut call: F) -> anyhow::Result<R>
    where
        Q: PagedRequest,
        R: PagedResponse,
        F: FnMut(Q) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let page = |token: String| request.clone().with_page(self.page_size, token);
        let mut all = self.call(call(page(String::new()))).await?;
        let mut token = all.next_page_token().to_owned();
        while !token.is_empty() {
            let next = self.call(call(page(token.clone()))).await?;
            if next.next_page_token() == token {
                anyhow::bail!("the control plane returned the same page token twice");
            }
            token = next.next_page_token().to_owned();
            all.append(next);
        }
        Ok(all)
    }
}

/// Every page of `$session.client.$method($request)`, merged into one response.
macro_rules! list_all {
    ($session:expr, $method:ident, $request:expr) => {
        $session.list_all($request, |request| {
            let mut client = $session.client.clone();
            async move { client.$method(request).await }
        })
    };
}
pub(crate) use list_all;
