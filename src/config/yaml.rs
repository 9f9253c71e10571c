//! etcd's YAML configuration file (`--config-file`, `ETCD_CONFIG_FILE`),
//! turned into the same flag set the command line gives.
//!
//! etcd decodes the file as JSON into its `Config` struct (sigs.k8s.io/yaml
//! over go-yaml v2), which fixes the forms accepted here: keys are the flag
//! names; URL lists are one comma-separated string; `cipher-suites` and
//! `log-outputs` are lists; durations are integers of nanoseconds (a Go
//! `time.Duration` in JSON), so `"5s"` is refused; booleans are YAML 1.1
//! booleans (`true`, `yes`, `on`, ...); the TLS flags sit in the nested
//! `client-transport-security` and `peer-transport-security` objects; a
//! `null` leaves the default; unknown keys are ignored (returned, so that
//! the daemon can warn about them). Aliases are refused: a few lines of
//! them expand to gigabytes.

use std::collections::BTreeMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::{Yaml, YamlLoader};

use super::{flag_kind, ConfigError};

/// etcd's file keys (3.4, and those 3.5 adds), the TLS objects aside. A
/// file key is not a flag: top-level `cert-file` or `version` mean nothing
/// to etcd and are reported as unknown here too.
const KEYS: &[&str] = &[
    "name",
    "data-dir",
    "wal-dir",
    "snapshot-count",
    "max-snapshots",
    "max-wals",
    "heartbeat-interval",
    "election-timeout",
    "initial-election-tick-advance",
    "backend-batch-interval",
    "backend-batch-limit",
    "quota-backend-bytes",
    "max-txn-ops",
    "max-request-bytes",
    "max-concurrent-streams",
    "cipher-suites",
    "initial-cluster-state",
    "discovery-srv",
    "discovery-srv-name",
    "discovery-proxy",
    "discovery",
    "initial-cluster",
    "initial-cluster-token",
    "strict-reconfig-check",
    "enable-v2",
    "auto-compaction-mode",
    "auto-compaction-retention",
    "grpc-keepalive-min-time",
    "grpc-keepalive-interval",
    "grpc-keepalive-timeout",
    "pre-vote",
    "auth-token",
    "bcrypt-cost",
    "auth-token-ttl",
    "experimental-initial-corrupt-check",
    "experimental-corrupt-check-time",
    "experimental-enable-v2v3",
    "experimental-backend-bbolt-freelist-type",
    "experimental-enable-lease-checkpoint",
    "experimental-enable-lease-checkpoint-persist",
    "experimental-compaction-batch-limit",
    "experimental-watch-progress-notify-interval",
    "experimental-warning-apply-duration",
    "force-new-cluster",
    "enable-pprof",
    "metrics",
    "listen-metrics-urls",
    "logger",
    "log-level",
    "log-outputs",
    "log-output",
    "debug",
    "log-package-levels",
    "enable-grpc-gateway",
    "unsafe-no-fsync",
    "listen-peer-urls",
    "listen-client-urls",
    "initial-advertise-peer-urls",
    "advertise-client-urls",
    "cors",
    "host-whitelist",
    "proxy",
    "discovery-fallback",
    "proxy-failure-wait",
    "proxy-refresh-interval",
    "proxy-dial-timeout",
    "proxy-write-timeout",
    "proxy-read-timeout",
    // etcd 3.5
    "listen-client-http-urls",
    "tls-min-version",
    "tls-max-version",
    "self-signed-cert-validity",
    "v2-deprecation",
    "enable-log-rotation",
    "log-rotation-config-json",
    "backend-bbolt-freelist-type",
    "experimental-compact-hash-check-enabled",
    "experimental-compact-hash-check-time",
    "experimental-compaction-sleep-interval",
    "experimental-downgrade-check-time",
    "experimental-memory-mlock",
    "experimental-txn-mode-write-with-shared-buffer",
    "experimental-bootstrap-defrag-threshold-megabytes",
    "experimental-stop-grpc-service-on-defrag",
    "experimental-snapshot-catch-up-entries",
    "experimental-enable-distributed-tracing",
    "experimental-distributed-tracing-address",
    "experimental-distributed-tracing-service-name",
    "experimental-distributed-tracing-instance-id",
    "experimental-distributed-tracing-sampling-rate",
];

/// etcd's nested objects concord reads only as flags so far: 3.5's
/// `socket-options` (`--socket-reuse-*`) and 3.6's `discovery-config` (the
/// `--discovery-*` v3 options). Refused in a file, never ignored.
const REFUSED_KEYS: &[&str] = &["socket-options", "discovery-config"];

/// Keys etcd applies only when not empty (an empty string keeps the
/// default).
const EMPTY_IS_DEFAULT: &[&str] = &[
    "cors",
    "host-whitelist",
    "listen-peer-urls",
    "listen-client-urls",
    "initial-advertise-peer-urls",
    "advertise-client-urls",
    "initial-cluster-state",
];

/// Deepest nesting accepted (etcd's keys nest two levels).
const MAX_DEPTH: usize = 64;

/// Keys whose value is a Go `time.Duration`: integer nanoseconds in YAML.
const DURATION_KEYS: &[&str] = &[
    "backend-batch-interval",
    "grpc-keepalive-min-time",
    "grpc-keepalive-interval",
    "grpc-keepalive-timeout",
    "experimental-corrupt-check-time",
    "experimental-watch-progress-notify-interval",
    "experimental-warning-apply-duration",
    "experimental-compact-hash-check-time",
    "experimental-compaction-sleep-interval",
    "experimental-downgrade-check-time",
];

/// Keys whose value is a YAML list of strings.
const LIST_KEYS: &[&str] = &[
    "cipher-suites",
    "log-outputs",
    "peer-cert-allowed-cn",
    "peer-cert-allowed-hostname",
    "client-cert-allowed-hostname",
];

/// YAML keys spelled differently from their flag.
const RENAMED: &[(&str, &str)] = &[(
    "experimental-snapshot-catch-up-entries",
    "experimental-snapshot-catchup-entries",
)];

/// The security objects' keys, read by etcd 3.4 (the flag is the key, with
/// `peer-` in front for the peer object).
const SECURITY_KEYS: &[&str] = &[
    "cert-file",
    "key-file",
    "trusted-ca-file",
    "client-cert-auth",
    "auto-tls",
];

/// The keys etcd 3.5 adds to the security objects: (key, the client
/// object's flag, the peer object's flag); `None` where no flag exists.
const SECURITY_KEYS_35: &[(&str, Option<&str>, Option<&str>)] = &[
    (
        "client-cert-file",
        Some("client-cert-file"),
        Some("peer-client-cert-file"),
    ),
    (
        "client-key-file",
        Some("client-key-file"),
        Some("peer-client-key-file"),
    ),
    ("allowed-cn", None, Some("peer-cert-allowed-cn")),
    (
        "allowed-hostname",
        Some("client-cert-allowed-hostname"),
        Some("peer-cert-allowed-hostname"),
    ),
    (
        "skip-client-san-verification",
        None,
        Some("experimental-peer-skip-client-san-verification"),
    ),
];

/// What a config file sets.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FileFlags {
    /// Flag name to value, in the command line's text form.
    pub set: BTreeMap<String, String>,
    /// Keys etcd does not know (ignored, as etcd ignores them).
    pub unknown: Vec<String>,
    /// Keys etcd knows that concord cannot honour and that no flag names
    /// (refused).
    pub refused: Vec<String>,
}

/// Parses the text of a config file.
pub fn parse(text: &str) -> Result<FileFlags, ConfigError> {
    let bad = |why: String| ConfigError::ConfigFile(why);
    // First a flat pass over the events (the loader recurses and copies
    // aliased nodes): no aliases, no deep nesting.
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    loop {
        let (event, _) = parser.next_token().map_err(|e| bad(e.to_string()))?;
        match event {
            Event::StreamEnd => break,
            Event::Alias(_) => return Err(bad("YAML aliases are not supported".into())),
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(bad(format!("nested deeper than {MAX_DEPTH} levels")));
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    let docs = YamlLoader::load_from_str(text).map_err(|e| bad(e.to_string()))?;
    let mut out = FileFlags::default();
    let top = match docs.into_iter().next() {
        None | Some(Yaml::Null) => return Ok(out),
        Some(Yaml::Hash(h)) => h,
        Some(other) => {
            return Err(bad(format!(
                "want a mapping of etcd's configuration keys, found {}",
                kind(&other)
            )))
        }
    };
    for (k, v) in top {
        let Yaml::String(key) = k else {
            return Err(bad(format!("a key must be a string, found {}", kind(&k))));
        };
        let prefix = match key.as_str() {
            "client-transport-security" => Some(""),
            "peer-transport-security" => Some("peer-"),
            _ => None,
        };
        if let Some(prefix) = prefix {
            security(&mut out, &key, prefix, v)?;
            continue;
        }
        if REFUSED_KEYS.contains(&key.as_str()) && !matches!(v, Yaml::Null) {
            out.refused.push(key);
            continue;
        }
        let flag = RENAMED
            .iter()
            .find(|(yaml, _)| *yaml == key)
            .map_or(key.as_str(), |(_, flag)| flag);
        match flag_kind(flag).filter(|_| KEYS.contains(&key.as_str())) {
            Some(is_bool) => {
                let empty = matches!(&v, Yaml::String(s) if s.is_empty());
                if empty && EMPTY_IS_DEFAULT.contains(&flag) {
                    continue;
                }
                if let Some(value) = value(flag, &key, is_bool, v)? {
                    out.set.insert(flag.to_string(), value);
                }
            }
            None => out.unknown.push(key),
        }
    }
    Ok(out)
}

/// A nested `*-transport-security` object: its keys become the TLS flags.
fn security(out: &mut FileFlags, key: &str, prefix: &str, v: Yaml) -> Result<(), ConfigError> {
    let h = match v {
        Yaml::Null => return Ok(()),
        Yaml::Hash(h) => h,
        other => {
            return Err(ConfigError::ConfigFile(format!(
                "{key}: want a mapping, found {}",
                kind(&other)
            )))
        }
    };
    for (k, v) in h {
        let Yaml::String(sub) = k else {
            return Err(ConfigError::ConfigFile(format!(
                "{key}: a key must be a string, found {}",
                kind(&k)
            )));
        };
        let flag = if SECURITY_KEYS.contains(&sub.as_str()) {
            format!("{prefix}{sub}")
        } else if let Some((_, client, peer)) = SECURITY_KEYS_35.iter().find(|(k, _, _)| *k == sub)
        {
            match if prefix.is_empty() { client } else { peer } {
                Some(flag) => flag.to_string(),
                // A security option etcd 3.5 has and concord cannot honour.
                None => {
                    out.refused.push(format!("{key}.{sub}"));
                    continue;
                }
            }
        } else {
            out.unknown.push(format!("{key}.{sub}"));
            continue;
        };
        let is_bool = flag_kind(&flag) == Some(true);
        if let Some(value) = value(&flag, &format!("{key}.{sub}"), is_bool, v)? {
            out.set.insert(flag, value);
        }
    }
    Ok(())
}

/// One value in the flag's text form (`None`: null, the default stays).
fn value(flag: &str, key: &str, is_bool: bool, v: Yaml) -> Result<Option<String>, ConfigError> {
    let wrong = |want: &str, v: &Yaml| {
        Err(ConfigError::ConfigFile(format!(
            "{key}: want {want}, found {}",
            kind(v)
        )))
    };
    let text =
        match v {
            Yaml::Null => return Ok(None),
            Yaml::Boolean(b) if is_bool => b.to_string(),
            // go-yaml v2 (YAML 1.1) reads these as booleans too.
            Yaml::String(s) if is_bool => match yaml11_bool(&s) {
                Some(b) => b.to_string(),
                None => return wrong("a boolean", &Yaml::String(s)),
            },
            v if is_bool => return wrong("a boolean", &v),
            Yaml::Integer(ns) if DURATION_KEYS.contains(&flag) => format!("{ns}ns"),
            v if DURATION_KEYS.contains(&flag) => return wrong(
                "an integer of nanoseconds (etcd reads a duration as a Go time.Duration in JSON)",
                &v,
            ),
            Yaml::Array(items) if LIST_KEYS.contains(&flag) => {
                let mut all = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Yaml::String(s) => all.push(s),
                        other => return wrong("a list of strings", &other),
                    }
                }
                all.join(",")
            }
            v if LIST_KEYS.contains(&flag) => return wrong("a list of strings", &v),
            Yaml::String(s) | Yaml::Real(s) => s,
            Yaml::Integer(n) => n.to_string(),
            // etcd reads a YAML scalar into a string field as its text.
            Yaml::Boolean(b) => b.to_string(),
            v => return wrong("a string or a number", &v),
        };
    Ok(Some(text))
}

fn yaml11_bool(s: &str) -> Option<bool> {
    match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => {
            Some(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False" | "FALSE" => {
            Some(false)
        }
        _ => None,
    }
}

fn kind(v: &Yaml) -> &'static str {
    match v {
        Yaml::Real(_) => "a number",
        Yaml::Integer(_) => "an integer",
        Yaml::String(_) => "a string",
        Yaml::Boolean(_) => "a boolean",
        Yaml::Array(_) => "a list",
        Yaml::Hash(_) => "a mapping",
        Yaml::Alias(_) => "an alias",
        Yaml::Null => "null",
        Yaml::BadValue => "a bad value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str) -> BTreeMap<String, String> {
        parse(text).expect("parses").set
    }

    fn err(text: &str) -> String {
        parse(text).expect_err("refused").to_string()
    }

    #[test]
    fn keys_become_flags_in_their_command_line_form() {
        let s = set("
name: infra0
data-dir: /var/lib/etcd
snapshot-count: 10000
heartbeat-interval: 100
listen-client-urls: http://10.0.0.1:2379,http://127.0.0.1:2379
initial-cluster-state: existing
strict-reconfig-check: yes
enable-v2: false
cipher-suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]
experimental-watch-progress-notify-interval: 5000000000
experimental-snapshot-catch-up-entries: 5000
auto-compaction-retention: \"1\"
discovery:
");
        let want = [
            ("auto-compaction-retention", "1"),
            (
                "cipher-suites",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            ),
            ("data-dir", "/var/lib/etcd"),
            ("enable-v2", "false"),
            ("experimental-snapshot-catchup-entries", "5000"),
            (
                "experimental-watch-progress-notify-interval",
                "5000000000ns",
            ),
            ("heartbeat-interval", "100"),
            ("initial-cluster-state", "existing"),
            (
                "listen-client-urls",
                "http://10.0.0.1:2379,http://127.0.0.1:2379",
            ),
            ("name", "infra0"),
            ("snapshot-count", "10000"),
            ("strict-reconfig-check", "true"),
        ];
        let want: BTreeMap<String, String> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(s, want);
    }

    #[test]
    fn security_objects_set_the_tls_flags() {
        let s = set("
client-transport-security:
  cert-file: /c.pem
  key-file: /c.key
  client-cert-auth: true
  trusted-ca-file: /ca.pem
  auto-tls: false
peer-transport-security:
  auto-tls: true
  no-such-option: etcd
");
        assert_eq!(s["cert-file"], "/c.pem");
        assert_eq!(s["key-file"], "/c.key");
        assert_eq!(s["client-cert-auth"], "true");
        assert_eq!(s["trusted-ca-file"], "/ca.pem");
        assert_eq!(s["auto-tls"], "false");
        assert_eq!(s["peer-auto-tls"], "true");
        assert_eq!(s.len(), 6);
        let f =
            parse("peer-transport-security:\n  no-such-option: etcd\nno-such-key: 1\n").unwrap();
        assert_eq!(
            f.unknown,
            ["peer-transport-security.no-such-option", "no-such-key"]
        );
        // etcd 3.5's security keys become their flags (or are refused).
        let f = parse("peer-transport-security:\n  allowed-cn: [a, b]\n  client-cert-file: /p.pem\nclient-transport-security:\n  allowed-cn: [c]\n").unwrap();
        assert_eq!(f.set["peer-cert-allowed-cn"], "a,b");
        assert_eq!(f.set["peer-client-cert-file"], "/p.pem");
        assert_eq!(f.refused, ["client-transport-security.allowed-cn"]);
    }

    #[test]
    fn empty_and_null_set_nothing() {
        assert!(set("").is_empty());
        assert!(set("# only a comment\n").is_empty());
        assert!(set("name: ~\nclient-transport-security:\n").is_empty());
    }

    #[test]
    fn wrong_types_are_refused_with_the_key() {
        assert!(err("- a\n- b\n").contains("want a mapping"));
        assert!(err("1: x\n").contains("a key must be a string"));
        assert!(err("enable-v2: maybe\n").contains("enable-v2: want a boolean"));
        assert!(err("grpc-keepalive-timeout: 5s\n")
            .contains("grpc-keepalive-timeout: want an integer of nanoseconds"));
        assert!(err("cipher-suites: TLS_X\n").contains("cipher-suites: want a list of strings"));
        assert!(err("name: [a]\n").contains("name: want a string or a number"));
        assert_eq!(set("name: true\n")["name"], "true");
        assert!(err("peer-transport-security: x\n").contains("want a mapping"));
        assert!(err("client-transport-security:\n  client-cert-auth: 1\n")
            .contains("client-transport-security.client-cert-auth: want a boolean"));
    }

    #[test]
    fn broken_yaml_and_aliases_are_refused() {
        assert!(err("name: [unclosed\n").starts_with("config file: "));
        // Nine levels of ten aliases would expand to 10^9 strings.
        let mut text = String::from("a0: &a0 x\n");
        for i in 1..10 {
            let refs: Vec<String> = (0..10).map(|_| format!("*a{}", i - 1)).collect();
            text.push_str(&format!("a{i}: &a{i} [{}]\n", refs.join(", ")));
        }
        assert!(err(&text).contains("aliases are not supported"));
        // Deep nesting is refused before anything recurses over it.
        assert!(err(&"- ".repeat(100_000)).contains("nested deeper than 64 levels"));
    }

    #[test]
    fn only_etcds_file_keys_count() {
        // Flags that are not file keys (TLS sits in the nested objects).
        let f =
            parse("cert-file: /c.pem\nversion: true\nlog-format: json\nconfig-file: x\n").unwrap();
        assert!(f.set.is_empty(), "{:?}", f.set);
        assert_eq!(
            f.unknown,
            ["cert-file", "version", "log-format", "config-file"]
        );
        // etcd applies these only when not empty.
        assert!(set("listen-client-urls: \"\"\ninitial-cluster-state: \"\"\n").is_empty());
        assert_eq!(set("initial-cluster: \"\"\n")["initial-cluster"], "");
    }
}
