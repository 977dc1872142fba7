//! Identifier value types. Parsing is the only way to build one, so every id in a command or an
//! event has already been checked.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must be 1 to {max} characters long")]
    Length { max: usize },
    #[error("may contain only letters, digits and {allowed}")]
    Charset { allowed: &'static str },
    #[error("must be a UUID")]
    NotUuid,
}

fn check(value: &str, max: usize, extra: &'static str) -> Result<(), IdError> {
    if value.is_empty() || value.len() > max {
        return Err(IdError::Length { max });
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || extra.as_bytes().contains(&b))
    {
        return Err(IdError::Charset { allowed: extra });
    }
    Ok(())
}

/// A tenant: the unit of isolation. Aggregate ids are prefixed with it, so two tenants never share
/// a stream. No `:` is allowed, which keeps `tenant:id` stream names unambiguous.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    pub const MAX_LEN: usize = 64;

    /// # Errors
    /// When the value is empty, longer than 64 characters or outside `[A-Za-z0-9._-]`.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        check(value, Self::MAX_LEN, "._-")?;
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The stream id of an aggregate of this tenant.
    pub fn stream_id(&self, id: impl fmt::Display) -> String {
        format!("{}:{id}", self.0)
    }
}

/// A user: one of the tenant's own identities (`[A-Za-z0-9._@:-]`, 1 to 128 characters). A user
/// needs no registered client to be a member or to receive messages.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    pub const MAX_LEN: usize = 128;

    /// # Errors
    /// When the value is empty, longer than 128 characters or outside `[A-Za-z0-9._@:-]`.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        check(value, Self::MAX_LEN, "._@:-")?;
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_id_impls {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $t {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        // Deserialising re-validates, so an id read back from anywhere is as good as a parsed one.
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}
string_id_impls!(TenantId);
string_id_impls!(UserId);

macro_rules! uuid_id {
    ($(#[$doc:meta])* $t:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $t(Uuid);

        impl $t {
            /// A new, time-ordered id (UUID v7) for callers that did not choose one.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }

            /// # Errors
            /// When the value is not a UUID in any of its text forms.
            pub fn parse(value: &str) -> Result<Self, IdError> {
                Uuid::parse_str(value).map(Self).map_err(|_| IdError::NotUuid)
            }
        }

        impl From<Uuid> for $t {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl fmt::Display for $t {
            /// Canonical lowercase hyphenated form, as the API promises.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl FromStr for $t {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}
uuid_id!(
    /// A conversation's id; the stream id of its [`crate::Conversation`] aggregate within a tenant.
    ConversationId
);
uuid_id!(
    /// A message's id, chosen by the client so that a retried send is the same message.
    MessageId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_accept_the_documented_charset_only() {
        assert!(UserId::parse("alice.b-c_d@example.com:42").is_ok());
        assert_eq!(UserId::parse(""), Err(IdError::Length { max: 128 }));
        assert_eq!(
            UserId::parse(&"a".repeat(129)),
            Err(IdError::Length { max: 128 })
        );
        assert!(UserId::parse(&"a".repeat(128)).is_ok());
        assert!(matches!(
            UserId::parse("al ice"),
            Err(IdError::Charset { .. })
        ));
        assert!(matches!(
            UserId::parse("ålice"),
            Err(IdError::Charset { .. })
        ));
    }

    #[test]
    fn tenant_ids_exclude_the_stream_separator() {
        assert!(TenantId::parse("acme-eu.1").is_ok());
        assert!(matches!(
            TenantId::parse("a:b"),
            Err(IdError::Charset { .. })
        ));
        let tenant = TenantId::parse("acme").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tenant.stream_id("x"), "acme:x");
    }

    #[test]
    fn uuid_ids_print_canonical_lowercase() {
        let id = MessageId::parse("6A1F0B7E-3F3C-4A52-8D0E-2B1B9C7F4E11")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(id.to_string(), "6a1f0b7e-3f3c-4a52-8d0e-2b1b9c7f4e11");
        assert_eq!(ConversationId::parse("nope"), Err(IdError::NotUuid));
    }

    #[test]
    fn deserialising_revalidates() {
        assert!(serde_json::from_str::<UserId>("\"bad id\"").is_err());
        assert!(serde_json::from_str::<UserId>("\"bob\"").is_ok());
    }
}
