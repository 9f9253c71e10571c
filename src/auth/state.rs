//! The replicated auth state: users, roles, whether auth is enabled and the
//! auth revision, with etcd's rules for changing them (`auth/store.go`) and
//! its permission checks.
//!
//! The member holds the state behind an `Arc` and replaces it whole when an
//! auth entry is applied (copy on write; auth changes are rare), so checks
//! on the request path take no lock beyond cloning the `Arc`. Each user's
//! merged permissions are rebuilt with every change.
//!
//! Meta records: `auth/enabled` (1 B), `auth/revision` (8 B BE),
//! `auth/user/<name>` (authpb.User), `auth/role/<name>` (authpb.Role). A
//! store without them is at revision 1 with auth disabled, as etcd's.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use prost::Message;

use super::perms::{Access, UserPerms};
use super::{AuthError, AuthInfo, ROOT_ROLE, ROOT_USER};
use crate::proto::authpb::{Permission, Role, User, UserAddOptions};
use crate::proto::concordpb::auth_request::Request as AuthRequest;
use crate::storage::{prefix_range, Batch, Partition, ReadView, StorageError};

const META_ENABLED: &[u8] = b"auth/enabled";
const META_REVISION: &[u8] = b"auth/revision";
const META_USER: &[u8] = b"auth/user/";
const META_ROLE: &[u8] = b"auth/role/";

fn key(prefix: &[u8], name: &str) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

fn has_root_role(u: &User) -> bool {
    u.roles.iter().any(|r| r == ROOT_ROLE)
}

/// What a user may do: everything (root, or auth disabled) or what its
/// merged permissions allow.
#[derive(Debug, Clone, Copy)]
pub enum Permits<'a> {
    All,
    Some(&'a UserPerms),
}

impl Permits<'_> {
    pub fn check(&self, access: Access, key: &[u8], range_end: &[u8]) -> Result<(), AuthError> {
        match self {
            Permits::All => Ok(()),
            Permits::Some(p) if p.allows(access, key, range_end) => Ok(()),
            Permits::Some(_) => Err(AuthError::PermissionDenied),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuthState {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    perms: HashMap<String, Arc<UserPerms>>,
}

impl Default for AuthState {
    fn default() -> Self {
        Self {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
            perms: HashMap::new(),
        }
    }
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Engine(format!("auth record {what} is corrupt"))
}

impl AuthState {
    /// The state recorded in a backend view.
    pub fn load(view: &dyn ReadView) -> Result<Self, StorageError> {
        let mut s = Self::default();
        if let Some(v) = view.get(Partition::Meta, META_ENABLED)? {
            s.enabled = v.first() == Some(&1);
        }
        if let Some(v) = view.get(Partition::Meta, META_REVISION)? {
            s.revision = v
                .as_slice()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| corrupt("auth/revision"))?;
        }
        for item in view.scan(Partition::Meta, prefix_range(META_USER), false) {
            let (k, v) = item?;
            let name = String::from_utf8_lossy(&k[META_USER.len()..]).into_owned();
            let u = User::decode(v.as_slice()).map_err(|_| corrupt(&name))?;
            s.users.insert(name, u);
        }
        for item in view.scan(Partition::Meta, prefix_range(META_ROLE), false) {
            let (k, v) = item?;
            let name = String::from_utf8_lossy(&k[META_ROLE.len()..]).into_owned();
            let r = Role::decode(v.as_slice()).map_err(|_| corrupt(&name))?;
            s.roles.insert(name, r);
        }
        s.rebuild_perms();
        Ok(s)
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// User names, sorted.
    pub fn user_names(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    /// Role names, sorted.
    pub fn role_names(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    fn rebuild_perms(&mut self) {
        let roles = &self.roles;
        self.perms = self
            .users
            .iter()
            .map(|(name, u)| {
                let merged = UserPerms::merge(u.roles.iter().filter_map(|r| roles.get(r)));
                (name.clone(), Arc::new(merged))
            })
            .collect();
    }

    /// What the sender of a request may do on keys (etcd's `isOpPermitted`
    /// up to the interval check): no sender is `UserEmpty`, credentials
    /// checked at an older auth revision are `AuthOldRevision`, an unknown
    /// user is denied.
    pub fn permits(&self, info: Option<&AuthInfo>) -> Result<Permits<'_>, AuthError> {
        if !self.enabled {
            return Ok(Permits::All);
        }
        let info = match info {
            Some(i) if i.revision != 0 => i,
            _ => return Err(AuthError::UserEmpty),
        };
        if info.revision < self.revision {
            return Err(AuthError::AuthOldRevision);
        }
        let user = self
            .users
            .get(&info.username)
            .ok_or(AuthError::PermissionDenied)?;
        if has_root_role(user) {
            return Ok(Permits::All);
        }
        match self.perms.get(&info.username) {
            Some(p) => Ok(Permits::Some(p)),
            None => Err(AuthError::PermissionDenied),
        }
    }

    /// etcd's `IsAdminPermitted`: the sender has the root role.
    pub fn check_admin(&self, info: Option<&AuthInfo>) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let info = match info {
            Some(i) if !i.username.is_empty() => i,
            _ => return Err(AuthError::UserEmpty),
        };
        let user = self
            .users
            .get(&info.username)
            .ok_or(AuthError::UserNotFound)?;
        if has_root_role(user) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// Whether the sender has the role (etcd's `HasRole`).
    pub fn has_role(&self, info: Option<&AuthInfo>, role: &str) -> bool {
        info.and_then(|i| self.users.get(&i.username))
            .is_some_and(|u| u.roles.iter().any(|r| r == role))
    }

    /// etcd's `CheckPassword` before an Authenticate is proposed: the
    /// stored bcrypt hash to compare the password with, and the revision
    /// the check is valid at.
    pub fn password_hash(&self, name: &str) -> Result<(Vec<u8>, u64), AuthError> {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        let user = self.users.get(name).ok_or(AuthError::AuthFailed)?;
        if no_password(user) {
            return Err(AuthError::NoPasswordUser);
        }
        Ok((user.password.clone(), self.revision))
    }

    /// Whether the request needs the root role (etcd's
    /// `needAdminPermission`: every auth change but Authenticate).
    pub fn needs_admin(req: &AuthRequest) -> bool {
        !matches!(req, AuthRequest::Authenticate(_))
    }

    /// Applies one auth request, writing what changed into `batch`.
    /// Returns the user an Authenticate is for; `Ok(None)` otherwise.
    pub fn apply(
        &mut self,
        req: &AuthRequest,
        batch: &mut Batch,
    ) -> Result<Option<String>, AuthError> {
        match req {
            AuthRequest::Authenticate(a) => {
                if !self.enabled {
                    return Err(AuthError::AuthNotEnabled);
                }
                let user = self.users.get(&a.name).ok_or(AuthError::AuthFailed)?;
                if no_password(user) {
                    return Err(AuthError::AuthFailed);
                }
                return Ok(Some(a.name.clone()));
            }
            AuthRequest::Enable(_) => {
                if self.enabled {
                    return Ok(None);
                }
                let root = self
                    .users
                    .get(ROOT_USER)
                    .ok_or(AuthError::RootUserNotExist)?;
                if !has_root_role(root) {
                    return Err(AuthError::RootRoleNotExist);
                }
                self.enabled = true;
                batch.put(Partition::Meta, META_ENABLED.to_vec(), vec![1]);
                // etcd does not move the revision here: a request checked
                // while auth was off carries revision 0 and is refused.
                return Ok(None);
            }
            AuthRequest::Disable(_) => {
                if !self.enabled {
                    return Ok(None);
                }
                self.enabled = false;
                batch.put(Partition::Meta, META_ENABLED.to_vec(), vec![0]);
            }
            AuthRequest::UserAdd(r) => {
                if r.name.is_empty() {
                    return Err(AuthError::UserEmpty);
                }
                if self.users.contains_key(&r.name) {
                    return Err(AuthError::UserAlreadyExist);
                }
                let options = r.options.unwrap_or(UserAddOptions { no_password: false });
                let password = if options.no_password {
                    Vec::new()
                } else {
                    r.hashed_password.as_bytes().to_vec()
                };
                let u = User {
                    name: r.name.as_bytes().to_vec(),
                    password,
                    roles: Vec::new(),
                    options: Some(options),
                };
                self.put_user(batch, &r.name, u);
            }
            AuthRequest::UserDelete(r) => {
                if self.enabled && r.name == ROOT_USER {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                if self.users.remove(&r.name).is_none() {
                    return Err(AuthError::UserNotFound);
                }
                batch.delete(Partition::Meta, key(META_USER, &r.name));
            }
            AuthRequest::UserChangePassword(r) => {
                let mut u = self
                    .users
                    .get(&r.name)
                    .cloned()
                    .ok_or(AuthError::UserNotFound)?;
                u.password = r.hashed_password.as_bytes().to_vec();
                self.put_user(batch, &r.name, u);
            }
            AuthRequest::UserGrantRole(r) => {
                let mut u = self
                    .users
                    .get(&r.user)
                    .cloned()
                    .ok_or(AuthError::UserNotFound)?;
                if r.role != ROOT_ROLE && !self.roles.contains_key(&r.role) {
                    return Err(AuthError::RoleNotFound);
                }
                match u.roles.binary_search(&r.role) {
                    Ok(_) => return Ok(None),
                    Err(i) => u.roles.insert(i, r.role.clone()),
                }
                self.put_user(batch, &r.user, u);
            }
            AuthRequest::UserRevokeRole(r) => {
                if self.enabled && r.name == ROOT_USER && r.role == ROOT_ROLE {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                let mut u = self
                    .users
                    .get(&r.name)
                    .cloned()
                    .ok_or(AuthError::UserNotFound)?;
                let before = u.roles.len();
                u.roles.retain(|x| x != &r.role);
                if u.roles.len() == before {
                    return Err(AuthError::RoleNotGranted);
                }
                self.put_user(batch, &r.name, u);
            }
            AuthRequest::RoleAdd(r) => {
                if r.name.is_empty() {
                    return Err(AuthError::RoleEmpty);
                }
                if self.roles.contains_key(&r.name) {
                    return Err(AuthError::RoleAlreadyExist);
                }
                let role = Role {
                    name: r.name.as_bytes().to_vec(),
                    key_permission: Vec::new(),
                };
                self.put_role(batch, &r.name, role);
            }
            AuthRequest::RoleDelete(r) => {
                if self.enabled && r.role == ROOT_ROLE {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                if self.roles.remove(&r.role).is_none() {
                    return Err(AuthError::RoleNotFound);
                }
                batch.delete(Partition::Meta, key(META_ROLE, &r.role));
                let holders: Vec<(String, User)> = self
                    .users
                    .iter()
                    .filter(|(_, u)| u.roles.contains(&r.role))
                    .map(|(n, u)| (n.clone(), u.clone()))
                    .collect();
                for (name, mut u) in holders {
                    u.roles.retain(|x| x != &r.role);
                    self.put_user(batch, &name, u);
                }
            }
            AuthRequest::RoleGrantPermission(r) => {
                let mut role = self
                    .roles
                    .get(&r.name)
                    .cloned()
                    .ok_or(AuthError::RoleNotFound)?;
                let perm = r.perm.clone().ok_or(AuthError::PermissionNotGiven)?;
                grant(&mut role.key_permission, perm);
                self.put_role(batch, &r.name, role);
            }
            AuthRequest::RoleRevokePermission(r) => {
                let mut role = self
                    .roles
                    .get(&r.role)
                    .cloned()
                    .ok_or(AuthError::RoleNotFound)?;
                let before = role.key_permission.len();
                role.key_permission
                    .retain(|p| !(p.key == r.key && p.range_end == r.range_end));
                if role.key_permission.len() == before {
                    return Err(AuthError::PermissionNotGranted);
                }
                self.put_role(batch, &r.role, role);
            }
        }
        self.revision += 1;
        batch.put(
            Partition::Meta,
            META_REVISION.to_vec(),
            self.revision.to_be_bytes().to_vec(),
        );
        self.rebuild_perms();
        Ok(None)
    }

    fn put_user(&mut self, batch: &mut Batch, name: &str, u: User) {
        batch.put(Partition::Meta, key(META_USER, name), u.encode_to_vec());
        self.users.insert(name.to_string(), u);
    }

    fn put_role(&mut self, batch: &mut Batch, name: &str, r: Role) {
        batch.put(Partition::Meta, key(META_ROLE, name), r.encode_to_vec());
        self.roles.insert(name.to_string(), r);
    }
}

fn no_password(u: &User) -> bool {
    u.options.is_some_and(|o| o.no_password)
}

/// etcd's grant: a permission on the same key and range end replaces the
/// old one's type; others are kept sorted by key.
fn grant(perms: &mut Vec<Permission>, perm: Permission) {
    let i = perms.partition_point(|p| p.key < perm.key);
    if let Some(p) = perms.get_mut(i) {
        if p.key == perm.key && p.range_end == perm.range_end {
            p.perm_type = perm.perm_type;
            return;
        }
    }
    perms.insert(i, perm);
}
