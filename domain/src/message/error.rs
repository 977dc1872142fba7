//! Why a message command was refused, kept apart from the directory being unreachable.

use crate::DirectoryError;

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("this message_id was already used for different content")]
    IdConflict,
    /// Unknown conversation, or the sender is not a member of it.
    #[error("conversation not found")]
    ConversationNotFound,
    /// Unknown message, or the caller cannot see it.
    #[error("message not found")]
    NotFound,
    #[error("text must not be empty")]
    EmptyText,
    #[error("text is {got} bytes, the limit is {max}")]
    TextTooLong { max: usize, got: usize },
    #[error("text must not contain NUL characters")]
    TextHasNul,
    #[error("the file is not ready to be sent")]
    FileNotReady,
    #[error("only a recipient can report delivery or reading, not the sender")]
    NotARecipient,
    #[error(transparent)]
    Directory(#[from] DirectoryError),
}

// Test frameworks compare errors; the directory failure is compared by kind only.
impl PartialEq for MessageError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::TextTooLong { max: a, got: b }, Self::TextTooLong { max: c, got: d }) => {
                a == c && b == d
            }
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}
