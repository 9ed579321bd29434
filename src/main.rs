use clap::Parser;

fn main() -> std::process::ExitCode {
    kubetrail::cli::Cli::parse().run()
}
