//! `lucia <role>` runs one role; `lucia all` runs every implemented role in
//! one process on one port.

mod bench;
mod bench_alerts;
mod bench_remote_write;
mod config;
mod rules;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use lucia_common::Shutdown;
use lucia_common::server::{self, ProcessConfig, Readiness, RoleContext};
use lucia_common::telemetry::{self, LogFormat};

use crate::config::FileConfig;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "lucia",
    version,
    about = "Lucia: logs, metrics, rules and alerts in one Rust workspace"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every implemented role in one process on one port (the embedded default)
    All(RoleArgs),
    /// Accept log pushes, validate and limit them, and replicate them to ingesters
    Distributor(RoleArgs),
    /// Keep recent logs in a WAL and memory, and flush chunks to the object store
    Ingester(RoleArgs),
    /// Serve the Loki read API: LogQL over the ingesters and the object store, and live tail
    Querier(RoleArgs),
    /// Store metrics: remote write receiver, WAL, head, rocksdb index and blocks (takes Prometheus' --storage.tsdb.* and --web.listen-address flags)
    Tsdb(RoleArgs),
    /// Evaluate recording and alerting rules (PromQL against tsdb, LogQL against the querier) and send alerts
    Ruler(RoleArgs),
    /// Route alerts to receivers: an Alertmanager drop-in (Alertmanager's flags and config file)
    AlertRouter(Box<AlertRouterArgs>),
    /// The front door for Grafana: one address for the Loki, Prometheus and Alertmanager APIs, with auth, tenants and routing to every role
    Gateway(RoleArgs),
    /// Ship log files to Lucia or Loki, configured by a Promtail configuration file
    Agent(AgentArgs),
    /// Load generators for benchmarks
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Test tools: run conformance files against the engines
    #[command(subcommand)]
    Test(TestCommand),
    /// Rule tools: unit tests and checks of Prometheus rule files (promtool's `test rules`, `check rules`)
    #[command(subcommand)]
    Rules(RulesCommand),
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Run promtool-format rule unit tests; prints SUCCESS or what failed
    Test {
        /// rule test files
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Check rule files for errors, like `promtool check rules`
    Check {
        /// rule files
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TestCommand {
    /// Run Loki `.logqltest` files against the LogQL engine; exits nonzero when a case fails
    Logql {
        /// `.logqltest` files
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Run Prometheus promqltest `.test` files against the PromQL engine; exits nonzero when a case fails
    Promql {
        /// promqltest files
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Push log lines from a file as fast as the server takes them
    Push(bench::PushBenchArgs),
    /// Send a metrics remote-write workload to Lucia or Prometheus as fast as it takes it
    RemoteWrite(bench_remote_write::RemoteWriteBenchArgs),
    /// Post an alert workload to Lucia's alert-router or Alertmanager (API v2) as fast as it takes it
    Alerts(bench_alerts::AlertsBenchArgs),
}

#[derive(Args, Clone)]
struct RoleArgs {
    /// YAML configuration file
    #[arg(long = "config.file", value_name = "FILE")]
    config_file: Option<PathBuf>,
    /// Replace ${VAR} and ${VAR:-default} in the config file with environment variables
    #[arg(long = "config.expand-env")]
    config_expand_env: bool,
    /// Address of the HTTP and gRPC listener (alias: --web.listen-address) [default: 0.0.0.0:3100, 0.0.0.0:9090 for tsdb, or the config file's server.http_listen_address]
    #[arg(
        long = "http.listen-address",
        alias = "web.listen-address",
        value_name = "ADDR"
    )]
    listen_address: Option<SocketAddr>,
    /// Directory for the WAL, tokens and the local object store [default: ./data]
    #[arg(long = "data.dir", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log level: error, warn, info, debug or trace
    #[arg(long = "log.level", default_value = "info", value_name = "LEVEL")]
    log_level: String,
    /// Log format: text or json
    #[arg(long = "log.format", default_value = "text", value_name = "FORMAT")]
    log_format: LogFormat,
    /// Require X-Scope-OrgID on every request (Loki's auth_enabled)
    #[arg(long = "auth.enabled")]
    auth_enabled: Option<bool>,
    /// tsdb: where metrics are stored [default: tsdb.path, or <data.dir>/tsdb]
    #[arg(long = "storage.tsdb.path", value_name = "DIR")]
    tsdb_path: Option<PathBuf>,
    /// tsdb: how long samples are kept, relative to the newest [default: tsdb.retention_time, or 15d]
    #[arg(long = "storage.tsdb.retention.time", value_name = "DURATION", value_parser = parse_duration_flag)]
    tsdb_retention_time: Option<lucia_common::duration::ConfigDuration>,
    /// tsdb: maximum bytes of storage, oldest blocks deleted first, e.g. 10GB [default: tsdb.retention_size, or no limit]
    #[arg(long = "storage.tsdb.retention.size", value_name = "SIZE")]
    tsdb_retention_size: Option<String>,
}

fn parse_duration_flag(s: &str) -> Result<lucia_common::duration::ConfigDuration, String> {
    lucia_common::duration::parse_duration(s)
        .map(lucia_common::duration::ConfigDuration)
        .map_err(|e| e.to_string())
}

impl RoleArgs {
    /// The tsdb section with the command line's overrides.
    fn tsdb_config(&self, file: &FileConfig) -> lucia_tsdb::Config {
        let mut config = file.tsdb.clone();
        if let Some(path) = &self.tsdb_path {
            config.path = Some(path.clone());
        }
        if let Some(t) = self.tsdb_retention_time {
            config.retention_time = t;
        }
        if let Some(size) = &self.tsdb_retention_size {
            config.retention_size = Some(size.clone());
        }
        config
    }
}

#[derive(Args, Clone)]
struct AgentArgs {
    /// Promtail configuration file
    #[arg(long = "config.file", value_name = "FILE")]
    config_file: PathBuf,
    /// Replace ${VAR} and ${VAR:-default} in the config file with environment variables
    #[arg(long = "config.expand-env")]
    config_expand_env: bool,
    /// Print processed entries to stdout instead of pushing them (positions are not saved)
    #[arg(long = "dry-run")]
    dry_run: bool,
    /// Print what every pipeline stage changes to each entry to stderr
    #[arg(long = "inspect")]
    inspect: bool,
    /// Address of the HTTP listener [default: the config file's server block, or 0.0.0.0:9080]
    #[arg(long = "http.listen-address", value_name = "ADDR")]
    listen_address: Option<SocketAddr>,
    /// Port of the HTTP listener (Promtail's flag)
    #[arg(long = "server.http-listen-port", value_name = "PORT")]
    listen_port: Option<u16>,
    /// Log level: error, warn, info, debug or trace
    #[arg(long = "log.level", default_value = "info", value_name = "LEVEL")]
    log_level: String,
    /// Log format: text or json
    #[arg(long = "log.format", default_value = "text", value_name = "FORMAT")]
    log_format: LogFormat,
}

#[derive(Args, Clone)]
struct AlertRouterArgs {
    /// Alertmanager configuration file [default: one route to a receiver `default`]
    #[arg(long = "config.file", value_name = "FILE")]
    config_file: Option<PathBuf>,
    /// Where silences and the notification log are kept
    #[arg(long = "storage.path", default_value = "data/", value_name = "DIR")]
    storage_path: PathBuf,
    /// Address of the HTTP listener
    #[arg(
        long = "web.listen-address",
        default_value = "0.0.0.0:9093",
        value_name = "ADDR"
    )]
    listen_address: SocketAddr,
    /// The URL the router is reachable at (links in notifications)
    #[arg(long = "web.external-url", value_name = "URL")]
    external_url: Option<String>,
    /// Prefix of every route [default: the external URL's path]
    #[arg(long = "web.route-prefix", value_name = "PATH")]
    route_prefix: Option<String>,
    /// How long expired silences are kept
    #[arg(
        long = "data.retention",
        default_value = "120h",
        value_name = "DURATION"
    )]
    data_retention: String,
    /// Require X-Scope-OrgID on every request and keep tenants apart
    #[arg(long = "auth.enabled")]
    auth_enabled: bool,
    /// Register in Consul at this address (host:port), and find cluster peers there
    #[arg(long = "consul.address", value_name = "ADDR")]
    consul_address: Option<String>,
    /// Log level: error, warn, info, debug or trace
    #[arg(long = "log.level", default_value = "info", value_name = "LEVEL")]
    log_level: String,
    /// Log format: text (or logfmt) or json
    #[arg(long = "log.format", default_value = "text", value_name = "FORMAT")]
    log_format: LogFormat,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Alertmanager's `--cluster.*` flags (high availability).
#[derive(Args, Clone)]
struct ClusterArgs {
    /// Listen address of the cluster; an empty string disables clustering
    #[arg(
        long = "cluster.listen-address",
        default_value = "0.0.0.0:9094",
        value_name = "ADDR"
    )]
    cluster_listen_address: String,
    /// Address the peers reach this member at [default: the listen address, or this host's IP]
    #[arg(long = "cluster.advertise-address", value_name = "ADDR")]
    advertise_address: Option<String>,
    /// Initial peer (host:port of its cluster listener); may be repeated
    #[arg(long = "cluster.peer", value_name = "ADDR")]
    peers: Vec<String>,
    /// Name of this member [default: a new ULID at each start]
    #[arg(long = "cluster.peer-name", value_name = "NAME")]
    peer_name: Option<String>,
    /// Wait per position in the cluster before notifying
    #[arg(
        long = "cluster.peer-timeout",
        default_value = "15s",
        value_name = "DURATION"
    )]
    peer_timeout: String,
    /// Settle polls run every ten gossip intervals
    #[arg(
        long = "cluster.gossip-interval",
        default_value = "200ms",
        value_name = "DURATION"
    )]
    gossip_interval: String,
    /// How often the full state is exchanged with every member
    #[arg(
        long = "cluster.pushpull-interval",
        default_value = "1m",
        value_name = "DURATION"
    )]
    pushpull_interval: String,
    /// Longest wait for the membership to settle before notifying
    #[arg(
        long = "cluster.settle-timeout",
        default_value = "1m",
        value_name = "DURATION"
    )]
    settle_timeout: String,
    /// How often every member is pinged
    #[arg(
        long = "cluster.probe-interval",
        default_value = "1s",
        value_name = "DURATION"
    )]
    probe_interval: String,
    /// How long a ping may take
    #[arg(
        long = "cluster.probe-timeout",
        default_value = "500ms",
        value_name = "DURATION"
    )]
    probe_timeout: String,
    /// How often a failed member is tried again
    #[arg(
        long = "cluster.reconnect-interval",
        default_value = "10s",
        value_name = "DURATION"
    )]
    reconnect_interval: String,
    /// How long a failed member is tried before it is forgotten
    #[arg(
        long = "cluster.reconnect-timeout",
        default_value = "6h",
        value_name = "DURATION"
    )]
    reconnect_timeout: String,
    /// Timeout of a full state exchange
    #[arg(
        long = "cluster.tcp-timeout",
        default_value = "10s",
        value_name = "DURATION"
    )]
    tcp_timeout: String,
    /// Members only talk to members with the same label
    #[arg(long = "cluster.label", default_value = "", value_name = "LABEL")]
    label: String,
    /// Accepted for Alertmanager's command lines and ignored (peers are resolved at each probe)
    #[arg(long = "cluster.peers-resolve-timeout", value_name = "DURATION")]
    peers_resolve_timeout: Option<String>,
    /// Accepted for Alertmanager's command lines and ignored
    #[arg(long = "cluster.allow-insecure-public-advertise-address-discovery")]
    allow_insecure_public_advertise: bool,
    /// Not supported: the cluster protocol is plain HTTP (refused rather than silently unencrypted)
    #[arg(long = "cluster.tls-config", value_name = "FILE")]
    tls_config: Option<PathBuf>,
}

impl ClusterArgs {
    fn config(&self) -> anyhow::Result<lucia_alert_router::cluster::ClusterConfig> {
        use lucia_common::duration::{ConfigDuration, parse_duration};
        let duration = |value: &str, flag: &str| {
            parse_duration(value)
                .map(ConfigDuration)
                .with_context(|| format!("--{flag}"))
        };
        if let Some(file) = &self.tls_config {
            anyhow::bail!(
                "--cluster.tls-config {}: TLS between cluster members is not supported; \
                 keep the cluster port on a private network and drop the flag",
                file.display()
            );
        }
        if self.peers_resolve_timeout.is_some() || self.allow_insecure_public_advertise {
            tracing::warn!(
                "--cluster.peers-resolve-timeout and \
                 --cluster.allow-insecure-public-advertise-address-discovery are accepted and ignored"
            );
        }
        Ok(lucia_alert_router::cluster::ClusterConfig {
            listen_address: Some(self.cluster_listen_address.clone()),
            advertise_address: self.advertise_address.clone(),
            peers: self.peers.clone(),
            peer_name: self.peer_name.clone(),
            peer_timeout: duration(&self.peer_timeout, "cluster.peer-timeout")?,
            gossip_interval: duration(&self.gossip_interval, "cluster.gossip-interval")?,
            pushpull_interval: duration(&self.pushpull_interval, "cluster.pushpull-interval")?,
            settle_timeout: duration(&self.settle_timeout, "cluster.settle-timeout")?,
            probe_interval: duration(&self.probe_interval, "cluster.probe-interval")?,
            probe_timeout: duration(&self.probe_timeout, "cluster.probe-timeout")?,
            reconnect_interval: duration(&self.reconnect_interval, "cluster.reconnect-interval")?,
            reconnect_timeout: duration(&self.reconnect_timeout, "cluster.reconnect-timeout")?,
            tcp_timeout: duration(&self.tcp_timeout, "cluster.tcp-timeout")?,
            label: self.label.clone(),
        })
    }
}

/// Promtail's flags have one dash (`-config.file=x`, `-dry-run`); clap wants
/// two. Rewrites them for `lucia agent` so Promtail command lines work.
fn promtail_style_args(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    if args.get(1).and_then(|a| a.to_str()) != Some("agent") {
        return args;
    }
    args.into_iter()
        .map(|arg| match arg.to_str() {
            Some(s) if s.starts_with('-') && !s.starts_with("--") && s.len() > 2 => {
                format!("-{s}").into()
            }
            _ => arg,
        })
        .collect()
}

fn main() -> std::process::ExitCode {
    disable_transparent_huge_pages();
    // Lucia's own clients carry their provider (lucia_common::http_client);
    // this is for any library that asks rustls for the process default.
    lucia_common::http_client::install_default_provider();
    match real_main() {
        Ok(code) => code,
        Err(err) => {
            // Print the cause chain, not a backtrace: these are user errors.
            eprintln!("lucia: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Turns transparent huge pages off for this process. mimalloc asks for
/// them (`MADV_HUGEPAGE`) on its arenas, and the kernel then zeroes 2 MiB at
/// each first touch and again when purges split them: on the push benchmark
/// (300 MB, 1,000 streams) the page clearing was a fifth of the server's CPU,
/// and turning THP off saved about 15% of the CPU (BENCHMARKS.md). Best
/// effort: a kernel without the prctl just keeps THP.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

fn real_main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse_from(promtail_style_args(std::env::args_os().collect()));
    if let Command::Agent(args) = &cli.command {
        return run_agent(args.clone());
    }
    if let Command::AlertRouter(args) = &cli.command {
        return run_alert_router((**args).clone());
    }
    if let Command::Bench(command) = cli.command {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        runtime.block_on(async {
            match command {
                BenchCommand::Push(args) => bench::push(args).await,
                BenchCommand::RemoteWrite(args) => bench_remote_write::remote_write(args).await,
                BenchCommand::Alerts(args) => bench_alerts::alerts(args).await,
            }
        })?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if let Command::Test(TestCommand::Logql { files }) = &cli.command {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        return runtime.block_on(test_logql(files));
    }
    if let Command::Test(TestCommand::Promql { files }) = &cli.command {
        return test_promql(files);
    }
    if let Command::Rules(command) = &cli.command {
        return Ok(match command {
            RulesCommand::Test { files } => rules::test(files),
            RulesCommand::Check { files } => rules::check(files),
        });
    }
    let (role, args) = match &cli.command {
        Command::All(a) => ("all", a),
        Command::Distributor(a) => ("distributor", a),
        Command::Ingester(a) => ("ingester", a),
        Command::Querier(a) => ("querier", a),
        Command::Tsdb(a) => ("tsdb", a),
        Command::Ruler(a) => ("ruler", a),
        Command::Gateway(a) => ("gateway", a),
        Command::Agent(_)
        | Command::AlertRouter(_)
        | Command::Bench(_)
        | Command::Test(_)
        | Command::Rules(_) => {
            unreachable!("handled above")
        }
    };
    let file = match &args.config_file {
        Some(path) => FileConfig::load(path, args.config_expand_env)?,
        None => FileConfig::default(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let _telemetry =
            telemetry::init(&format!("lucia-{role}"), &args.log_level, args.log_format)
                .map_err(anyhow::Error::msg)?;
        run(role, args.clone(), file).await
    })?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// `lucia agent --config.file promtail.yaml`: the Promtail-compatible
/// shipper, configured by a Promtail file rather than Lucia's.
fn run_agent(args: AgentArgs) -> anyhow::Result<std::process::ExitCode> {
    let config = lucia_agent::Config::load(&args.config_file, args.config_expand_env)?;
    let mut listen_address = args
        .listen_address
        .or_else(|| config.listen_address())
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 9080)));
    if let Some(port) = args.listen_port {
        listen_address.set_port(port);
    }
    let process = ProcessConfig {
        listen_address,
        data_dir: PathBuf::from("."),
        multi_tenant: false,
        consul: None,
    };
    let options = lucia_agent::Options {
        dry_run: args.dry_run,
        inspect: args.inspect,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let _telemetry = telemetry::init("lucia-agent", &args.log_level, args.log_format)
            .map_err(anyhow::Error::msg)?;
        let shutdown = Shutdown::new();
        server::cancel_on_signals(shutdown.clone());
        tracing::info!(version = env!("CARGO_PKG_VERSION"), "starting lucia agent");
        lucia_agent::run(config, options, process, shutdown).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// `lucia alert-router --config.file alertmanager.yml`: the Alertmanager
/// drop-in, with Alertmanager's flags.
fn run_alert_router(args: AlertRouterArgs) -> anyhow::Result<std::process::ExitCode> {
    let data_retention =
        lucia_common::duration::parse_duration(&args.data_retention).context("--data.retention")?;
    let mut config = lucia_alert_router::Config {
        config_file: args.config_file.clone(),
        storage_path: Some(args.storage_path.clone()),
        external_url: args.external_url.clone(),
        route_prefix: args.route_prefix.clone(),
        data_retention: lucia_common::duration::ConfigDuration(data_retention),
        cluster: Default::default(),
    };
    let process = ProcessConfig {
        listen_address: args.listen_address,
        data_dir: args.storage_path.clone(),
        multi_tenant: args.auth_enabled,
        consul: args
            .consul_address
            .as_deref()
            .map(lucia_common::consul::ConsulConfig::new),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let _telemetry = telemetry::init("lucia-alert-router", &args.log_level, args.log_format)
            .map_err(anyhow::Error::msg)?;
        // After the logger, so that the warning about ignored flags shows.
        config.cluster = args.cluster.config()?;
        let shutdown = Shutdown::new();
        server::cancel_on_signals(shutdown.clone());
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            "starting lucia alert-router"
        );
        lucia_alert_router::run(config, process, shutdown).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// `lucia test logql FILE...`: prints each failure and per-file counts, and
/// ends with `N passed, M failed`.
async fn test_logql(files: &[PathBuf]) -> anyhow::Result<std::process::ExitCode> {
    let (mut passed, mut failed) = (0, 0);
    for path in files {
        let report = lucia_querier::conformance::run_file(path).await?;
        for failure in &report.failures {
            println!("FAIL {failure}");
        }
        println!(
            "{}: {} passed, {} failed",
            report.name, report.passed, report.failed
        );
        passed += report.passed;
        failed += report.failed;
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

/// `lucia test promql FILE...`: prints each failure and per-file counts, and
/// ends with `N passed, M failed`.
fn test_promql(files: &[PathBuf]) -> anyhow::Result<std::process::ExitCode> {
    let (mut passed, mut failed) = (0, 0);
    for path in files {
        let report = lucia_tsdb::promql::conformance::run_file(path)?;
        for err in &report.load_errors {
            println!("LOAD {err}");
        }
        for failure in &report.failures {
            println!("FAIL {failure}");
        }
        println!(
            "{}: {} passed, {} failed",
            report.name, report.passed, report.failed
        );
        passed += report.passed;
        failed += report.failed;
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

async fn run(role: &str, args: RoleArgs, file: FileConfig) -> anyhow::Result<()> {
    let default_port = if role == "tsdb" { 9090 } else { 3100 };
    let mut tsdb = args.tsdb_config(&file);
    tsdb.scrape = file.scrape_setup(role == "all")?;
    if let Some(window) = file.storage.tsdb.out_of_order_time_window {
        tsdb.out_of_order_time_window = window;
    }
    let process = ProcessConfig {
        listen_address: args
            .listen_address
            .or(file.server.http_listen_address)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], default_port))),
        data_dir: args
            .data_dir
            .or_else(|| file.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from("./data")),
        multi_tenant: args.auth_enabled.unwrap_or(file.auth_enabled),
        consul: file.consul.clone(),
    };
    std::fs::create_dir_all(&process.data_dir)
        .with_context(|| format!("cannot create data dir {}", process.data_dir.display()))?;
    let shutdown = Shutdown::new();
    server::cancel_on_signals(shutdown.clone());
    tracing::info!(role, version = env!("CARGO_PKG_VERSION"), "starting lucia");
    match role {
        "all" => run_all(process, file, tsdb, shutdown).await,
        "distributor" => {
            Ok(lucia_ingester::distributor::run(file.distributor(), process, shutdown).await?)
        }
        "ingester" => Ok(lucia_ingester::ingester::run(file.ingester(), process, shutdown).await?),
        "querier" => Ok(lucia_querier::run(file.querier(), process, shutdown).await?),
        "tsdb" => Ok(lucia_tsdb::run(tsdb, process, shutdown).await?),
        "ruler" => Ok(lucia_ruler::run(file.ruler, process, shutdown).await?),
        "gateway" => Ok(lucia_gateway::run(file.gateway, process, shutdown).await?),
        other => anyhow::bail!("unknown role {other}"),
    }
}

/// Every implemented role in one process, on one listener, with the
/// in-process ring and replication factor 1.
async fn run_all(
    process: ProcessConfig,
    file: FileConfig,
    tsdb: lucia_tsdb::Config,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let (listener, advertise_addr) = server::bind(process.listen_address)
        .await
        .with_context(|| format!("cannot listen on {}", process.listen_address))?;
    // The ruler talks to tsdb, the querier and the alert-router of this
    // very process unless the config points elsewhere.
    let mut ruler = file.ruler.clone();
    ruler.default_to_local(advertise_addr);
    let mut tsdb = tsdb;
    tsdb.rules_api = false;
    let ctx = RoleContext {
        advertise_addr,
        metrics: lucia_common::metrics::Metrics::new(),
        readiness: Readiness::default(),
        shutdown,
        data_dir: process.data_dir,
        multi_tenant: process.multi_tenant,
        consul: process.consul,
    };
    // The ingester starts first so that it is in the ring when the
    // distributor takes its first push.
    let roles = vec![
        lucia_ingester::ingester::start(file.ingester(), ctx.clone()).await?,
        lucia_ingester::distributor::start(file.distributor(), ctx.clone()).await?,
        lucia_querier::start(file.querier(), ctx.clone()).await?,
        lucia_tsdb::start(tsdb, ctx.clone()).await?,
        lucia_alert_router::start(file.alert_router_all(), ctx.clone()).await?,
        lucia_ruler::start(ruler, ctx.clone()).await?,
    ];
    tracing::info!(addr = %advertise_addr, "lucia all listening");
    server::serve_roles(listener, &ctx, roles).await?;
    Ok(())
}
