//! auth: etcd's authentication and role-based access control. Users,
//! roles and their key permissions, whether auth is enabled and the auth
//! revision are replicated state (changed only by applying log entries,
//! stored in the meta partition, carried by raft snapshots); tokens are each
//! member's own (assigned when an Authenticate entry is applied, so every
//! member knows every token, and forgotten after their TTL).
//!
//! - `state`: the replicated state, its changes and the permission checks
//!   (etcd's `auth/store.go`)
//! - `check`: which permissions a KV request needs
//! - `perms`: a user's merged permissions as interval unions (etcd's range
//!   permission cache)
//! - `token`: simple tokens (etcd's `simple_token.go`)
//! - `jwt`: JSON web tokens (etcd's `jwt.go`)

pub mod check;
#[cfg(not(madsim))]
pub mod jwt;
pub mod perms;
pub mod state;
#[cfg(test)]
mod state_tests;
pub mod token;

pub use perms::Access;
pub use state::AuthState;
pub use token::SimpleTokens;

pub const ROOT_USER: &str = "root";
pub const ROOT_ROLE: &str = "root";

/// Who sends a request, and the auth revision at which their credentials
/// were checked (etcd's `AuthInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthInfo {
    pub username: String,
    pub revision: u64,
}

/// etcd's auth errors (`auth: ...` inside etcd; the gRPC layer sends its
/// own messages, see `api::error::auth_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("root user does not exist")]
    RootUserNotExist,
    #[error("root user does not have root role")]
    RootRoleNotExist,
    #[error("user name already exists")]
    UserAlreadyExist,
    #[error("user name is empty")]
    UserEmpty,
    #[error("user name not found")]
    UserNotFound,
    #[error("role name already exists")]
    RoleAlreadyExist,
    #[error("role name not found")]
    RoleNotFound,
    #[error("role name is empty")]
    RoleEmpty,
    #[error("authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("authentication failed, password was given for no password user")]
    NoPasswordUser,
    #[error("permission not given")]
    PermissionNotGiven,
    #[error("permission denied")]
    PermissionDenied,
    #[error("role is not granted to the user")]
    RoleNotGranted,
    #[error("permission is not granted to the role")]
    PermissionNotGranted,
    #[error("authentication is not enabled")]
    AuthNotEnabled,
    #[error("invalid auth token")]
    InvalidAuthToken,
    #[error("invalid auth management")]
    InvalidAuthMgmt,
    #[error("revision of auth store is old")]
    AuthOldRevision,
    #[error("token signing attempted with verify-only key")]
    VerifyOnly,
}
