//! `sakshi`: the appliance daemon (`sakshi serve`) and its command line.

mod cli;

use clap::Parser;

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SAKSHI_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("sakshi: error: {e:#}");
            std::process::exit(1);
        }
    }
}
