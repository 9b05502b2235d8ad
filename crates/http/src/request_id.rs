//! Request ids: a valid inbound `X-Request-Id` is kept, otherwise a new UUIDv7 is assigned.
//! The id is held in a task-local for the duration of the request so any error built deep in
//! a handler can repeat it in its problem body without threading it through every call.

use axum::http::HeaderValue;

/// Longest inbound request id we keep; longer ones are replaced (they would bloat logs).
pub const REQUEST_ID_LENGTH_MAX: usize = 128;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served on this task (empty outside a request).
pub fn current() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// Runs `f` with `id` as the current request id.
pub async fn scope<F: Future>(id: String, f: F) -> F::Output {
    REQUEST_ID.scope(id, f).await
}

pub fn sync_scope<R>(id: String, f: impl FnOnce() -> R) -> R {
    REQUEST_ID.sync_scope(id, f)
}

/// Keeps a client's id only if it is short and made of safe characters (it is echoed in
/// headers and logs, so it must not carry control characters or injection payloads).
pub fn accept_or_new(inbound: Option<&HeaderValue>) -> String {
    inbound
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= REQUEST_ID_LENGTH_MAX
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_inbound_ids_are_kept_and_others_replaced() {
        let keep = HeaderValue::from_static("abc-123_x.y:z");
        assert_eq!(accept_or_new(Some(&keep)), "abc-123_x.y:z");
        let unsafe_id = HeaderValue::from_static("a b");
        assert_ne!(accept_or_new(Some(&unsafe_id)), "a b");
        let long = HeaderValue::from_str(&"a".repeat(129)).unwrap_or(keep);
        assert_eq!(accept_or_new(Some(&long)).len(), 36);
        assert_eq!(accept_or_new(None).len(), 36);
    }
}
