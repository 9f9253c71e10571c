//! cluster: membership records, member and cluster IDs, bootstrap.
//!
//! IDs are computed exactly as etcd computes them, so that the same flags give
//! the same IDs (`etcdctl member list` shows what etcd would):
//! - member ID = first 8 bytes (big-endian) of SHA-1 over the sorted peer URL
//!   strings, then the cluster token, then (MemberAdd only) the Unix seconds;
//! - cluster ID = first 8 bytes of SHA-1 over the sorted member IDs, each as
//!   8 big-endian bytes.
//!
//! The membership is persisted in the meta partition at bootstrap and read
//! back on restart, when the `--initial-*` flags are ignored.

use prost::Message;
use sha1::{Digest, Sha1};

use crate::proto::etcdserverpb::{Member, MemberListResponse};
use crate::storage::{Batch, Partition, ReadView, StorageError};

pub(crate) const META_CLUSTER_ID: &[u8] = b"cluster/id";
/// This member's own ID: per member, never part of a raft snapshot.
pub const META_LOCAL_ID: &[u8] = b"cluster/local_member";
pub(crate) const META_MEMBERS: &[u8] = b"cluster/members";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    #[error("couldn't find local name {0:?} in the initial cluster configuration")]
    LocalNameMissing(String),
    #[error("--initial-cluster has {cluster:?} but missing from --initial-advertise-peer-urls={advertised:?} (member {name:?})")]
    AdvertiseMismatch {
        name: String,
        cluster: Vec<String>,
        advertised: Vec<String>,
    },
    #[error("invalid --initial-cluster entry {0:?}: want name=url")]
    BadInitialCluster(String),
    #[error("member count is unequal: the same peer URL {0:?} appears for two names")]
    DuplicateUrl(String),
    #[error("cannot use ID 0 for a member")]
    ZeroId,
    #[error("member exists with identical ID {0:x}")]
    DuplicateId(u64),
    #[error("the existing cluster has no member with peer URLs {advertised:?}: add it first (etcdctl member add)")]
    NotAdded { advertised: Vec<String> },
    #[error("cannot fetch the cluster's members from any peer in --initial-cluster ({0}); with --initial-cluster-state existing a member of the running cluster must answer")]
    NoReachablePeer(String),
    #[error("corrupt membership record: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn sha1_u64(data: &[u8]) -> u64 {
    let digest = Sha1::digest(data);
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(b)
}

/// etcd's member ID: SHA-1 of sorted peer URLs + token (+ Unix seconds).
pub fn member_id(peer_urls: &[String], token: &str, unix_secs: Option<i64>) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let mut data: Vec<u8> = urls.concat().into_bytes();
    data.extend_from_slice(token.as_bytes());
    if let Some(t) = unix_secs {
        data.extend_from_slice(t.to_string().as_bytes());
    }
    sha1_u64(&data)
}

/// etcd's cluster ID: SHA-1 of the sorted member IDs, big-endian.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let data: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    sha1_u64(&data)
}

/// Parses `--initial-cluster`: `name=url,name=url2,...` into (name, urls)
/// in first-seen order; a name may repeat to give several URLs.
pub fn parse_initial_cluster(s: &str) -> Result<Vec<(String, Vec<String>)>, ClusterError> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = part
            .split_once('=')
            .filter(|(n, u)| !n.is_empty() && !u.is_empty())
            .ok_or_else(|| ClusterError::BadInitialCluster(part.to_string()))?;
        match out.iter_mut().find(|(n, _)| n == name) {
            Some((_, urls)) => urls.push(url.to_string()),
            None => out.push((name.to_string(), vec![url.to_string()])),
        }
    }
    Ok(out)
}

/// What bootstrap needs from the configuration.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub name: String,
    pub initial_cluster: String,
    pub token: String,
    pub advertise_peer_urls: Vec<String>,
    pub advertise_client_urls: Vec<String>,
    /// Joining an existing cluster: its membership as a member answered it
    /// (`--initial-cluster-state existing`), instead of a new cluster.
    pub existing: Option<Membership>,
}

/// The cluster as this member knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Membership {
    pub cluster_id: u64,
    pub local_id: u64,
    /// Sorted by ID.
    pub members: Vec<Member>,
}

impl Membership {
    /// A new cluster from the static `--initial-cluster` configuration.
    pub fn bootstrap(b: &Bootstrap) -> Result<Self, ClusterError> {
        let entries = parse_initial_cluster(&b.initial_cluster)?;
        let mut members: Vec<Member> = Vec::with_capacity(entries.len());
        let mut seen_urls: Vec<&str> = Vec::new();
        for (name, urls) in &entries {
            for u in urls {
                if seen_urls.contains(&u.as_str()) {
                    return Err(ClusterError::DuplicateUrl(u.clone()));
                }
                seen_urls.push(u);
            }
            let id = member_id(urls, &b.token, None);
            if id == 0 {
                return Err(ClusterError::ZeroId);
            }
            if members.iter().any(|m| m.id == id) {
                return Err(ClusterError::DuplicateId(id));
            }
            members.push(Member {
                id,
                name: name.clone(),
                peer_ur_ls: urls.clone(),
                client_ur_ls: Vec::new(),
                is_learner: false,
            });
        }
        let local = members
            .iter_mut()
            .find(|m| m.name == b.name)
            .ok_or_else(|| ClusterError::LocalNameMissing(b.name.clone()))?;
        let mut want = local.peer_ur_ls.clone();
        let mut have = b.advertise_peer_urls.clone();
        want.sort();
        have.sort();
        if want != have {
            return Err(ClusterError::AdvertiseMismatch {
                name: b.name.clone(),
                cluster: want,
                advertised: have,
            });
        }
        local.client_ur_ls = b.advertise_client_urls.clone();
        let local_id = local.id;
        members.sort_by_key(|m| m.id);
        let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
        Ok(Self {
            cluster_id: cluster_id(&ids),
            local_id,
            members,
        })
    }

    /// Joining an existing cluster: its member list (as one of its members
    /// answered), in which an earlier MemberAdd put this member, found by
    /// its advertised peer URLs.
    pub fn join(
        cluster_id: u64,
        members: Vec<Member>,
        name: &str,
        advertise_peer_urls: &[String],
    ) -> Result<Self, ClusterError> {
        let mut want = advertise_peer_urls.to_vec();
        want.sort();
        let mut members = members;
        let local = members
            .iter_mut()
            .find(|m| {
                let mut have = m.peer_ur_ls.clone();
                have.sort();
                have == want
            })
            .ok_or_else(|| ClusterError::NotAdded {
                advertised: want.clone(),
            })?;
        if local.name.is_empty() {
            local.name = name.to_string();
        }
        let local_id = local.id;
        members.sort_by_key(|m| m.id);
        Ok(Self {
            cluster_id,
            local_id,
            members,
        })
    }

    pub fn local(&self) -> Option<&Member> {
        self.members.iter().find(|m| m.id == self.local_id)
    }

    /// Adds the membership records to `batch`.
    pub fn save(&self, batch: &mut Batch) {
        batch.put(
            Partition::Meta,
            META_CLUSTER_ID.to_vec(),
            self.cluster_id.to_be_bytes().to_vec(),
        );
        batch.put(
            Partition::Meta,
            META_LOCAL_ID.to_vec(),
            self.local_id.to_be_bytes().to_vec(),
        );
        let list = MemberListResponse {
            header: None,
            members: self.members.clone(),
        };
        batch.put(Partition::Meta, META_MEMBERS.to_vec(), list.encode_to_vec());
    }

    /// The persisted membership, or `None` for a data dir never bootstrapped.
    pub fn load(view: &dyn ReadView) -> Result<Option<Self>, ClusterError> {
        let read_u64 = |key: &[u8]| -> Result<Option<u64>, ClusterError> {
            match view.get(Partition::Meta, key)? {
                None => Ok(None),
                Some(v) => {
                    let b: [u8; 8] = v.as_slice().try_into().map_err(|_| {
                        ClusterError::Corrupt(format!(
                            "{} is not 8 bytes",
                            String::from_utf8_lossy(key)
                        ))
                    })?;
                    Ok(Some(u64::from_be_bytes(b)))
                }
            }
        };
        let (Some(cluster_id), Some(local_id)) =
            (read_u64(META_CLUSTER_ID)?, read_u64(META_LOCAL_ID)?)
        else {
            return Ok(None);
        };
        let raw = view
            .get(Partition::Meta, META_MEMBERS)?
            .ok_or_else(|| ClusterError::Corrupt("member list missing".into()))?;
        let list = MemberListResponse::decode(raw.as_slice())
            .map_err(|e| ClusterError::Corrupt(format!("member list: {e}")))?;
        Ok(Some(Self {
            cluster_id,
            local_id,
            members: list.members,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(
        name: &str,
        cluster: &str,
        token: &str,
        adv: &[&str],
    ) -> Result<Membership, ClusterError> {
        Membership::bootstrap(&Bootstrap {
            existing: None,
            name: name.into(),
            initial_cluster: cluster.into(),
            token: token.into(),
            advertise_peer_urls: adv.iter().map(|s| s.to_string()).collect(),
            advertise_client_urls: vec!["http://localhost:2379".into()],
        })
    }

    #[test]
    fn etcd_default_ids() {
        // etcd's well-known defaults for `etcd` with no flags.
        let m = boot(
            "default",
            "default=http://localhost:2380",
            "etcd-cluster",
            &["http://localhost:2380"],
        )
        .unwrap();
        assert_eq!(format!("{:x}", m.local_id), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", m.cluster_id), "cdf818194e3a8c32");
    }

    #[test]
    fn three_members_sorted_and_local_found() {
        let c = "infra0=http://10.0.1.10:2380,infra1=http://10.0.1.11:2380,infra2=http://10.0.1.12:2380";
        let m = boot("infra1", c, "etcd-cluster-1", &["http://10.0.1.11:2380"]).unwrap();
        assert_eq!(m.members.len(), 3);
        assert!(m.members.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(m.local().unwrap().name, "infra1");
        let other = boot("infra1", c, "another-token", &["http://10.0.1.11:2380"]).unwrap();
        assert_ne!(
            m.cluster_id, other.cluster_id,
            "the token separates clusters"
        );
    }

    #[test]
    fn bootstrap_errors() {
        assert!(matches!(
            boot(
                "x",
                "default=http://localhost:2380",
                "t",
                &["http://localhost:2380"]
            ),
            Err(ClusterError::LocalNameMissing(_))
        ));
        assert!(matches!(
            boot(
                "default",
                "default=http://localhost:2380",
                "t",
                &["http://localhost:2390"]
            ),
            Err(ClusterError::AdvertiseMismatch { .. })
        ));
        assert!(matches!(
            boot("a", "a=http://h:1,b=http://h:1", "t", &["http://h:1"]),
            Err(ClusterError::DuplicateUrl(_))
        ));
        assert!(matches!(
            boot("a", "a", "t", &[]),
            Err(ClusterError::BadInitialCluster(_))
        ));
    }

    #[test]
    fn save_and_load() {
        let be = crate::storage::mem::MemBackend::new();
        assert!(Membership::load(&be).unwrap().is_none());
        let m = boot(
            "default",
            "default=http://localhost:2380",
            "etcd-cluster",
            &["http://localhost:2380"],
        )
        .unwrap();
        let mut b = Batch::new();
        m.save(&mut b);
        crate::storage::Backend::write(&be, b).unwrap();
        assert_eq!(Membership::load(&be).unwrap(), Some(m));
    }
}
