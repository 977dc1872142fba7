//! Who is acting, for which tenant, and under which trace: the facts every stored event keeps in
//! its metadata.

use std::collections::HashMap;

use chat4all_domain::{TenantId, UserId};
use chrono::{DateTime, SecondsFormat, Utc};

/// The caller of a command, as the gateway authenticated it.
#[derive(Debug, Clone)]
pub struct CommandContext {
    pub tenant: TenantId,
    pub actor: UserId,
    /// Holds the `admin` scope, which may remove any member of the tenant's conversations.
    pub is_admin: bool,
    /// W3C trace id (32 hex digits) of the request.
    pub trace_id: String,
    /// Ties together everything one business operation caused.
    pub correlation_id: String,
    /// What directly caused this command (the HTTP request id, or the event a worker reacted to).
    pub causation_id: String,
}

impl CommandContext {
    /// The metadata stored with every event of a command accepted at `at`.
    pub(crate) fn metadata(&self, at: DateTime<Utc>) -> HashMap<String, String> {
        HashMap::from([
            ("tenant_id".to_owned(), self.tenant.to_string()),
            ("actor".to_owned(), self.actor.to_string()),
            ("trace_id".to_owned(), self.trace_id.clone()),
            (
                "occurred_at".to_owned(),
                at.to_rfc3339_opts(SecondsFormat::Millis, true),
            ),
            ("correlation_id".to_owned(), self.correlation_id.clone()),
            ("causation_id".to_owned(), self.causation_id.clone()),
        ])
    }
}
