//! `keel`: runs one broker until SIGTERM or SIGINT; `keel history` prints
//! a cluster's leadership history.

use std::process::ExitCode;

use anyhow::Context;
use keel_broker::{
    config::{self, Invocation},
    server::Server,
};
use tokio::signal::unix::{SignalKind, signal};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|first| first == "history") {
        let args = args.map(|a| a.to_string_lossy().into_owned()).collect();
        let now_ms = keel_broker::broker::now_ms();
        return match keel_broker::history::run_cli(args, now_ms) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!(
                    "{}",
                    if e.ends_with('\n') {
                        e
                    } else {
                        format!("{e}\n")
                    }
                );
                ExitCode::from(2)
            }
        };
    }
    let config = match config::parse() {
        Ok(Invocation::Run(config)) => *config,
        Ok(Invocation::Print { text, success }) => {
            print!("{text}");
            return if success {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&config.log_level))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes in one line, each said once: most of our
/// errors already include their cause in their own message.
fn describe(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !line.ends_with(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

fn run(config: config::BrokerConfig) -> anyhow::Result<()> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.worker_threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut terminate =
            signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let server = Server::bind(config).await.context("starting keel")?;
        server
            .run(async {
                tokio::select! {
                    _ = terminate.recv() => tracing::info!("received SIGTERM"),
                    _ = interrupt.recv() => tracing::info!("received SIGINT"),
                }
            })
            .await
            .context("keel stopped on a failure")
    })
}
