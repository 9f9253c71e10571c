//! DNS in the simulator: a server node and the members' resolver, speaking
//! in datagrams over madsim's network as DNS speaks over UDP (so the
//! simulator's partitions, delays and crashes reach it). The server answers
//! from a zone of SRV and A records; its faults (late answers, SERVFAIL)
//! are switched by the simulation.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::madsim::net::Endpoint;

use super::srv::{Dns, DnsError};

/// Where the simulated DNS server listens (the members' resolv.conf).
pub const SIM_DNS_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 53)), 53);
const TAG: u64 = 53;
/// A query unanswered this long is sent again, once (a resolver's timeout
/// and attempts).
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
const ATTEMPTS: usize = 2;

/// The records the server answers from.
#[derive(Debug, Default, Clone)]
pub struct Zone {
    /// `_service._tcp.domain` -> (target, port).
    pub srv: BTreeMap<String, Vec<(String, u16)>>,
    /// host -> addresses.
    pub a: BTreeMap<String, Vec<IpAddr>>,
}

/// The server's faults, switched while it runs.
#[derive(Debug, Default)]
pub struct Faults {
    /// Each answer waits this long (milliseconds).
    pub delay_ms: AtomicU64,
    /// Every query gets SERVFAIL.
    pub servfail: AtomicBool,
}

/// Serves `zone` at [`SIM_DNS_ADDR`] on the current node, forever.
pub async fn serve(zone: Zone, faults: Arc<Faults>) {
    let ep = match Endpoint::bind(SIM_DNS_ADDR).await {
        Ok(ep) => Arc::new(ep),
        Err(e) => {
            tracing::error!(error = %e, "the simulated DNS server cannot bind");
            return;
        }
    };
    let zone = Arc::new(zone);
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = ep.recv_from(TAG, &mut buf).await else {
            continue;
        };
        let query = String::from_utf8_lossy(&buf[..n]).into_owned();
        let (ep, zone, faults) = (ep.clone(), zone.clone(), faults.clone());
        tokio::spawn(async move {
            let delay = faults.delay_ms.load(Ordering::Relaxed);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let answer = if faults.servfail.load(Ordering::Relaxed) {
                "err server misbehaving".to_string()
            } else {
                answer(&zone, &query)
            };
            let _ = ep.send_to(from, TAG, answer.as_bytes()).await;
        });
    }
}

/// `S name` -> `ok` and `target port` lines; `A host` -> `ok` and address
/// lines; `err why` when there is no such name.
fn answer(zone: &Zone, query: &str) -> String {
    let lines: Option<Vec<String>> = match query.split_once(' ') {
        Some(("S", name)) => zone
            .srv
            .get(name)
            .map(|r| r.iter().map(|(t, p)| format!("{t} {p}")).collect()),
        Some(("A", host)) => zone
            .a
            .get(host)
            .map(|r| r.iter().map(IpAddr::to_string).collect()),
        _ => None,
    };
    match lines {
        Some(l) => format!("ok\n{}", l.join("\n")),
        None => format!("err lookup {}: no such host", query.get(2..).unwrap_or("")),
    }
}

/// The members' resolver in the simulator.
pub struct SimDns;

impl SimDns {
    async fn ask(&self, query: String) -> Result<Vec<String>, DnsError> {
        for _ in 0..ATTEMPTS {
            let ep = Endpoint::bind("0.0.0.0:0")
                .await
                .map_err(|e| DnsError::Failed(e.to_string()))?;
            if ep
                .send_to(SIM_DNS_ADDR, TAG, query.as_bytes())
                .await
                .is_err()
            {
                continue;
            }
            let mut buf = vec![0u8; 4096];
            let Ok(Ok((n, _))) =
                tokio::time::timeout(QUERY_TIMEOUT, ep.recv_from(TAG, &mut buf)).await
            else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let mut lines = text.lines();
            return match lines.next() {
                Some("ok") => Ok(lines.map(String::from).collect()),
                Some(err) if err.ends_with("no such host") => Err(DnsError::NotFound(
                    err.trim_start_matches("err ").to_string(),
                )),
                Some(err) => Err(DnsError::Failed(err.trim_start_matches("err ").to_string())),
                None => Err(DnsError::Failed("empty answer".into())),
            };
        }
        Err(DnsError::Failed(format!(
            "lookup {}: i/o timeout",
            query.get(2..).unwrap_or("")
        )))
    }
}

#[tonic::async_trait]
impl Dns for SimDns {
    async fn srv(&self, name: &str) -> Result<Vec<(String, u16)>, DnsError> {
        let lines = self.ask(format!("S {name}")).await?;
        Ok(lines
            .iter()
            .filter_map(|l| {
                let (t, p) = l.split_once(' ')?;
                Some((t.to_string(), p.parse().ok()?))
            })
            .collect())
    }

    async fn addrs(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(ip) = host.parse() {
            return Ok(vec![ip]);
        }
        let lines = self.ask(format!("A {host}")).await?;
        Ok(lines.iter().filter_map(|l| l.parse().ok()).collect())
    }
}
