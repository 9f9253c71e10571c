//! The concord daemon: parse etcd's flags, start a member, serve until
//! SIGTERM/SIGINT, shut down cleanly. `concord bench ...` runs the
//! load generator instead.

#[cfg(not(madsim))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::process::ExitCode;

use concord::config::{Config, LogFormat};

fn init_logging(level: &str, format: LogFormat) {
    let level = match level {
        "debug" => "debug",
        "warn" => "warn",
        "error" | "panic" | "fatal" => "error",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::new(format!(
        "{level},fjall=warn,lsm_tree=warn,h2=warn,tower=warn,hyper=warn"
    ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("bench") {
        return concord::bench::main(&args[1..]);
    }
    let cfg = match Config::from_args_env(&args, &|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("concord: {e}");
            return ExitCode::from(2);
        }
    };
    if cfg.print_version {
        println!("concord Version: {}", env!("CARGO_PKG_VERSION"));
        println!("etcd API Version: {}", concord::api::SERVER_VERSION);
        return ExitCode::SUCCESS;
    }
    init_logging(&cfg.log_level, cfg.log_format);
    for (flag, value, why) in &cfg.ignored {
        tracing::info!(flag = %flag, value = %value, "ignoring --{flag}: {why}");
    }
    if let Some(file) = &cfg.config_file {
        tracing::info!(path = %file.display(), "loaded server configuration, other configuration command line flags and environment variables will be ignored if provided");
    }
    if cfg.config_file.is_none() {
        for (name, value) in std::env::vars() {
            if name.starts_with("ETCD_") && !concord::config::is_known_env_var(&name) {
                tracing::warn!("unrecognized environment variable {name}={value}");
            }
        }
    }
    for key in &cfg.unknown_config_keys {
        tracing::warn!(key = %key, "unknown key in the config file; ignoring it");
    }
    tracing::info!(name = %cfg.name, data_dir = %cfg.data_dir.display(), version = env!("CARGO_PKG_VERSION"), "starting concord");
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("concord: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(concord::server::run(cfg, stop_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "concord stopped with an error");
            eprintln!("concord: {e}");
            ExitCode::FAILURE
        }
    }
}
