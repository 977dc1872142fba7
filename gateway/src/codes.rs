//! Every error code the API can answer, each declared once with its wire name and its status.
//!
//! [`ErrorCode`] is the `code` of a problem+json answer (everything outside `/auth/*`);
//! [`OAuthCode`] is the `error` of an OAuth 2.0 answer of `/auth/*` (RFC 6749 §5.2, RFC 7009).
//! Clients match on these names, so a name never changes once served. The OpenAPI document
//! served at `/openapi.json` lists them from here (see `routes::ops`), so it cannot drift.

use warp::http::StatusCode;

/// Declares a code enum: its variants, their wire names and statuses, and `ALL`, so that the
/// list the OpenAPI document is given always holds every variant.
macro_rules! codes {
    (
        $(#[$meta:meta])*
        pub enum $enum:ident {
            $( $(#[$doc:meta])* $variant:ident = ($name:literal, $status:ident), )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $enum {
            $( $(#[$doc])* $variant, )+
        }

        impl $enum {
            /// Every code, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The snake_case name clients see and match on.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)+
                }
            }

            /// The HTTP status every answer with this code has.
            pub const fn status(self) -> StatusCode {
                match self {
                    $(Self::$variant => StatusCode::$status,)+
                }
            }

            /// The code with wire name `name`, if there is one.
            pub fn parse(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|code| code.as_str() == name)
            }
        }

        impl std::fmt::Display for $enum {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $enum {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
    };
}

codes! {
    /// The `code` of a problem+json answer.
    pub enum ErrorCode {
        /// One or more fields are invalid; `errors` names them.
        ValidationFailed = ("validation_failed", BAD_REQUEST),
        /// The body is not JSON (or is missing where one is required).
        MalformedJson = ("malformed_json", BAD_REQUEST),
        /// The connection failed while the body was being read.
        BodyUnreadable = ("body_unreadable", BAD_REQUEST),
        InvalidQuery = ("invalid_query", BAD_REQUEST),
        InvalidHeader = ("invalid_header", BAD_REQUEST),
        MissingHeader = ("missing_header", BAD_REQUEST),
        /// A `cursor` this API did not issue.
        InvalidCursor = ("invalid_cursor", BAD_REQUEST),
        InvalidIdempotencyKey = ("invalid_idempotency_key", BAD_REQUEST),
        DuplicateMember = ("duplicate_member", BAD_REQUEST),
        /// The creator of a conversation must be one of its members.
        CallerNotMember = ("caller_not_member", BAD_REQUEST),
        PrivateNeedsTwoMembers = ("private_needs_two_members", BAD_REQUEST),
        GroupSizeOutOfRange = ("group_size_out_of_range", BAD_REQUEST),
        /// Members of a private conversation cannot be added or removed.
        PrivateMembersFixed = ("private_members_fixed", BAD_REQUEST),
        /// A file message names a file whose upload is not completed.
        FileNotReady = ("file_not_ready", BAD_REQUEST),
        /// `up_to_seq` beyond the conversation's last message.
        SeqOutOfRange = ("seq_out_of_range", BAD_REQUEST),
        /// `GET /ws` without a WebSocket handshake.
        WebsocketUpgradeRequired = ("websocket_upgrade_required", BAD_REQUEST),
        /// Missing, malformed, expired or revoked bearer token.
        InvalidToken = ("invalid_token", UNAUTHORIZED),
        InsufficientScope = ("insufficient_scope", FORBIDDEN),
        /// A member acting beyond its rights (removing another member without being allowed).
        NotAllowed = ("not_allowed", FORBIDDEN),
        /// Only a recipient of a message reports its status.
        NotARecipient = ("not_a_recipient", FORBIDDEN),
        /// No such route.
        NotFound = ("not_found", NOT_FOUND),
        ConversationNotFound = ("conversation_not_found", NOT_FOUND),
        MemberNotFound = ("member_not_found", NOT_FOUND),
        MessageNotFound = ("message_not_found", NOT_FOUND),
        MethodNotAllowed = ("method_not_allowed", METHOD_NOT_ALLOWED),
        /// The `conversation_id` exists with different content.
        ConversationIdConflict = ("conversation_id_conflict", CONFLICT),
        GroupFull = ("group_full", CONFLICT),
        /// The `message_id` exists with different content.
        MessageIdConflict = ("message_id_conflict", CONFLICT),
        /// The `Idempotency-Key` was used for a different request.
        IdempotencyKeyReused = ("idempotency_key_reused", CONFLICT),
        /// The `Idempotency-Key`'s first request is still running.
        IdempotencyKeyInUse = ("idempotency_key_in_use", CONFLICT),
        PayloadTooLarge = ("payload_too_large", PAYLOAD_TOO_LARGE),
        UnsupportedMediaType = ("unsupported_media_type", UNSUPPORTED_MEDIA_TYPE),
        RateLimited = ("rate_limited", TOO_MANY_REQUESTS),
        InternalError = ("internal_error", INTERNAL_SERVER_ERROR),
        /// `min_position` not reached by the read models in time.
        ProjectionLagging = ("projection_lagging", SERVICE_UNAVAILABLE),
        StoreUnavailable = ("store_unavailable", SERVICE_UNAVAILABLE),
        /// The request could not be recorded (idempotency storage failed).
        TemporarilyUnavailable = ("temporarily_unavailable", SERVICE_UNAVAILABLE),
        /// Too many concurrent changes to one stream.
        Contention = ("contention", SERVICE_UNAVAILABLE),
    }
}

codes! {
    /// The `error` of an OAuth 2.0 answer of `/auth/*`.
    pub enum OAuthCode {
        InvalidRequest = ("invalid_request", BAD_REQUEST),
        InvalidGrant = ("invalid_grant", BAD_REQUEST),
        InvalidScope = ("invalid_scope", BAD_REQUEST),
        UnsupportedGrantType = ("unsupported_grant_type", BAD_REQUEST),
        /// RFC 7009 §2.2.1: a `token_type_hint` the server does not know.
        UnsupportedTokenType = ("unsupported_token_type", BAD_REQUEST),
        /// Answered with `WWW-Authenticate: Basic`.
        InvalidClient = ("invalid_client", UNAUTHORIZED),
        /// Too many failed client authentications; `Retry-After` says for how long.
        SlowDown = ("slow_down", TOO_MANY_REQUESTS),
        TemporarilyUnavailable = ("temporarily_unavailable", SERVICE_UNAVAILABLE),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn snake_case(name: &str) -> bool {
        !name.is_empty()
            && !name.starts_with('_')
            && !name.ends_with('_')
            && !name.contains("__")
            && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    }

    #[test]
    fn wire_names_are_unique_snake_case_and_parse_back() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            assert!(snake_case(code.as_str()), "{code}");
            assert!(seen.insert(code.as_str()), "{code} is declared twice");
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
        let mut seen = HashSet::new();
        for code in OAuthCode::ALL {
            assert!(snake_case(code.as_str()), "{code}");
            assert!(seen.insert(code.as_str()), "{code} is declared twice");
            assert_eq!(OAuthCode::parse(code.as_str()), Some(*code));
        }
    }

    #[test]
    fn codes_serialise_as_their_wire_names() {
        assert_eq!(
            serde_json::to_value(ErrorCode::IdempotencyKeyReused).ok(),
            Some(serde_json::json!("idempotency_key_reused"))
        );
        assert_eq!(
            serde_json::to_value(OAuthCode::SlowDown).ok(),
            Some(serde_json::json!("slow_down"))
        );
    }
}
