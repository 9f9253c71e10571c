//! `concord bench`: a load generator in the style of etcd's `benchmark`
//! tool, for concord or any etcd v3 endpoint.
//!
//! ```text
//! concord bench [--endpoints a,b] [--clients N] [--conns N] put   [--total N] [--key-size N] [--val-size N] [--key-space-size N] [--sequential-keys]
//! concord bench ...                                           range KEY [END] [--total N] [--consistency l|s]
//! concord bench ...                                           txn-put [--total N] [--txn-ops N] [--key-size N] [--val-size N] [--key-space-size N]
//! concord bench ...                                           watch [--watchers N] [--streams N] [--puts N] [--val-size N] [--hold]
//! ```
//! Prints throughput and latency percentiles; `--json` prints one JSON line.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};

mod watch;

use crate::proto::etcdserverpb::kv_client::KvClient;
use crate::proto::etcdserverpb::{request_op, PutRequest, RangeRequest, RequestOp, TxnRequest};

/// Only the first request error is printed.
static REPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[derive(Debug, Clone)]
struct Opts {
    endpoints: Vec<String>,
    clients: usize,
    conns: usize,
    total: u64,
    key_size: usize,
    val_size: usize,
    key_space: u64,
    sequential: bool,
    txn_ops: usize,
    serializable: bool,
    json: bool,
    watchers: usize,
    streams: usize,
    puts: u64,
    hold: bool,
    /// `--user name:password`: authenticate once, send the token with
    /// every request (as etcd's benchmark tool).
    user: Option<(String, String)>,
    cmd: Cmd,
}

#[derive(Debug, Clone)]
enum Cmd {
    Put,
    Range(Vec<u8>, Vec<u8>),
    TxnPut,
    Watch,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: concord bench [--endpoints host:port,...] [--clients N] [--conns N] [--json] [--user NAME:PASSWORD] \
         (put [--total N] [--key-size N] [--val-size N] [--key-space-size N] [--sequential-keys] \
         | range KEY [END] [--total N] [--consistency l|s] \
         | txn-put [--total N] [--txn-ops N] [--key-size N] [--val-size N] [--key-space-size N] \
         | watch [--watchers N] [--streams N] [--puts N] [--val-size N] [--hold])"
    );
    ExitCode::from(2)
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        endpoints: vec!["127.0.0.1:2379".into()],
        clients: 1,
        conns: 1,
        total: 10_000,
        key_size: 8,
        val_size: 8,
        key_space: 1,
        sequential: false,
        txn_ops: 1,
        serializable: false,
        json: false,
        watchers: 100,
        streams: 10,
        puts: 1000,
        hold: false,
        user: None,
        cmd: Cmd::Put,
    };
    let mut positional: Vec<String> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].trim_start_matches('-');
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (a, None),
        };
        if !args[i].starts_with('-') {
            positional.push(args[i].clone());
            i += 1;
            continue;
        }
        let mut value = || -> Result<String, String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            i += 1;
            args.get(i)
                .cloned()
                .ok_or_else(|| format!("--{name} needs a value"))
        };
        let num = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("--{name}: not a number: {v}"))
        };
        match name {
            "endpoints" => o.endpoints = value()?.split(',').map(String::from).collect(),
            "clients" => o.clients = num(value()?)? as usize,
            "conns" => o.conns = num(value()?)? as usize,
            "total" => o.total = num(value()?)?,
            "key-size" => o.key_size = num(value()?)? as usize,
            "val-size" => o.val_size = num(value()?)? as usize,
            "key-space-size" => o.key_space = num(value()?)?.max(1),
            "txn-ops" => o.txn_ops = num(value()?)?.max(1) as usize,
            "consistency" => o.serializable = value()? == "s",
            "sequential-keys" => o.sequential = true,
            "json" => o.json = true,
            "watchers" => o.watchers = num(value()?)?.max(1) as usize,
            "streams" => o.streams = num(value()?)?.max(1) as usize,
            "puts" => o.puts = num(value()?)?,
            "hold" => o.hold = true,
            "user" => {
                let v = value()?;
                let (u, p) = v.split_once(':').ok_or("--user needs name:password")?;
                o.user = Some((u.to_string(), p.to_string()));
            }
            other => return Err(format!("unknown flag --{other}")),
        }
        i += 1;
    }
    o.cmd = match positional.first().map(String::as_str) {
        Some("put") => Cmd::Put,
        Some("txn-put") => Cmd::TxnPut,
        Some("watch") => Cmd::Watch,
        Some("range") => {
            let key = positional.get(1).ok_or("range needs a KEY")?;
            let end = positional.get(2).cloned().unwrap_or_default();
            Cmd::Range(key.clone().into_bytes(), end.into_bytes())
        }
        other => return Err(format!("unknown bench command {other:?}")),
    };
    if o.user.is_some() && matches!(o.cmd, Cmd::Watch) {
        return Err("--user is not supported by the watch bench".into());
    }
    if o.clients == 0 || o.conns == 0 {
        return Err("--clients and --conns must be positive".into());
    }
    Ok(o)
}

/// A key of `size` bytes for request `n`: random over the key space unless
/// sequential (the same scheme as etcd's benchmark: the index in the key).
fn key_for(n: u64, o: &Opts, rng: &mut u64) -> Vec<u8> {
    let id = if o.sequential {
        n % o.key_space
    } else {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng % o.key_space
    };
    // Zero-padded decimal of the key index, cut to the last key-size bytes.
    let s = format!("{id:0width$}", width = o.key_size.max(1));
    s.as_bytes()[s.len() - o.key_size.max(1)..].to_vec()
}

/// Adds the auth token (if any) to every request.
#[derive(Clone)]
struct WithToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for WithToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut().insert("token", t.clone());
        }
        Ok(req)
    }
}

#[cfg(not(madsim))]
type Kv = KvClient<tonic::service::interceptor::InterceptedService<Channel, WithToken>>;
// The simulator's clients take no interceptor (and no bench runs there).
#[cfg(madsim)]
type Kv = KvClient<Channel>;

fn kv_client(channel: Channel, token: WithToken) -> Kv {
    #[cfg(not(madsim))]
    return KvClient::with_interceptor(channel, token).max_decoding_message_size(usize::MAX);
    #[cfg(madsim)]
    {
        let _ = token;
        KvClient::new(channel).max_decoding_message_size(usize::MAX)
    }
}

/// The token for `--user`, from the first endpoint.
async fn token(o: &Opts, channel: Channel) -> Result<WithToken, String> {
    let Some((name, password)) = &o.user else {
        return Ok(WithToken(None));
    };
    let mut auth = crate::proto::etcdserverpb::auth_client::AuthClient::new(channel);
    let resp = auth
        .authenticate(crate::proto::etcdserverpb::AuthenticateRequest {
            name: name.clone(),
            password: password.clone(),
        })
        .await
        .map_err(|e| format!("authenticate: {}", e.message()))?;
    let t = resp
        .into_inner()
        .token
        .parse()
        .map_err(|_| "the token is not ASCII".to_string())?;
    Ok(WithToken(Some(t)))
}

async fn one_request(
    c: &mut Kv,
    o: &Opts,
    n: u64,
    rng: &mut u64,
    value: &[u8],
) -> Result<(), tonic::Status> {
    match &o.cmd {
        Cmd::Put => {
            c.put(PutRequest {
                key: key_for(n, o, rng),
                value: value.to_vec(),
                ..Default::default()
            })
            .await?;
        }
        Cmd::Range(key, end) => {
            c.range(RangeRequest {
                key: key.clone(),
                range_end: end.clone(),
                serializable: o.serializable,
                ..Default::default()
            })
            .await?;
        }
        Cmd::TxnPut => {
            let mut ops = Vec::with_capacity(o.txn_ops);
            let mut keys: Vec<Vec<u8>> = Vec::new();
            while ops.len() < o.txn_ops {
                let k = key_for(n * o.txn_ops as u64 + ops.len() as u64, o, rng);
                if keys.contains(&k) && (keys.len() as u64) < o.key_space {
                    continue;
                }
                keys.push(k.clone());
                ops.push(RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key: k,
                        value: value.to_vec(),
                        ..Default::default()
                    })),
                });
            }
            c.txn(TxnRequest {
                compare: vec![],
                success: ops,
                failure: vec![],
            })
            .await?;
        }
        Cmd::Watch => unreachable!("watch has its own runner"),
    }
    Ok(())
}

struct Summary {
    total: Duration,
    latencies: Vec<Duration>,
    errors: u64,
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(o: &Opts, mut s: Summary) {
    s.latencies.sort_unstable();
    let n = s.latencies.len();
    let rps = n as f64 / s.total.as_secs_f64();
    let avg = if n == 0 {
        0.0
    } else {
        s.latencies.iter().map(Duration::as_secs_f64).sum::<f64>() / n as f64 * 1000.0
    };
    let cmd = match &o.cmd {
        Cmd::Put => "put",
        Cmd::Range(..) => "range",
        Cmd::TxnPut => "txn-put",
        Cmd::Watch => "watch",
    };
    if o.json {
        println!(
            "{{\"cmd\":\"{cmd}\",\"clients\":{},\"conns\":{},\"requests\":{n},\"errors\":{},\"seconds\":{:.4},\"rps\":{rps:.1},\"avg_ms\":{avg:.4},\"p50_ms\":{:.4},\"p90_ms\":{:.4},\"p99_ms\":{:.4},\"p999_ms\":{:.4}}}",
            o.clients,
            o.conns,
            s.errors,
            s.total.as_secs_f64(),
            pct(&s.latencies, 0.5),
            pct(&s.latencies, 0.9),
            pct(&s.latencies, 0.99),
            pct(&s.latencies, 0.999)
        );
        return;
    }
    println!("Summary ({cmd}, {} clients, {} conns):", o.clients, o.conns);
    println!("  Total:        {:.4} secs.", s.total.as_secs_f64());
    println!("  Requests:     {n} ({} errors)", s.errors);
    println!("  Requests/sec: {rps:.1}");
    println!("  Average:      {avg:.4} ms");
    if n > 0 {
        println!(
            "  Fastest:      {:.4} ms",
            s.latencies[0].as_secs_f64() * 1000.0
        );
        println!(
            "  Slowest:      {:.4} ms",
            s.latencies[n - 1].as_secs_f64() * 1000.0
        );
    }
    for (name, p) in [("50%", 0.5), ("90%", 0.9), ("99%", 0.99), ("99.9%", 0.999)] {
        println!("  {name:>6} in {:.4} ms", pct(&s.latencies, p));
    }
}

/// `o.conns` connections to the endpoints, round robin.
async fn connect(o: &Opts) -> Result<Vec<Channel>, String> {
    let mut channels = Vec::with_capacity(o.conns);
    for i in 0..o.conns {
        let ep = &o.endpoints[i % o.endpoints.len()];
        let uri = if ep.contains("://") {
            ep.clone()
        } else {
            format!("http://{ep}")
        };
        let ch = Endpoint::from_shared(uri)
            .map_err(|e| format!("bad endpoint {ep}: {e}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {ep}: {e}"))?;
        channels.push(ch);
    }
    Ok(channels)
}

async fn run(o: Opts) -> Result<Summary, String> {
    let channels = connect(&o).await?;
    let with_token = token(&o, channels[0].clone()).await?;
    let next = Arc::new(AtomicU64::new(0));
    let value = Arc::new(vec![b'v'; o.val_size]);
    let o = Arc::new(o);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(o.clients);
    for c in 0..o.clients {
        let mut client = kv_client(channels[c % channels.len()].clone(), with_token.clone());
        let (next, value, o) = (next.clone(), value.clone(), o.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut rng =
                0x9e37_79b9_7f4a_7c15u64 ^ (c as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= o.total {
                    break;
                }
                let t = Instant::now();
                match one_request(&mut client, &o, n, &mut rng, &value).await {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        if !REPORTED.swap(true, Ordering::Relaxed) {
                            eprintln!("bench: request failed (first error shown): {e}");
                        }
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut latencies = Vec::with_capacity(o.total as usize);
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.map_err(|e| format!("client task: {e}"))?;
        latencies.extend(l);
        errors += e;
    }
    Ok(Summary {
        total: start.elapsed(),
        latencies,
        errors,
    })
}

pub fn main(args: &[String]) -> ExitCode {
    let o = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e}");
            return usage();
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if matches!(o.cmd, Cmd::Watch) {
        return match rt.block_on(watch::run(&o)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match rt.block_on(run(o.clone())) {
        Ok(s) => {
            let failed = s.errors > 0;
            report(&o, s);
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}
