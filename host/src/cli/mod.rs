//! The `mysimbdp` command line. Commands talk to a running host through its
//! control API when one answers at the configured address; otherwise they
//! work directly on the platform's files (and refuse what needs a host).
//! Those that write there take the data directory's lock first, so with a
//! host on it whose API is elsewhere (or does not answer yet) they refuse.

mod commands;
mod host;
mod output;
#[cfg(test)]
mod reference;
mod streams;

use crate::pipelines::PipelineKind;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

const ABOUT: &str =
    "mysimbdp: a multi-tenant big-data ingestion platform whose tenants bring their own pipelines as WebAssembly components.";

const LONG_ABOUT: &str = "mysimbdp: a multi-tenant big-data ingestion platform whose tenants bring their own pipelines as WebAssembly components.

The platform provider runs `mysimbdp host run`. Tenants are registered in tenants/tenants.yaml, each with a service profile (file constraints, schedule, concurrency, sandbox limits). A tenant builds its pipelines with the guest SDK for wasm32-wasip2 and uploads them with `mysimbdp pipeline upload`.

Without --config everything is embedded (a tantivy document store and a file-based message log under ./var), so one machine with nothing installed is enough. A config naming Kafka brokers and an Elasticsearch/OpenSearch URL runs the same pipelines against those clusters.

Commands that need the host (stream start/stop/status) talk to it through its control API (api.listen); the others use it when one is running and otherwise work directly on the platform's files.";

#[derive(Parser)]
#[command(name = "mysimbdp", version, about = ABOUT, long_about = LONG_ABOUT, propagate_version = true)]
pub struct Cli {
    /// Platform configuration (YAML). Without it: embedded backends, data in ./var,
    /// tenants from ./tenants/tenants.yaml.
    #[arg(long, global = true, env = "MYSIMBDP_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// The API token this command sends to the host, instead of the config's `api.token_file`: e.g. a
    /// tenant's own token (`api_token_file` in tenants.yaml), which acts for that tenant only.
    #[arg(long, global = true, env = "MYSIMBDP_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host: ingestion managers, control API, /metrics and the operator page.
    Host {
        #[command(subcommand)]
        command: HostCommand,
    },
    /// Ingest one file through a tenant's batch pipeline and print what happened.
    Ingest(IngestArgs),
    /// Upload and list tenants' pipeline components.
    Pipeline {
        #[command(subcommand)]
        command: PipelineCommand,
    },
    /// Show the registered tenants and their profiles.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Search a tenant's collection.
    Query(QueryArgs),
    /// Put files into a tenant's staging directory for the batch manager.
    Stage {
        #[command(subcommand)]
        command: StageCommand,
    },
    /// See and act on batch ingestion: queued, running, done, failed, quarantined files.
    Batch {
        #[command(subcommand)]
        command: BatchCommand,
    },
    /// What was ingested and what failed, per tenant and for the platform, from the logs.
    Stats {
        /// Only this tenant (by its id); all tenants when omitted.
        #[arg(long, short)]
        tenant: Option<String>,
        /// Only ingestions since then: a duration back (`90m`, `2h`, `7d`) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
    },
    /// Start, stop and watch tenants' stream pipelines; send them test messages.
    Stream {
        #[command(subcommand)]
        command: StreamCommand,
    },
    /// The child process that compiles a component (stdin) into an artifact
    /// (stdout) under the compile limits: run by the host, not by people.
    #[command(name = "compile-component", hide = true)]
    CompileComponent {
        #[arg(long, value_enum)]
        kind: PipelineKind,
        #[arg(long)]
        stack_bytes: u64,
    },
}

#[derive(Subcommand)]
enum StreamCommand {
    /// Start instances of a tenant's stream pipeline on the running host.
    Start {
        /// The tenant, by its id in the registry.
        #[arg(long, short)]
        tenant: String,
        /// How many (default: the profile's min_instances).
        #[arg(long, short)]
        instances: Option<u32>,
    },
    /// Stop every instance of a tenant's stream pipeline; each finishes its batch.
    Stop {
        /// The tenant, by its id in the registry.
        #[arg(long, short)]
        tenant: String,
    },
    /// Running instances and consumer lag, per tenant.
    Status {
        /// Only this tenant (by its id); all tenants when omitted.
        #[arg(long, short)]
        tenant: Option<String>,
    },
    /// Publish messages to a tenant's topic, one per line of FILE (or stdin).
    Produce {
        /// The tenant, by its id in the registry.
        #[arg(long, short)]
        tenant: String,
        /// The topic, without the tenant prefix.
        #[arg(long)]
        topic: String,
        /// A key for every message (messages with the same key keep their order).
        #[arg(long)]
        key: Option<String>,
        /// Take each message's key from this JSON field of the line.
        #[arg(long, conflicts_with = "key")]
        key_field: Option<String>,
        /// Lines to send; `-` or nothing reads stdin.
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum StageCommand {
    /// Copy files into staging atomically (the host never sees half a file).
    Put {
        /// The tenant, by its id in the registry.
        #[arg(long, short)]
        tenant: String,
        /// A subdirectory of staging, for pipelines bound to one.
        #[arg(long)]
        into: Option<PathBuf>,
        /// Files to copy; each keeps its name.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BatchCommand {
    /// Files per state, with the reasons of failures and quarantines.
    Status {
        /// Only this tenant (by its id); all tenants when omitted.
        #[arg(long, short)]
        tenant: Option<String>,
        /// Done files to list per tenant.
        #[arg(long, default_value_t = 10)]
        recent: usize,
    },
    /// Send failed files (and with --quarantined, quarantined ones) back to staging.
    Retry {
        /// The tenant, by its id in the registry.
        #[arg(long, short)]
        tenant: String,
        /// Also retry quarantined files (after fixing them or the profile).
        #[arg(long)]
        quarantined: bool,
        /// Only these files (as staged); all when none are given.
        files: Vec<String>,
    },
}

#[derive(Subcommand)]
enum HostCommand {
    /// Run the host in the foreground until Ctrl-C. SIGHUP reloads the tenant registry, as `host reload` does.
    Run,
    /// Make the running host read tenants.yaml and every profile again, without a restart.
    ///
    /// New tenants start being served (directories, staging watch, manifest); changed profiles apply to
    /// ingestions and stream instances started from now on, while running ones finish under the old
    /// profile. If anything is invalid, or a tenant was removed (that needs a restart), the host keeps the
    /// registry it has and this command fails with the reason.
    Reload,
}

#[derive(Args)]
struct IngestArgs {
    /// The tenant whose pipeline ingests the file (its id in the registry).
    #[arg(long, short)]
    tenant: String,
    /// The batch pipeline to use; by default the first whose `files` pattern matches.
    #[arg(long, short)]
    pipeline: Option<String>,
    /// The file to ingest.
    file: PathBuf,
}

#[derive(Subcommand)]
enum PipelineCommand {
    /// Check a component and store it as the pipeline's next version (the
    /// newest version is the active one). The component must be at most
    /// pipelines.max_upload_bytes; it is compiled in a child process under
    /// pipelines.compile_cpu_seconds and pipelines.compile_memory_bytes,
    /// checked against the world of its kind, and the compiled artifact is
    /// kept for the host, so its ingestions do not compile it again.
    Upload {
        /// The tenant, by its id in the registry.
        #[arg(long, short)]
        tenant: String,
        #[arg(long, short, value_enum)]
        kind: PipelineKind,
        /// The pipeline's name in the tenant's profile; optional when it declares only one.
        #[arg(long, short)]
        name: Option<String>,
        /// The component, built for wasm32-wasip2 with the guest SDK.
        file: PathBuf,
    },
    /// List uploaded versions.
    List {
        /// Only this tenant (by its id); all tenants when omitted.
        #[arg(long, short)]
        tenant: Option<String>,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// One line per tenant.
    List,
    /// A tenant's profile, paths and pipelines.
    Show { tenant: String },
    /// Suspend a tenant at once, without a restart: none of its ingestions starts (its files wait in staging or work/,
    /// nothing is lost), its stream instances stop after the batch in progress, and the API refuses its token.
    /// Ingestions running now finish. Kept across host restarts until `tenant resume`.
    Suspend { tenant: String },
    /// End a tenant's suspension: its waiting files are taken again and the stream instances the suspension stopped
    /// start again.
    Resume { tenant: String },
}

#[derive(Args)]
struct QueryArgs {
    /// The tenant, by its id in the registry.
    #[arg(long, short)]
    tenant: String,
    /// The collection (index `<tenant>-<collection>`).
    #[arg(long, short)]
    collection: String,
    /// Query string, e.g. `customer.country:fi AND size:large`; empty matches all. At most 4 KiB and 8 levels of
    /// nested brackets.
    #[arg(default_value = "")]
    query: String,
    /// Documents to print (at most 1000 per request).
    #[arg(long, short, default_value_t = 10)]
    limit: usize,
    /// Matching documents to skip first, to page through results (offset + limit at most 10000).
    #[arg(long, default_value_t = 0)]
    offset: usize,
}

/// When this process was started as the compiler child of a host
/// (`compile-component`), runs it and returns its exit code. Programs that
/// embed the platform (the benchmarks) call it first thing in `main`, so
/// their own binary can compile for them.
pub fn compiler_child() -> Option<u8> {
    if std::env::args().nth(1).as_deref() != Some(crate::sandbox::CHILD_COMMAND) {
        return None;
    }
    match Cli::parse().command {
        Command::CompileComponent { kind, stack_bytes } => Some(crate::sandbox::child_main(kind, stack_bytes)),
        _ => unreachable!("the first argument named the command"),
    }
}

pub fn main() -> ExitCode {
    ignore_file_size_signal();
    if let Some(code) = compiler_child() {
        return ExitCode::from(code);
    }
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("MYSIMBDP_LOG")
        .unwrap_or_else(|_| "info,tantivy=warn,wasmtime=warn,cranelift=warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// A write past the process's file-size limit (`ulimit -f`, RLIMIT_FSIZE)
/// fails with EFBIG like any other write error (the manifest and the store
/// stop loudly and resume, a publish is refused, a staged copy is undone)
/// instead of SIGXFSZ killing the host in the middle of it.
fn ignore_file_size_signal() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler
    // code; it is done first in main, before any other thread starts.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut config = crate::config::PlatformConfig::load(cli.config.as_deref())?;
    if let Some(file) = &cli.token_file {
        anyhow::ensure!(
            !matches!(cli.command, Command::Host { command: HostCommand::Run }),
            "--token-file is the token a command sends to the host; the host's own token is api.token_file in its config"
        );
        config.api.client_token = Some(crate::config::read_token_file(file, "--token-file")?);
    }
    let out = output::Output { json: cli.json };
    match cli.command {
        Command::Host { command: HostCommand::Run } => host::run(config).await,
        Command::Host { command: HostCommand::Reload } => commands::reload(&config, &out).await,
        Command::Ingest(args) => commands::ingest(&config, &out, args).await,
        Command::Pipeline { command } => match command {
            PipelineCommand::Upload { tenant, kind, name, file } => {
                commands::upload(&config, &out, &tenant, kind, name.as_deref(), &file).await
            }
            PipelineCommand::List { tenant } => commands::list_pipelines(&config, &out, tenant.as_deref()),
        },
        Command::Tenant { command } => match command {
            TenantCommand::List => commands::list_tenants(&config, &out),
            TenantCommand::Show { tenant } => commands::show_tenant(&config, &out, &tenant),
            TenantCommand::Suspend { tenant } => commands::suspend_tenant(&config, &out, &tenant, true).await,
            TenantCommand::Resume { tenant } => commands::suspend_tenant(&config, &out, &tenant, false).await,
        },
        Command::Query(args) => commands::query(&config, &out, args).await,
        Command::Stage { command: StageCommand::Put { tenant, into, files } } => {
            commands::stage_put(&config, &out, &tenant, into.as_deref(), &files)
        }
        Command::Stats { tenant, since } => streams::stats(&config, &out, tenant.as_deref(), since.as_deref()),
        Command::Stream { command } => match command {
            StreamCommand::Start { tenant, instances } => streams::stream_start(&config, &out, &tenant, instances).await,
            StreamCommand::Stop { tenant } => streams::stream_stop(&config, &out, &tenant).await,
            StreamCommand::Status { tenant } => streams::stream_status(&config, &out, tenant.as_deref()).await,
            StreamCommand::Produce { tenant, topic, key, key_field, file } => {
                streams::stream_produce(&config, &out, &tenant, &topic, key, key_field, file.as_deref()).await
            }
        },
        Command::CompileComponent { .. } => unreachable!("handled before the runtime starts"),
        Command::Batch { command } => match command {
            BatchCommand::Status { tenant, recent } => commands::batch_status(&config, &out, tenant.as_deref(), recent).await,
            BatchCommand::Retry { tenant, quarantined, files } => commands::batch_retry(&config, &out, &tenant, quarantined, &files).await,
        },
    }
}
