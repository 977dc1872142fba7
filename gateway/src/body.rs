//! Request bodies: bounded before they are read whole, strict JSON, errors that name the field.
//!
//! A body comes in one of two forms: [`bounded_bytes`], read whole (every JSON body), or
//! [`bounded_stream`], handed over chunk by chunk as it arrives (for bodies too large to hold,
//! like file chunks). Both refuse a body over their bound with 413, from `Content-Length`
//! before anything is read, or as soon as a chunked body grows past it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use warp::{Filter, Rejection};

use crate::problem::{ApiError, ErrorCode, FieldError};

/// The largest JSON body the API reads (file chunks have their own bound).
pub const MAX_BODY_BYTES: u64 = 1024 * 1024;

fn too_large(limit: u64) -> ApiError {
    ApiError::of(
        ErrorCode::PayloadTooLarge,
        format!("the body exceeds {limit} bytes"),
    )
}

/// A request body as it arrives, cut off with 413 `payload_too_large` once more than its
/// bound has come. After its first error it ends.
pub struct BodyStream {
    chunks: BoxStream<'static, Result<Bytes, warp::Error>>,
    limit: u64,
    read: u64,
    done: bool,
}

impl BodyStream {
    fn new<S, B>(chunks: S, limit: u64) -> Self
    where
        S: Stream<Item = Result<B, warp::Error>> + Send + 'static,
        B: Buf,
    {
        Self {
            chunks: chunks
                .map(|chunk| chunk.map(|mut buf| buf.copy_to_bytes(buf.remaining())))
                .boxed(),
            limit,
            read: 0,
            done: false,
        }
    }

    /// Reads the rest of the body into one buffer (still within its bound).
    ///
    /// # Errors
    /// 413 past the bound, 400 `body_unreadable` when the connection fails.
    pub async fn collect(mut self) -> Result<Bytes, ApiError> {
        let mut body = BytesMut::new();
        while let Some(chunk) = self.next().await {
            body.put(chunk?);
        }
        Ok(body.freeze())
    }
}

impl Stream for BodyStream {
    type Item = Result<Bytes, ApiError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let item = match self.chunks.poll_next_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(item) => item,
        };
        let answer = match item {
            None => None,
            Some(Err(e)) => Some(Err(ApiError::of(
                ErrorCode::BodyUnreadable,
                format!("reading the body failed: {e}"),
            ))),
            Some(Ok(chunk)) => {
                self.read += chunk.len() as u64;
                Some(if self.read > self.limit {
                    Err(too_large(self.limit))
                } else {
                    Ok(chunk)
                })
            }
        };
        self.done = !matches!(answer, Some(Ok(_)));
        Poll::Ready(answer)
    }
}

/// The raw body as a stream bounded by `limit`; a `Content-Length` beyond it is refused with
/// 413 before anything is read.
pub fn bounded_stream(
    limit: u64,
) -> impl Filter<Extract = (BodyStream,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(move |length: Option<u64>, stream| async move {
            if length.is_some_and(|l| l > limit) {
                return Err(warp::reject::custom(too_large(limit)));
            }
            Ok(BodyStream::new(stream, limit))
        })
}

/// The raw body read whole, refused with 413 as soon as it is known to exceed `limit`.
pub fn bounded_bytes(limit: u64) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    bounded_stream(limit).and_then(|body: BodyStream| async move {
        body.collect().await.map_err(warp::reject::custom)
    })
}

/// Parses a JSON body into `T`, naming the offending field on failure. Types meant for request
/// bodies use `#[serde(deny_unknown_fields)]`, so unknown fields are refused here too.
///
/// # Errors
/// 400 `malformed_json` for bytes that are not JSON (including invalid UTF-8), 400
/// `validation_failed` for JSON of the wrong shape.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::of(
            ErrorCode::MalformedJson,
            "a JSON body is required",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() {
            let field = if path == "." { "body".to_owned() } else { path };
            ApiError::validation(vec![FieldError::new(field, clean_message(&inner))])
        } else {
            ApiError::of(
                ErrorCode::MalformedJson,
                format!("the body is not valid JSON: {inner}"),
            )
        }
    })?;
    deserializer.end().map_err(|e| {
        ApiError::of(
            ErrorCode::MalformedJson,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    Ok(value)
}

/// serde's messages end with " at line L column C"; the field path says more to an API client.
fn clean_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// An optional JSON body: an empty (or blank) body is `None`.
///
/// # Errors
/// As [`parse_json`].
pub fn parse_optional_json<T: DeserializeOwned>(body: &[u8]) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    parse_json::<T>(body).map(Some)
}

#[cfg(test)]
mod tests {
    use warp::http::StatusCode;

    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Probe {
        name: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        count: u32,
    }

    fn err(body: &[u8]) -> ApiError {
        match parse_json::<Probe>(body) {
            Ok(p) => panic!("unexpectedly parsed {p:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = err(br#"{"name":"a","extra":1}"#);
        assert_eq!(e.code, ErrorCode::ValidationFailed);
        assert!(
            e.errors[0].message.contains("unknown field `extra`"),
            "{:?}",
            e.errors
        );
    }

    #[test]
    fn nested_type_errors_carry_the_path() {
        let e = err(br#"{"name":"a","inner":{"count":-1}}"#);
        assert_eq!(e.errors[0].field, "inner.count");
        assert!(!e.errors[0].message.contains("line"));
    }

    #[test]
    fn syntax_errors_and_invalid_utf8_are_malformed() {
        assert_eq!(err(b"{\"name\":").code, ErrorCode::MalformedJson);
        assert_eq!(err(b"{\"name\":\"\xff\"}").code, ErrorCode::MalformedJson);
        assert_eq!(err(b"").code, ErrorCode::MalformedJson);
        assert_eq!(
            err(br#"{"name":"a"} trailing"#).code,
            ErrorCode::MalformedJson
        );
    }

    #[test]
    fn missing_fields_are_validation_errors() {
        let e = err(b"{}");
        assert_eq!(e.code, ErrorCode::ValidationFailed);
        assert!(e.errors[0].message.contains("missing field `name`"));
    }

    #[test]
    fn huge_numbers_and_deep_nesting_are_refused_cleanly() {
        assert_eq!(
            err(br#"{"name":"a","inner":{"count":1e400}}"#).code,
            ErrorCode::MalformedJson
        );
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(err(deep.as_bytes()).status(), StatusCode::BAD_REQUEST);
        let deep_value: Result<serde_json::Value, _> = parse_json(deep.as_bytes());
        assert_eq!(
            deep_value.map_err(|e| e.code).err(),
            Some(ErrorCode::MalformedJson)
        );
    }
}
