//! The Auth service: enabling auth, users, roles, permissions, and
//! Authenticate. Changes go through raft (passwords as bcrypt hashes only)
//! and need the root role once auth is enabled (checked by the applier);
//! the reads (status, get, list) are answered from the applied state after
//! a ReadIndex, with the same check here.

use super::caller::Credentials;
use tonic::{Request, Response, Status};

use super::caller::{self, sender};
use super::error;
use super::fill_header;
use crate::auth::{token, AuthInfo, AuthState, ROOT_ROLE};
use crate::member::{Applied, Handle};
use crate::proto::authpb::{permission, Permission};
use crate::proto::concordpb::{auth_request::Request as A, internal_request::Request as Internal};
use crate::proto::concordpb::{AuthRequest, Authenticate};
use crate::proto::etcdserverpb::auth_server::Auth;
use crate::proto::etcdserverpb::*;

pub struct AuthService {
    member: Handle,
    bcrypt_cost: u32,
}

impl AuthService {
    pub fn new(member: Handle, bcrypt_cost: u32) -> Self {
        Self {
            member,
            bcrypt_cost,
        }
    }

    /// Proposes an auth change as its sender; the applier checks it.
    async fn change<T>(&self, cred: &Credentials, r: A) -> Result<T, Status>
    where
        T: Default + HasHeader,
    {
        let req = Internal::Auth(AuthRequest { request: Some(r) });
        match caller::propose(&self.member, cred, req).await? {
            Applied::Auth { .. } => {
                let mut resp = T::default();
                fill_header(&self.member, resp.header_mut());
                Ok(resp)
            }
            other => {
                tracing::error!(
                    ?other,
                    "applier answered an auth change with another response"
                );
                Err(Status::internal("etcdserver: unexpected apply result"))
            }
        }
    }

    /// The applied auth state for a read, linearizable (after a
    /// ReadIndex) as etcd's reads through raft are; the sender, and
    /// whether it may read everything (the root role, or auth off).
    async fn read(
        &self,
        cred: &Credentials,
    ) -> Result<
        (
            std::sync::Arc<AuthState>,
            Option<AuthInfo>,
            Result<(), Status>,
        ),
        Status,
    > {
        self.member.read_index().await?;
        let info = sender(&self.member, cred).await?;
        let state = self.member.auth();
        let admin = state.check_admin(info.as_ref()).map_err(Status::from);
        Ok((state, info, admin))
    }

    /// The applied auth state for a read only root may do.
    async fn admin_read(&self, cred: &Credentials) -> Result<std::sync::Arc<AuthState>, Status> {
        let (state, _, admin) = self.read(cred).await?;
        admin?;
        Ok(state)
    }

    /// A bcrypt hash of `password` at `--bcrypt-cost`, off the async
    /// threads (hashing takes tens of milliseconds by design).
    async fn hash(&self, password: String) -> Result<String, Status> {
        let cost = self.bcrypt_cost;
        off_thread(move || bcrypt::hash(password, cost))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(format!("bcrypt: {e}")))
    }

    fn header(&self) -> Option<ResponseHeader> {
        let mut h = None;
        fill_header(&self.member, &mut h);
        h
    }
}

/// Responses that carry a header.
pub trait HasHeader {
    fn header_mut(&mut self) -> &mut Option<ResponseHeader>;
}

macro_rules! has_header {
    ($($t:ty),*) => {
        $(impl HasHeader for $t {
            fn header_mut(&mut self) -> &mut Option<ResponseHeader> {
                &mut self.header
            }
        })*
    };
}

has_header!(
    AuthEnableResponse,
    AuthDisableResponse,
    AuthUserAddResponse,
    AuthUserDeleteResponse,
    AuthUserChangePasswordResponse,
    AuthUserGrantRoleResponse,
    AuthUserRevokeRoleResponse,
    AuthRoleAddResponse,
    AuthRoleDeleteResponse,
    AuthRoleGrantPermissionResponse,
    AuthRoleRevokePermissionResponse
);

/// Runs CPU-heavy work (bcrypt) off the async threads; in the simulator,
/// which has no threads, in place.
async fn off_thread<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, String> {
    #[cfg(not(madsim))]
    return tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string());
    #[cfg(madsim)]
    Ok(f())
}

/// Compares a password with a stored bcrypt hash, off the async threads.
async fn verify(password: String, hash: Vec<u8>) -> bool {
    off_thread(move || {
        std::str::from_utf8(&hash)
            .ok()
            .is_some_and(|h| bcrypt::verify(password, h).unwrap_or(false))
    })
    .await
    .unwrap_or(false)
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        request: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        let (cred, r) = Credentials::split(request);
        let r = A::Enable(r);
        Ok(Response::new(self.change(&cred, r).await?))
    }

    async fn auth_disable(
        &self,
        request: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        let (cred, r) = Credentials::split(request);
        let r = A::Disable(r);
        Ok(Response::new(self.change(&cred, r).await?))
    }

    async fn auth_status(
        &self,
        request: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        let state = self.admin_read(&Credentials::of(&request)).await?;
        Ok(Response::new(AuthStatusResponse {
            header: self.header(),
            enabled: state.enabled(),
            auth_revision: state.revision(),
        }))
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let r = request.into_inner();
        self.member.read_index().await?;
        loop {
            let (hash, checked_at) = self.member.auth().password_hash(&r.name)?;
            if !verify(r.password.clone(), hash).await {
                return Err(error::AUTH_FAILED.status());
            }
            let prefix = token::new_prefix()
                .ok_or_else(|| Status::internal("no entropy source for an auth token"))?;
            let req = Internal::Auth(AuthRequest {
                request: Some(A::Authenticate(Authenticate {
                    name: r.name.clone(),
                    simple_token: prefix,
                })),
            });
            let token = match self.member.propose(req).await? {
                Applied::Auth { token } => token,
                other => {
                    tracing::error!(
                        ?other,
                        "applier answered Authenticate with another response"
                    );
                    return Err(Status::internal("etcdserver: unexpected apply result"));
                }
            };
            // The password was checked against the state at `checked_at`;
            // if it changed since, check again (etcd's loop).
            if self.member.auth().revision() == checked_at {
                return Ok(Response::new(AuthenticateResponse {
                    header: self.header(),
                    token,
                }));
            }
        }
    }

    async fn user_add(
        &self,
        request: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        let (cred, mut r) = Credentials::split(request);
        let no_password = r.options.is_some_and(|o| o.no_password);
        r.hashed_password = if no_password {
            String::new()
        } else {
            self.hash(std::mem::take(&mut r.password)).await?
        };
        r.password.clear();
        Ok(Response::new(self.change(&cred, A::UserAdd(r)).await?))
    }

    async fn user_get(
        &self,
        request: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        let (state, info, admin) = self.read(&Credentials::of(&request)).await?;
        let r = request.into_inner();
        // A user may read itself (etcd's authApplierV3.UserGet).
        if info.as_ref().is_none_or(|i| i.username != r.name) {
            admin?;
        }
        let user = state
            .user(&r.name)
            .ok_or_else(|| error::USER_NOT_FOUND.status())?;
        Ok(Response::new(AuthUserGetResponse {
            header: self.header(),
            roles: user.roles.clone(),
        }))
    }

    async fn user_list(
        &self,
        request: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        let state = self.admin_read(&Credentials::of(&request)).await?;
        Ok(Response::new(AuthUserListResponse {
            header: self.header(),
            users: state.user_names(),
        }))
    }

    async fn user_delete(
        &self,
        request: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let (cred, r) = Credentials::split(request);
        let r = A::UserDelete(r);
        Ok(Response::new(self.change(&cred, r).await?))
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let (cred, mut r) = Credentials::split(request);
        r.hashed_password = self.hash(std::mem::take(&mut r.password)).await?;
        Ok(Response::new(
            self.change(&cred, A::UserChangePassword(r)).await?,
        ))
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let (cred, r) = Credentials::split(request);
        let r = A::UserGrantRole(r);
        Ok(Response::new(self.change(&cred, r).await?))
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let (cred, r) = Credentials::split(request);
        let r = A::UserRevokeRole(r);
        Ok(Response::new(self.change(&cred, r).await?))
    }

    async fn role_add(
        &self,
        request: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        let (cred, r) = Credentials::split(request);
        let r = A::RoleAdd(r);
        Ok(Response::new(self.change(&cred, r).await?))
    }

    async fn role_get(
        &self,
        request: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        let (state, info, admin) = self.read(&Credentials::of(&request)).await?;
        let r = request.into_inner();
        // A user may read the roles it has (etcd's authApplierV3.RoleGet).
        if !state.has_role(info.as_ref(), &r.role) {
            admin?;
        }
        let role = state
            .role(&r.role)
            .ok_or_else(|| error::ROLE_NOT_FOUND.status())?;
        // etcd 3.5: the root role reads as read-write on every key.
        let perm = if r.role == ROOT_ROLE {
            vec![Permission {
                perm_type: permission::Type::Readwrite as i32,
                key: Vec::new(),
                range_end: vec![0],
            }]
        } else {
            role.key_permission.clone()
        };
        Ok(Response::new(AuthRoleGetResponse {
            header: self.header(),
            perm,
        }))
    }

    async fn role_list(
        &self,
        request: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        let state = self.admin_read(&Credentials::of(&request)).await?;
        Ok(Response::new(AuthRoleListResponse {
            header: self.header(),
            roles: state.role_names(),
        }))
    }

    async fn role_delete(
        &self,
        request: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let (cred, r) = Credentials::split(request);
        let r = A::RoleDelete(r);
        Ok(Response::new(self.change(&cred, r).await?))
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let (cred, r) = Credentials::split(request);
        let r = A::RoleGrantPermission(r);
        Ok(Response::new(self.change(&cred, r).await?))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let (cred, r) = Credentials::split(request);
        let r = A::RoleRevokePermission(r);
        Ok(Response::new(self.change(&cred, r).await?))
    }
}
