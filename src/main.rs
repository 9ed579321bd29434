//! The `kubetrail` binary: parses the command line and hands over to a subcommand.

mod cmd;

use clap::Parser;

fn main() -> std::process::ExitCode {
    cmd::Cli::parse().run()
}
