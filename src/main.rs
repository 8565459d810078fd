use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = e2b_webhook_emitter::cli::Cli::parse();
    e2b_webhook_emitter::cli::main(cli)
}
