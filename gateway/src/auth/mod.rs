//! OAuth 2.0 client credentials and the access tokens they buy.
//!
//! Clients are registered by the operator (`chat4all clients create`); each acts as one user of
//! one tenant with a set of scopes. Access tokens are EdDSA (Ed25519) JWTs whose header names the
//! signing key (`kid`), so keys can rotate without invalidating live tokens. Verification pins
//! the algorithm and checks `iss`, `aud`, `exp` and `nbf` (30 s leeway), then the revocation
//! list. Clients also get opaque refresh tokens, rotated on every use ([`refresh`]).

pub(crate) mod clients;
mod keys;
pub mod refresh;
pub mod revocations;
mod tokens;

pub use clients::{create_client, ClientRecord, NewClient};
pub use keys::{rotate_key, KeyRing};
pub use tokens::{now_secs, Claims, Principal, Scope, TokenError, TokenService, LEEWAY_SECS};
