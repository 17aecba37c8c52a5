//! The `tessera` binary: a thin command-line layer over the Tessera libraries.

mod channel;
mod cli;
mod keygen;
mod logging;
mod mcp;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    if let Err(e) = logging::init(cli.log_format) {
        eprintln!("tessera: cannot set up logging: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tessera: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("tessera: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
