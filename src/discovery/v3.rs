//! etcd 3.6's v3 discovery (`--discovery-endpoints`, `--discovery-token`):
//! the registry is any etcd v3 API cluster. Keys, under
//! `/_etcd/registry/<token>`:
//! - `/_config/size`: the cluster size, decimal;
//! - `/members/<member id hex>`: `name=url,...` of each registered member.
//!
//! 1. Check: the size, and the members by creation revision; a member not
//!    among the first `size` finds the cluster full.
//! 2. Register with a plain put (a restart before the bootstrap completed
//!    registers again under the same key: its creation revision stays).
//! 3. Check again; watch the members prefix from the revision of that read
//!    until `size` members are known.
//! 4. The first `size` values, joined with `,`, are the initial cluster;
//!    the discovery token is the token of the member and cluster IDs.
//!
//! Failed reads and puts are retried with etcd's back-off (the count starts
//! again after each success); a missing or bad size key is fatal at once.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Status};

use super::{Backoff, DiscoveryError, Found};
use crate::config::V3Discovery;
use crate::proto::etcdserverpb::auth_client::AuthClient;
use crate::proto::etcdserverpb::kv_client::KvClient;
use crate::proto::etcdserverpb::watch_client::WatchClient;
use crate::proto::etcdserverpb::{
    watch_request::RequestUnion, AuthenticateRequest, PutRequest, RangeRequest, WatchCreateRequest,
    WatchRequest,
};
use crate::transport::Dialer;

/// What this member registers and with which ID.
#[derive(Debug, Clone)]
pub struct Joiner {
    pub member_id: u64,
    pub name: String,
    pub advertise_peer_urls: Vec<String>,
}

/// The registry's keys of one token.
#[derive(Debug, Clone)]
pub struct Keys {
    pub size: String,
    pub members: String,
}

impl Keys {
    pub fn new(token: &str) -> Keys {
        let prefix = format!("/_etcd/registry/{token}");
        Keys {
            size: format!("{prefix}/_config/size"),
            members: format!("{prefix}/members"),
        }
    }

    pub fn member(&self, id: u64) -> String {
        format!("{}/{id:x}", self.members)
    }
}

/// The registered members: (key, value, creation revision), kept sorted by
/// creation revision.
#[derive(Debug, Default)]
struct Members(Vec<(String, String, i64)>);

impl Members {
    /// etcd's `clusterInfo.add`: skips what is not a member entry.
    fn add(&mut self, keys: &Keys, key: &[u8], value: &[u8], created: i64) {
        let key = String::from_utf8_lossy(key).trim().to_string();
        let value = String::from_utf8_lossy(value).trim().to_string();
        if !key.starts_with(&format!("{}/", keys.members)) {
            tracing::warn!(%key, "invalid peer registry key");
            return;
        }
        if !value.contains('=') {
            tracing::warn!(%key, %value, "invalid peer info returned from discovery service");
            return;
        }
        if self.0.iter().any(|(k, _, _)| *k == key) {
            tracing::warn!(%key, "found duplicate peer from discovery service");
            return;
        }
        tracing::info!(member_key = %key, member_info = %value, "found peer from discovery service");
        self.0.push((key, value, created));
        self.0.sort_by_key(|(_, _, c)| *c);
    }

    /// Whether `key` is among the first `size` (or fewer than `size` others
    /// precede it).
    fn admits(&self, key: &str, size: usize) -> bool {
        for (i, (k, _, _)) in self.0.iter().enumerate() {
            if k == key {
                return true;
            }
            if i + 1 >= size {
                return false;
            }
        }
        true
    }
}

struct Registry {
    kv: KvClient<Channel>,
    watch: WatchClient<Channel>,
    token: Option<String>,
    request_timeout: Duration,
    keys: Keys,
    backoff: Backoff,
    options: V3Discovery,
    dialer: Dialer,
    /// The endpoint to try next when this one fails.
    next: usize,
}

/// Joins the cluster registered under `d.token` in the registry at
/// `d.endpoints`, reached with `dialer`; see the module doc.
pub async fn join(d: &V3Discovery, dialer: &Dialer, me: &Joiner) -> Result<Found, DiscoveryError> {
    tracing::info!(
        discovery_token = %d.token,
        discovery_endpoints = %d.endpoints.join(","),
        "Bootstrapping cluster using v3 discovery."
    );
    let mut r = Registry::connect(d, dialer).await?;
    let me_key = r.keys.member(me.member_id);
    let value = super::self_entry(&me.name, &me.advertise_peer_urls);
    r.check_cluster(&me_key).await?;
    loop {
        match r.put(&me_key, &value).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e.message(), "failed to register members itself to the discovery service");
                r.backoff
                    .wait("register member itself", e.message())
                    .await?;
                r.reconnect().await?;
            }
        }
    }
    r.backoff.reset();
    tracing::info!("register member itself successfully");
    let (mut members, mut size, mut rev) = r.check_cluster(&me_key).await?;
    loop {
        #[cfg(madsim)]
        if crate::planted::active(crate::planted::Bug::SkipSizeCheck) {
            size = members.0.len();
        }
        if members.0.len() >= size || r.wait_peers(&mut members, size, rev).await {
            break;
        }
        // The watch ended (the registry failed, compacted past `rev`, or the
        // token expired): read the registry again, from another endpoint.
        r.backoff
            .wait("waiting for other nodes", "the watch ended")
            .await?;
        r.reconnect().await?;
        (members, size, rev) = r.check_cluster(&me_key).await?;
    }
    let initial_cluster = members
        .0
        .iter()
        .take(size)
        .map(|(_, v, _)| v.as_str())
        .collect::<Vec<_>>()
        .join(",");
    if super::distinct_names(&initial_cluster).is_none() {
        return Err(DiscoveryError::InvalidPeerUrl);
    }
    tracing::info!(cluster = %initial_cluster, "discovery joined cluster successfully");
    Ok(Found {
        initial_cluster,
        token: d.token.clone(),
        peer_server_name: None,
        local_peer_urls: None,
    })
}

impl Registry {
    /// Dials the first endpoint that answers (within the dial timeout) and
    /// authenticates with `--discovery-user`/`--discovery-password`.
    async fn connect(d: &V3Discovery, dialer: &Dialer) -> Result<Registry, DiscoveryError> {
        let (channel, token, next) = dial(d, dialer, 0).await?;
        Ok(Registry {
            kv: KvClient::new(channel.clone()),
            watch: WatchClient::new(channel),
            token,
            request_timeout: d.request_timeout,
            keys: Keys::new(&d.token),
            backoff: Backoff::default(),
            options: d.clone(),
            dialer: dialer.clone(),
            next,
        })
    }

    /// After a failure: the next endpoint that answers, authenticated
    /// again (an expired token is one way to fail), as etcd's client fails
    /// over.
    async fn reconnect(&mut self) -> Result<(), DiscoveryError> {
        let (channel, token, next) = dial(&self.options, &self.dialer, self.next).await?;
        self.kv = KvClient::new(channel.clone());
        self.watch = WatchClient::new(channel);
        self.token = token;
        self.next = next;
        Ok(())
    }

    fn request<T>(&self, body: T) -> Request<T> {
        let mut req = Request::new(body);
        req.set_timeout(self.request_timeout);
        if let Some(token) = &self.token {
            if let Ok(v) = token.parse() {
                req.metadata_mut().insert("token", v);
            }
        }
        req
    }

    async fn put(&mut self, key: &str, value: &str) -> Result<(), Status> {
        let req = self.request(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        });
        let call = self.kv.put(req);
        tokio::time::timeout(self.request_timeout, call)
            .await
            .map_err(|_| Status::deadline_exceeded("context deadline exceeded"))??;
        Ok(())
    }

    async fn range(
        &mut self,
        req: RangeRequest,
    ) -> Result<crate::proto::etcdserverpb::RangeResponse, Status> {
        let req = self.request(req);
        let call = self.kv.range(req);
        Ok(tokio::time::timeout(self.request_timeout, call)
            .await
            .map_err(|_| Status::deadline_exceeded("context deadline exceeded"))??
            .into_inner())
    }

    /// The size and the members, retried while the registry fails.
    async fn check_cluster(
        &mut self,
        me_key: &str,
    ) -> Result<(Members, usize, i64), DiscoveryError> {
        loop {
            match self.try_check_cluster().await {
                Ok(Ok((members, size, rev))) => {
                    self.backoff.reset();
                    if !members.admits(me_key, size) {
                        return Err(DiscoveryError::FullCluster);
                    }
                    return Ok((members, size, rev));
                }
                Ok(Err(fatal)) => return Err(fatal),
                Err(e) => {
                    tracing::warn!(error = %e.message(), "failed to get cluster size or members from discovery service");
                    self.backoff
                        .wait("cluster status check", e.message())
                        .await?;
                    self.reconnect().await?;
                }
            }
        }
    }

    #[allow(clippy::type_complexity)]
    async fn try_check_cluster(
        &mut self,
    ) -> Result<Result<(Members, usize, i64), DiscoveryError>, Status> {
        let size = self
            .range(RangeRequest {
                key: self.keys.size.as_bytes().to_vec(),
                ..Default::default()
            })
            .await?;
        let Some(kv) = size.kvs.first() else {
            return Ok(Err(DiscoveryError::SizeNotFound));
        };
        let size = match std::str::from_utf8(&kv.value)
            .ok()
            .and_then(|v| v.parse::<i64>().ok())
        {
            Some(n) if n > 0 => n as usize,
            _ => return Ok(Err(DiscoveryError::BadSizeKey)),
        };
        let prefix = self.keys.members.as_bytes().to_vec();
        let list = self
            .range(RangeRequest {
                range_end: prefix_end(&prefix),
                key: prefix,
                ..Default::default()
            })
            .await?;
        let mut members = Members::default();
        for kv in &list.kvs {
            members.add(&self.keys, &kv.key, &kv.value, kv.create_revision);
        }
        let rev = list.header.map_or(0, |h| h.revision);
        Ok(Ok((members, size, rev)))
    }

    /// Watches the members prefix from `rev + 1` until `size` are known
    /// (true) or the watch ends (false: the caller reads the registry
    /// again).
    async fn wait_peers(&mut self, members: &mut Members, size: usize, rev: i64) -> bool {
        tracing::info!(
            cluster_size = size,
            found_peers = members.0.len(),
            "waiting for peers from discovery service"
        );
        let prefix = self.keys.members.as_bytes().to_vec();
        let (tx, rx) = mpsc::channel(1);
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                range_end: prefix_end(&prefix),
                key: prefix,
                start_revision: rev + 1,
                ..Default::default()
            })),
        };
        if tx.send(create).await.is_err() {
            return false;
        }
        let mut req = Request::new(ReceiverStream::new(rx));
        if let Some(token) = &self.token {
            if let Ok(v) = token.parse() {
                req.metadata_mut().insert("token", v);
            }
        }
        let mut stream = match self.watch.watch(req).await {
            Ok(s) => s.into_inner(),
            Err(e) => {
                tracing::warn!(error = %e.message(), "watch on the discovery service failed");
                return false;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(resp)) => {
                    for ev in resp.events {
                        if let Some(kv) = ev.kv {
                            members.add(&self.keys, &kv.key, &kv.value, kv.create_revision);
                        }
                        if members.0.len() >= size {
                            tracing::info!("found all needed peers from discovery service");
                            drop(tx);
                            return true;
                        }
                    }
                    if resp.canceled {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e.message(), "watch on the discovery service ended");
                    break;
                }
            }
        }
        drop(tx);
        false
    }
}

/// Dials the endpoints from `start` on, round, until one answers (with
/// etcd's back-off between rounds); authenticates if a user is given.
/// Returns the channel, the token and the index of the endpoint after it.
async fn dial(
    d: &V3Discovery,
    dialer: &Dialer,
    start: usize,
) -> Result<(Channel, Option<String>, usize), DiscoveryError> {
    let mut backoff = Backoff::default();
    let n = d.endpoints.len().max(1);
    // etcd: zero means no timeout, no keep-alive.
    let nonzero = |t: Duration| (!t.is_zero()).then_some(t);
    loop {
        let mut errors = Vec::new();
        for k in 0..d.endpoints.len() {
            let i = (start + k) % n;
            let endpoint = &d.endpoints[i];
            let url = if endpoint.contains("://") {
                endpoint.clone()
            } else if dialer.has_tls() {
                format!("https://{endpoint}")
            } else {
                format!("http://{endpoint}")
            };
            if url.starts_with("https://") && !dialer.has_tls() {
                return Err(DiscoveryError::Registry(format!(
                    "{url}: an https endpoint needs TLS"
                )));
            }
            let tune = |mut e: tonic::transport::Endpoint| {
                if let Some(t) = nonzero(d.dial_timeout) {
                    e = e.connect_timeout(t);
                }
                if let Some(t) = nonzero(d.keepalive_time) {
                    e = e.http2_keep_alive_interval(t);
                }
                if let Some(t) = nonzero(d.keepalive_timeout) {
                    e = e.keep_alive_timeout(t);
                }
                e
            };
            let connect = dialer.channel_tuned(&url, tune);
            let connected = match nonzero(d.dial_timeout) {
                Some(t) => match tokio::time::timeout(t, connect).await {
                    Ok(r) => r.map_err(|e| crate::transport::error_chain(&e)),
                    Err(_) => Err("dial timed out".to_string()),
                },
                None => connect.await.map_err(|e| crate::transport::error_chain(&e)),
            };
            match connected {
                Ok(channel) => {
                    let token = if d.user.is_empty() {
                        None
                    } else {
                        match authenticate(channel.clone(), d).await {
                            Ok(t) => Some(t),
                            Err(e) => {
                                errors.push(format!("{url}: {e}"));
                                continue;
                            }
                        }
                    };
                    return Ok((channel, token, (i + 1) % n));
                }
                Err(e) => errors.push(format!("{url}: {e}")),
            }
        }
        backoff.wait("dial", &errors.join("; ")).await?;
    }
}

/// The range end of a prefix (etcd's `GetPrefixRangeEnd`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

async fn authenticate(channel: Channel, d: &V3Discovery) -> Result<String, DiscoveryError> {
    let mut auth = AuthClient::new(channel);
    let mut req = Request::new(AuthenticateRequest {
        name: d.user.clone(),
        password: d.password.clone(),
    });
    req.set_timeout(d.request_timeout);
    auth.authenticate(req)
        .await
        .map(|r| r.into_inner().token)
        .map_err(|e| DiscoveryError::Registry(e.message().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_etcd_36() {
        let k = Keys::new("tok");
        assert_eq!(k.size, "/_etcd/registry/tok/_config/size");
        assert_eq!(k.member(0xab), "/_etcd/registry/tok/members/ab");
        assert_eq!(prefix_end(b"/a"), b"/b");
    }

    #[test]
    fn only_the_first_size_members_are_admitted() {
        let k = Keys::new("t");
        let mut m = Members::default();
        m.add(&k, k.member(3).as_bytes(), b"c=http://c:1", 12);
        m.add(&k, k.member(1).as_bytes(), b"a=http://a:1", 10);
        m.add(&k, k.member(2).as_bytes(), b"b=http://b:1", 11);
        // Skipped: outside the prefix, no '=', a duplicate key.
        m.add(&k, b"/_etcd/registry/t/_config/size", b"3", 1);
        m.add(&k, k.member(4).as_bytes(), b"garbage", 13);
        m.add(&k, k.member(1).as_bytes(), b"a=http://a:1", 14);
        assert_eq!(m.0.len(), 3);
        assert!(m.admits(&k.member(1), 2));
        assert!(m.admits(&k.member(2), 2));
        assert!(!m.admits(&k.member(3), 2));
        // Not registered yet: admitted while fewer than `size` precede it.
        assert!(m.admits(&k.member(9), 4));
        assert!(!m.admits(&k.member(9), 3));
    }
}
