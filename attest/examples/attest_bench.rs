//! Attestation benchmarks on a real swtpm.
//!
//! `cargo run --release -p sakshi-attest --example attest_bench [-- --boots N --quotes N --dump DIR]`
//!
//! Measures: `MeasuredBoot::measure_vm` latency with cached image digests (the extra boot
//! latency of measured boot), the first (uncached) measurement, quotes per second, offline
//! verification time, and swtpm's resident memory. `--dump DIR` also writes a sample quote
//! directory (for `tpm2_checkquote` / `tpm2_eventlog` by hand).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use sakshi_attest::{
    BootComponent, MeasuredBoot, Policy, PolicyMode, Sha256Digest, Swtpm, Tpm, TpmConfig,
    VerifyOptions, VmBoot, VmBootDigests, canonical_json, verify_quote,
};

struct Args {
    boots: usize,
    quotes: usize,
    dump: Option<PathBuf>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        boots: 1000,
        quotes: 500,
        dump: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--boots" => a.boots = value()?.parse()?,
            "--quotes" => a.quotes = value()?.parse()?,
            "--dump" => a.dump = Some(value()?.into()),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{name}: n={} p50={:.0} us p90={:.0} us p99={:.0} us max={:.0} us",
        v.len(),
        us(pct(&v, 0.5)),
        us(pct(&v, 0.9)),
        us(pct(&v, 0.99)),
        us(*v.last().unwrap_or(&Duration::ZERO))
    );
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cpu}, {cores} cores")
}

fn main() -> Result<()> {
    let a = args()?;
    let tmp = tempfile::tempdir()?;
    let mut swtpm = Swtpm::start(&tmp.path().join("swtpm"))?;
    let rss_idle = rss_kib(swtpm.pid())?;
    let cfg = TpmConfig::new(swtpm.tcti(), tmp.path().join("state"));
    let t = Instant::now();
    let tpm = Tpm::open(&cfg)?;
    let open_first = t.elapsed();
    println!("machine: {}", machine());
    println!(
        "swtpm: {}",
        String::from_utf8_lossy(
            &std::process::Command::new("swtpm")
                .arg("--version")
                .output()?
                .stdout
        )
        .trim()
    );
    println!(
        "tpm: kind={:?} pcr={} banks={:?}",
        tpm.kind(),
        tpm.pcr(),
        tpm.banks()
    );
    println!(
        "open (creates EK + AK): {:.1} ms",
        open_first.as_secs_f64() * 1e3
    );

    // Realistic images: a 12 MiB kernel and a 4 MiB initrd.
    let kernel = tmp.path().join("vmlinux");
    let initrd = tmp.path().join("initrd.img");
    let fill = |n: usize, seed: u8| {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>()
    };
    std::fs::write(&kernel, fill(12 << 20, 1))?;
    std::fs::write(&initrd, fill(4 << 20, 2))?;
    let config = serde_json::json!({
        "vcpus": 2, "mem_mib": 256, "kernel": kernel, "initrd": initrd,
        "cmdline": "console=ttyS0 reboot=k panic=1 pci=off",
        "net": [{"tap": "tap0", "mac": "02:00:00:00:00:01"}],
        "disks": [{"path": "/var/lib/sakshi/images/rootfs.ext4", "read_only": true}],
        "kernel_sha256": Sha256Digest::of(b"k"), "initrd_sha256": Sha256Digest::of(b"i"),
    });
    let config = canonical_json(&config)?;

    let mut policy = Policy::new(PolicyMode::Enforce);
    let mb = MeasuredBoot::new(tpm.clone(), Policy::default());
    policy.approve(
        BootComponent::Kernel,
        mb.image_digest(&kernel)?,
        "bench kernel",
    );
    policy.approve(
        BootComponent::Initrd,
        mb.image_digest(&initrd)?,
        "bench initrd",
    );
    let mb = MeasuredBoot::new(tpm.clone(), policy.clone());

    let boot = |id: &'static str| VmBoot {
        vm_id: id,
        kernel: &kernel,
        initrd: Some(&initrd),
        cmdline: "console=ttyS0 reboot=k panic=1 pci=off",
        config: &config,
    };
    let t = Instant::now();
    let m = mb.measure_vm(&boot("vm-cold"))?;
    println!(
        "measure_vm, first (hashes 16 MiB of images): {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    assert!(m.may_boot());

    let mut lat = Vec::with_capacity(a.boots);
    for _ in 0..a.boots {
        let t = Instant::now();
        mb.measure_vm(&boot("vm-warm"))?;
        lat.push(t.elapsed());
    }
    summary("measure_vm with cached digests (4 events x 4 banks)", lat);

    // The supervisor's path: it hashes the images itself and hands over the digests.
    let digests = VmBootDigests {
        vm_id: "vm-sup",
        kernel_sha256: m.kernel_sha256,
        initrd_sha256: m.initrd_sha256,
        cmdline: "console=ttyS0 reboot=k panic=1 pci=off",
        config: &config,
    };
    let mut lat = Vec::with_capacity(a.boots);
    for _ in 0..a.boots {
        let t = Instant::now();
        mb.measure_digests(&digests)?;
        lat.push(t.elapsed());
    }
    summary("measure_digests (supervisor path)", lat);

    let mut cp = Vec::with_capacity(200);
    for i in 0..200u64 {
        let t = Instant::now();
        tpm.record_audit_checkpoint(i, &[7; 32])?;
        cp.push(t.elapsed());
    }
    summary("record_audit_checkpoint", cp);

    let mut ql = Vec::with_capacity(a.quotes);
    let t_all = Instant::now();
    let mut last = None;
    for i in 0..a.quotes {
        let nonce = (i as u64).to_be_bytes();
        let t = Instant::now();
        last = Some(tpm.quote(&nonce)?);
        ql.push(t.elapsed());
    }
    let secs = t_all.elapsed().as_secs_f64();
    let log_len = last.as_ref().map(|q| q.event_log.len()).unwrap_or(0);
    summary(&format!("quote (log of {log_len} records)"), ql);
    println!("quotes per second: {:.0}", a.quotes as f64 / secs);

    let q = last.context("no quote")?;
    let nonce = ((a.quotes - 1) as u64).to_be_bytes();
    let mut vl = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let r = verify_quote(&q, &VerifyOptions::new(&nonce, &policy))?;
        vl.push(t.elapsed());
        assert!(r.passed());
    }
    summary(&format!("verify_quote (pure Rust, {log_len} records)"), vl);

    println!(
        "swtpm RSS: idle {} KiB, after workload {} KiB",
        rss_idle,
        rss_kib(swtpm.pid())?
    );
    if let Some(dir) = a.dump {
        q.write_dir(&dir)?;
        println!(
            "sample quote written to {} (nonce {})",
            dir.display(),
            hex::encode(nonce)
        );
    }
    drop(mb);
    drop(tpm);
    assert!(swtpm.is_running());
    Ok(())
}
