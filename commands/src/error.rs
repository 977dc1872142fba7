//! The write side's boundary error: the domain said no, or the infrastructure failed.

use chat4all_domain::conversation::ConversationError;
use chat4all_domain::message::MessageError;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The conversation refused the command; nothing was stored.
    #[error(transparent)]
    Conversation(#[from] ConversationError),
    /// The message refused the command; nothing was stored.
    #[error(transparent)]
    Message(MessageError),
    /// A read horizon beyond the conversation's last message.
    #[error("up_to_seq {requested} is beyond the conversation's last message ({last})")]
    SeqOutOfRange { requested: u64, last: u64 },
    /// Other writers kept winning the race for the same stream; the caller may retry.
    #[error("the stream kept changing concurrently; gave up after {attempts} attempts")]
    Contention { attempts: u32 },
    /// The event store failed or could not be reached; nothing is known to be stored.
    #[error("event store unavailable")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<MessageError> for CommandError {
    fn from(err: MessageError) -> Self {
        match err {
            MessageError::Directory(e) => Self::Store(Box::new(e)),
            other => Self::Message(other),
        }
    }
}

impl From<sqlx::Error> for CommandError {
    fn from(err: sqlx::Error) -> Self {
        Self::Store(Box::new(err))
    }
}
