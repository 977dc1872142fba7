//! Ed25519 signing keys, shared by every gateway instance through the `signing_keys` table.
//!
//! The first instance to start with an empty table creates a key (under an advisory lock, so two
//! instances starting together agree on one). Every instance signs with the newest active key and
//! verifies with every key still inside its verification window; a token naming a `kid` this
//! instance has not seen triggers a reload, so keys added elsewhere are picked up.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{DecodingKey, EncodingKey};
use rand::RngCore;
use sqlx::PgPool;

/// PKCS#8 v1 wrapping of a raw Ed25519 seed (RFC 8410 §7): a fixed 16-byte prefix.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// How often an unknown `kid` may trigger a reload from the database.
const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// A key that verifies tokens.
#[derive(Clone)]
pub struct VerifyingKey {
    pub kid: String,
    pub public_raw: Vec<u8>,
    pub decoding: DecodingKey,
}

/// A key that signs, from `activates_at` until `retired_at`.
struct Signer {
    kid: String,
    encoding: EncodingKey,
    activates_at: chrono::DateTime<chrono::Utc>,
    retired_at: Option<chrono::DateTime<chrono::Utc>>,
}

struct Loaded {
    /// Newest first.
    signers: Vec<Signer>,
    verifying: HashMap<String, VerifyingKey>,
    loaded_at: Instant,
}

/// The keys of this deployment.
pub struct KeyRing {
    pool: PgPool,
    loaded: RwLock<Loaded>,
    reloading: tokio::sync::Mutex<()>,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    kid: String,
    private_der: Vec<u8>,
    public_raw: Vec<u8>,
    activates_at: chrono::DateTime<chrono::Utc>,
    retired_at: Option<chrono::DateTime<chrono::Utc>>,
}

async fn load(pool: &PgPool) -> Result<Loaded, sqlx::Error> {
    let rows: Vec<KeyRow> = sqlx::query_as(
        "SELECT kid, private_der, public_raw, activates_at, retired_at FROM signing_keys \
         WHERE algorithm = 'EdDSA' AND (verify_until IS NULL OR verify_until > now()) \
         ORDER BY activates_at DESC, created_at DESC",
    )
    .fetch_all(pool)
    .await?;
    let now = chrono::Utc::now();
    let signers: Vec<Signer> = rows
        .iter()
        .filter(|r| r.retired_at.is_none_or(|retired| retired > now))
        .map(|r| Signer {
            kid: r.kid.clone(),
            encoding: EncodingKey::from_ed_der(&r.private_der),
            activates_at: r.activates_at,
            retired_at: r.retired_at,
        })
        .collect();
    if !signers.iter().any(|s| s.activates_at <= now) {
        return Err(sqlx::Error::RowNotFound);
    }
    let verifying = rows
        .iter()
        .map(|r| {
            (
                r.kid.clone(),
                VerifyingKey {
                    kid: r.kid.clone(),
                    public_raw: r.public_raw.clone(),
                    decoding: DecodingKey::from_ed_der(&r.public_raw),
                },
            )
        })
        .collect();
    Ok(Loaded {
        signers,
        verifying,
        loaded_at: Instant::now(),
    })
}

/// Creates a new active key; older keys keep verifying.
///
/// # Errors
/// A database failure.
pub async fn generate_key(pool: &PgPool) -> Result<String, sqlx::Error> {
    insert_key(pool).await
}

async fn insert_key<'e, E: sqlx::PgExecutor<'e>>(executor: E) -> Result<String, sqlx::Error> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let signing = SigningKey::from_bytes(&seed);
    let public = signing.verifying_key().to_bytes();
    let mut der = PKCS8_ED25519_PREFIX.to_vec();
    der.extend_from_slice(&seed);
    let kid = URL_SAFE_NO_PAD.encode(&public[..12]);
    sqlx::query(
        "INSERT INTO signing_keys (kid, algorithm, private_der, public_raw) VALUES ($1, 'EdDSA', $2, $3)",
    )
    .bind(&kid)
    .bind(&der)
    .bind(public.as_slice())
    .execute(executor)
    .await?;
    Ok(kid)
}

/// Replaces the signing key. The new key verifies at once and signs from `activate_in_secs`
/// on (give every instance time to reload it first); the keys it replaces sign until then and
/// keep verifying `verify_for_secs` longer, until every token they signed has expired. Returns
/// the new key's id and the retired ones'.
///
/// # Errors
/// A database failure.
pub async fn rotate_key(
    pool: &PgPool,
    activate_in_secs: u64,
    verify_for_secs: u64,
) -> Result<(String, Vec<String>), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(7243012003)")
        .execute(&mut *tx)
        .await?;
    let retired: Vec<String> = sqlx::query_scalar(
        "UPDATE signing_keys SET retired_at = now() + make_interval(secs => $1), \
                verify_until = now() + make_interval(secs => $1 + $2) \
         WHERE retired_at IS NULL RETURNING kid",
    )
    .bind(activate_in_secs as f64)
    .bind(verify_for_secs as f64)
    .fetch_all(&mut *tx)
    .await?;
    let kid = insert_key(&mut *tx).await?;
    sqlx::query(
        "UPDATE signing_keys SET activates_at = now() + make_interval(secs => $2) WHERE kid = $1",
    )
    .bind(&kid)
    .bind(activate_in_secs as f64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((kid, retired))
}

impl KeyRing {
    /// Loads the deployment's keys, creating the first one if there is none.
    ///
    /// # Errors
    /// A database failure.
    pub async fn open(pool: PgPool) -> Result<Self, sqlx::Error> {
        let loaded = match load(&pool).await {
            Ok(loaded) => loaded,
            Err(sqlx::Error::RowNotFound) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(7243012003)")
                    .execute(&mut *tx)
                    .await?;
                let active: Option<String> = sqlx::query_scalar(
                    "SELECT kid FROM signing_keys WHERE retired_at IS NULL LIMIT 1",
                )
                .fetch_optional(&mut *tx)
                .await?;
                if active.is_none() {
                    generate_key(&pool).await?;
                }
                tx.commit().await?;
                load(&pool).await?
            }
            Err(e) => return Err(e),
        };
        Ok(Self {
            pool,
            loaded: RwLock::new(loaded),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// The key id and key that sign new tokens: the newest key already active and not retired
    /// (decided now, so a rotation takes effect at its time without a reload).
    pub fn signing(&self) -> Option<(String, EncodingKey)> {
        let loaded = self.read();
        let now = chrono::Utc::now();
        let signer = loaded
            .signers
            .iter()
            .find(|s| s.activates_at <= now && s.retired_at.is_none_or(|r| r > now))
            // Past every loaded key's retirement with no reload since: the newest still signs
            // rather than nothing, and the next reload brings its successor.
            .or_else(|| loaded.signers.first());
        signer.map(|s| (s.kid.clone(), s.encoding.clone()))
    }

    /// The key named `kid`, reloading once if this instance has not seen it yet (at most every
    /// few seconds, and one reload at a time however many requests name unknown keys).
    pub async fn verifying(&self, kid: &str) -> Option<VerifyingKey> {
        if let Some(key) = self.read().verifying.get(kid) {
            return Some(key.clone());
        }
        let _single_flight = self.reloading.lock().await;
        // Another request may have reloaded while this one waited.
        let stale = {
            let loaded = self.read();
            if let Some(key) = loaded.verifying.get(kid) {
                return Some(key.clone());
            }
            loaded.loaded_at.elapsed() >= RELOAD_INTERVAL
        };
        if stale {
            if let Err(e) = self.reload_now().await {
                tracing::warn!("reloading signing keys failed: {e}");
            }
        }
        self.read().verifying.get(kid).cloned()
    }

    /// Whether `kid` still verifies (it may have passed its `verify_until` since a token signed
    /// with it was first accepted).
    pub fn is_current(&self, kid: &str) -> bool {
        self.read().verifying.contains_key(kid)
    }

    /// Re-reads the keys: new ones start verifying, expired ones stop, a rotated signing key
    /// takes over.
    ///
    /// # Errors
    /// A database failure; the previous keys stay in use.
    pub async fn reload(&self) -> Result<(), sqlx::Error> {
        let _single_flight = self.reloading.lock().await;
        self.reload_now().await
    }

    async fn reload_now(&self) -> Result<(), sqlx::Error> {
        let fresh = load(&self.pool).await?;
        *self
            .loaded
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// Reloads every `every` until `stop`.
    pub async fn refresh_periodically(
        &self,
        every: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(every);
        ticker.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticker.tick() => {
                    if let Err(e) = self.reload().await {
                        tracing::warn!("refreshing signing keys failed: {e}");
                    }
                }
            }
        }
    }

    /// The public keys as a JWK set (RFC 7517, OKP keys of RFC 8037).
    pub fn jwks(&self) -> serde_json::Value {
        let loaded = self.read();
        let keys: Vec<_> = loaded
            .verifying
            .values()
            .map(|k| {
                serde_json::json!({
                    "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
                    "kid": k.kid, "x": URL_SAFE_NO_PAD.encode(&k.public_raw),
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        // A panic while holding the lock cannot leave `Loaded` half-written (it is replaced whole).
        self.loaded
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
