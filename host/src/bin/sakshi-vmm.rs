//! `sakshi-vmm`: one micro-VM in the foreground. Process contract: docs/CONTRACTS.md.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sakshi_host::{VmConfig, VmmOptions};

/// Run one Sakshi micro-VM in the foreground.
#[derive(Debug, Parser)]
#[command(name = "sakshi-vmm", version)]
struct Cli {
    /// VM configuration (JSON, see docs/VMM.md).
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "print_test_guest"
    )]
    config: Option<PathBuf>,
    /// Create a control socket here (newline-delimited JSON).
    #[arg(long, value_name = "PATH")]
    api_sock: Option<PathBuf>,
    /// Write lifecycle events, one JSON object per line, to this inherited descriptor.
    #[arg(long, value_name = "N")]
    events_fd: Option<i32>,
    /// CLOCK_MONOTONIC time (ns) of the start request, to time boot from it.
    #[arg(long, value_name = "NS", env = "SAKSHI_START_TS_NS")]
    start_ts_ns: Option<u64>,
    /// Log level on stderr (error, warn, info, debug, trace); `SAKSHI_LOG` takes a full filter.
    #[arg(long, value_name = "LEVEL", default_value = "warn")]
    log_level: tracing::Level,
    /// Do not print the boot-complete timing line on stderr.
    #[arg(long)]
    quiet: bool,
    /// Print the path of the test guest this build produced, and exit.
    #[arg(long)]
    print_test_guest: bool,
}

fn main() -> ExitCode {
    // Taken first: `t_us` in events counts from here.
    let mut opts = VmmOptions::starting_now();
    let cli = Cli::parse();
    if cli.print_test_guest {
        println!("{}", sakshi_host::test_guest::test_guest_path().display());
        return ExitCode::SUCCESS;
    }
    init_logging(cli.log_level);
    let Some(config_path) = cli.config else {
        return ExitCode::from(1);
    };
    let config = match VmConfig::from_file(&config_path) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    opts.api_sock = cli.api_sock;
    opts.events_fd = cli.events_fd;
    opts.start_request_ns = cli.start_ts_ns;
    opts.print_boot_complete = !cli.quiet;
    match sakshi_host::run(&config, opts) {
        Ok(outcome) => {
            let _ = std::io::stdout().flush();
            // Exit without dropping the VM; its kernel teardown happens in a child process.
            outcome.hand_over_teardown();
            std::process::exit(outcome.exit_code)
        }
        Err(e) => fail(e),
    }
}

/// One line on stderr with the whole error chain; exit status 1.
fn fail(e: impl std::error::Error + Send + Sync + 'static) -> ExitCode {
    eprintln!("sakshi-vmm: error: {:#}", anyhow::Error::new(e));
    ExitCode::from(1)
}

/// Installs the stderr logger: `--log-level`, or `SAKSHI_LOG` when set (a level name only; no
/// filter expressions are parsed on the start path).
fn init_logging(level: tracing::Level) {
    let level = match std::env::var("SAKSHI_LOG") {
        Ok(text) => text.parse().unwrap_or(level),
        Err(_) => level,
    };
    let _ = tracing::subscriber::set_global_default(StderrLog {
        max: level,
        ansi: std::io::stderr().is_terminal(),
    });
}

/// A minimal `tracing` subscriber: one line per event on stderr, no spans. Kept small on purpose
/// (start-up time and resident size of `sakshi-vmm` matter).
struct StderrLog {
    max: tracing::Level,
    ansi: bool,
}

impl tracing::Subscriber for StderrLog {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= self.max
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::from_level(self.max))
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let level = *event.metadata().level();
        let mut line = LineVisitor(String::with_capacity(128));
        event.record(&mut line);
        let (pre, post) = match (self.ansi, level) {
            (true, tracing::Level::ERROR) => ("\x1b[31m", "\x1b[0m"),
            (true, tracing::Level::WARN) => ("\x1b[33m", "\x1b[0m"),
            _ => ("", ""),
        };
        let text = format!("sakshi-vmm: {pre}{level}{post}{}\n", line.0);
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// Formats `message` first, then `field=value` pairs.
struct LineVisitor(String);

impl tracing::field::Visit for LineVisitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        let _ = if field.name() == "message" {
            write!(self.0, " {value:?}")
        } else {
            write!(self.0, " {}={value:?}", field.name())
        };
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        use std::fmt::Write as _;
        let _ = if field.name() == "message" {
            write!(self.0, " {value}")
        } else {
            write!(self.0, " {}={value:?}", field.name())
        };
    }
}
