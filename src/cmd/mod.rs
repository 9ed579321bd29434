//! The `kubetrail` command line: one module per subcommand, each a thin shell over
//! the library; `webhook` holds the audit webhook flags `operator` and `serve` share.

mod bench;
mod console;
mod operator;
mod query;
mod schema;
mod serve;
mod verify;
mod webhook;

use clap::{Parser, Subcommand};
use kubetrail::telemetry::{self, LogFormat};
use std::process::ExitCode;

/// kubetrail: Cloud Trace Service for Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "kubetrail", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "KUBETRAIL_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator: controllers, audit webhook, spool and delivery.
    Operator(operator::OperatorArgs),
    /// Run the pipeline without the Kubernetes API, trackers from a file.
    Serve(serve::ServeArgs),
    /// Search delivered traces.
    Query(query::QueryArgs),
    /// Prove a tracker's trail whole and untouched: digests, chains and files.
    Verify(verify::VerifyArgs),
    /// Print the table a SQL engine (Athena, Trino, DuckDB) needs over a tracker's files.
    Schema(schema::SchemaArgs),
    /// Open the web console as the current kubeconfig user (port-forward or --url).
    Console(console::ConsoleArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Load-test the ingest path (webhook → spool → trace files) and report.
    Bench(bench::BenchArgs),
}

impl Cli {
    /// Runs the chosen subcommand.
    pub fn run(self) -> ExitCode {
        match self.command {
            Command::Crd => match kubetrail::api::crds_yaml() {
                Ok(yaml) => {
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: rendering CRDs: {e}");
                    ExitCode::FAILURE
                }
            },
            Command::Operator(args) => run_async(self.log_format, operator::run(args)),
            Command::Serve(args) => run_async(self.log_format, serve::run(args)),
            Command::Bench(args) => run_async(self.log_format, bench::run(args)),
            Command::Query(args) => run_async(self.log_format, query::run(args)),
            Command::Verify(args) => run_async(self.log_format, verify::run(args)),
            Command::Schema(args) => run_async(self.log_format, schema::run(args)),
            Command::Console(args) => run_async(self.log_format, console::run(args)),
        }
    }
}

/// Runs an async subcommand on a multi-threaded runtime, with logging set up.
fn run_async(format: LogFormat, job: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    telemetry::init_logging(format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(job) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
