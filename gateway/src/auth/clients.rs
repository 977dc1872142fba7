//! Registered clients: created by the operator, authenticated by the token endpoint.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chat4all_domain::{TenantId, UserId};
use rand::RngCore;
use serde::Serialize;
use sqlx::PgPool;

use super::Scope;
use crate::GatewayError;

/// A client as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClientRecord {
    pub client_id: String,
    pub secret_hash: String,
    pub tenant_id: String,
    pub user_id: String,
    pub scopes: Vec<String>,
}

/// A newly created client; the only time its secret is visible.
#[derive(Debug, Clone, Serialize)]
pub struct NewClient {
    pub client_id: String,
    pub client_secret: String,
    pub tenant_id: String,
    pub user_id: String,
    pub scopes: Vec<String>,
}

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// A hash no secret matches, verified in place of an unknown client's so that both cost the same.
pub const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$J3pVb0ZJ0mGk7mEPnXGzvlpRj2mNqvt8hCOc/Ej7Xfc";

/// Hashes a secret as an Argon2id PHC string.
///
/// # Errors
/// Only if Argon2 rejects its own default parameters.
pub fn hash_secret(secret: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Ok(Argon2::default()
        .hash_password(secret.as_bytes(), &salt)?
        .to_string())
}

/// Checks a secret against a stored hash; CPU-heavy by design, so call it off the async workers.
pub fn verify_secret(secret: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Registers a client acting as `user` in `tenant` with `scopes`.
///
/// # Errors
/// A database failure, or hashing failing.
pub async fn create_client(
    pool: &PgPool,
    tenant: &TenantId,
    user: &UserId,
    scopes: &[Scope],
) -> Result<NewClient, GatewayError> {
    let client_id = format!("c4a_{}", random_token(12));
    let client_secret = random_token(32);
    let secret_hash = hash_secret(&client_secret).map_err(|e| GatewayError::Hash(e.to_string()))?;
    let scopes: Vec<String> = scopes.iter().map(|s| s.as_str().to_owned()).collect();
    sqlx::query(
        "INSERT INTO clients (client_id, secret_hash, tenant_id, user_id, scopes) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&client_id)
    .bind(&secret_hash)
    .bind(tenant.as_str())
    .bind(user.as_str())
    .bind(&scopes)
    .execute(pool)
    .await?;
    Ok(NewClient {
        client_id,
        client_secret,
        tenant_id: tenant.to_string(),
        user_id: user.to_string(),
        scopes,
    })
}

/// Looks a client up by id (disabled clients do not exist for authentication).
///
/// # Errors
/// A database failure.
pub async fn find_client(
    pool: &PgPool,
    client_id: &str,
) -> Result<Option<ClientRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT client_id, secret_hash, tenant_id, user_id, scopes FROM clients \
         WHERE client_id = $1 AND disabled_at IS NULL",
    )
    .bind(client_id)
    .fetch_optional(pool)
    .await
}
