//! config: etcd's command-line flags and `ETCD_*` environment variables.
//!
//! Parsing follows Go's `flag` package, as etcd does: `-x` and `--x` are the
//! same, values come as `--x=v` or `--x v`, booleans as `--x` or `--x=false`,
//! and a positional argument is an error. Every etcd flag is known; those
//! concord does not implement yet are accepted and reported, so that etcd's
//! own test harness can start the binary. Precedence: flag, then
//! `ETCD_<FLAG>` for flags not given, then the default. An env var that
//! shadows a flag given on the command line is an error, as in etcd. With
//! `--config-file` (or `ETCD_CONFIG_FILE`) the YAML file is the only source,
//! as in etcd: the other flags and the environment are ignored (`yaml`).

mod discovery;
mod flags;
pub use flags::{ignored as ignored_flags, refused as refused_flags};
mod yaml;

use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("flag provided but not defined: -{0}")]
    UnknownFlag(String),
    #[error("'{0}' is not a valid flag")]
    Positional(String),
    #[error("flag needs an argument: -{0}")]
    MissingValue(String),
    #[error("invalid value {value:?} for flag -{flag}: {why}")]
    InvalidValue {
        flag: String,
        value: String,
        why: String,
    },
    #[error("conflicting environment variable \"{env}\" is shadowed by corresponding command-line flag (either unset environment variable or disable flag)")]
    EnvShadowed { env: String },
    #[error("--advertise-client-urls is required when --listen-client-urls is set explicitly")]
    AdvertiseRequired,
    #[error("cannot read the config file {path}: {why}")]
    ConfigFileRead { path: String, why: String },
    #[error("config file: {0}")]
    ConfigFile(String),
    #[error("config file {path}: {why}")]
    ConfigFileAt { path: String, why: String },
    #[error("--election-timeout[{election_ms}ms] should be at least as 5 times as --heartbeat-interval[{heartbeat_ms}ms]")]
    ElectionTimeout { election_ms: u64, heartbeat_ms: u64 },
    #[error("--election-timeout[{0}ms] is too long, and should be set less than 50000ms")]
    ElectionTooLong(u64),
    #[error("concord does not support --{flag}{} yet ({}); remove it to start", if only.is_empty() { String::new() } else { format!("={value}") }, if only.is_empty() { format!("given {value:?}") } else { format!("it accepts only: {}", only.join(", ")) })]
    Unsupported {
        flag: String,
        value: String,
        only: Vec<String>,
    },
    #[error("config file {path}: concord does not support the key {key} yet; remove it to start")]
    UnsupportedKey { path: String, key: String },
    #[error("multiple discovery or bootstrap flags are set. Choose one of \"initial-cluster\", \"discovery\", \"discovery-endpoints\" or \"discovery-srv\"")]
    ConflictBootstrapFlags,
    #[error("both --discovery-token and --discovery-endpoints must be set")]
    DiscoveryTokenMissing,
    #[error("discovery URL should not be set when joining existing initial cluster")]
    DiscoveryWhenJoining,
    #[error("concord does not support --{0} with --initial-cluster-state existing yet; list the members with --initial-cluster")]
    DiscoveryExisting(&'static str),
    #[error("--{0} is set without --{1}, which it configures")]
    WithoutItsFlag(&'static str, &'static str),
    #[error("--discovery-endpoints must not contain empty endpoints")]
    EmptyDiscoveryEndpoint,
    #[error("both v2 discovery settings (discovery, discovery-proxy) and v3 discovery settings (discovery-token, discovery-endpoints, discovery-cert, discovery-key, discovery-cacert, discovery-user, discovery-password) are set")]
    V2AndV3Discovery,
    #[error("v2 proxy is deprecated, and --discovery-fallback can't be configured as \"proxy\"")]
    FallbackProxy,
}

/// How the daemon writes its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A client or peer URL: scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// The URL as given (without a trailing slash).
    pub text: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, String> {
        let text = s.trim().trim_end_matches('/').to_string();
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("URL {s:?} has no scheme"))?;
        let scheme = match scheme {
            "http" | "https" | "unix" | "unixs" => scheme.to_string(),
            other => {
                return Err(format!(
                    "URL scheme must be http, https, unix, or unixs: {other}"
                ))
            }
        };
        let hostport = rest.split('/').next().unwrap_or_default();
        let (host, port) = hostport
            .rsplit_once(':')
            .ok_or_else(|| format!("URL address does not have the form \"host:port\": {s}"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("bad port in URL {s:?}"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(Url {
            scheme,
            host,
            port,
            text,
        })
    }

    /// The socket address to bind: `localhost` means 127.0.0.1.
    pub fn bind_addr(&self) -> String {
        let host = match self.host.as_str() {
            "localhost" | "" => "127.0.0.1",
            h => h,
        };
        if host.contains(':') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

fn parse_urls(flag: &str, v: &str) -> Result<Vec<Url>, ConfigError> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            Url::parse(s).map_err(|why| ConfigError::InvalidValue {
                flag: flag.into(),
                value: v.into(),
                why,
            })
        })
        .collect()
}

/// One listener kind's TLS flags (etcd's `TLSInfo`): certificate files, or
/// a self-signed certificate generated at start (`--*-auto-tls`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFlags {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub trusted_ca_file: Option<PathBuf>,
    pub client_cert_auth: bool,
    pub auto_tls: bool,
    /// `--client-crl-file` / `--peer-crl-file`: revoked certificates are
    /// refused in the handshake.
    pub crl_file: Option<PathBuf>,
    /// `--cipher-suites` (Go's names), `--tls-min-version`,
    /// `--tls-max-version`: the same for peer and client TLS.
    pub cipher_suites: Vec<String>,
    pub tls_min_version: String,
    pub tls_max_version: String,
    /// `--peer-cert-allowed-cn` (peers only), `--peer-cert-allowed-hostname`
    /// and `--client-cert-allowed-hostname`: comma-separated lists (3.5).
    pub allowed_cn: Vec<String>,
    pub allowed_hostnames: Vec<String>,
    /// `--self-signed-cert-validity`, in years.
    pub self_signed_cert_validity_years: u32,
}

impl TlsFlags {
    /// No certificate given and none to generate.
    pub fn is_empty(&self) -> bool {
        self.cert_file.is_none() && self.key_file.is_none() && !self.auto_tls
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client_urls: Vec<Url>,
    pub advertise_client_urls: Vec<Url>,
    pub listen_peer_urls: Vec<Url>,
    pub initial_advertise_peer_urls: Vec<Url>,
    pub initial_cluster: String,
    pub initial_cluster_token: String,
    pub initial_cluster_state: String,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    pub snapshot_count: u64,
    /// `--heartbeat-interval`, milliseconds.
    pub heartbeat_interval_ms: u64,
    /// `--election-timeout`, milliseconds.
    pub election_timeout_ms: u64,
    /// `--experimental-watch-progress-notify-interval`.
    pub watch_progress_notify_interval: std::time::Duration,
    /// Peer TLS: `--peer-cert-file`, `--peer-key-file`, ...
    pub peer_tls: TlsFlags,
    /// Client TLS: `--cert-file`, `--key-file`, `--trusted-ca-file`,
    /// `--client-cert-auth`, `--auto-tls`.
    pub client_tls: TlsFlags,
    pub log_level: String,
    pub log_format: LogFormat,
    /// `--pre-vote`.
    pub pre_vote: bool,
    /// `--max-concurrent-streams`: HTTP/2 streams per client connection.
    pub max_concurrent_streams: u32,
    /// `--grpc-keepalive-interval` / `--grpc-keepalive-timeout`: the server
    /// pings an idle client connection this often and closes it when a ping
    /// is not answered in time.
    pub grpc_keepalive_interval: std::time::Duration,
    pub grpc_keepalive_timeout: std::time::Duration,
    /// `--listen-metrics-urls`: extra listeners for `/metrics` and the
    /// health endpoints.
    pub listen_metrics_urls: Vec<Url>,
    /// `--enable-grpc-gateway`: the JSON API under `/v3/`.
    pub enable_grpc_gateway: bool,
    /// `--metrics extensive` (else `basic`): also gRPC handling times.
    pub metrics_extensive: bool,
    /// `--socket-reuse-port` on every listener (SO_REUSEADDR is always
    /// set, as Go sets it).
    pub socket_reuse_port: bool,
    /// `--experimental-snapshot-catchup-entries`: raft log entries kept
    /// behind a snapshot for slow followers.
    pub snapshot_catchup_entries: u64,
    /// `--experimental-initial-corrupt-check`.
    pub initial_corrupt_check: bool,
    /// `--auth-token`: simple tokens, or JWT with its options.
    pub auth_token: AuthToken,
    /// `--bcrypt-cost` of new passwords (4 to 31).
    pub bcrypt_cost: u32,
    /// `--auth-token-ttl`: how long a simple token lives since its last use.
    pub auth_token_ttl: std::time::Duration,
    /// How the member finds its cluster the first time it starts.
    pub discovery: Discovery,
    /// Flags given that concord may ignore: (flag, value, why).
    pub ignored: Vec<(String, String, &'static str)>,
    /// Keys of the config file that etcd does not know (ignored).
    pub unknown_config_keys: Vec<String>,
    /// The config file read (then the only source of the configuration).
    pub config_file: Option<PathBuf>,
    pub print_version: bool,
}

fn flag_kind(name: &str) -> Option<bool> {
    flags::lookup(name).map(|f| f.kind == flags::Kind::Bool)
}

/// etcd's watch progress interval: zero keeps the default (10 minutes),
/// anything shorter than 100 ms is raised to 100 ms.
fn progress_interval(d: std::time::Duration) -> std::time::Duration {
    if d.is_zero() {
        std::time::Duration::from_secs(600)
    } else {
        d.max(std::time::Duration::from_millis(100))
    }
}

/// The default of a flag ("" for none).
fn default_of(flag: &str) -> String {
    flags::lookup(flag)
        .map(|f| f.default.to_string())
        .unwrap_or_default()
}

/// `--auth-token`: how auth tokens are made (etcd's token providers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthToken {
    /// Random tokens each member remembers (the default).
    Simple,
    /// Signed JSON web tokens: `jwt,pub-key=FILE,priv-key=FILE,sign-method=ALG[,ttl=DURATION]`.
    Jwt {
        /// Public key or certificate (PEM); with RS/PS/ES methods.
        pub_key: Option<PathBuf>,
        /// Private key (PEM), or the secret of an HS method; without it the
        /// member only verifies tokens.
        priv_key: Option<PathBuf>,
        sign_method: String,
        /// 5 minutes unless given.
        ttl: std::time::Duration,
    },
}

/// The signing methods etcd 3.5 accepts for JWT, but ES512 (the JWT
/// library concord uses has no P-521).
pub const JWT_SIGN_METHODS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "HS256", "HS384",
    "HS512",
];

/// etcd's `--auth-token` syntax (`auth/store.go` decomposeOpts), refusing
/// what etcd would only warn about (an unknown option).
pub fn parse_auth_token(v: &str) -> Result<AuthToken, ConfigError> {
    let bad = |why: String| ConfigError::InvalidValue {
        flag: "auth-token".into(),
        value: v.into(),
        why,
    };
    let mut fields = v.split(',');
    match fields.next().unwrap_or_default() {
        "simple" => {
            if fields.next().is_some() {
                return Err(bad("simple tokens take no options".into()));
            }
            return Ok(AuthToken::Simple);
        }
        "jwt" => {}
        "" => {
            return Err(bad(
                "an empty token type (etcd's nop provider) is not supported; use simple or jwt"
                    .into(),
            ))
        }
        other => return Err(bad(format!("unknown token type {other:?}"))),
    }
    let mut opts: BTreeMap<&str, &str> = BTreeMap::new();
    for f in fields {
        let Some((k, val)) = f.split_once('=') else {
            return Err(bad(format!("option {f:?} is not key=value")));
        };
        if val.contains('=') {
            return Err(bad(format!("option {f:?} is not key=value")));
        }
        if opts.insert(k, val).is_some() {
            return Err(bad(format!("option {k} given twice")));
        }
    }
    for k in opts.keys() {
        if !["pub-key", "priv-key", "sign-method", "ttl"].contains(k) {
            return Err(bad(format!("unknown option {k}")));
        }
    }
    let sign_method = opts
        .get("sign-method")
        .ok_or_else(|| bad("sign-method is required".into()))?
        .to_string();
    if !JWT_SIGN_METHODS.contains(&sign_method.as_str()) {
        return Err(bad(format!(
            "sign-method {sign_method} is not one of {}",
            JWT_SIGN_METHODS.join(", ")
        )));
    }
    let ttl = match opts.get("ttl") {
        None => std::time::Duration::from_secs(300),
        Some(t) => parse_duration("auth-token", t)?,
    };
    let path = |k: &str| opts.get(k).filter(|p| !p.is_empty()).map(PathBuf::from);
    let (pub_key, priv_key) = (path("pub-key"), path("priv-key"));
    if sign_method.starts_with("HS") {
        if priv_key.is_none() {
            return Err(bad(format!("{sign_method} needs priv-key (the secret)")));
        }
    } else if pub_key.is_none() {
        return Err(bad(format!("{sign_method} needs pub-key")));
    }
    Ok(AuthToken::Jwt {
        pub_key,
        priv_key,
        sign_method,
        ttl,
    })
}

/// How a new member finds the other members of its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// `--initial-cluster` lists them.
    Static,
    /// etcd's discovery URL protocol (`--discovery`, a v2 keys registry).
    Url {
        url: String,
        /// `--discovery-proxy`.
        proxy: Option<String>,
    },
    /// etcd 3.6's v3 discovery (`--discovery-endpoints`,
    /// `--discovery-token`): any etcd v3 API cluster as the registry.
    V3(V3Discovery),
    /// DNS SRV records (`--discovery-srv`, `--discovery-srv-name`).
    Srv {
        domain: String,
        service_name: String,
    },
}

/// The v3 discovery registry client's options (etcd 3.6's flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V3Discovery {
    pub endpoints: Vec<String>,
    pub token: String,
    pub dial_timeout: std::time::Duration,
    pub request_timeout: std::time::Duration,
    pub keepalive_time: std::time::Duration,
    pub keepalive_timeout: std::time::Duration,
    pub insecure_transport: bool,
    pub insecure_skip_tls_verify: bool,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub cacert: Option<PathBuf>,
    pub user: String,
    pub password: String,
}

/// Flags from the command line, in the Go `flag` syntax.
fn parse_args(args: &[String]) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut set = BTreeMap::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            if let Some(p) = args.get(i) {
                return Err(ConfigError::Positional(p.clone()));
            }
            break;
        }
        let Some(body) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
            return Err(ConfigError::Positional(a.clone()));
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let is_bool = flag_kind(name).ok_or_else(|| ConfigError::UnknownFlag(name.to_string()))?;
        let value = match (inline, is_bool) {
            (Some(v), _) => v,
            (None, true) => "true".to_string(),
            (None, false) => {
                let v = args
                    .get(i)
                    .ok_or_else(|| ConfigError::MissingValue(name.to_string()))?;
                i += 1;
                v.clone()
            }
        };
        if is_bool {
            parse_bool(name, &value)?;
        }
        set.insert(name.to_string(), value);
    }
    Ok(set)
}

fn parse_bool(flag: &str, v: &str) -> Result<bool, ConfigError> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(ConfigError::InvalidValue {
            flag: flag.into(),
            value: v.into(),
            why: "parse error".into(),
        }),
    }
}

fn env_name(flag: &str) -> String {
    format!("ETCD_{}", flag.to_uppercase().replace('-', "_"))
}

/// A Go `time.Duration` string: `300ms`, `1.5h`, `10m0s`, `2h45m` (units
/// ns, us, µs, ms, s, m, h); a bare `0` is zero.
pub fn parse_duration(flag: &str, v: &str) -> Result<std::time::Duration, ConfigError> {
    let bad = |why: &str| ConfigError::InvalidValue {
        flag: flag.into(),
        value: v.into(),
        why: why.into(),
    };
    if v == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let mut rest = v;
    let mut total_ns = 0f64;
    if rest.is_empty() {
        return Err(bad("empty duration"));
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| bad("missing unit in duration"))?;
        let (num, tail) = rest.split_at(num_len);
        let n: f64 = num.parse().map_err(|_| bad("invalid duration"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad("unknown unit in duration")),
        };
        total_ns += n * scale;
        rest = tail;
    }
    Ok(std::time::Duration::from_nanos(total_ns as u64))
}

fn parse_num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, ConfigError> {
    v.parse().map_err(|_| ConfigError::InvalidValue {
        flag: flag.into(),
        value: v.into(),
        why: "not a number".into(),
    })
}

/// Whether `name` is the `ETCD_*` variable of a flag (etcd warns about
/// the others: "unrecognized environment variable").
pub fn is_known_env_var(name: &str) -> bool {
    flags::FLAGS.iter().any(|f| env_name(f.name) == name)
}

impl Config {
    /// Builds the configuration from command-line `args` (without the program
    /// name) and an environment lookup.
    pub fn from_args_env(
        args: &[String],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Self::from_sources(args, env, &|path| std::fs::read_to_string(path))
    }

    /// Like [`Config::from_args_env`], reading a config file with `read`.
    pub fn from_sources(
        args: &[String],
        env: &dyn Fn(&str) -> Option<String>,
        read: &dyn Fn(&std::path::Path) -> std::io::Result<String>,
    ) -> Result<Config, ConfigError> {
        let cli = parse_args(args)?;
        let file = cli
            .get("config-file")
            .cloned()
            .or_else(|| env(&env_name("config-file")))
            .filter(|f| !f.is_empty());
        if let Some(path) = file {
            let text =
                read(std::path::Path::new(&path)).map_err(|e| ConfigError::ConfigFileRead {
                    path: path.clone(),
                    why: e.to_string(),
                })?;
            let parsed = yaml::parse(&text).map_err(|e| match e {
                ConfigError::ConfigFile(why) => ConfigError::ConfigFileAt {
                    path: path.clone(),
                    why,
                },
                other => other,
            })?;
            if let Some(key) = parsed.refused.first() {
                return Err(ConfigError::UnsupportedKey {
                    path: path.clone(),
                    key: key.clone(),
                });
            }
            let mut set = parsed.set;
            // What is not configuration, as etcd reads --version first;
            // and concord's own --log-format, which no file key sets.
            for flag in ["version", "log-format"] {
                if let Some(v) = cli.get(flag) {
                    set.insert(flag.into(), v.clone());
                }
            }
            // A file that sets listen-client-urls keeps the default
            // advertise-client-urls (etcd requires it only of the flags).
            if set.contains_key("listen-client-urls") {
                set.entry("advertise-client-urls".into())
                    .or_insert_with(|| default_of("advertise-client-urls"));
            }
            let mut cfg = Self::from_set(set)?;
            cfg.unknown_config_keys = parsed.unknown;
            cfg.config_file = Some(PathBuf::from(path));
            return Ok(cfg);
        }
        let mut set = cli.clone();
        for flag in flags::FLAGS {
            let (flag, is_bool) = (flag.name, flag.kind == flags::Kind::Bool);
            let Some(v) = env(&env_name(flag)).filter(|v| !v.is_empty()) else {
                continue;
            };
            if cli.contains_key(flag) {
                return Err(ConfigError::EnvShadowed {
                    env: env_name(flag),
                });
            }
            if is_bool {
                parse_bool(flag, &v)?;
            }
            set.insert(flag.to_string(), v);
        }
        Self::from_set(set)
    }

    fn from_set(set: BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let get =
            |flag: &str| -> String { set.get(flag).cloned().unwrap_or_else(|| default_of(flag)) };
        if set.contains_key("listen-client-urls") && !set.contains_key("advertise-client-urls") {
            return Err(ConfigError::AdvertiseRequired);
        }
        let mut ignored = Vec::new();
        for (name, value) in &set {
            let flag = flags::lookup(name).ok_or_else(|| ConfigError::UnknownFlag(name.clone()))?;
            if name == "discovery-fallback" && value == "proxy" {
                return Err(ConfigError::FallbackProxy);
            }
            flags::judge(flag, value)?;
            if let flags::Support::Ignored(why) = flag.support {
                ignored.push((name.clone(), value.clone(), why));
            }
        }
        let name = get("name");
        let data_dir = match set.get("data-dir") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => PathBuf::from(format!("{name}.concord")),
        };
        let initial_cluster_given = set.get("initial-cluster").is_some_and(|c| !c.is_empty());
        let discovery = discovery::from_flags(&get, initial_cluster_given)?;
        let initial_cluster = match set.get("initial-cluster") {
            Some(c) => c.clone(),
            // etcd clears its default when a discovery flag is given.
            None if discovery != Discovery::Static => String::new(),
            None => format!("{name}={}", get("initial-advertise-peer-urls")),
        };
        let log_format = match get("log-format").as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::InvalidValue {
                    flag: "log-format".into(),
                    value: other.into(),
                    why: "want text or json".into(),
                })
            }
        };
        let mut log_level = get("log-level");
        // etcd 3.4's --debug: the debug log level.
        if parse_bool("debug", &get("debug"))? {
            log_level = "debug".into();
        }
        if !["debug", "info", "warn", "error", "panic", "fatal"].contains(&log_level.as_str()) {
            return Err(ConfigError::InvalidValue {
                flag: "log-level".into(),
                value: log_level,
                why: "want debug, info, warn, error, panic or fatal".into(),
            });
        }
        let state = get("initial-cluster-state");
        if state != "new" && state != "existing" {
            return Err(ConfigError::InvalidValue {
                flag: "initial-cluster-state".into(),
                value: state,
                why: "want new or existing".into(),
            });
        }
        match (&discovery, state.as_str()) {
            (Discovery::Url { .. }, "existing") => return Err(ConfigError::DiscoveryWhenJoining),
            (Discovery::Srv { .. }, "existing") => {
                return Err(ConfigError::DiscoveryExisting("discovery-srv"))
            }
            (Discovery::V3(_), "existing") => {
                return Err(ConfigError::DiscoveryExisting("discovery-endpoints"))
            }
            _ => {}
        }
        let heartbeat_ms: u64 = parse_num("heartbeat-interval", &get("heartbeat-interval"))?;
        let election_ms: u64 = parse_num("election-timeout", &get("election-timeout"))?;
        // etcd's rules (embed.Config.Validate), which also keep both
        // non-zero and small.
        if heartbeat_ms == 0 || heartbeat_ms.checked_mul(5).is_none_or(|h| election_ms < h) {
            return Err(ConfigError::ElectionTimeout {
                election_ms,
                heartbeat_ms,
            });
        }
        if election_ms > 50_000 {
            return Err(ConfigError::ElectionTooLong(election_ms));
        }
        let path =
            |flag: &str| Some(PathBuf::from(get(flag))).filter(|p| !p.as_os_str().is_empty());
        let validity_years = parse_num(
            "self-signed-cert-validity",
            &get("self-signed-cert-validity"),
        )?;
        let list = |v: &str| -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        // etcd's client and peer TLS flags differ only by a "peer-" prefix.
        let tls_flags = |prefix: &str| -> Result<TlsFlags, ConfigError> {
            let flag = |name: &str| format!("{prefix}{name}");
            Ok(TlsFlags {
                cert_file: path(&flag("cert-file")),
                key_file: path(&flag("key-file")),
                trusted_ca_file: path(&flag("trusted-ca-file")),
                client_cert_auth: parse_bool(
                    &flag("client-cert-auth"),
                    &get(&flag("client-cert-auth")),
                )?,
                auto_tls: parse_bool(&flag("auto-tls"), &get(&flag("auto-tls")))?,
                // --client-crl-file, --peer-crl-file
                crl_file: path(&format!(
                    "{}crl-file",
                    if prefix.is_empty() { "client-" } else { prefix }
                )),
                cipher_suites: get("cipher-suites")
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
                tls_min_version: get("tls-min-version"),
                tls_max_version: get("tls-max-version"),
                allowed_cn: if prefix.is_empty() {
                    Vec::new()
                } else {
                    list(&get("peer-cert-allowed-cn"))
                },
                allowed_hostnames: list(&get(&format!(
                    "{}cert-allowed-hostname",
                    if prefix.is_empty() { "client-" } else { prefix }
                ))),
                self_signed_cert_validity_years: validity_years,
            })
        };
        let peer_tls = tls_flags("peer-")?;
        let client_tls = tls_flags("")?;
        Ok(Config {
            listen_client_urls: parse_urls("listen-client-urls", &get("listen-client-urls"))?,
            advertise_client_urls: parse_urls(
                "advertise-client-urls",
                &get("advertise-client-urls"),
            )?,
            listen_peer_urls: parse_urls("listen-peer-urls", &get("listen-peer-urls"))?,
            initial_advertise_peer_urls: parse_urls(
                "initial-advertise-peer-urls",
                &get("initial-advertise-peer-urls"),
            )?,
            initial_cluster,
            initial_cluster_token: get("initial-cluster-token"),
            initial_cluster_state: state,
            max_request_bytes: parse_num("max-request-bytes", &get("max-request-bytes"))?,
            max_txn_ops: parse_num("max-txn-ops", &get("max-txn-ops"))?,
            snapshot_count: parse_num("snapshot-count", &get("snapshot-count"))?,
            heartbeat_interval_ms: heartbeat_ms,
            election_timeout_ms: election_ms,
            watch_progress_notify_interval: progress_interval(parse_duration(
                "experimental-watch-progress-notify-interval",
                &get("experimental-watch-progress-notify-interval"),
            )?),
            pre_vote: parse_bool("pre-vote", &get("pre-vote"))?,
            max_concurrent_streams: parse_num(
                "max-concurrent-streams",
                &get("max-concurrent-streams"),
            )?,
            grpc_keepalive_interval: parse_duration(
                "grpc-keepalive-interval",
                &get("grpc-keepalive-interval"),
            )?,
            grpc_keepalive_timeout: parse_duration(
                "grpc-keepalive-timeout",
                &get("grpc-keepalive-timeout"),
            )?,
            socket_reuse_port: parse_bool("socket-reuse-port", &get("socket-reuse-port"))?,
            enable_grpc_gateway: parse_bool("enable-grpc-gateway", &get("enable-grpc-gateway"))?,
            listen_metrics_urls: parse_urls("listen-metrics-urls", &get("listen-metrics-urls"))?,
            metrics_extensive: match get("metrics").as_str() {
                "basic" => false,
                "extensive" => true,
                other => {
                    return Err(ConfigError::InvalidValue {
                        flag: "metrics".into(),
                        value: other.to_string(),
                        why: "must be basic or extensive".into(),
                    })
                }
            },
            snapshot_catchup_entries: parse_num(
                "experimental-snapshot-catchup-entries",
                &get("experimental-snapshot-catchup-entries"),
            )?,
            initial_corrupt_check: parse_bool(
                "experimental-initial-corrupt-check",
                &get("experimental-initial-corrupt-check"),
            )?,
            auth_token: parse_auth_token(&get("auth-token"))?,
            bcrypt_cost: {
                let cost: u32 = parse_num("bcrypt-cost", &get("bcrypt-cost"))?;
                if !(4..=31).contains(&cost) {
                    return Err(ConfigError::InvalidValue {
                        flag: "bcrypt-cost".into(),
                        value: cost.to_string(),
                        why: "must be from 4 to 31".into(),
                    });
                }
                cost
            },
            auth_token_ttl: std::time::Duration::from_secs(parse_num(
                "auth-token-ttl",
                &get("auth-token-ttl"),
            )?),
            discovery,
            peer_tls,
            client_tls,
            log_level,
            log_format,
            ignored,
            unknown_config_keys: Vec::new(),
            config_file: None,
            print_version: parse_bool("version", &get("version"))?,
            name,
            data_dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn election_timeout_must_be_five_heartbeats() {
        let c = Config::from_args_env(
            &args("--heartbeat-interval 50 --election-timeout 250"),
            &no_env,
        )
        .expect("valid");
        assert_eq!((c.heartbeat_interval_ms, c.election_timeout_ms), (50, 250));
        for bad in [
            "--heartbeat-interval 100 --election-timeout 400",
            "--heartbeat-interval 0",
            "--heartbeat-interval 9223372036854775807",
        ] {
            assert!(matches!(
                Config::from_args_env(&args(bad), &no_env),
                Err(ConfigError::ElectionTimeout { .. })
            ));
        }
        assert_eq!(
            Config::from_args_env(&args("--election-timeout 60000"), &no_env)
                .unwrap_err()
                .to_string(),
            "--election-timeout[60000ms] is too long, and should be set less than 50000ms"
        );
    }

    #[test]
    fn watch_progress_interval_follows_etcds_bounds() {
        let d = |v: &str| {
            Config::from_args_env(
                &args(&format!(
                    "--experimental-watch-progress-notify-interval={v}"
                )),
                &no_env,
            )
            .unwrap()
            .watch_progress_notify_interval
        };
        use std::time::Duration as D;
        assert_eq!(d("5ns"), D::from_millis(100));
        assert_eq!(d("0"), D::from_secs(600));
        assert_eq!(d("2s"), D::from_secs(2));
    }

    #[test]
    fn go_durations_parse() {
        let d = |v: &str| parse_duration("x", v);
        use std::time::Duration as D;
        assert_eq!(d("10m0s"), Ok(D::from_secs(600)));
        assert_eq!(d("100ms"), Ok(D::from_millis(100)));
        assert_eq!(d("1.5s"), Ok(D::from_millis(1500)));
        assert_eq!(d("2h45m"), Ok(D::from_secs(2 * 3600 + 45 * 60)));
        assert_eq!(d("0"), Ok(D::ZERO));
        assert!(d("10").is_err());
        assert!(d("5x").is_err());
        assert!(d("").is_err());
    }

    #[test]
    fn defaults_are_etcds() {
        let c = Config::from_args_env(&[], &no_env).unwrap();
        assert_eq!(c.name, "default");
        assert_eq!(c.data_dir, PathBuf::from("default.concord"));
        assert_eq!(c.listen_client_urls[0].bind_addr(), "127.0.0.1:2379");
        assert_eq!(c.initial_cluster, "default=http://localhost:2380");
        assert_eq!(c.initial_cluster_token, "etcd-cluster");
        assert_eq!((c.max_request_bytes, c.max_txn_ops), (1_572_864, 128));
    }

    #[test]
    fn go_flag_syntax() {
        let c = Config::from_args_env(
            &args("-name n1 --data-dir=/tmp/x --max-txn-ops 5 --peer-auto-tls --strict-reconfig-check=false --enable-pprof --listen-client-urls http://localhost:20000 --advertise-client-urls http://localhost:20000"),
            &no_env,
        )
        .unwrap();
        assert_eq!(c.name, "n1");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.max_txn_ops, 5);
        assert_eq!(c.listen_client_urls[0].port, 20000);
        assert!(c.peer_tls.auto_tls);
        assert_eq!(c.peer_tls.self_signed_cert_validity_years, 1);
        let ignored: Vec<_> = c
            .ignored
            .iter()
            .map(|(f, v, _)| (f.as_str(), v.as_str()))
            .collect();
        assert_eq!(ignored, [("enable-pprof", "true")]);
    }

    #[test]
    fn errors() {
        let e = |s: &str| Config::from_args_env(&args(s), &no_env).unwrap_err();
        assert_eq!(e("--nope 1"), ConfigError::UnknownFlag("nope".into()));
        assert_eq!(e("stray"), ConfigError::Positional("stray".into()));
        assert_eq!(e("--name"), ConfigError::MissingValue("name".into()));
        assert_eq!(
            e("--listen-client-urls http://localhost:1"),
            ConfigError::AdvertiseRequired
        );
        assert!(matches!(
            e("--max-txn-ops x"),
            ConfigError::InvalidValue { .. }
        ));
        assert!(matches!(
            e("--peer-auto-tls=maybe"),
            ConfigError::InvalidValue { .. }
        ));
        assert!(matches!(
            e("--log-format xml"),
            ConfigError::InvalidValue { .. }
        ));
        assert!(matches!(
            e("--listen-client-urls ftp://x:1 --advertise-client-urls http://x:1"),
            ConfigError::InvalidValue { .. }
        ));
    }

    #[test]
    fn auth_token_options_are_etcds() {
        assert_eq!(parse_auth_token("simple").ok(), Some(AuthToken::Simple));
        assert_eq!(
            parse_auth_token("jwt,pub-key=p.pem,priv-key=k.pem,sign-method=RS256,ttl=1s").ok(),
            Some(AuthToken::Jwt {
                pub_key: Some(PathBuf::from("p.pem")),
                priv_key: Some(PathBuf::from("k.pem")),
                sign_method: "RS256".into(),
                ttl: std::time::Duration::from_secs(1),
            })
        );
        // Verify only: a public key alone.
        assert!(parse_auth_token("jwt,pub-key=p.pem,sign-method=ES256").is_ok());
        for bad in [
            "",
            "nope",
            "simple,ttl=1s",
            "jwt",
            "jwt,sign-method=none,pub-key=p",
            "jwt,sign-method=EdDSA,pub-key=p",
            "jwt,foo,sign-method=RS256,pub-key=p",
            "jwt,a=b=c,sign-method=RS256,pub-key=p",
            "jwt,sign-method=RS256,pub-key=p,pub-key=q",
            "jwt,sign-method=RS256,pub-key=p,color=red",
            "jwt,sign-method=RS256,priv-key=k",
            "jwt,sign-method=HS256,pub-key=p",
            "jwt,sign-method=RS256,pub-key=p,ttl=soon",
        ] {
            assert!(parse_auth_token(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn unsupported_flags_are_refused_by_name() {
        let e = |s: &str| {
            Config::from_args_env(&args(s), &no_env)
                .unwrap_err()
                .to_string()
        };
        for (given, flag) in [
            ("--quota-backend-bytes 16777216", "--quota-backend-bytes"),
            (
                "--auto-compaction-retention 1",
                "--auto-compaction-retention",
            ),
            ("--force-new-cluster", "--force-new-cluster"),
            ("--proxy on", "--proxy"),
            ("--enable-v2", "--enable-v2"),
            ("--wal-dir /wal", "--wal-dir"),
            ("--unsafe-no-fsync", "--unsafe-no-fsync"),
        ] {
            let err = e(given);
            assert!(
                err.starts_with(&format!("concord does not support {flag}")),
                "{given}: {err}"
            );
        }
        // The values concord's behaviour matches are accepted.
        for ok in [
            "--strict-reconfig-check=false",
            "--enable-v2=false",
            "--discovery-fallback exit",
            "--auto-compaction-retention 0",
            "--proxy off",
            "--experimental-initial-corrupt-check",
            "--max-wals 0",
        ] {
            Config::from_args_env(&args(ok), &no_env).expect(ok);
        }
        // The environment is judged the same way.
        let env = |k: &str| (k == "ETCD_QUOTA_BACKEND_BYTES").then(|| "1024".to_string());
        assert_eq!(
            Config::from_args_env(&[], &env).unwrap_err().to_string(),
            "concord does not support --quota-backend-bytes yet (given \"1024\"); remove it to start"
        );
    }

    #[test]
    fn implemented_flags_reach_the_config() {
        let c = Config::from_args_env(
            &args("--pre-vote=false --max-concurrent-streams 8 --grpc-keepalive-interval 30s --grpc-keepalive-timeout 3s --socket-reuse-port --experimental-snapshot-catchup-entries 100 --experimental-initial-corrupt-check --debug"),
            &no_env,
        )
        .unwrap();
        assert!(!c.pre_vote);
        assert_eq!(c.max_concurrent_streams, 8);
        use std::time::Duration as D;
        assert_eq!(c.grpc_keepalive_interval, D::from_secs(30));
        assert_eq!(c.grpc_keepalive_timeout, D::from_secs(3));
        assert!(c.socket_reuse_port);
        assert_eq!(c.snapshot_catchup_entries, 100);
        assert!(c.initial_corrupt_check);
        assert_eq!(c.log_level, "debug");
        let d = Config::from_args_env(&[], &no_env).unwrap();
        assert!(d.pre_vote && !d.initial_corrupt_check && !d.socket_reuse_port);
        assert_eq!(d.grpc_keepalive_interval, D::from_secs(7200));
        assert_eq!(d.discovery, Discovery::Static);
    }

    #[test]
    fn discovery_flags() {
        let c = |s: &str| Config::from_args_env(&args(s), &no_env);
        let url =
            c("--discovery http://r:2379/v2/keys/_discovery/abc --discovery-proxy p:3128").unwrap();
        assert_eq!(
            url.discovery,
            Discovery::Url {
                url: "http://r:2379/v2/keys/_discovery/abc".into(),
                proxy: Some("p:3128".into())
            }
        );
        // etcd clears its default initial cluster.
        assert_eq!(url.initial_cluster, "");
        let srv = c("--discovery-srv example.com --discovery-srv-name c1").unwrap();
        assert_eq!(
            srv.discovery,
            Discovery::Srv {
                domain: "example.com".into(),
                service_name: "c1".into()
            }
        );
        assert_eq!(
            c("--discovery http://r/t --initial-cluster-state existing").unwrap_err(),
            ConfigError::DiscoveryWhenJoining
        );
        assert_eq!(
            c("--discovery-srv example.com --initial-cluster-state existing").unwrap_err(),
            ConfigError::DiscoveryExisting("discovery-srv")
        );
        // Options that would configure nothing are refused.
        assert_eq!(
            c("--discovery-srv example.com --discovery-token t").unwrap_err(),
            ConfigError::DiscoveryTokenMissing
        );
        assert_eq!(
            c("--discovery-srv example.com --discovery-user u").unwrap_err(),
            ConfigError::WithoutItsFlag("discovery-user", "discovery-endpoints")
        );
        assert_eq!(
            c("--discovery-proxy p:1").unwrap_err(),
            ConfigError::WithoutItsFlag("discovery-proxy", "discovery")
        );
        assert_eq!(
            c("--discovery-srv-name c1").unwrap_err(),
            ConfigError::WithoutItsFlag("discovery-srv-name", "discovery-srv")
        );
        assert!(matches!(
            c("--discovery http://r/t --discovery-dial-timeout abc").unwrap_err(),
            ConfigError::InvalidValue { .. }
        ));
        // The conflict is found before a missing token.
        assert_eq!(
            c("--initial-cluster a=http://h:1 --discovery-endpoints http://e:1").unwrap_err(),
            ConfigError::ConflictBootstrapFlags
        );
        assert_eq!(
            c("--discovery-fallback proxy").unwrap_err().to_string(),
            "v2 proxy is deprecated, and --discovery-fallback can't be configured as \"proxy\""
        );
        assert_eq!(
            c("--discovery-token t").unwrap_err(),
            ConfigError::DiscoveryTokenMissing
        );
        assert_eq!(
            c("--discovery-token t --discovery-endpoints a:1,,b:1").unwrap_err(),
            ConfigError::EmptyDiscoveryEndpoint
        );
        assert_eq!(
            c("--discovery-proxy p:1 --discovery-user u").unwrap_err(),
            ConfigError::V2AndV3Discovery
        );
        let v3 = c("--discovery-endpoints http://b:2379,http://a:2379,http://b:2379 --discovery-token t1 --discovery-user u --discovery-password p --discovery-dial-timeout 1s").unwrap();
        let Discovery::V3(d) = v3.discovery else {
            panic!("v3 discovery")
        };
        assert_eq!(d.endpoints, ["http://a:2379", "http://b:2379"]);
        assert_eq!(
            (d.token.as_str(), d.user.as_str(), d.password.as_str()),
            ("t1", "u", "p")
        );
        assert_eq!(d.dial_timeout, std::time::Duration::from_secs(1));
        assert_eq!(d.request_timeout, std::time::Duration::from_secs(5));
        assert!(d.insecure_transport && !d.insecure_skip_tls_verify);
        assert_eq!(
            c("--discovery-endpoints http://a:2379").unwrap_err(),
            ConfigError::DiscoveryTokenMissing
        );
        // One way to bootstrap.
        for both in [
            "--initial-cluster a=http://h:2380 --discovery http://r/t",
            "--initial-cluster a=http://h:2380 --discovery-srv example.com",
            "--discovery http://r/t --discovery-srv example.com",
            "--discovery http://r/t --discovery-endpoints http://a:2379 --discovery-token t",
            "--discovery-srv example.com --discovery-endpoints http://a:2379 --discovery-token t",
        ] {
            assert_eq!(
                c(both).unwrap_err(),
                ConfigError::ConflictBootstrapFlags,
                "{both}"
            );
        }
        assert_eq!(
            ConfigError::ConflictBootstrapFlags.to_string(),
            "multiple discovery or bootstrap flags are set. Choose one of \"initial-cluster\", \"discovery\", \"discovery-endpoints\" or \"discovery-srv\""
        );
    }

    #[test]
    fn env_applies_to_unset_flags_and_conflicts_with_set_ones() {
        let env = |k: &str| match k {
            "ETCD_NAME" => Some("from-env".to_string()),
            "ETCD_MAX_TXN_OPS" => Some("7".to_string()),
            _ => None,
        };
        let c = Config::from_args_env(&[], &env).unwrap();
        assert_eq!((c.name.as_str(), c.max_txn_ops), ("from-env", 7));
        assert_eq!(
            Config::from_args_env(&args("--name x"), &env).unwrap_err(),
            ConfigError::EnvShadowed {
                env: "ETCD_NAME".into()
            }
        );
    }
}

#[cfg(test)]
mod file_tests {
    use super::*;

    const FILE: &str = "
name: infra1
data-dir: /var/lib/infra1
listen-client-urls: http://127.0.0.1:22379
listen-peer-urls: http://127.0.0.1:22380
initial-advertise-peer-urls: http://127.0.0.1:22380
initial-cluster: infra0=http://127.0.0.1:12380,infra1=http://127.0.0.1:22380
initial-cluster-token: tok
initial-cluster-state: existing
heartbeat-interval: 50
election-timeout: 500
experimental-watch-progress-notify-interval: 2000000000
strict-reconfig-check: false
enable-pprof: true
future-key: 1
peer-transport-security:
  auto-tls: true
";

    fn load(args: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let args: Vec<String> = args.split_whitespace().map(String::from).collect();
        Config::from_sources(&args, env, &|p| {
            if p == std::path::Path::new("/etc/etcd.yml") {
                Ok(FILE.to_string())
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "No such file or directory",
                ))
            }
        })
    }

    #[test]
    fn the_config_file_is_the_only_source() {
        // Other flags and ETCD_* variables are ignored, as etcd ignores them
        // (no "shadowed" conflict either).
        let env = |k: &str| (k == "ETCD_NAME").then(|| "from-env".to_string());
        let c = load("--config-file /etc/etcd.yml --name from-flag", &env).expect("loads");
        assert_eq!(c.name, "infra1");
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/infra1"));
        assert_eq!(c.listen_client_urls[0].port, 22379);
        // Not in the file: etcd's default (the file need not repeat it).
        assert_eq!(c.advertise_client_urls[0].text, "http://localhost:2379");
        assert_eq!(c.listen_peer_urls[0].port, 22380);
        assert_eq!(c.initial_cluster_token, "tok");
        assert_eq!(c.initial_cluster_state, "existing");
        assert!(c
            .initial_cluster
            .starts_with("infra0=http://127.0.0.1:12380,"));
        assert_eq!((c.heartbeat_interval_ms, c.election_timeout_ms), (50, 500));
        assert_eq!(
            c.watch_progress_notify_interval,
            std::time::Duration::from_secs(2)
        );
        assert!(c.peer_tls.auto_tls && !c.client_tls.auto_tls);
        assert_eq!(c.ignored.len(), 1);
        assert_eq!(c.ignored[0].0, "enable-pprof");
        assert_eq!(c.unknown_config_keys, ["future-key"]);
        assert_eq!(c.config_file, Some(PathBuf::from("/etc/etcd.yml")));
        // What is not configuration still comes from the command line.
        let c = load(
            "--config-file /etc/etcd.yml --version --log-format json",
            &|_| None,
        )
        .expect("loads");
        assert!(c.print_version);
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn unsupported_file_keys_are_refused() {
        let with = |text: &'static str| {
            Config::from_sources(&["--config-file=/f".to_string()], &|_| None, &move |_| {
                Ok(text.to_string())
            })
        };
        assert_eq!(
            with("quota-backend-bytes: 1024\n").unwrap_err().to_string(),
            "concord does not support --quota-backend-bytes yet (given \"1024\"); remove it to start"
        );
        let c = with("peer-transport-security:\n  allowed-cn: [etcd]\n").expect("loads");
        assert_eq!(c.peer_tls.allowed_cn, ["etcd"]);
        assert_eq!(
            with("client-transport-security:\n  allowed-cn: [etcd]\n")
                .unwrap_err()
                .to_string(),
            "config file /f: concord does not support the key client-transport-security.allowed-cn yet; remove it to start"
        );
        // etcd's sample file's defaults pass.
        with("quota-backend-bytes:\nwal-dir: ''\nenable-v2: false\nauto-compaction-retention: \"0\"\n")
            .expect("defaults");
        // A discovery key clears the default initial cluster, as in etcd.
        let c = with("discovery: http://r/v2/keys/t\n").expect("loads");
        assert_eq!(c.initial_cluster, "");
    }

    #[test]
    fn etcd_config_file_env_names_the_file() {
        let env = |k: &str| (k == "ETCD_CONFIG_FILE").then(|| "/etc/etcd.yml".to_string());
        assert_eq!(load("", &env).expect("loads").name, "infra1");
        // Unknown flags are still refused: the command line is parsed first.
        assert_eq!(
            load("--nope", &env).unwrap_err(),
            ConfigError::UnknownFlag("nope".into())
        );
    }

    #[test]
    fn a_missing_or_invalid_file_is_a_clear_error() {
        let e = load("--config-file /nowhere.yml", &|_| None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot read the config file /nowhere.yml: No such file or directory"
        );
        let bad = |text: &'static str| {
            Config::from_sources(&["--config-file=/f".to_string()], &|_| None, &move |_| {
                Ok(text.to_string())
            })
            .unwrap_err()
        };
        assert!(matches!(
            bad("heartbeat-interval: 100\nelection-timeout: 200\n"),
            ConfigError::ElectionTimeout { .. }
        ));
        assert!(matches!(
            bad("initial-cluster-state: maybe\n"),
            ConfigError::InvalidValue { .. }
        ));
        assert!(bad("name: [a\n")
            .to_string()
            .starts_with("config file /f: "));
    }
}
