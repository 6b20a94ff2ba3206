//! The `portcullis` binary: see [`portcullis::cli`].

use clap::Parser as _;
use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: the proxy allocates many small, short-lived
/// buffers per message across worker threads, and under `pgbench` glibc's malloc and
/// free took about a tenth of the daemon's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // The SSH command-line parse worker (`proto::ssh::command::worker`) starts
    // nothing else: no runtime, no logging.
    let worker = portcullis::proto::ssh::command::worker::WORKER_ARG;
    if std::env::args_os().nth(1).is_some_and(|arg| arg == worker) {
        return portcullis::proto::ssh::command::worker::serve();
    }
    run()
}

#[tokio::main]
async fn run() -> ExitCode {
    let cli = portcullis::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match portcullis::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("portcullis: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each cause shown once: many messages already quote
/// their cause, and repeating it buries the part a person needs.
fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}
