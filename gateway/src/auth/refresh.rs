//! Refresh tokens: opaque, stored as hashes, rotated on every use, and revoked as a family when
//! a rotated one comes back (RFC 6819 §5.2.2.3, OAuth 2.0 Security BCP §4.14).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

const PREFIX: &str = "c4r_";

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A refresh token's grant, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Grant {
    pub family_id: Uuid,
    pub client_id: String,
    pub tenant_id: String,
    pub user_id: String,
    pub scopes: Vec<String>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub rotated_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Grant {
    pub fn active(&self) -> bool {
        self.rotated_at.is_none()
            && self.revoked_at.is_none()
            && self.expires_at > chrono::Utc::now()
    }
}

/// What presenting a refresh token led to.
#[derive(Debug)]
pub enum Rotation {
    /// A new refresh token of the same family; the grant it carries.
    Rotated { token: String, grant: Grant },
    /// Unknown, expired, revoked, or of a disabled client.
    Invalid,
    /// Already rotated: the family is now revoked, with the access tokens it bought.
    Replayed {
        access: Vec<(String, u64)>,
        grant: Grant,
    },
}

/// Access tokens a family bought: (`jti`, `exp`).
type AccessTokens = Vec<(String, u64)>;

/// Stores a new family's first refresh token.
///
/// # Errors
/// A database failure.
pub async fn issue(
    pool: &PgPool,
    client_id: &str,
    scopes: &[String],
    ttl_secs: u64,
    access: (&str, u64),
) -> Result<String, sqlx::Error> {
    let token = new_token();
    store(
        pool,
        &token,
        Uuid::new_v4(),
        client_id,
        scopes,
        ttl_secs,
        access,
    )
    .await?;
    Ok(token)
}

async fn store<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
    token: &str,
    family: Uuid,
    client_id: &str,
    scopes: &[String],
    ttl_secs: u64,
    access: (&str, u64),
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family_id, client_id, scopes, expires_at, \
                                     access_jti, access_expires_at) \
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), $6, $7)",
    )
    .bind(hash(token))
    .bind(family)
    .bind(client_id)
    .bind(scopes)
    .bind(ttl_secs as f64)
    .bind(access.0)
    .bind(i64::try_from(access.1).unwrap_or(i64::MAX))
    .execute(executor)
    .await?;
    Ok(())
}

/// The grant behind a refresh token, whatever its state.
///
/// # Errors
/// A database failure.
pub async fn find(pool: &PgPool, token: &str) -> Result<Option<Grant>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.family_id, r.client_id, c.tenant_id, c.user_id, r.scopes, r.expires_at, \
                r.rotated_at, coalesce(r.revoked_at, c.disabled_at) AS revoked_at \
         FROM refresh_tokens r JOIN clients c USING (client_id) WHERE r.token_hash = $1",
    )
    .bind(hash(token))
    .fetch_optional(pool)
    .await
}

/// Uses a refresh token: rotates it, or revokes its family when it was rotated before.
/// `access` names the access token that will be issued with the new refresh token; it is only
/// signed after this returns, but recorded now so a later family revocation covers it.
///
/// # Errors
/// A database failure.
pub async fn rotate(
    pool: &PgPool,
    token: &str,
    ttl_secs: u64,
    access: (&str, u64),
) -> Result<Rotation, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Locked, so two concurrent uses of one token cannot both rotate it.
    let grant: Option<Grant> = sqlx::query_as(
        "SELECT r.family_id, r.client_id, c.tenant_id, c.user_id, r.scopes, r.expires_at, \
                r.rotated_at, coalesce(r.revoked_at, c.disabled_at) AS revoked_at \
         FROM refresh_tokens r JOIN clients c USING (client_id) \
         WHERE r.token_hash = $1 FOR UPDATE OF r",
    )
    .bind(hash(token))
    .fetch_optional(&mut *tx)
    .await?;
    let Some(grant) = grant else {
        return Ok(Rotation::Invalid);
    };
    if grant.rotated_at.is_some() && grant.revoked_at.is_none() {
        let access = revoke_family_in(&mut tx, grant.family_id).await?;
        tx.commit().await?;
        return Ok(Rotation::Replayed { access, grant });
    }
    if !grant.active() {
        return Ok(Rotation::Invalid);
    }
    sqlx::query("UPDATE refresh_tokens SET rotated_at = now() WHERE token_hash = $1")
        .bind(hash(token))
        .execute(&mut *tx)
        .await?;
    let next = new_token();
    store(
        &mut *tx,
        &next,
        grant.family_id,
        &grant.client_id,
        &grant.scopes,
        ttl_secs,
        access,
    )
    .await?;
    tx.commit().await?;
    Ok(Rotation::Rotated { token: next, grant })
}

async fn revoke_family_in(
    tx: &mut sqlx::PgConnection,
    family: Uuid,
) -> Result<AccessTokens, sqlx::Error> {
    let rows: Vec<(Option<String>, Option<i64>)> = sqlx::query_as(
        "UPDATE refresh_tokens SET revoked_at = coalesce(revoked_at, now()) \
         WHERE family_id = $1 RETURNING access_jti, access_expires_at",
    )
    .bind(family)
    .fetch_all(tx)
    .await?;
    let now = i64::try_from(super::now_secs()).unwrap_or(i64::MAX);
    Ok(rows
        .into_iter()
        .filter_map(|(jti, exp)| Some((jti?, exp?)))
        .filter(|(_, exp)| *exp > now)
        .map(|(jti, exp)| (jti, u64::try_from(exp).unwrap_or(0)))
        .collect())
}

/// Revokes the family of `token` if it belongs to `client_id`; the access tokens it bought are
/// returned for revocation. `None` when the token is not one of the client's.
///
/// # Errors
/// A database failure.
pub async fn revoke(
    pool: &PgPool,
    token: &str,
    client_id: &str,
) -> Result<Option<AccessTokens>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let family: Option<Uuid> = sqlx::query_scalar(
        "SELECT family_id FROM refresh_tokens WHERE token_hash = $1 AND client_id = $2",
    )
    .bind(hash(token))
    .bind(client_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(family) = family else {
        return Ok(None);
    };
    let access = revoke_family_in(&mut tx, family).await?;
    tx.commit().await?;
    Ok(Some(access))
}

/// Whether `token` looks like one of ours (so revocation and introspection know where to look).
pub fn looks_like_refresh_token(token: &str) -> bool {
    token.starts_with(PREFIX)
}
