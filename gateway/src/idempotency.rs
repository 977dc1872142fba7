//! `Idempotency-Key` on `POST`s under `/v1`: the same key from the same principal with the same
//! request within 24 h answers the original status and body without doing anything again; with
//! a different request, 409 `idempotency_key_reused`.
//!
//! A key is claimed (a row with status 0) before the command runs, so two concurrent requests
//! with one key cannot both run it; the second gets 409 `idempotency_key_in_use`. The outcome is
//! stored when the command answers; a 5xx releases the claim so the request can be retried. A
//! claim whose request never finished (its process died) is taken over after a minute.

use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// The most characters a key may have.
pub const MAX_KEY_CHARS: usize = 200;

/// Whether `key` is 1–200 printable ASCII characters.
pub fn valid_key(key: &[u8]) -> bool {
    (1..=MAX_KEY_CHARS).contains(&key.len()) && key.iter().all(|b| (0x20..0x7f).contains(b))
}

/// What identifies a request under a key: its method, path and body.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut hash = Sha256::new();
    hash.update(method.as_bytes());
    hash.update([0]);
    hash.update(path.as_bytes());
    hash.update([0]);
    hash.update(body);
    hash.finalize().to_vec()
}

/// A key this request holds until its outcome is stored.
#[derive(Debug, Clone)]
pub struct Claim {
    tenant: String,
    principal: String,
    key: String,
}

#[derive(Debug)]
pub enum Lookup {
    /// The request runs; its answer is stored under the claim.
    Claimed(Claim),
    /// Answered before: the stored status and body.
    Replay { status: u16, body: Value },
    /// The key was used for a different request.
    Reused,
    /// The key's first request is still running.
    InProgress,
}

/// Claims `key` for this request, or finds what it was used for.
///
/// # Errors
/// A database failure.
pub async fn claim(
    pool: &PgPool,
    tenant: &str,
    principal: &str,
    key: &str,
    fingerprint: &[u8],
) -> Result<Lookup, sqlx::Error> {
    let claimed: Option<bool> = sqlx::query_scalar(
        "INSERT INTO idempotency_records \
             (tenant_id, principal, idempotency_key, request_hash, status, body) \
         VALUES ($1, $2, $3, $4, 0, 'null') \
         ON CONFLICT (tenant_id, principal, idempotency_key) DO UPDATE \
             SET request_hash = EXCLUDED.request_hash, status = 0, body = 'null', created_at = now() \
             WHERE idempotency_records.created_at < now() - interval '24 hours' \
                OR (idempotency_records.status = 0 \
                    AND idempotency_records.created_at < now() - interval '1 minute') \
         RETURNING true",
    )
    .bind(tenant)
    .bind(principal)
    .bind(key)
    .bind(fingerprint)
    .fetch_optional(pool)
    .await?;
    if claimed.is_some() {
        return Ok(Lookup::Claimed(Claim {
            tenant: tenant.to_owned(),
            principal: principal.to_owned(),
            key: key.to_owned(),
        }));
    }
    let stored: Option<(Vec<u8>, i16, Value)> = sqlx::query_as(
        "SELECT request_hash, status, body FROM idempotency_records \
         WHERE tenant_id = $1 AND principal = $2 AND idempotency_key = $3",
    )
    .bind(tenant)
    .bind(principal)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    Ok(match stored {
        // Deleted by the clean-up in between: as good as in progress, a retry will claim it.
        None => Lookup::InProgress,
        Some((hash, _, _)) if hash != fingerprint => Lookup::Reused,
        Some((_, 0, _)) => Lookup::InProgress,
        Some((_, status, body)) => Lookup::Replay {
            status: u16::try_from(status).unwrap_or(500),
            body,
        },
    })
}

/// Stores the answer of a claimed request.
///
/// # Errors
/// A database failure.
pub async fn store(
    pool: &PgPool,
    claim: &Claim,
    status: u16,
    body: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE idempotency_records SET status = $4, body = $5 \
         WHERE tenant_id = $1 AND principal = $2 AND idempotency_key = $3",
    )
    .bind(&claim.tenant)
    .bind(&claim.principal)
    .bind(&claim.key)
    .bind(i16::try_from(status).unwrap_or(500))
    .bind(body)
    .execute(pool)
    .await?;
    Ok(())
}

/// Gives a claim up (the request failed in a way worth retrying).
///
/// # Errors
/// A database failure.
pub async fn release(pool: &PgPool, claim: &Claim) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM idempotency_records \
         WHERE tenant_id = $1 AND principal = $2 AND idempotency_key = $3 AND status = 0",
    )
    .bind(&claim.tenant)
    .bind(&claim.principal)
    .bind(&claim.key)
    .execute(pool)
    .await?;
    Ok(())
}

/// Forgets keys older than 24 h.
///
/// # Errors
/// A database failure.
pub async fn expire(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM idempotency_records WHERE created_at < now() - interval '24 hours'",
    )
    .execute(pool)
    .await?
    .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_to_two_hundred_printable_characters() {
        assert!(valid_key(b"a"));
        assert!(valid_key(b"order 42/retry-1"));
        assert!(valid_key("k".repeat(200).as_bytes()));
        assert!(!valid_key(b""));
        assert!(!valid_key("k".repeat(201).as_bytes()));
        assert!(!valid_key(b"tab\there"));
        assert!(!valid_key("caf\u{e9}".as_bytes()));
    }

    #[test]
    fn the_fingerprint_covers_method_path_and_body() {
        let base = fingerprint("POST", "/v1/messages", b"{}");
        assert_eq!(base, fingerprint("POST", "/v1/messages", b"{}"));
        assert_ne!(base, fingerprint("POST", "/v1/conversations", b"{}"));
        assert_ne!(base, fingerprint("POST", "/v1/messages", b"{ }"));
        assert_ne!(
            fingerprint("POST", "/v1/a", b"b/c"),
            fingerprint("POST", "/v1/ab", b"/c")
        );
    }
}
