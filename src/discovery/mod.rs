//! discovery: how a new member finds the other members of its cluster when
//! `--initial-cluster` does not list them. Three ways, as etcd:
//! - `v2`: etcd's discovery URL protocol (`--discovery`): a directory in an
//!   etcd v2 keys store (discovery.etcd.io, or any etcd with `--enable-v2`);
//! - `v3`: etcd 3.6's v3 discovery (`--discovery-endpoints`,
//!   `--discovery-token`): keys under `/_etcd/registry/<token>/` in any etcd
//!   v3 API cluster (etcd, or another concord cluster);
//! - `srv`: DNS SRV records (`--discovery-srv`).
//!
//! Each ends in what static bootstrap starts from: an initial cluster string
//! (`name=url,...`) and the token the member and cluster IDs are computed
//! with. Only a member with an empty data dir discovers: a restart reads its
//! membership from its data dir and never contacts a registry.

#[cfg(madsim)]
pub mod sim_dns;
pub mod srv;
#[cfg(not(madsim))]
pub mod v2;
pub mod v3;

use std::time::Duration;

/// etcd's discovery errors; the registry protocols' own texts as etcd
/// prints them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    #[error("discovery: invalid URL")]
    InvalidUrl,
    #[error("discovery: invalid peer URL")]
    InvalidPeerUrl,
    #[error("discovery: size key is bad")]
    BadSizeKey,
    #[error("discovery: size key not found")]
    SizeNotFound,
    #[error("discovery: found duplicate id")]
    DuplicateId,
    #[error("discovery: found duplicate name")]
    DuplicateName,
    #[error("discovery: cluster is full")]
    FullCluster,
    #[error("discovery: too many retries")]
    TooManyRetries,
    #[error("discovery: bad discovery endpoint")]
    BadEndpoint,
    /// What the registry answered, as it said it.
    #[error("{0}")]
    Registry(String),
    /// DNS SRV discovery's errors (etcd's texts).
    #[error("{0}")]
    Srv(String),
}

/// What a discovery found: static bootstrap's inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// `name=url,...`, as `--initial-cluster`.
    pub initial_cluster: String,
    /// The token the member and cluster IDs are computed with.
    pub token: String,
    /// The TLS server name for https peers, instead of their hosts.
    pub peer_server_name: Option<String>,
    /// This member's peer URLs as the cluster names them, when they are
    /// not its advertised ones verbatim (DNS SRV matched them by address).
    pub local_peer_urls: Option<Vec<String>>,
}

/// etcd's `URLsMap.String()` of this member alone: `name=url` pairs for
/// its advertised peer URLs, sorted, comma-joined; the value it registers.
pub fn self_entry(name: &str, advertise_peer_urls: &[String]) -> String {
    let mut pairs: Vec<String> = advertise_peer_urls
        .iter()
        .map(|u| format!("{name}={u}"))
        .collect();
    pairs.sort();
    pairs.join(",")
}

/// Checks `name=url,...` as etcd's `types.NewURLsMap` does: every entry a
/// name and an http(s) URL with a host and port; returns the number of
/// distinct names.
pub fn distinct_names(initial_cluster: &str) -> Option<usize> {
    let entries = crate::cluster::parse_initial_cluster(initial_cluster).ok()?;
    for (_, urls) in &entries {
        for u in urls {
            let url = crate::config::Url::parse(u).ok()?;
            if !matches!(url.scheme.as_str(), "http" | "https") {
                return None;
            }
        }
    }
    Some(entries.len())
}

/// etcd's discovery retries: the n-th waits 2^min(n, 8) seconds (2 s up to
/// 256 s), with no jitter, up to 2^32 - 1 retries.
#[derive(Debug, Default)]
pub struct Backoff {
    retries: u64,
}

/// etcd's `maxExpoentialRetries`.
const MAX_EXPONENTIAL_RETRIES: u64 = 8;
/// etcd's `nRetries` (math.MaxUint32).
const RETRIES_MAX: u64 = u32::MAX as u64;

impl Backoff {
    /// Waits before the next retry, or gives up.
    pub async fn wait(&mut self, reason: &str, error: &str) -> Result<(), DiscoveryError> {
        if self.retries >= RETRIES_MAX {
            return Err(DiscoveryError::TooManyRetries);
        }
        self.retries += 1;
        let backoff = Duration::from_secs(1 << self.retries.min(MAX_EXPONENTIAL_RETRIES));
        tracing::warn!(
            reason,
            error,
            backoff_s = backoff.as_secs(),
            "retry connecting to discovery service"
        );
        tokio::time::sleep(backoff).await;
        Ok(())
    }

    /// After a step that succeeded (v3 starts counting again; v2 never
    /// does).
    pub fn reset(&mut self) {
        self.retries = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_entry_is_etcds_urls_map_string() {
        assert_eq!(
            self_entry("m1", &["http://b:2380".into(), "http://a:2380".into()]),
            "m1=http://a:2380,m1=http://b:2380"
        );
    }

    #[test]
    fn distinct_names_validates_urls() {
        assert_eq!(
            distinct_names("a=http://h:1,b=https://h:2,a=http://i:1"),
            Some(2)
        );
        assert_eq!(distinct_names("a=ftp://h:1"), None);
        assert_eq!(distinct_names("a=http://h"), None);
        assert_eq!(distinct_names("novalue"), None);
    }
}
