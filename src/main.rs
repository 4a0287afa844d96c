//! The `fekv` binary. `fekv` alone (or `fekv serve`) runs a node; see `fekv --help`.

use clap::{Parser, Subcommand};
use fekv::config::ServeArgs;

#[derive(Parser)]
#[command(
    name = "fekv",
    version,
    about = "A replicated, range-sharded key-value store with a REST API",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand, fekv runs a node with these settings.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start; the node's settings are the big one
enum Command {
    /// Run a node (the default). Settings: defaults < --config file < FEKV_* environment < flags.
    Serve(ServeArgs),
    /// Run the placement service (ids, store addresses, regions and their leaders).
    Placement(fekv::cmd::placement::PlacementArgs),
    /// Start a local cluster on loopback: a placement service and N nodes, until Ctrl-C.
    Cluster(fekv::cmd::cluster::ClusterArgs),
    /// Load running nodes over HTTP and report throughput, latency and group commit (like ab or wrk).
    Bench(fekv::loadgen::BenchArgs),
    /// Inspect and administer a cluster: stores, regions, node status and health.
    Ctl(fekv::cmd::ctl::CtlArgs),
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // One readable line (not anyhow's `Error: ...` debug form): scripts test the code, people
        // read the line.
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // As Go's runtime does: the soft limit is a select(2)-era default; the hard one is the real bound.
    let open_files = fekv::fd_limit::raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        Some(Command::Bench(args)) => return Ok(fekv::loadgen::run_cli(args)?),
        None => cli.serve,
        Some(Command::Placement(args)) => {
            fekv::logging::init(&args.log_level).map_err(anyhow::Error::msg)?;
            fekv::panics::install_hook();
            return Ok(runtime.block_on(fekv::cmd::placement::run(args, shutdown_signal()))?);
        }
        Some(Command::Ctl(args)) => return Ok(runtime.block_on(fekv::cmd::ctl::run(args))?),
        Some(Command::Cluster(args)) => {
            fekv::logging::init("warn").map_err(anyhow::Error::msg)?;
            return Ok(runtime.block_on(fekv::cmd::cluster::run(args, shutdown_signal()))?);
        }
    };
    let config = args.load()?;
    fekv::logging::init(&config.log_level).map_err(anyhow::Error::msg)?;
    // A panic's message and place reach the log; a node whose raftstore dies exits with an error
    // that repeats them (`node::run`), so a supervisor restarts it.
    fekv::panics::install_hook();
    tracing::info!(config = %toml::to_string(&config).unwrap_or_default().replace('\n', "; "), "effective configuration");
    match open_files {
        Ok(limit) => tracing::info!(open_file_limit = limit, "open-file limit"),
        Err(err) => tracing::warn!(error = %err, "cannot read or raise the open-file limit"),
    }
    if let Err(err) = runtime.block_on(fekv::node::run(config, shutdown_signal())) {
        // The last line of the node's log says why it ended (a supervisor restarts it on the code).
        tracing::error!("fekv node exiting: {err}");
        std::process::exit(1);
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    /// Every subcommand's flags fit together (no two arguments share an id, as `--key` of TLS and
    /// `fekv ctl region find KEY` once did).
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
