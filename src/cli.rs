//! The `kubetrail` command line.

use crate::telemetry::{self, LogFormat};
use clap::{Parser, Subcommand};
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
    Operator(crate::operator::OperatorArgs),
    /// Run the pipeline without the Kubernetes API, trackers from a file.
    Serve(crate::serve::ServeArgs),
    /// Search delivered traces.
    Query(crate::query_command::QueryArgs),
    /// Check delivered trace files against their digests.
    Verify,
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Load-test the ingest path (webhook → spool → trace files) and report.
    Bench(crate::bench::BenchArgs),
}

impl Cli {
    /// Runs the chosen subcommand.
    pub fn run(self) -> ExitCode {
        match self.command {
            Command::Crd => match crate::api::crds_yaml() {
                Ok(yaml) => {
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: rendering CRDs: {e}");
                    ExitCode::FAILURE
                }
            },
            Command::Operator(args) => run_async(self.log_format, crate::operator::run(args)),
            Command::Serve(args) => run_async(self.log_format, crate::serve::run(args)),
            Command::Bench(args) => run_async(self.log_format, crate::bench::run(args)),
            Command::Query(args) => run_async(self.log_format, crate::query_command::run(args)),
            Command::Verify => {
                eprintln!("error: this subcommand is not yet implemented");
                ExitCode::from(2)
            }
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
