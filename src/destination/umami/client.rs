//! The HTTP side: posting to `/api/send` and `/api/batch`, and classifying the answers as
//! UMAMI.md describes them.

use reqwest::header::HeaderMap;
use reqwest::{StatusCode, Url};
use serde_json::Value;

use super::config::Validated;
use crate::destination::DeliveryError;
use crate::destination::http::{self, Body, Failure, quote};
// Where Umami's classifier lived before the shared module: kept so tests naming
// `umami::client::{classify, retry_after}` (the secrets branch's proptest) still resolve.
pub(crate) use crate::destination::http::classify;
#[cfg(test)]
#[allow(unused_imports)]
pub(crate) use crate::destination::http::retry_after;

/// What `/api/send` said about a stored-or-not event.
#[derive(Debug)]
pub(crate) enum SendReply {
    /// 2xx: stored.
    Stored,
    /// `200 {"beep":"boop"}`: accepted and thrown away by the bot check.
    Discarded,
}

/// A keep-alive HTTP client for one Umami server.
#[derive(Debug)]
pub(crate) struct Client {
    http: http::Client,
    send_url: Url,
    batch_url: Url,
}

impl Client {
    pub(crate) fn new(v: &Validated) -> Result<Client, String> {
        let http = http::Client::new("umami", v.user_agent.clone())?
            // Umami's failures are explained by the worker's warnings, as before the move.
            .with_rejection_log(false);
        Ok(Client {
            http,
            send_url: v.send_url.clone(),
            batch_url: v.batch_url.clone(),
        })
    }

    /// Posts one send body to `/api/send`.
    pub(crate) async fn send(&self, body: &Value) -> Result<SendReply, Failure> {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let text = self.post(&self.send_url, bytes).await?;
        let beep = serde_json::from_slice::<Value>(&text)
            .ok()
            .is_some_and(|v| v.get("beep").is_some());
        Ok(if beep {
            SendReply::Discarded
        } else {
            SendReply::Stored
        })
    }

    /// Posts send bodies to `/api/batch`; returns the per-item failures (`index`, error).
    pub(crate) async fn batch(
        &self,
        bodies: &[&Value],
    ) -> Result<Vec<(usize, DeliveryError)>, Failure> {
        let bytes = serde_json::to_vec(bodies).unwrap_or_default();
        let text = self.post(&self.batch_url, bytes).await?;
        let reply: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
        let mut failed = Vec::new();
        for detail in reply
            .get("details")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(index) = detail.get("index").and_then(Value::as_u64) else {
                continue;
            };
            let response = detail.get("response").unwrap_or(&Value::Null);
            let status = response
                .pointer("/error/status")
                .and_then(Value::as_u64)
                .and_then(|s| StatusCode::from_u16(s as u16).ok());
            let message = quote(response.to_string().as_bytes());
            let error = match status {
                Some(s) => classify(s, &HeaderMap::new(), "/api/batch item", &message),
                // No status: the item failed in a way the server did not describe; retrying is
                // the only way it can still arrive.
                None => DeliveryError::retryable(format!("/api/batch item failed: {message}")),
            };
            failed.push((index as usize, error));
        }
        Ok(failed)
    }

    /// Posts JSON; a 2xx answer's body, or the classified failure.
    async fn post(&self, url: &Url, body: Vec<u8>) -> Result<bytes::Bytes, Failure> {
        self.http
            .post(url, HeaderMap::new(), Body::json(body))
            .await
    }
}
