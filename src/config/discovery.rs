//! The discovery flags: which way a new member finds its cluster (etcd's
//! discovery URL, etcd 3.6's v3 discovery, DNS SRV, or none), with etcd
//! 3.6's validation, and refusals where a discovery option would
//! otherwise configure nothing.

use std::path::PathBuf;

use super::{parse_bool, parse_duration, ConfigError, Discovery, V3Discovery};

/// The v3 discovery options beyond the endpoints.
const V3_OPTIONS: &[&str] = &[
    "discovery-token",
    "discovery-cert",
    "discovery-key",
    "discovery-cacert",
    "discovery-user",
    "discovery-password",
];

/// The discovery the flags ask for; `initial_cluster_given`: a non-empty
/// `--initial-cluster` was set explicitly.
pub(super) fn from_flags(
    get: &dyn Fn(&str) -> String,
    initial_cluster_given: bool,
) -> Result<Discovery, ConfigError> {
    let url = get("discovery");
    let srv = get("discovery-srv");
    let endpoints = get("discovery-endpoints");
    let token = get("discovery-token");
    let kinds = [
        initial_cluster_given,
        !url.is_empty(),
        !srv.is_empty(),
        !endpoints.is_empty(),
    ];
    if kinds.iter().filter(|k| **k).count() > 1 {
        return Err(ConfigError::ConflictBootstrapFlags);
    }
    let v3_set = !endpoints.is_empty() || V3_OPTIONS.iter().any(|f| !get(f).is_empty());
    if !get("discovery-proxy").is_empty() && v3_set {
        return Err(ConfigError::V2AndV3Discovery);
    }
    if endpoints.is_empty() != token.is_empty() {
        return Err(ConfigError::DiscoveryTokenMissing);
    }
    // Options that would configure nothing are refused, not ignored.
    if endpoints.is_empty() {
        if let Some(f) = V3_OPTIONS.iter().find(|f| !get(f).is_empty()) {
            return Err(ConfigError::WithoutItsFlag(f, "discovery-endpoints"));
        }
    }
    if url.is_empty() && !get("discovery-proxy").is_empty() {
        return Err(ConfigError::WithoutItsFlag("discovery-proxy", "discovery"));
    }
    if srv.is_empty() && !get("discovery-srv-name").is_empty() {
        return Err(ConfigError::WithoutItsFlag(
            "discovery-srv-name",
            "discovery-srv",
        ));
    }
    // Parsed whatever the kind, so that a bad value is refused.
    let v3 = v3_options(get, endpoints, token)?;
    if !url.is_empty() {
        let proxy = Some(get("discovery-proxy")).filter(|p| !p.is_empty());
        return Ok(Discovery::Url { url, proxy });
    }
    if !srv.is_empty() {
        return Ok(Discovery::Srv {
            domain: srv,
            service_name: get("discovery-srv-name"),
        });
    }
    if !v3.endpoints.is_empty() {
        return Ok(Discovery::V3(v3));
    }
    Ok(Discovery::Static)
}

fn v3_options(
    get: &dyn Fn(&str) -> String,
    endpoints: String,
    token: String,
) -> Result<V3Discovery, ConfigError> {
    let mut list: Vec<String> = Vec::new();
    if !endpoints.is_empty() {
        list = endpoints.split(',').map(|e| e.trim().to_string()).collect();
        if list.iter().any(String::is_empty) {
            return Err(ConfigError::EmptyDiscoveryEndpoint);
        }
        // etcd's UniqueStrings: deduplicated and sorted.
        list.sort();
        list.dedup();
    }
    let dur = |flag: &str| parse_duration(flag, &get(flag));
    let path = |flag: &str| Some(PathBuf::from(get(flag))).filter(|p| !p.as_os_str().is_empty());
    Ok(V3Discovery {
        endpoints: list,
        token,
        dial_timeout: dur("discovery-dial-timeout")?,
        request_timeout: dur("discovery-request-timeout")?,
        keepalive_time: dur("discovery-keepalive-time")?,
        keepalive_timeout: dur("discovery-keepalive-timeout")?,
        insecure_transport: parse_bool(
            "discovery-insecure-transport",
            &get("discovery-insecure-transport"),
        )?,
        insecure_skip_tls_verify: parse_bool(
            "discovery-insecure-skip-tls-verify",
            &get("discovery-insecure-skip-tls-verify"),
        )?,
        cert: path("discovery-cert"),
        key: path("discovery-key"),
        cacert: path("discovery-cacert"),
        user: get("discovery-user"),
        password: get("discovery-password"),
    })
}
