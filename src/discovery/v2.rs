//! etcd's discovery URL protocol (`--discovery URL`), as etcd 3.4/3.5's
//! `v2discovery`: the URL's path is a directory ("token") in an etcd v2
//! keys store, addressed as `scheme://host[:port]` + token + key (no
//! `/v2/keys` added: a self-hosted store's path already holds it).
//!
//! 1. `GET token/_config/size`: the cluster size.
//! 2. `GET token`: the registered members, by creation index; a member not
//!    among the first `size` finds the cluster full.
//! 3. `PUT token/<member id hex>?prevExist=false` with `value=name=url,...`:
//!    register (an existing key: `found duplicate id`).
//! 4. Check again, then a recursive long-poll watch on the token from the
//!    index of the list until `size` members are known.
//! 5. Their values joined with `,` are the initial cluster; the token of
//!    the member and cluster IDs is the whole discovery URL.
//!
//! Requests time out after 5 s (watches do not); an unavailable registry
//! (no connection, 5xx) is retried with etcd's back-off. `--discovery-proxy`
//! is the only proxy used (etcd ignores `HTTP_PROXY` here).

use std::time::Duration;

use serde::Deserialize;

use super::{Backoff, DiscoveryError, Found};

/// etcd's `client.DefaultRequestTimeout`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The v2 store's "key not found" and "node exist" error codes.
const KEY_NOT_FOUND: u64 = 100;
const NODE_EXIST: u64 = 105;

/// What this member registers and with which ID.
#[derive(Debug, Clone)]
pub struct Joiner {
    pub member_id: u64,
    pub name: String,
    pub advertise_peer_urls: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Response {
    node: Option<Node>,
}

#[derive(Debug, Clone, Deserialize)]
struct Node {
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    nodes: Vec<Node>,
    #[serde(rename = "createdIndex", default)]
    created_index: u64,
    #[serde(rename = "modifiedIndex", default)]
    modified_index: u64,
}

#[derive(Debug, Deserialize)]
struct StoreError {
    #[serde(rename = "errorCode")]
    code: u64,
    message: String,
    #[serde(default)]
    cause: String,
    #[serde(default)]
    index: u64,
}

/// How a request failed.
enum Failure {
    /// The registry could not be reached or failed (retried).
    Unavailable(String),
    /// The store's error answer.
    Store(StoreError),
    /// Not a v2 store's answer.
    Invalid,
}

impl Failure {
    fn into_error(self) -> DiscoveryError {
        match self {
            Failure::Unavailable(e) => DiscoveryError::Registry(format!(
                "client: etcd cluster is unavailable or misconfigured; error #0: {e}"
            )),
            // etcd's client.Error text.
            Failure::Store(e) => DiscoveryError::Registry(format!(
                "{}: {} ({}) [{}]",
                e.code, e.message, e.cause, e.index
            )),
            Failure::Invalid => DiscoveryError::BadEndpoint,
        }
    }
}

struct Registry {
    http: reqwest::Client,
    endpoint: String,
    token: String,
    backoff: Backoff,
}

/// Joins the cluster registered at `url`; see the module doc.
pub async fn join(url: &str, proxy: Option<&str>, me: &Joiner) -> Result<Found, DiscoveryError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| DiscoveryError::InvalidUrl)?;
    let token = parsed.path().trim_end_matches('/').to_string();
    let endpoint = parsed.origin().ascii_serialization();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .no_proxy();
    if let Some(p) = proxy {
        builder = builder.proxy(proxy_of(p)?);
    }
    let http = builder
        .build()
        .map_err(|e| DiscoveryError::Registry(e.to_string()))?;
    let mut r = Registry {
        http,
        endpoint,
        token,
        backoff: Backoff::default(),
    };
    tracing::warn!(discovery_url = url, "V2 discovery is deprecated!");
    r.check_cluster(me).await?;
    r.create_self(me).await?;
    let (nodes, size, index) = r.check_cluster(me).await?;
    let nodes = r.wait_nodes(me, nodes, size, index).await?;
    let initial_cluster = nodes
        .iter()
        .map(|n| n.value.as_str())
        .collect::<Vec<_>>()
        .join(",");
    match super::distinct_names(&initial_cluster) {
        None => Err(DiscoveryError::InvalidUrl),
        Some(n) if n != size => Err(DiscoveryError::DuplicateName),
        Some(_) => Ok(Found {
            initial_cluster,
            token: url.to_string(),
            peer_server_name: None,
            local_peer_urls: None,
        }),
    }
}

/// `--discovery-proxy`: an address, `http://` added when it has no http
/// scheme (as etcd retries it).
fn proxy_of(p: &str) -> Result<reqwest::Proxy, DiscoveryError> {
    let with_scheme = if p.starts_with("http") {
        p.to_string()
    } else {
        format!("http://{p}")
    };
    reqwest::Proxy::all(&with_scheme)
        .map_err(|e| DiscoveryError::Registry(format!("invalid proxy address {p:?}: {e}")))
}

fn base(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

impl Registry {
    fn url(&self, key: &str) -> String {
        format!("{}{}{key}", self.endpoint, self.token)
    }

    fn self_key(&self, me: &Joiner) -> String {
        format!("{}/{:x}", self.token, me.member_id)
    }

    /// Sends `req` and reads a v2 answer and its `X-Etcd-Index`.
    async fn send(req: reqwest::RequestBuilder) -> Result<(Response, u64), Failure> {
        let resp = req
            .send()
            .await
            .map_err(|e| Failure::Unavailable(crate::transport::error_chain(&e)))?;
        let status = resp.status();
        let index = resp
            .headers()
            .get("X-Etcd-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let body = resp
            .bytes()
            .await
            .map_err(|e| Failure::Unavailable(crate::transport::error_chain(&e)))?;
        if status.is_server_error() {
            return Err(Failure::Unavailable(format!("{status}")));
        }
        if status.is_success() {
            if body.is_empty() {
                return Ok((Response { node: None }, index));
            }
            return serde_json::from_slice(&body)
                .map(|r| (r, index))
                .map_err(|_| Failure::Invalid);
        }
        match serde_json::from_slice::<StoreError>(&body) {
            Ok(e) => Err(Failure::Store(e)),
            Err(_) => Err(Failure::Invalid),
        }
    }

    async fn get(&self, key: &str) -> Result<(Response, u64), Failure> {
        let req = self
            .http
            .get(self.url(key))
            .query(&[
                ("quorum", "false"),
                ("recursive", "false"),
                ("sorted", "false"),
            ])
            .timeout(REQUEST_TIMEOUT);
        Self::send(req).await
    }

    /// Size and members, with the member check; retried while the
    /// registry is unavailable.
    async fn check_cluster(
        &mut self,
        me: &Joiner,
    ) -> Result<(Vec<Node>, usize, u64), DiscoveryError> {
        loop {
            match self.try_check_cluster(me).await {
                Err(Failure::Unavailable(e)) => {
                    tracing::warn!(error = %e, "failed to get from discovery server");
                    self.backoff.wait("cluster status check", &e).await?;
                }
                Err(other) => return Err(other.into_error()),
                Ok(r) => return r,
            }
        }
    }

    #[allow(clippy::type_complexity)]
    async fn try_check_cluster(
        &self,
        me: &Joiner,
    ) -> Result<Result<(Vec<Node>, usize, u64), DiscoveryError>, Failure> {
        let size = match self.get("/_config/size").await {
            Ok((r, _)) => r.node.map(|n| n.value).unwrap_or_default(),
            Err(Failure::Store(e)) if e.code == KEY_NOT_FOUND => {
                return Ok(Err(DiscoveryError::SizeNotFound))
            }
            Err(e) => return Err(e),
        };
        // A size of 0 would bootstrap an empty cluster (v3 refuses it too).
        let Some(size) = size.parse::<usize>().ok().filter(|s| *s > 0) else {
            return Ok(Err(DiscoveryError::BadSizeKey));
        };
        let (list, index) = self.get("").await?;
        let mut nodes: Vec<Node> = list
            .node
            .map(|n| n.nodes)
            .unwrap_or_default()
            .into_iter()
            .filter(|n| base(&n.key) != "_config")
            .collect();
        nodes.sort_by_key(|n| n.created_index);
        let self_key = self.self_key(me);
        for (i, n) in nodes.iter().enumerate() {
            if base(&n.key) == base(&self_key) {
                break;
            }
            if i + 1 >= size {
                return Ok(Err(DiscoveryError::FullCluster));
            }
        }
        Ok(Ok((nodes, size, index)))
    }

    /// Registers this member (create only), and waits until the store
    /// shows the key.
    async fn create_self(&mut self, me: &Joiner) -> Result<(), DiscoveryError> {
        let value = super::self_entry(&me.name, &me.advertise_peer_urls);
        let url = format!("{}{}", self.endpoint, self.self_key(me));
        let req = self
            .http
            .put(&url)
            .query(&[("prevExist", "false")])
            .form(&[("value", value.as_str())])
            .timeout(REQUEST_TIMEOUT);
        let created = match Self::send(req).await {
            Ok((r, _)) => r.node.map_or(0, |n| n.created_index),
            Err(Failure::Store(e)) if e.code == NODE_EXIST => {
                return Err(DiscoveryError::DuplicateId)
            }
            Err(e) => return Err(e.into_error()),
        };
        // Confirm: a watch from just before the creation returns it.
        let req = self
            .http
            .get(&url)
            .query(&[("wait", "true"), ("waitIndex", &created.to_string())]);
        Self::send(req).await.map_err(Failure::into_error)?;
        Ok(())
    }

    /// Watches the token from `index` until `size` members are known.
    async fn wait_nodes(
        &mut self,
        me: &Joiner,
        mut nodes: Vec<Node>,
        mut size: usize,
        mut index: u64,
    ) -> Result<Vec<Node>, DiscoveryError> {
        loop {
            nodes.truncate(size);
            for n in &nodes {
                if base(&n.key) == format!("{:x}", me.member_id) {
                    tracing::info!(self_key = %n.key, "found self from discovery server");
                } else {
                    tracing::info!(peer = %n.value, "found peer from discovery server");
                }
            }
            let mut wait_index = index + 1;
            let mut failed = None;
            while nodes.len() < size {
                tracing::info!(
                    found_peers = nodes.len(),
                    needed_peers = size - nodes.len(),
                    "found peers from discovery server; waiting for more"
                );
                let req = self.http.get(self.url("")).query(&[
                    ("recursive", "true"),
                    ("wait", "true"),
                    ("waitIndex", &wait_index.to_string()),
                ]);
                match Self::send(req).await {
                    Ok((Response { node: Some(n) }, _)) => {
                        wait_index = n.modified_index + 1;
                        // etcd takes every event's node as a member.
                        nodes.push(n);
                    }
                    // An empty answer: poll again, after a breath.
                    Ok((Response { node: None }, _)) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(Failure::Unavailable(e)) => {
                        failed = Some(e);
                        break;
                    }
                    Err(other) => return Err(other.into_error()),
                }
            }
            let Some(e) = failed else {
                tracing::info!("found all needed peers from discovery server");
                return Ok(nodes);
            };
            self.backoff.wait("waiting for other nodes", &e).await?;
            (nodes, size, index) = self.check_cluster(me).await?;
        }
    }
}
