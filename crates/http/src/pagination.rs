//! Lists: `?limit=` (default 50, max 200) and an opaque `cursor`; bodies are
//! `{"data": [...], "next_cursor": "…" | null}`. Cursors are base64url JSON of the last key,
//! so they can change shape without clients noticing; a tampered cursor is a 400.

use crate::problem::{ApiError, codes};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;
use trueline_store::{PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX, PageRequest};
use utoipa::IntoParams;

/// The query parameters every list accepts.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ListQuery {
    pub fn page<K: DeserializeOwned>(&self) -> Result<PageRequest<K>, ApiError> {
        let limit = self.limit.unwrap_or(PAGE_LIMIT_DEFAULT);
        if !(1..=PAGE_LIMIT_MAX).contains(&limit) {
            return Err(ApiError::field(
                "/query/limit",
                "out_of_range",
                format!("must be between 1 and {PAGE_LIMIT_MAX}"),
            ));
        }
        let after = self.cursor.as_deref().map(decode_cursor).transpose()?;
        Ok(PageRequest { limit, after })
    }
}

pub fn encode_cursor<K: Serialize>(key: &K) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).unwrap_or_default())
}

pub fn decode_cursor<K: DeserializeOwned>(cursor: &str) -> Result<K, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| {
            ApiError::new(
                codes::INVALID_CURSOR,
                "the cursor is not one this server issued",
            )
        })
}

/// Declares a list response type `$name` of `$item` (concrete types keep the OpenAPI simple).
#[macro_export]
macro_rules! list_type {
    ($name:ident, $item:ty) => {
        #[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
        pub struct $name {
            pub data: Vec<$item>,
            /// Pass as `cursor` to get the next page; `null` on the last page.
            pub next_cursor: Option<String>,
        }

        impl $name {
            pub fn from_page<T, K: serde::Serialize>(
                page: trueline_store::Page<T, K>,
                map: impl Fn(T) -> $item,
            ) -> Self {
                Self {
                    next_cursor: page.next.as_ref().map($crate::pagination::encode_cursor),
                    data: page.items.into_iter().map(map).collect(),
                }
            }
        }
    };
}
