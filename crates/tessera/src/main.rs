//! The `tessera` binary: a thin command-line layer over the Tessera libraries.

mod channel;
mod chat;
mod chat_output;
mod cli;
mod demo;
mod keygen;
mod logging;
mod mcp;
mod memory;
mod relay;
mod tee;
mod verify;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    // The demo prints its own narrative; its logs stay quiet unless RUST_LOG asks for them.
    let default_level = match cli.command {
        Some(cli::Command::Demo) => "warn",
        _ => "info",
    };
    let logs = match logging::init(cli.log_format, default_level) {
        Ok(flush) => flush,
        Err(e) => {
            eprintln!("tessera: cannot set up logging: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // The TEE commands move megabyte buffers per proof: keep freed memory for the next one.
    if matches!(
        cli.command,
        Some(
            cli::Command::TeeK(_)
                | cli::Command::TeeT(_)
                | cli::Command::Prove(_)
                | cli::Command::Demo
        )
    ) {
        memory::keep_freed_memory();
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    let threads = cli.threads.map(usize::from).or(match &cli.command {
        Some(cli::Command::Mcp(args)) => args.default_worker_threads(),
        _ => None,
    });
    if let Some(threads) = threads {
        builder.worker_threads(threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tessera: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let json_logs = matches!(cli.log_format, logging::LogFormat::Json);
    let outcome = runtime.block_on(cli::run(cli));
    if let Some(cli::LeaveNow(code)) = outcome.as_ref().err().and_then(|e| e.downcast_ref()) {
        // Its stdin reader may never return: leave without waiting for it, the logs written first.
        runtime.shutdown_background();
        logs.flush();
        std::process::exit(*code);
    }
    if let Err(e) = &outcome
        && json_logs
    {
        // For log collectors; on a terminal the last word below says it once.
        tracing::error!("{e:#}");
    }
    // What the runtime's tasks log while it shuts down, then every queued line, before the last word.
    drop(runtime);
    logs.flush();
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tessera: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
