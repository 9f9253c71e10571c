//! etcd's gRPC errors: exact codes and messages (clientv3 recognises errors
//! by their message string), and the mapping from internal errors.

use tonic::{Code, Status};

use crate::auth::AuthError;
use crate::lease::LeaseError;
use crate::member::MemberError;
use crate::mvcc::MvccError;

/// One etcd gRPC error: its code and exact message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EtcdError {
    pub code: Code,
    pub message: &'static str,
}

impl EtcdError {
    pub fn status(self) -> Status {
        Status::new(self.code, self.message)
    }
}

impl From<EtcdError> for Status {
    fn from(e: EtcdError) -> Self {
        e.status()
    }
}

macro_rules! etcd_errors {
    ($($name:ident = $code:ident, $msg:literal;)*) => {
        $(pub const $name: EtcdError = EtcdError { code: Code::$code, message: $msg };)*
    };
}

etcd_errors! {
    EMPTY_KEY = InvalidArgument, "etcdserver: key is not provided";
    KEY_NOT_FOUND = InvalidArgument, "etcdserver: key not found";
    VALUE_PROVIDED = InvalidArgument, "etcdserver: value is provided";
    LEASE_PROVIDED = InvalidArgument, "etcdserver: lease is provided";
    TOO_MANY_OPS = InvalidArgument, "etcdserver: too many operations in txn request";
    DUPLICATE_KEY = InvalidArgument, "etcdserver: duplicate key given in txn request";
    INVALID_SORT_OPTION = InvalidArgument, "etcdserver: invalid sort option";
    COMPACTED = OutOfRange, "etcdserver: mvcc: required revision has been compacted";
    FUTURE_REV = OutOfRange, "etcdserver: mvcc: required revision is a future revision";
    REQUEST_TOO_LARGE = InvalidArgument, "etcdserver: request is too large";
    LEASE_NOT_FOUND = NotFound, "etcdserver: requested lease not found";
    LEASE_EXIST = FailedPrecondition, "etcdserver: lease already exists";
    LEASE_TTL_TOO_LARGE = OutOfRange, "etcdserver: too large lease TTL";
    NO_LEADER = Unavailable, "etcdserver: no leader";
    REQUEST_TIMEOUT = Unavailable, "etcdserver: request timed out";
    REQUEST_TIMEOUT_LEADER_FAIL = Unavailable, "etcdserver: request timed out, possibly due to previous leader failure";
    LEADER_CHANGED = Unavailable, "etcdserver: leader changed";
    STOPPED = Unavailable, "etcdserver: server stopped";
    NOT_LEADER = FailedPrecondition, "etcdserver: not leader";
    BAD_LEADER_TRANSFEREE = FailedPrecondition, "etcdserver: bad leader transferee";
    MEMBER_NOT_FOUND = NotFound, "etcdserver: member not found";
    MEMBER_EXIST = FailedPrecondition, "etcdserver: member ID already exist";
    PEER_URL_EXIST = FailedPrecondition, "etcdserver: Peer URLs already exists";
    MEMBER_BAD_URLS = InvalidArgument, "etcdserver: given member URLs are invalid";
    MEMBER_NOT_LEARNER = FailedPrecondition, "etcdserver: can only promote a learner member";
    LEARNER_NOT_READY = FailedPrecondition, "etcdserver: can only promote a learner member which is in sync with leader";
    TOO_MANY_LEARNERS = FailedPrecondition, "etcdserver: too many learner members in cluster";
    LEADER_TRANSFER_TIMEOUT = Unknown, "etcdserver: request timed out, leader transfer took too long";
    ROOT_USER_NOT_EXIST = FailedPrecondition, "etcdserver: root user does not exist";
    ROOT_ROLE_NOT_EXIST = FailedPrecondition, "etcdserver: root user does not have root role";
    USER_ALREADY_EXIST = FailedPrecondition, "etcdserver: user name already exists";
    USER_EMPTY = InvalidArgument, "etcdserver: user name is empty";
    USER_NOT_FOUND = FailedPrecondition, "etcdserver: user name not found";
    ROLE_ALREADY_EXIST = FailedPrecondition, "etcdserver: role name already exists";
    ROLE_NOT_FOUND = FailedPrecondition, "etcdserver: role name not found";
    ROLE_EMPTY = InvalidArgument, "etcdserver: role name is empty";
    AUTH_FAILED = InvalidArgument, "etcdserver: authentication failed, invalid user ID or password";
    PERMISSION_NOT_GIVEN = InvalidArgument, "etcdserver: permission not given";
    PERMISSION_DENIED = PermissionDenied, "etcdserver: permission denied";
    ROLE_NOT_GRANTED = FailedPrecondition, "etcdserver: role is not granted to the user";
    PERMISSION_NOT_GRANTED = FailedPrecondition, "etcdserver: permission is not granted to the role";
    AUTH_NOT_ENABLED = FailedPrecondition, "etcdserver: authentication is not enabled";
    INVALID_AUTH_TOKEN = Unauthenticated, "etcdserver: invalid auth token";
    INVALID_AUTH_MGMT = InvalidArgument, "etcdserver: invalid auth management";
    AUTH_OLD_REVISION = InvalidArgument, "etcdserver: revision of auth store is old";
    // Outside etcd's map: code Unknown with the internal message.
    NO_PASSWORD_USER = Unknown, "auth: authentication failed, password was given for no password user";
    VERIFY_ONLY = Unknown, "auth: token signing attempted with verify-only key";
    // Not an etcd error: concord limits user keys (see mvcc::USER_KEY_BYTES_MAX).
    KEY_TOO_LARGE = InvalidArgument, "etcdserver: key is too large";
}

/// The gRPC status for an mvcc error surfaced to a client.
pub fn mvcc_status(e: &MvccError) -> Status {
    match e {
        MvccError::Compacted => COMPACTED.status(),
        MvccError::FutureRev => FUTURE_REV.status(),
        MvccError::KeyNotFound => KEY_NOT_FOUND.status(),
        MvccError::LeaseNotFound => LEASE_NOT_FOUND.status(),
        MvccError::KeyTooLarge { .. } => KEY_TOO_LARGE.status(),
        other => {
            tracing::error!(error = %other, "storage failure while serving a request");
            Status::new(Code::Internal, format!("etcdserver: {other}"))
        }
    }
}

/// The gRPC status for a lessor error surfaced to a client.
pub fn lease_status(e: LeaseError) -> Status {
    match e {
        LeaseError::NotFound => LEASE_NOT_FOUND.status(),
        LeaseError::Exists => LEASE_EXIST.status(),
        LeaseError::TtlTooLarge => LEASE_TTL_TOO_LARGE.status(),
        LeaseError::NotPrimary => NOT_LEADER.status(),
    }
}

impl From<LeaseError> for Status {
    fn from(e: LeaseError) -> Self {
        lease_status(e)
    }
}

/// The gRPC status for an auth error.
pub fn auth_status(e: AuthError) -> Status {
    match e {
        AuthError::RootUserNotExist => ROOT_USER_NOT_EXIST,
        AuthError::RootRoleNotExist => ROOT_ROLE_NOT_EXIST,
        AuthError::UserAlreadyExist => USER_ALREADY_EXIST,
        AuthError::UserEmpty => USER_EMPTY,
        AuthError::UserNotFound => USER_NOT_FOUND,
        AuthError::RoleAlreadyExist => ROLE_ALREADY_EXIST,
        AuthError::RoleNotFound => ROLE_NOT_FOUND,
        AuthError::RoleEmpty => ROLE_EMPTY,
        AuthError::AuthFailed => AUTH_FAILED,
        AuthError::NoPasswordUser => NO_PASSWORD_USER,
        AuthError::PermissionNotGiven => PERMISSION_NOT_GIVEN,
        AuthError::PermissionDenied => PERMISSION_DENIED,
        AuthError::RoleNotGranted => ROLE_NOT_GRANTED,
        AuthError::PermissionNotGranted => PERMISSION_NOT_GRANTED,
        AuthError::AuthNotEnabled => AUTH_NOT_ENABLED,
        AuthError::InvalidAuthToken => INVALID_AUTH_TOKEN,
        AuthError::InvalidAuthMgmt => INVALID_AUTH_MGMT,
        AuthError::AuthOldRevision => AUTH_OLD_REVISION,
        AuthError::VerifyOnly => VERIFY_ONLY,
    }
    .status()
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Self {
        auth_status(e)
    }
}

/// The gRPC status for a member error surfaced to a client.
pub fn member_status(e: &MemberError) -> Status {
    match e {
        MemberError::RequestTooLarge { .. } => REQUEST_TOO_LARGE.status(),
        MemberError::Stopped => STOPPED.status(),
        MemberError::Mvcc(m) => mvcc_status(m),
        MemberError::Lease(l) => lease_status(*l),
        MemberError::NoLeader => NO_LEADER.status(),
        MemberError::NotLeader => NOT_LEADER.status(),
        MemberError::LeaderChanged => LEADER_CHANGED.status(),
        MemberError::BadTransferee => BAD_LEADER_TRANSFEREE.status(),
        MemberError::TransferTimeout => LEADER_TRANSFER_TIMEOUT.status(),
        MemberError::Timeout => REQUEST_TIMEOUT.status(),
        MemberError::TimeoutLeaderFail => REQUEST_TIMEOUT_LEADER_FAIL.status(),
        MemberError::Auth(a) => auth_status(*a),
        other => {
            tracing::error!(error = %other, "member failure while serving a request");
            STOPPED.status()
        }
    }
}

impl From<MemberError> for Status {
    fn from(e: MemberError) -> Self {
        member_status(&e)
    }
}

impl From<MvccError> for Status {
    fn from(e: MvccError) -> Self {
        mvcc_status(&e)
    }
}
