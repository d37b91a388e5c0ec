//! The model endpoints a node serves, shared by the proxy, its metrics and its spans.

use crate::translate::Wire;

/// The model endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Messages,
    Embeddings,
    Responses,
}

impl Endpoint {
    /// Every model endpoint, in [`Endpoint::index`] order.
    pub const ALL: [Self; 4] = [
        Self::Chat,
        Self::Messages,
        Self::Embeddings,
        Self::Responses,
    ];

    /// The position of the endpoint in [`Endpoint::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The API shape of the endpoint (requests, answers and errors).
    pub fn api(self) -> Wire {
        match self {
            Self::Messages => Wire::Anthropic,
            _ => Wire::OpenAi,
        }
    }

    /// The route template (also the `endpoint` metric label).
    pub fn path(self) -> &'static str {
        match self {
            Self::Chat => "/v1/chat/completions",
            Self::Messages => "/v1/messages",
            Self::Embeddings => "/v1/embeddings",
            Self::Responses => "/v1/responses",
        }
    }
}
