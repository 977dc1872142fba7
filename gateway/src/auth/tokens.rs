//! Issuing and verifying access tokens.
//!
//! Verification is on every request's path, and an Ed25519 signature check costs tens of
//! microseconds; a token that verified once is remembered (by its exact text, until it expires),
//! so later requests with it only re-check the time claims.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chat4all_domain::{TenantId, UserId};
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

use super::revocations::Revocations;
use super::KeyRing;

/// Leeway for `exp` and `nbf`, the most the API allows.
pub const LEEWAY_SECS: u64 = 30;
const CACHE_CAPACITY: usize = 100_000;

/// What a token may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Write,
    Audit,
    Admin,
}

impl Scope {
    pub const ALL: [Self; 4] = [Self::Read, Self::Write, Self::Audit, Self::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Audit => "audit",
            Self::Admin => "admin",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Parses a space-separated scope list (RFC 6749 §3.3).
    ///
    /// # Errors
    /// The first unknown scope name.
    pub fn parse_list(value: &str) -> Result<Vec<Self>, String> {
        let mut scopes = Vec::new();
        for name in value.split(' ').filter(|s| !s.is_empty()) {
            let scope = Self::parse(name).ok_or_else(|| name.to_owned())?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        scopes.sort();
        Ok(scopes)
    }

    pub fn join(scopes: &[Self]) -> String {
        scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The claims of an access JWT: `iss`, `aud`, `sub` (the user), `tenant_id`, `client_id`,
/// `scope` (space-separated), `iat`, `nbf`, `exp`, `jti`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub tenant_id: String,
    pub client_id: String,
    pub scope: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: TenantId,
    pub user: UserId,
    pub client_id: String,
    pub scopes: Vec<Scope>,
    pub jti: String,
    pub expires_at: u64,
}

impl Principal {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    fn from_claims(claims: &Claims) -> Option<Self> {
        Some(Self {
            tenant: TenantId::parse(&claims.tenant_id).ok()?,
            user: UserId::parse(&claims.sub).ok()?,
            client_id: claims.client_id.clone(),
            scopes: Scope::parse_list(&claims.scope).ok()?,
            jti: claims.jti.clone(),
            expires_at: claims.exp,
        })
    }
}

/// Why a bearer token was refused; the text goes to the client in `WWW-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token is signed with an unknown key")]
    UnknownKey,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is invalid")]
    Invalid,
    #[error("the token has been revoked")]
    Revoked,
}

/// Issues and verifies access tokens.
pub struct TokenService {
    keys: Arc<KeyRing>,
    issuer: String,
    audience: String,
    ttl_secs: u64,
    validation: Validation,
    /// Verified tokens by their exact text, with the key that signed them.
    verified: Mutex<HashMap<String, (Principal, String)>>,
    revocations: Revocations,
    /// HS256 with a shared secret, only when configured so explicitly; EdDSA otherwise.
    shared: Option<(jsonwebtoken::EncodingKey, jsonwebtoken::DecodingKey)>,
}

/// The `kid` of HS256 tokens: there is one shared secret, not a key set.
const SHARED_KID: &str = "hs256";
/// The shortest shared secret accepted (RFC 7518 §3.2: at least the hash size).
pub const MIN_SHARED_SECRET_BYTES: usize = 32;

pub fn now_secs() -> u64 {
    chrono::Utc::now().timestamp().try_into().unwrap_or(0)
}

impl TokenService {
    pub fn new(keys: Arc<KeyRing>, issuer: String, audience: String, ttl_secs: u64) -> Self {
        // The algorithm is pinned: a token naming any other (`none`, HS256 keyed with the public
        // key...) fails before its signature is looked at.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer.as_str()]);
        validation.set_audience(&[audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Self {
            keys,
            issuer,
            audience,
            ttl_secs,
            validation,
            verified: Mutex::new(HashMap::new()),
            revocations: Revocations::new(None, ""),
            shared: None,
        }
    }

    /// Signs and verifies with HS256 and `secret` instead of the Ed25519 key ring; tokens of
    /// the other algorithm are refused. Only for deployments that ask for it explicitly.
    ///
    /// # Errors
    /// A secret shorter than [`MIN_SHARED_SECRET_BYTES`].
    pub fn with_hs256(mut self, secret: &[u8]) -> Result<Self, String> {
        if secret.len() < MIN_SHARED_SECRET_BYTES {
            return Err(format!(
                "the HS256 secret must be at least {MIN_SHARED_SECRET_BYTES} bytes"
            ));
        }
        let encoding = jsonwebtoken::EncodingKey::from_secret(secret).map_err(|e| e.to_string())?;
        let decoding = jsonwebtoken::DecodingKey::from_secret(secret).map_err(|e| e.to_string())?;
        self.validation.algorithms = vec![Algorithm::HS256];
        self.shared = Some((encoding, decoding));
        Ok(self)
    }

    fn algorithm(&self) -> Algorithm {
        if self.shared.is_some() {
            Algorithm::HS256
        } else {
            Algorithm::EdDSA
        }
    }

    /// The public keys that verify tokens: none when a shared secret signs them.
    pub fn jwks(&self) -> serde_json::Value {
        if self.shared.is_some() {
            serde_json::json!({"keys": []})
        } else {
            self.keys.jwks()
        }
    }

    /// Consults (and records to) `revocations` from now on.
    #[must_use]
    pub fn with_revocations(mut self, revocations: Revocations) -> Self {
        self.revocations = revocations;
        self
    }

    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Signs an access token for `client`'s user with `scopes`.
    ///
    /// # Errors
    /// Only if signing itself fails (a corrupt key).
    pub fn issue(
        &self,
        tenant_id: &str,
        user_id: &str,
        client_id: &str,
        scopes: &[Scope],
    ) -> Result<(String, Claims), jsonwebtoken::errors::Error> {
        self.issue_with(
            tenant_id,
            user_id,
            client_id,
            scopes,
            uuid::Uuid::new_v4().to_string(),
            now_secs() + self.ttl_secs,
        )
    }

    /// Signs an access token whose `jti` and `exp` were chosen beforehand.
    ///
    /// # Errors
    /// Only if signing itself fails (a corrupt key).
    pub fn issue_with(
        &self,
        tenant_id: &str,
        user_id: &str,
        client_id: &str,
        scopes: &[Scope],
        jti: String,
        exp: u64,
    ) -> Result<(String, Claims), jsonwebtoken::errors::Error> {
        let now = now_secs();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user_id.to_owned(),
            tenant_id: tenant_id.to_owned(),
            client_id: client_id.to_owned(),
            scope: Scope::join(scopes),
            iat: now,
            nbf: now,
            exp,
            jti,
        };
        let mut header = Header::new(self.algorithm());
        let token = if let Some((shared, _)) = &self.shared {
            header.kid = Some(SHARED_KID.to_owned());
            jsonwebtoken::encode(&header, &claims, shared)?
        } else {
            let (kid, key) = self
                .keys
                .signing()
                .ok_or(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat)?;
            header.kid = Some(kid);
            jsonwebtoken::encode(&header, &claims, &key)?
        };
        Ok((token, claims))
    }

    /// Verifies a bearer token, revocation included.
    ///
    /// # Errors
    /// Why the token is refused.
    pub async fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        let principal = self.verify_signed(token).await?;
        if self.revocations.is_revoked(&principal.jti).await {
            return Err(TokenError::Revoked);
        }
        Ok(principal)
    }

    /// Verifies a token's signature and claims, not whether it was revoked.
    ///
    /// # Errors
    /// Why the token is refused.
    pub async fn verify_signed(&self, token: &str) -> Result<Principal, TokenError> {
        let now = now_secs();
        if let Some((principal, kid)) = self.cached(token) {
            if principal.expires_at + LEEWAY_SECS <= now {
                return Err(TokenError::Expired);
            }
            if self.shared.is_none() && !self.keys.is_current(&kid) {
                return Err(TokenError::UnknownKey);
            }
            return Ok(principal);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != self.algorithm() {
            return Err(TokenError::Invalid);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let verifying;
        let decoding = if let Some((_, shared)) = &self.shared {
            shared
        } else {
            verifying = self
                .keys
                .verifying(&kid)
                .await
                .ok_or(TokenError::UnknownKey)?;
            &verifying.decoding
        };
        let data = jsonwebtoken::decode::<Claims>(token, decoding, &self.validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                jsonwebtoken::errors::ErrorKind::InvalidToken
                | jsonwebtoken::errors::ErrorKind::Base64(_)
                | jsonwebtoken::errors::ErrorKind::Json(_)
                | jsonwebtoken::errors::ErrorKind::Utf8(_) => TokenError::Malformed,
                _ => TokenError::Invalid,
            },
        )?;
        let principal = Principal::from_claims(&data.claims).ok_or(TokenError::Invalid)?;
        // Only tokens already valid (nbf passed) are remembered, so the cache never has to
        // re-check `nbf`.
        if data.claims.nbf <= now {
            self.remember(token, &principal, kid);
        }
        Ok(principal)
    }

    fn cached(&self, token: &str) -> Option<(Principal, String)> {
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(token)
            .cloned()
    }

    fn remember(&self, token: &str, principal: &Principal, kid: String) {
        let mut cache = self
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= CACHE_CAPACITY {
            // Dropping everything is crude but bounded, and costs one verification per live token.
            cache.clear();
        }
        cache.insert(token.to_owned(), (principal.clone(), kid));
    }
}

#[cfg(test)]
mod tests {
    use super::Scope;

    #[test]
    fn scope_lists_parse_dedupe_and_sort() {
        assert_eq!(
            Scope::parse_list("write read  write"),
            Ok(vec![Scope::Read, Scope::Write])
        );
        assert_eq!(
            Scope::parse_list("read superuser"),
            Err("superuser".to_owned())
        );
        assert_eq!(Scope::join(&[Scope::Read, Scope::Audit]), "read audit");
    }
}
