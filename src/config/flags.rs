//! flags: every etcd flag (3.4, 3.5, and 3.6's v3 discovery), and what
//! concord does with it.
//!
//! Fail closed: a flag is implemented, or accepted only with the values
//! whose behaviour concord has (`Only`), or refused whatever its value
//! (`Refused`), or on the one short list of flags that are safe to accept
//! and ignore (`Ignored`, each with its reason). A flag that changes
//! bootstrap, durability, disk space, compaction, security or membership
//! is never ignored; the tests below hold the table to that rule. The same
//! table judges `ETCD_*` variables and the config file's keys, which become
//! the same flags.

use super::ConfigError;

/// What a flag's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    /// Any text: URLs, names, paths, numbers, durations.
    Text,
}

/// What a flag acts on (the rule: only `Other` may be ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    Bootstrap,
    Durability,
    Space,
    Compaction,
    Security,
    Membership,
    /// Logging, profiling, tuning, features not served.
    Other,
}

/// What concord does with a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Support {
    /// Read into the configuration.
    Implemented,
    /// Accepted for every value because concord's design already does what
    /// any value asks (the reason says why).
    Holds(&'static str),
    /// Accepted only with these values (compared after normalising
    /// booleans, numbers and durations): what concord does. Any other
    /// value is refused.
    Only(&'static [&'static str]),
    /// Refused whatever its value: concord does not support it yet.
    Refused,
    /// Safe to accept and ignore: no effect on data, safety or security.
    Ignored(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Flag {
    pub name: &'static str,
    pub kind: Kind,
    /// The default, in the command line's form ("" for none).
    pub default: &'static str,
    #[cfg_attr(not(test), allow(dead_code))]
    pub effect: Effect,
    pub support: Support,
}

const fn f(
    name: &'static str,
    kind: Kind,
    default: &'static str,
    effect: Effect,
    support: Support,
) -> Flag {
    Flag {
        name,
        kind,
        default,
        effect,
        support,
    }
}

use Effect::{Bootstrap, Compaction, Durability, Membership, Other, Security, Space};
use Kind::{Bool, Text};
use Support::{Holds, Ignored, Implemented, Only, Refused};

/// Every flag etcd defines.
pub(crate) const FLAGS: &[Flag] = &[
    // Member.
    f("name", Text, "default", Bootstrap, Implemented),
    f("data-dir", Text, "", Durability, Implemented),
    f("wal-dir", Text, "", Durability, Only(&[""])),
    f("snapshot-count", Text, "100000", Space, Implemented),
    f("heartbeat-interval", Text, "100", Other, Implemented),
    f("election-timeout", Text, "1000", Other, Implemented),
    f(
        "initial-election-tick-advance",
        Bool,
        "true",
        Other,
        Ignored("how soon a starting member's first election timer fires: liveness only (pre-vote keeps a restarted member from disturbing a leader either way)"),
    ),
    f("listen-peer-urls", Text, "http://localhost:2380", Bootstrap, Implemented),
    f("listen-client-urls", Text, "http://localhost:2379", Other, Implemented),
    f("listen-client-http-urls", Text, "", Other, Only(&[""])),
    f(
        "max-snapshots",
        Text,
        "5",
        Space,
        Holds("concord keeps no snapshot files: a raft snapshot is built from the store when a follower needs one"),
    ),
    f(
        "max-wals",
        Text,
        "5",
        Space,
        Holds("concord keeps no WAL files: the raft log is a partition of the store, truncated after each snapshot"),
    ),
    f("quota-backend-bytes", Text, "0", Space, Refused),
    f(
        "backend-bbolt-freelist-type",
        Text,
        "map",
        Other,
        Ignored("bbolt's free-list layout; concord's store is an LSM, with no free list"),
    ),
    f(
        "backend-batch-interval",
        Text,
        "0",
        Other,
        Ignored("how often bbolt commits its batch; concord commits the store once per applied group, and writes are durable in the raft log before they are acknowledged"),
    ),
    f(
        "backend-batch-limit",
        Text,
        "0",
        Other,
        Ignored("how many bbolt writes make a batch; see backend-batch-interval"),
    ),
    f("max-txn-ops", Text, "128", Other, Implemented),
    f("max-request-bytes", Text, "1572864", Other, Implemented),
    f("max-concurrent-streams", Text, "4294967295", Other, Implemented),
    f("grpc-keepalive-min-time", Text, "5s", Security, Refused),
    f("grpc-keepalive-interval", Text, "2h0m0s", Other, Implemented),
    f("grpc-keepalive-timeout", Text, "20s", Other, Implemented),
    f("enable-grpc-gateway", Bool, "true", Other, Implemented),
    f("socket-reuse-port", Bool, "false", Other, Implemented),
    f(
        "socket-reuse-address",
        Bool,
        "false",
        Other,
        Holds("every listener has SO_REUSEADDR, as Go sets it on every listener whatever the flag says"),
    ),
    f("raft-read-timeout", Text, "5s", Membership, Refused),
    f("raft-write-timeout", Text, "5s", Membership, Refused),
    // Clustering.
    f(
        "initial-advertise-peer-urls",
        Text,
        "http://localhost:2380",
        Bootstrap,
        Implemented,
    ),
    f("initial-cluster", Text, "", Bootstrap, Implemented),
    f("initial-cluster-state", Text, "new", Bootstrap, Implemented),
    f("initial-cluster-token", Text, "etcd-cluster", Bootstrap, Implemented),
    f("advertise-client-urls", Text, "http://localhost:2379", Other, Implemented),
    f("discovery", Text, "", Bootstrap, Implemented),
    // etcd 3.4/3.5 default to "proxy", the v2 proxy concord does not run;
    // concord exits on a full cluster, as etcd 3.6 does.
    f("discovery-fallback", Text, "exit", Bootstrap, Only(&["exit"])),
    f("discovery-proxy", Text, "", Bootstrap, Implemented),
    f("discovery-srv", Text, "", Bootstrap, Implemented),
    f("discovery-srv-name", Text, "", Bootstrap, Implemented),
    // etcd 3.6's v3 discovery.
    f("discovery-token", Text, "", Bootstrap, Implemented),
    f("discovery-endpoints", Text, "", Bootstrap, Implemented),
    f("discovery-dial-timeout", Text, "2s", Bootstrap, Implemented),
    f("discovery-request-timeout", Text, "5s", Bootstrap, Implemented),
    f("discovery-keepalive-time", Text, "2s", Bootstrap, Implemented),
    f("discovery-keepalive-timeout", Text, "6s", Bootstrap, Implemented),
    f("discovery-insecure-transport", Bool, "true", Security, Implemented),
    f("discovery-insecure-skip-tls-verify", Bool, "false", Security, Implemented),
    f("discovery-cert", Text, "", Security, Implemented),
    f("discovery-key", Text, "", Security, Implemented),
    f("discovery-cacert", Text, "", Security, Implemented),
    f("discovery-user", Text, "", Security, Implemented),
    f("discovery-password", Text, "", Security, Implemented),
    // Concord checks no reconfiguration against the peers' health yet.
    f("strict-reconfig-check", Bool, "true", Membership, Only(&["false"])),
    f("pre-vote", Bool, "true", Membership, Implemented),
    f("auto-compaction-retention", Text, "0", Compaction, Only(&["0"])),
    f(
        "auto-compaction-mode",
        Text,
        "periodic",
        Compaction,
        // No effect while the retention is 0, the only one accepted yet.
        Only(&["periodic", "revision"]),
    ),
    f("enable-v2", Bool, "false", Other, Only(&["false"])),
    f(
        "v2-deprecation",
        Text,
        "not-yet",
        Other,
        Holds("concord has no v2 store: there is no v2 data to keep, write or drop at any stage"),
    ),
    f("experimental-enable-v2v3", Text, "", Other, Only(&[""])),
    // Security.
    f("cert-file", Text, "", Security, Implemented),
    f("key-file", Text, "", Security, Implemented),
    f("client-cert-auth", Bool, "false", Security, Implemented),
    f("client-crl-file", Text, "", Security, Implemented),
    f("client-cert-allowed-hostname", Text, "", Security, Implemented),
    f("trusted-ca-file", Text, "", Security, Implemented),
    f("auto-tls", Bool, "false", Security, Implemented),
    f("peer-cert-file", Text, "", Security, Implemented),
    f("peer-key-file", Text, "", Security, Implemented),
    f("peer-client-cert-auth", Bool, "false", Security, Implemented),
    f("peer-trusted-ca-file", Text, "", Security, Implemented),
    f("peer-cert-allowed-cn", Text, "", Security, Implemented),
    f("peer-cert-allowed-hostname", Text, "", Security, Implemented),
    f("peer-auto-tls", Bool, "false", Security, Implemented),
    f("peer-crl-file", Text, "", Security, Implemented),
    f("cipher-suites", Text, "", Security, Implemented),
    // Concord serves no HTTP/1 face yet (issue 13): nothing to guard.
    f("cors", Text, "*", Security, Only(&["*"])),
    f("host-whitelist", Text, "*", Security, Only(&["*"])),
    f(
        "experimental-peer-skip-client-san-verification",
        Bool,
        "false",
        Security,
        Refused,
    ),
    f("client-cert-file", Text, "", Security, Only(&[""])),
    f("client-key-file", Text, "", Security, Only(&[""])),
    f("peer-client-cert-file", Text, "", Security, Only(&[""])),
    f("peer-client-key-file", Text, "", Security, Only(&[""])),
    f("self-signed-cert-validity", Text, "1", Security, Implemented),
    // rustls speaks TLS 1.2 and 1.3.
    f("tls-min-version", Text, "TLS1.2", Security, Implemented),
    f("tls-max-version", Text, "", Security, Implemented),
    // Auth (concord has no Auth service yet).
    f("auth-token", Text, "simple", Security, Implemented),
    f("bcrypt-cost", Text, "10", Security, Implemented),
    f("auth-token-ttl", Text, "300", Security, Implemented),
    // Profiling and monitoring.
    f(
        "enable-pprof",
        Bool,
        "false",
        Other,
        Ignored("Go's pprof profiling endpoints; concord serves none (profile it with perf)"),
    ),
    f("metrics", Text, "basic", Other, Implemented),
    f("listen-metrics-urls", Text, "", Other, Implemented),
    // Logging.
    f(
        "logger",
        Text,
        "zap",
        Other,
        Ignored("which Go logging library etcd uses; concord logs through tracing"),
    ),
    f(
        "log-outputs",
        Text,
        "default",
        Other,
        Ignored("log routing: concord logs to stderr"),
    ),
    f(
        "log-output",
        Text,
        "default",
        Other,
        Ignored("log routing (3.4's deprecated spelling of log-outputs)"),
    ),
    f("log-level", Text, "info", Other, Implemented),
    f("log-format", Text, "text", Other, Implemented),
    f(
        "enable-log-rotation",
        Bool,
        "false",
        Other,
        Ignored("rotation of log files; concord writes none"),
    ),
    f(
        "log-rotation-config-json",
        Text,
        "",
        Other,
        Ignored("rotation of log files; concord writes none"),
    ),
    f("debug", Bool, "false", Other, Implemented),
    f(
        "log-package-levels",
        Text,
        "",
        Other,
        Ignored("capnslog's per-package log levels (etcd 3.4)"),
    ),
    // The v2 proxy.
    f("proxy", Text, "off", Bootstrap, Only(&["off"])),
    f(
        "proxy-failure-wait",
        Text,
        "5000",
        Other,
        Ignored("a timeout of the v2 proxy, which concord does not run"),
    ),
    f(
        "proxy-refresh-interval",
        Text,
        "30000",
        Other,
        Ignored("a timeout of the v2 proxy, which concord does not run"),
    ),
    f(
        "proxy-dial-timeout",
        Text,
        "1000",
        Other,
        Ignored("a timeout of the v2 proxy, which concord does not run"),
    ),
    f(
        "proxy-write-timeout",
        Text,
        "5000",
        Other,
        Ignored("a timeout of the v2 proxy, which concord does not run"),
    ),
    f(
        "proxy-read-timeout",
        Text,
        "0",
        Other,
        Ignored("a timeout of the v2 proxy, which concord does not run"),
    ),
    // Experimental.
    f(
        "experimental-initial-corrupt-check",
        Bool,
        "false",
        Durability,
        Implemented,
    ),
    f("experimental-corrupt-check-time", Text, "0s", Durability, Only(&["0s"])),
    f(
        "experimental-backend-bbolt-freelist-type",
        Text,
        "array",
        Other,
        Ignored("bbolt's free-list layout (3.4's name); concord's store has no free list"),
    ),
    // Concord always checkpoints renewals and persists the remaining TTL.
    f(
        "experimental-enable-lease-checkpoint",
        Bool,
        "false",
        Durability,
        Only(&["true"]),
    ),
    f(
        "experimental-enable-lease-checkpoint-persist",
        Bool,
        "false",
        Durability,
        Only(&["true"]),
    ),
    f("experimental-compaction-batch-limit", Text, "1000", Compaction, Refused),
    f(
        "experimental-watch-progress-notify-interval",
        Text,
        "10m0s",
        Other,
        Implemented,
    ),
    f(
        "experimental-warning-apply-duration",
        Text,
        "100ms",
        Other,
        Ignored("the threshold of a slow-apply log warning"),
    ),
    f(
        "experimental-compact-hash-check-enabled",
        Bool,
        "false",
        Durability,
        Only(&["false"]),
    ),
    f(
        "experimental-compact-hash-check-time",
        Text,
        "1m0s",
        Other,
        Ignored("the period of the compact hash check, which concord does not enable (experimental-compact-hash-check-enabled=true is refused)"),
    ),
    f("experimental-compaction-sleep-interval", Text, "10ms", Compaction, Refused),
    f(
        "experimental-downgrade-check-time",
        Text,
        "5s",
        Other,
        Ignored("the period of the downgrade monitor; concord has no downgrade (Downgrade is unimplemented)"),
    ),
    f("experimental-memory-mlock", Bool, "false", Other, Only(&["false"])),
    f(
        "experimental-txn-mode-write-with-shared-buffer",
        Bool,
        "true",
        Other,
        Ignored("which bbolt read buffer write transactions use; concord has no bbolt"),
    ),
    f(
        "experimental-bootstrap-defrag-threshold-megabytes",
        Text,
        "0",
        Space,
        Only(&["0"]),
    ),
    f("experimental-stop-grpc-service-on-defrag", Bool, "false", Other, Only(&["false"])),
    f(
        "experimental-snapshot-catchup-entries",
        Text,
        "5000",
        Space,
        Implemented,
    ),
    f(
        "experimental-enable-distributed-tracing",
        Bool,
        "false",
        Other,
        Only(&["false"]),
    ),
    f(
        "experimental-distributed-tracing-address",
        Text,
        "localhost:4317",
        Other,
        Ignored("an OpenTelemetry trace export option, used only with tracing enabled (refused)"),
    ),
    f(
        "experimental-distributed-tracing-service-name",
        Text,
        "etcd",
        Other,
        Ignored("an OpenTelemetry trace export option, used only with tracing enabled (refused)"),
    ),
    f(
        "experimental-distributed-tracing-instance-id",
        Text,
        "",
        Other,
        Ignored("an OpenTelemetry trace export option, used only with tracing enabled (refused)"),
    ),
    f(
        "experimental-distributed-tracing-sampling-rate",
        Text,
        "0",
        Other,
        Ignored("an OpenTelemetry trace export option, used only with tracing enabled (refused)"),
    ),
    // Unsafe.
    f("force-new-cluster", Bool, "false", Membership, Only(&["false"])),
    f("unsafe-no-fsync", Bool, "false", Durability, Only(&["false"])),
    // Concord's own.
    f("config-file", Text, "", Other, Implemented),
    f("version", Bool, "false", Other, Implemented),
    // Accepted and ignored by etcd 3.4 itself (flags of etcd 0.4).
    f("cluster-active-size", Text, "", Other, Ignored(ETCD_IGNORES)),
    f("cluster-remove-delay", Text, "", Other, Ignored(ETCD_IGNORES)),
    f("cluster-sync-interval", Text, "", Other, Ignored(ETCD_IGNORES)),
    f("config", Text, "", Other, Ignored(ETCD_IGNORES)),
    f("force", Bool, "false", Other, Ignored(ETCD_IGNORES)),
    f("max-result-buffer", Text, "", Other, Ignored(ETCD_IGNORES)),
    f("max-retry-attempts", Text, "", Other, Ignored(ETCD_IGNORES)),
    f("peer-heartbeat-interval", Text, "", Other, Ignored(ETCD_IGNORES)),
    f("peer-election-timeout", Text, "", Other, Ignored(ETCD_IGNORES)),
    f("retry-interval", Text, "", Other, Ignored(ETCD_IGNORES)),
    f("snapshot", Text, "", Other, Ignored(ETCD_IGNORES)),
    f("v", Bool, "false", Other, Ignored(ETCD_IGNORES)),
    f("vv", Bool, "false", Other, Ignored(ETCD_IGNORES)),
];

const ETCD_IGNORES: &str = "a flag of etcd 0.4 that etcd itself accepts and ignores";

pub(crate) fn lookup(name: &str) -> Option<&'static Flag> {
    FLAGS.iter().find(|f| f.name == name)
}

/// The flags concord accepts and ignores: (name, is boolean, why).
pub fn ignored() -> Vec<(&'static str, bool, &'static str)> {
    FLAGS
        .iter()
        .filter_map(|f| match f.support {
            Ignored(why) => Some((f.name, f.kind == Bool, why)),
            _ => None,
        })
        .collect()
}

/// Every flag concord refuses with some value: (name, such a value).
pub fn refused() -> Vec<(&'static str, &'static str)> {
    FLAGS
        .iter()
        .filter_map(|f| match (f.support, f.kind) {
            (Refused, Bool) => Some((f.name, "true")),
            (Refused, Text) => Some((f.name, "1")),
            (Only(values), Bool) => {
                Some((f.name, if values == ["true"] { "false" } else { "true" }))
            }
            (Only(values), Text) => {
                debug_assert!(!values.contains(&"1"));
                Some((f.name, "1"))
            }
            _ => None,
        })
        .collect()
}

/// A value in a comparable form: booleans as `true`/`false`, Go durations
/// as nanoseconds, plain numbers as numbers.
fn normal(kind: Kind, v: &str) -> String {
    let v = v.trim();
    if kind == Bool {
        return match super::parse_bool("", v) {
            Ok(b) => b.to_string(),
            Err(_) => v.to_string(),
        };
    }
    if let Ok(n) = v.parse::<i128>() {
        return n.to_string();
    }
    match super::parse_duration("", v) {
        Ok(d) if v != "0" => format!("{}ns", d.as_nanos()),
        _ => v.to_string(),
    }
}

/// Checks one given flag against the table: `Ok` when concord honours it
/// (or may ignore it), the refusal otherwise.
pub(crate) fn judge(flag: &Flag, value: &str) -> Result<(), ConfigError> {
    match flag.support {
        Implemented | Holds(_) | Ignored(_) => Ok(()),
        Refused => Err(ConfigError::Unsupported {
            flag: flag.name.to_string(),
            value: value.to_string(),
            only: Vec::new(),
        }),
        Only(values) => {
            let given = normal(flag.kind, value);
            let zero_duration =
                |s: &str| super::parse_duration("", s.trim()).is_ok_and(|d| d.is_zero());
            if values.iter().any(|v| {
                normal(flag.kind, v) == given || (zero_duration(v) && zero_duration(value))
            }) {
                return Ok(());
            }
            Err(ConfigError::Unsupported {
                flag: flag.name.to_string(),
                value: value.to_string(),
                only: values.iter().map(|v| v.to_string()).collect(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flags that change bootstrap, durability, disk space, compaction,
    /// security or membership, by name: whatever the table says of their
    /// effect, none of them may ever be ignored.
    const NEVER_IGNORED: &[&str] = &[
        "quota-backend-bytes",
        "auto-compaction-retention",
        "auto-compaction-mode",
        "experimental-compaction-batch-limit",
        "experimental-compaction-sleep-interval",
        "force-new-cluster",
        "unsafe-no-fsync",
        "wal-dir",
        "data-dir",
        "discovery",
        "discovery-srv",
        "discovery-srv-name",
        "discovery-fallback",
        "discovery-proxy",
        "discovery-endpoints",
        "discovery-token",
        "initial-cluster",
        "initial-cluster-state",
        "initial-cluster-token",
        "initial-advertise-peer-urls",
        "listen-peer-urls",
        "strict-reconfig-check",
        "pre-vote",
        "proxy",
        "auth-token",
        "auth-token-ttl",
        "bcrypt-cost",
        "client-crl-file",
        "peer-crl-file",
        "cipher-suites",
        "tls-min-version",
        "tls-max-version",
        "peer-cert-allowed-cn",
        "peer-cert-allowed-hostname",
        "client-cert-allowed-hostname",
        "client-cert-auth",
        "peer-client-cert-auth",
        "cors",
        "host-whitelist",
        "grpc-keepalive-min-time",
        "experimental-initial-corrupt-check",
        "experimental-corrupt-check-time",
        "experimental-compact-hash-check-enabled",
        "experimental-enable-lease-checkpoint",
        "experimental-enable-lease-checkpoint-persist",
        "experimental-peer-skip-client-san-verification",
        "experimental-bootstrap-defrag-threshold-megabytes",
        "snapshot-count",
        "experimental-snapshot-catchup-entries",
        "max-request-bytes",
        "max-txn-ops",
        "raft-read-timeout",
        "raft-write-timeout",
    ];

    /// The flags whose every value concord's design meets (`Holds`).
    const HOLDS_REVIEWED: &[&str] = &[
        "max-snapshots",
        "max-wals",
        "v2-deprecation",
        "socket-reuse-address",
    ];

    #[test]
    fn only_harmless_flags_are_ignored() {
        for flag in FLAGS {
            if let Ignored(reason) = flag.support {
                assert_eq!(
                    flag.effect, Other,
                    "--{} acts on {:?} and cannot be ignored",
                    flag.name, flag.effect
                );
                assert!(
                    !NEVER_IGNORED.contains(&flag.name),
                    "--{} must be implemented or refused, never ignored",
                    flag.name
                );
                assert!(reason.len() > 20, "--{} needs its reason", flag.name);
            }
            if let Holds(reason) = flag.support {
                assert!(reason.len() > 20, "--{} needs its reason", flag.name);
                // A claim that concord's design already does what every
                // value asks: reviewed one by one.
                assert!(
                    HOLDS_REVIEWED.contains(&flag.name),
                    "--{} claims to hold for every value: review it and list it",
                    flag.name
                );
                assert!(
                    !NEVER_IGNORED.contains(&flag.name),
                    "--{} must be implemented or refused",
                    flag.name
                );
            }
        }
        for name in NEVER_IGNORED {
            assert!(lookup(name).is_some(), "--{name} is not in the table");
        }
    }

    #[test]
    fn refused_examples_are_refused() {
        for (name, value) in refused() {
            let flag = lookup(name).expect("known");
            assert!(judge(flag, value).is_err(), "--{name}={value}");
        }
    }

    #[test]
    fn every_flag_once() {
        let mut names: Vec<&str> = FLAGS.iter().map(|f| f.name).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len(), "a flag appears twice");
    }

    #[test]
    fn the_list_is_short() {
        let ignored: Vec<&str> = FLAGS
            .iter()
            .filter(|f| matches!(f.support, Ignored(_)))
            .map(|f| f.name)
            .collect();
        // Raise this only with a reason in the table for each new entry
        // (etcd's own 13 ignored flags of etcd 0.4 aside).
        let own = FLAGS
            .iter()
            .filter(|f| matches!(f.support, Ignored(r) if r != ETCD_IGNORES))
            .count();
        assert!(own <= 26, "{own} ignored flags: {ignored:?}");
    }

    #[test]
    fn only_compares_normalised_values() {
        let flag = |n| lookup(n).expect("known");
        assert!(judge(flag("enable-v2"), "0").is_ok());
        assert!(judge(flag("enable-v2"), "FALSE").is_ok());
        assert!(judge(flag("enable-v2"), "true").is_err());
        assert!(judge(flag("experimental-corrupt-check-time"), "0").is_ok());
        assert!(judge(flag("experimental-corrupt-check-time"), "0ms").is_ok());
        assert!(judge(flag("experimental-corrupt-check-time"), "1m").is_err());
        assert!(judge(flag("auto-compaction-retention"), "0").is_ok());
        assert!(judge(flag("auto-compaction-retention"), "1").is_err());
        assert!(judge(flag("auto-compaction-retention"), "1h").is_err());
        assert!(judge(flag("quota-backend-bytes"), "0").is_err());
        assert_eq!(
            judge(flag("quota-backend-bytes"), "1024")
                .unwrap_err()
                .to_string(),
            "concord does not support --quota-backend-bytes yet (given \"1024\"); remove it to start"
        );
        assert_eq!(
            judge(flag("force-new-cluster"), "true")
                .unwrap_err()
                .to_string(),
            "concord does not support --force-new-cluster=true yet (it accepts only: false); remove it to start"
        );
    }
}
