//! DNS SRV discovery (`--discovery-srv DOMAIN`, `--discovery-srv-name
//! NAME`), as etcd 3.5: the peers are the targets of
//! `_etcd-server-ssl[-NAME]._tcp.DOMAIN` (https) and then
//! `_etcd-server[-NAME]._tcp.DOMAIN` (http). A target whose address is one
//! of this member's advertised peer URLs' addresses is this member (named
//! `--name`; its scheme must match); the others are named `0`, `1`, ... in
//! each record set. Both sets together must name this member. The token of
//! the IDs is `--initial-cluster-token`, as in etcd.
//!
//! Names are resolved through [`Dns`]: the system's resolver configuration
//! (`/etc/resolv.conf`, `/etc/hosts`) with hickory-resolver in the daemon,
//! a simulated DNS server under madsim.

use std::net::{IpAddr, SocketAddr};

use super::DiscoveryError;

/// Why a DNS lookup gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// The name has no such records (NXDOMAIN, or no data).
    NotFound(String),
    /// DNS failed (timeout, SERVFAIL, unreachable): the records may exist.
    Failed(String),
}

impl DnsError {
    fn text(&self) -> &str {
        match self {
            DnsError::NotFound(e) | DnsError::Failed(e) => e,
        }
    }
}

/// What SRV discovery asks of DNS.
#[tonic::async_trait]
pub trait Dns: Send + Sync {
    /// The SRV records of `name` (`_service._tcp.domain`): (target, port),
    /// by priority.
    async fn srv(&self, name: &str) -> Result<Vec<(String, u16)>, DnsError>;
    /// The addresses of `host` (a name or an IP literal).
    async fn addrs(&self, host: &str) -> Result<Vec<IpAddr>, DnsError>;
}

#[cfg(not(madsim))]
fn dns_error(e: hickory_resolver::net::NetError) -> DnsError {
    if e.is_no_records_found() {
        DnsError::NotFound(e.to_string())
    } else {
        DnsError::Failed(e.to_string())
    }
}

/// The system's resolver (hickory-resolver over `/etc/resolv.conf` and
/// `/etc/hosts`).
#[cfg(not(madsim))]
pub struct SystemDns(hickory_resolver::TokioResolver);

#[cfg(not(madsim))]
impl SystemDns {
    pub fn new() -> Result<SystemDns, DiscoveryError> {
        hickory_resolver::TokioResolver::builder_tokio()
            .and_then(|b| b.build())
            .map(SystemDns)
            .map_err(|e| {
                DiscoveryError::Srv(format!("cannot read the system's DNS configuration: {e}"))
            })
    }
}

#[cfg(not(madsim))]
#[tonic::async_trait]
impl Dns for SystemDns {
    async fn srv(&self, name: &str) -> Result<Vec<(String, u16)>, DnsError> {
        let lookup = self.0.srv_lookup(name).await.map_err(dns_error)?;
        let mut records: Vec<(u16, String, u16)> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                hickory_resolver::proto::rr::RData::SRV(srv) => {
                    Some((srv.priority, srv.target.to_string(), srv.port))
                }
                _ => None,
            })
            .collect();
        records.sort_by_key(|(priority, _, _)| *priority);
        Ok(records.into_iter().map(|(_, t, p)| (t, p)).collect())
    }

    async fn addrs(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let lookup = self.0.lookup_ip(host).await.map_err(dns_error)?;
        Ok(lookup.iter().collect())
    }
}

/// Go's `net.ResolveTCPAddr`: the first address of `host` (IPv4 first).
async fn resolve(dns: &dyn Dns, host: &str, port: u16) -> Result<SocketAddr, DnsError> {
    let mut addrs = dns.addrs(host.trim_end_matches('.')).await?;
    addrs.sort_by_key(|a| !a.is_ipv4());
    addrs
        .first()
        .map(|ip| SocketAddr::new(*ip, port))
        .ok_or_else(|| DnsError::NotFound(format!("no address for {host}")))
}

/// etcd's `srv.GetCluster` for one service: `name=url` entries. One
/// deviation, for safety: a target that does not resolve fails the lookup
/// (etcd skips it, and a member then bootstraps a smaller cluster than its
/// peers: two clusters; the bootstrap simulation found it).
async fn get_cluster(
    dns: &dyn Dns,
    scheme: &str,
    service: &str,
    name: &str,
    domain: &str,
    own: &[(SocketAddr, crate::config::Url)],
) -> Result<Vec<String>, DnsError> {
    let wrap = |e: &str| format!("error querying DNS SRV records for _{service} {e}");
    let records = dns
        .srv(&format!("_{service}._tcp.{domain}"))
        .await
        .map_err(|e| match e {
            DnsError::NotFound(e) => DnsError::NotFound(wrap(&e)),
            DnsError::Failed(e) => DnsError::Failed(wrap(&e)),
        })?;
    let mut temp_name = 0;
    let mut parts = Vec::new();
    let mut mismatch = None;
    for (target, port) in records {
        #[cfg(madsim)]
        if crate::planted::active(crate::planted::Bug::SrvSkipsUnresolved)
            && resolve(dns, &target, port).await.is_err()
        {
            continue;
        }
        let addr = resolve(dns, &target, port).await.map_err(|e| {
            tracing::warn!(host = %target, port, "couldn't resolve host during SRV discovery");
            DnsError::Failed(wrap(&format!(
                "couldn't resolve host {target}:{port}: {}",
                e.text()
            )))
        })?;
        let mine = own.iter().find(|(a, _)| *a == addr).map(|(_, u)| u);
        let n = if mine.is_some() {
            name.to_string()
        } else {
            temp_name += 1;
            (temp_name - 1).to_string()
        };
        let host = target.trim_end_matches('.');
        let url_host = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        match mine {
            Some(u) if u.scheme != scheme => {
                mismatch = Some(format!(
                    "bootstrap at {scheme}://{url_host} from DNS for {service} has scheme mismatch with expected peer {}",
                    u.text
                ));
            }
            _ => parts.push(format!("{n}={scheme}://{url_host}")),
        }
    }
    match (parts.is_empty(), mismatch) {
        (true, Some(e)) => Err(DnsError::NotFound(wrap(&e))),
        _ => Ok(parts),
    }
}

/// What SRV discovery found: the initial cluster, and whether it has
/// https peers (whose TLS server name is then the domain, without a
/// trusted CA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvCluster {
    pub initial_cluster: String,
    pub has_https: bool,
}

/// etcd 3.5's `GetDNSClusterNames` and the check that names this member.
pub async fn cluster(
    dns: &dyn Dns,
    domain: &str,
    service_name: &str,
    name: &str,
    advertise_peer_urls: &[crate::config::Url],
) -> Result<SrvCluster, DiscoveryError> {
    let mut own = Vec::new();
    for u in advertise_peer_urls {
        let addr = resolve(dns, &u.host, u.port)
            .await
            .map_err(|e| DiscoveryError::Srv(e.text().to_string()))?;
        own.push((addr, u.clone()));
    }
    let suffix = if service_name.is_empty() {
        String::new()
    } else {
        format!("-{service_name}")
    };
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (scheme, service) in [
        ("https", format!("etcd-server-ssl{suffix}")),
        ("http", format!("etcd-server{suffix}")),
    ] {
        match get_cluster(dns, scheme, &service, name, domain, &own).await {
            Ok(found) => {
                tracing::info!(service_name = %service, found_cluster = ?found, "get cluster for {service} SRV");
                entries.extend(found);
            }
            // No such records: the other kind may have them (etcd 3.5).
            Err(DnsError::NotFound(e)) => {
                tracing::info!(service_name = %service, error = %e, "get cluster for {service} SRV");
                errors.push(e);
            }
            // DNS failed: records it could not give may exist, and a
            // cluster built without them would be another cluster.
            Err(DnsError::Failed(e)) => return Err(DiscoveryError::Srv(e)),
        }
    }
    if entries.is_empty() {
        return Err(DiscoveryError::Srv(errors.join("; ")));
    }
    if !errors.is_empty() {
        tracing::warn!(error = %errors.join("; "), "failed to resolve during SRV discovery");
    }
    for e in &entries {
        tracing::info!(node = %e, "got bootstrap from DNS for etcd-server");
    }
    let initial_cluster = entries.join(",");
    let names = crate::cluster::parse_initial_cluster(&initial_cluster)
        .map_err(|e| DiscoveryError::Srv(e.to_string()))?;
    if !names.iter().any(|(n, _)| n == name) {
        return Err(DiscoveryError::Srv(format!(
            "cannot find local etcd member {name:?} in SRV records"
        )));
    }
    Ok(SrvCluster {
        has_https: initial_cluster.contains("https://"),
        initial_cluster,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A zone in memory.
    #[derive(Default)]
    struct Zone {
        srv: BTreeMap<String, Vec<(String, u16)>>,
        a: BTreeMap<String, Vec<IpAddr>>,
        /// Hosts whose lookups time out.
        failing: Vec<String>,
    }

    #[tonic::async_trait]
    impl Dns for Zone {
        async fn srv(&self, name: &str) -> Result<Vec<(String, u16)>, DnsError> {
            self.srv
                .get(name)
                .cloned()
                .ok_or_else(|| DnsError::NotFound(format!("lookup {name}: no such host")))
        }
        async fn addrs(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
            if let Ok(ip) = host.parse() {
                return Ok(vec![ip]);
            }
            if self.failing.contains(&host.to_string()) {
                return Err(DnsError::Failed(format!("lookup {host}: i/o timeout")));
            }
            self.a
                .get(host)
                .cloned()
                .ok_or_else(|| DnsError::NotFound(format!("lookup {host}: no such host")))
        }
    }

    fn zone(service: &str) -> Zone {
        let mut z = Zone::default();
        z.srv.insert(
            format!("_{service}._tcp.example.com"),
            (0..3)
                .map(|i| (format!("infra{i}.example.com."), 2380))
                .collect(),
        );
        for i in 0..3u8 {
            z.a.insert(
                format!("infra{i}.example.com"),
                vec![IpAddr::from([10, 0, 1, 10 + i])],
            );
        }
        z
    }

    fn url(s: &str) -> Vec<crate::config::Url> {
        vec![crate::config::Url::parse(s).unwrap()]
    }

    #[tokio::test]
    async fn targets_become_the_cluster_and_this_member_is_found() {
        let z = zone("etcd-server");
        let c = cluster(
            &z,
            "example.com",
            "",
            "infra1",
            &url("http://10.0.1.11:2380"),
        )
        .await
        .unwrap();
        assert_eq!(
            c.initial_cluster,
            "0=http://infra0.example.com:2380,infra1=http://infra1.example.com:2380,1=http://infra2.example.com:2380"
        );
        assert!(!c.has_https);
        // By name too (resolved the same way).
        let c = cluster(
            &z,
            "example.com",
            "",
            "infra1",
            &url("http://infra1.example.com:2380"),
        )
        .await
        .unwrap();
        assert!(c
            .initial_cluster
            .contains("infra1=http://infra1.example.com:2380"));
    }

    #[tokio::test]
    async fn the_service_name_and_https_records() {
        let z = zone("etcd-server-ssl-c1");
        let c = cluster(
            &z,
            "example.com",
            "c1",
            "infra0",
            &url("https://10.0.1.10:2380"),
        )
        .await
        .unwrap();
        assert!(c.has_https);
        assert!(c
            .initial_cluster
            .starts_with("infra0=https://infra0.example.com:2380,"));
    }

    #[tokio::test]
    async fn a_target_that_does_not_resolve_fails_the_discovery() {
        // etcd skips it and bootstraps a cluster without it; a member must
        // not form a smaller cluster than its peers.
        let mut z = zone("etcd-server");
        z.failing.push("infra2.example.com".into());
        let e = cluster(
            &z,
            "example.com",
            "",
            "infra1",
            &url("http://10.0.1.11:2380"),
        )
        .await
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("couldn't resolve host infra2.example.com.:2380"),
            "{e}"
        );
        // A failed SRV lookup (not an absent record set) fails it too.
        z.failing.clear();
        z.srv.insert(
            "_etcd-server-ssl._tcp.example.com".into(),
            vec![("infra9.example.com.".into(), 2380)],
        );
        z.failing.push("infra9.example.com".into());
        assert!(cluster(
            &z,
            "example.com",
            "",
            "infra1",
            &url("http://10.0.1.11:2380")
        )
        .await
        .is_err());
    }

    #[tokio::test]
    async fn etcds_errors() {
        let z = zone("etcd-server");
        let e = cluster(
            &z,
            "example.com",
            "",
            "infra9",
            &url("http://10.0.9.9:2380"),
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot find local etcd member \"infra9\" in SRV records"
        );
        // This member found with another scheme: skipped, and not found.
        let e = cluster(
            &z,
            "example.com",
            "",
            "infra1",
            &url("https://10.0.1.11:2380"),
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot find local etcd member \"infra1\" in SRV records"
        );
        let mut one = Zone::default();
        one.srv.insert(
            "_etcd-server._tcp.example.com".into(),
            vec![("infra1.example.com.".into(), 2380)],
        );
        one.a.insert(
            "infra1.example.com".into(),
            vec![IpAddr::from([10, 0, 1, 11])],
        );
        let e = cluster(
            &one,
            "example.com",
            "",
            "infra1",
            &url("https://10.0.1.11:2380"),
        )
        .await
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("has scheme mismatch with expected peer https://10.0.1.11:2380"),
            "{e}"
        );
        let e = cluster(
            &Zone::default(),
            "example.com",
            "",
            "x",
            &url("http://10.0.0.1:2380"),
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "error querying DNS SRV records for _etcd-server-ssl lookup _etcd-server-ssl._tcp.example.com: no such host; error querying DNS SRV records for _etcd-server lookup _etcd-server._tcp.example.com: no such host"
        );
    }
}
