//! Why a conversation command was refused. These are answers, not failures: nothing was stored.

use crate::UserId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversationError {
    /// Unknown, or the actor is not a member: the two are deliberately indistinguishable.
    #[error("conversation not found")]
    NotFound,
    #[error("a conversation with this id already exists with different content")]
    AlreadyExists,
    #[error("member {0} is listed more than once")]
    DuplicateMember(UserId),
    #[error("the caller must be one of the members")]
    CreatorNotMember,
    #[error("a private conversation needs exactly 2 members, got {got}")]
    PrivateNeedsTwoMembers { got: usize },
    #[error("a group needs {min} to {max} members, got {got}")]
    GroupSize { min: usize, max: usize, got: usize },
    #[error("the members of a private conversation cannot change")]
    PrivateMembersFixed,
    #[error("the group already has the maximum of {max} members")]
    GroupFull { max: usize },
    #[error("{0} is not a member of this conversation")]
    MemberNotFound(UserId),
    #[error("only the member itself, the creator or an administrator may remove a member")]
    NotAllowed,
}
