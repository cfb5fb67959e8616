//! Temporary runner for the boot benchmark (`sakshi bench boot` will call the same function):
//!
//! ```text
//! cargo build --release -p sakshi-host --bin sakshi-vmm
//! cargo run --release -p sakshi-host --example bench_boot -- --n 30 --json
//! ```

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use sakshi_host::bench::{BootBenchOptions, boot};

/// Boot latency, memory and throughput of sakshi-vmm next to QEMU microvm.
#[derive(Debug, Parser)]
struct Cli {
    /// Boots per peer (at least 20).
    #[arg(long, default_value_t = 30)]
    n: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// The sakshi-vmm binary (default: next to this example's target directory).
    #[arg(long)]
    vmm: Option<PathBuf>,
    /// The guest to boot (default: the test guest of this build).
    #[arg(long)]
    guest: Option<PathBuf>,
    /// The QEMU binary.
    #[arg(long, default_value = "qemu-system-x86_64")]
    qemu: PathBuf,
    /// Skip QEMU.
    #[arg(long)]
    no_qemu: bool,
    /// Idle VMs to hold at once (0 skips).
    #[arg(long, default_value_t = 50)]
    idle: usize,
    /// Workers for the parallel throughput figure.
    #[arg(long, default_value_t = 2)]
    parallel: usize,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let vmm = match cli.vmm {
        Some(p) => p,
        None => {
            // target/<profile>/examples/bench_boot -> target/<profile>/sakshi-vmm
            let exe = std::env::current_exe().context("locating this executable")?;
            exe.parent()
                .and_then(|examples| examples.parent())
                .map(|profile| profile.join("sakshi-vmm"))
                .context("cannot derive the sakshi-vmm path; pass --vmm")?
        }
    };
    anyhow::ensure!(
        vmm.is_file(),
        "{} not found: build it first (cargo build --release -p sakshi-host --bin sakshi-vmm) or pass --vmm",
        vmm.display()
    );
    let guest = cli
        .guest
        .unwrap_or_else(|| sakshi_host::test_guest::test_guest_path().to_path_buf());
    let mut opts = BootBenchOptions::new(vmm, guest);
    opts.runs = cli.n;
    opts.qemu = (!cli.no_qemu).then_some(cli.qemu);
    opts.idle_target = cli.idle;
    opts.parallel = cli.parallel;
    let report = boot(&opts)?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
