//! Request bodies: bounded before they are read whole, strict JSON, errors that name the field.

use bytes::{Buf, BufMut, Bytes, BytesMut};
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

/// The raw body, refused with 413 as soon as it is known to exceed `limit`: from
/// `Content-Length` before anything is read, or while streaming a chunked body.
pub fn bounded_bytes(limit: u64) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(move |length: Option<u64>, stream| async move {
            if length.is_some_and(|l| l > limit) {
                return Err(warp::reject::custom(too_large(limit)));
            }
            collect(stream, limit).await.map_err(warp::reject::custom)
        })
}

async fn collect<S, B>(stream: S, limit: u64) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut stream = std::pin::pin!(stream);
    let mut body = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::of(
                ErrorCode::BodyUnreadable,
                format!("reading the body failed: {e}"),
            )
        })?;
        if (body.len() + chunk.remaining()) as u64 > limit {
            return Err(too_large(limit));
        }
        body.put(chunk);
    }
    Ok(body.freeze())
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
