//! Publishing outbox rows to NATS JetStream: subject `trueline.<org>.<event type>`, header
//! `Nats-Msg-Id` = the event id, so the broker drops a republished row inside its duplicate
//! window. A row counts as published only after JetStream acknowledged it.

use async_nats::jetstream;
use async_nats::jetstream::context::Context;
use trueline_store::OutboxRow;

pub struct NatsPublisher {
    jetstream: Context,
    prefix: String,
}

/// The subject of an event: dots in the type stay (they are NATS token separators, which
/// lets consumers subscribe to `trueline.<org>.inventory.>`).
pub fn subject(prefix: &str, row: &OutboxRow) -> String {
    let safe: String = row
        .event_type
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{prefix}.{}.{}", row.org_id, safe)
}

impl NatsPublisher {
    /// The client, once: it connects (and reconnects) in the background for as long as it
    /// lives, so [`NatsPublisher::ready`] is retried on this one client rather than on a new
    /// client each time (each abandoned client kept reconnecting forever).
    pub async fn client(url: &str) -> anyhow::Result<async_nats::Client> {
        Ok(async_nats::ConnectOptions::new()
            .connection_timeout(std::time::Duration::from_secs(5))
            .retry_on_initial_connect()
            .connect(url)
            .await?)
    }

    /// Makes sure the stream exists (subjects `<prefix>.>`, `duplicate_window`). A stream
    /// that exists keeps its own settings: a shorter duplicate window is warned about.
    pub async fn ready(
        client: &async_nats::Client,
        stream: &str,
        prefix: &str,
        duplicate_window: std::time::Duration,
    ) -> anyhow::Result<Self> {
        let jetstream = jetstream::new(client.clone());
        let mut created = jetstream
            .get_or_create_stream(jetstream::stream::Config {
                name: stream.to_owned(),
                subjects: vec![format!("{prefix}.>")],
                duplicate_window,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("creating JetStream stream {stream}: {e}"))?;
        let window = created.info().await.map(|i| i.config.duplicate_window);
        if let Ok(window) = window
            && window < duplicate_window
        {
            tracing::warn!(
                event = "nats.duplicate_window_short",
                stream,
                window_s = window.as_secs(),
                wanted_s = duplicate_window.as_secs(),
                "a row republished after a relay failure may reach consumers twice"
            );
        }
        Ok(Self {
            jetstream,
            prefix: prefix.to_owned(),
        })
    }

    /// Publishes rows in order, waiting for each acknowledgement; stops at the first failure.
    pub async fn publish(&self, rows: &[OutboxRow]) -> (Vec<i64>, Option<(Vec<i64>, String)>) {
        let mut done = Vec::with_capacity(rows.len());
        for row in rows {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", row.event_id.to_string().as_str());
            headers.insert("Trueline-Event-Type", row.event_type.as_str());
            let body = serde_json::to_vec(&serde_json::json!({
                "id": row.event_id,
                "type": row.event_type,
                "organization_id": row.org_id,
                "stream": row.stream,
                "data": row.payload,
            }))
            .unwrap_or_default();
            let sent = self
                .jetstream
                .publish_with_headers(subject(&self.prefix, row), headers, body.into())
                .await;
            let acked = match sent {
                Ok(ack) => tokio::time::timeout(std::time::Duration::from_secs(10), ack)
                    .await
                    .map_err(|_| "JetStream acknowledgement timed out".to_owned())
                    .and_then(|r| r.map_err(|e| e.to_string())),
                Err(e) => Err(e.to_string()),
            };
            match acked {
                Ok(_) => done.push(row.seq),
                Err(error) => return (done, Some((vec![row.seq], error))),
            }
        }
        (done, None)
    }
}
