//! `sakshi-verify`: offline verification for auditors. Needs no KVM, TPM, database or
//! network: only the files and the appliance's public key.
//!
//! Exit status: 0 when everything verifies, 1 when verification finds a problem, 2 when the
//! command cannot run (bad arguments, unreadable files).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use sakshi_attest::Policy;
use sakshi_audit::{AppliancePublicKey, ExportBundle, SignedCheckpoint};
use sakshi_reports::{BundleReport, VerifyOptions, error_chain, paths, verify_bundle_file};

#[derive(Parser)]
#[command(
    name = "sakshi-verify",
    version,
    about = "Verify Sakshi evidence offline"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify an evidence bundle (.tar.gz): signature, every file, audit chain and proofs,
    /// checkpoint signatures, the TPM quote and its event-log replay.
    Bundle {
        /// The bundle file.
        file: PathBuf,
        /// The appliance public key (PEM).
        #[arg(long)]
        key: PathBuf,
        /// The auditor's previous bundle from this appliance: the new bundle must prove
        /// consistency from its anchor checkpoint.
        #[arg(long)]
        previous: Option<PathBuf>,
    },
    /// Verify a TPM quote directory (as written by `sakshi attest quote --out DIR`).
    Quote {
        /// The directory.
        dir: PathBuf,
        /// The nonce the quote was requested with (hex).
        #[arg(long)]
        nonce: String,
        /// Golden values (JSON policy) to appraise boots against; without it every boot is
        /// reported as unapproved.
        #[arg(long)]
        golden: Option<PathBuf>,
        /// Pin the attestation key (PEM).
        #[arg(long)]
        ak: Option<PathBuf>,
    },
    /// Verify an audit export (JSON, `sakshi-audit-export/v1`) or a signed checkpoint note.
    Audit {
        /// The export or checkpoint file.
        file: PathBuf,
        /// The appliance public key (PEM).
        #[arg(long)]
        key: PathBuf,
    },
}

fn read_text(path: &Path, limit: u64) -> anyhow::Result<String> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut s = String::new();
    f.take(limit + 1)
        .read_to_string(&mut s)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if s.len() as u64 > limit {
        bail!("{} is larger than {limit} bytes", path.display());
    }
    Ok(s)
}

fn load_key(path: &Path) -> anyhow::Result<AppliancePublicKey> {
    let pem = read_text(path, 64 * 1024)?;
    AppliancePublicKey::from_pem(&pem)
        .with_context(|| format!("{} is not a P-256 public key", path.display()))
}

/// The anchor checkpoint of an earlier bundle (read from its `audit/proof.json`).
fn previous_anchor(path: &Path) -> anyhow::Result<String> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)));
    for e in ar
        .entries()
        .with_context(|| format!("{} is not a tar.gz bundle", path.display()))?
    {
        let mut e = e.with_context(|| format!("{} is not a tar.gz bundle", path.display()))?;
        if &*e.path_bytes() == paths::AUDIT_PROOF.as_bytes() {
            let mut s = String::new();
            (&mut e).take(16 << 20).read_to_string(&mut s)?;
            let proof: sakshi_reports::AuditProof = serde_json::from_str(&s)
                .with_context(|| format!("{}: malformed audit/proof.json", path.display()))?;
            return Ok(proof.anchor);
        }
    }
    bail!("{} has no audit/proof.json", path.display())
}

fn print_bundle(file: &Path, r: &BundleReport) {
    println!("sakshi-verify: bundle {}", file.display());
    if let Some(m) = &r.manifest {
        println!(
            "  manifest     {} from {}{} (Sakshi {}), generated {} for {}",
            m.format,
            m.host.hostname,
            m.host
                .machine_id
                .as_deref()
                .map(|id| format!(" [machine-id {id}]"))
                .unwrap_or_default(),
            m.appliance_version,
            m.generated_at.to_rfc3339(),
            m.generated_by
        );
        println!("  period       {} (scope {})", m.period, m.scope);
        println!(
            "  signature    {}",
            if r.signature_ok {
                format!(
                    "OK: Sigstore bundle v0.3, ECDSA P-256/SHA-256, key sha256:{}",
                    m.host.appliance_key
                )
            } else {
                "FAILED".to_owned()
            }
        );
        println!(
            "  files        {} of {} match the manifest",
            r.files_ok,
            m.files.len()
        );
    }
    match &r.integrity {
        Some(i) => {
            println!(
                "  audit log    entries #{}..#{} ({}) verified: hash chain, {} signed checkpoints, largest gap {} min",
                i.start,
                i.end,
                r.entries_checked,
                i.checkpoints,
                i.max_checkpoint_gap_secs.div_ceil(60)
            );
            match i.consistent_from {
                Some(s) => println!(
                    "               consistent with the previous checkpoint at tree size {s}"
                ),
                None => println!(
                    "               no previous checkpoint in the bundle: consistency not checked"
                ),
            }
        }
        None => println!(
            "  audit log    NOT verified ({} entries checked)",
            r.entries_checked
        ),
    }
    match &r.quote {
        Some(q) => {
            println!(
                "  attestation  quote verified; {} records replayed, {} VM boots, {} audit checkpoints bound",
                q.records, q.vm_boots, q.audit_checkpoints
            );
            if !q.tpm_notice.is_empty() {
                println!("               NOTE: {}", q.tpm_notice);
            }
            for f in &q.findings {
                println!("               finding: {f}");
            }
        }
        None => println!("  attestation  NOT verified"),
    }
    if !r.problems.is_empty() {
        println!("PROBLEMS:");
        for p in &r.problems {
            println!("  - {}", error_chain(p));
        }
    }
    if r.is_ok() {
        println!("RESULT: PASS");
    } else {
        println!("RESULT: FAIL ({} problems)", r.problems.len().max(1));
    }
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Bundle {
            file,
            key,
            previous,
        } => {
            let key = load_key(&key)?;
            let previous_anchor = previous.as_deref().map(previous_anchor).transpose()?;
            let report = verify_bundle_file(
                &file,
                &VerifyOptions {
                    key,
                    previous_anchor,
                },
            );
            print_bundle(&file, &report);
            Ok(report.is_ok())
        }
        Command::Quote {
            dir,
            nonce,
            golden,
            ak,
        } => {
            let nonce = hex::decode(nonce.trim()).context("--nonce must be hex")?;
            let golden = match golden {
                Some(p) => Policy::from_json(read_text(&p, 16 << 20)?.as_bytes())
                    .with_context(|| format!("{} is not a golden-values policy", p.display()))?,
                None => Policy::default(),
            };
            let ak = ak.as_deref().map(|p| read_text(p, 64 * 1024)).transpose()?;
            let mut opts = sakshi_attest::VerifyOptions::new(&nonce, &golden);
            opts.trusted_ak_pem = ak.as_deref();
            println!("sakshi-verify: quote {}", dir.display());
            match sakshi_attest::verify_dir(&dir, &opts) {
                Ok(r) => {
                    println!(
                        "  quote        verified: nonce, AK signature, PCR digest; {} records replayed ({} bank)",
                        r.records, r.bank
                    );
                    if !r.tpm_notice.is_empty() {
                        println!("  NOTE         {}", r.tpm_notice);
                    }
                    println!("  VM boots     {}", r.vm_boots.len());
                    for f in &r.findings {
                        println!("  finding      {f:?}");
                    }
                    let ok = r.passed();
                    println!(
                        "RESULT: {}",
                        if ok {
                            "PASS"
                        } else {
                            "FAIL (appraisal findings)"
                        }
                    );
                    Ok(ok)
                }
                Err(e) => {
                    println!("  - {}", error_chain(&e));
                    println!("RESULT: FAIL");
                    Ok(false)
                }
            }
        }
        Command::Audit { file, key } => {
            let key = load_key(&key)?;
            let text = read_text(&file, 1 << 30)?;
            println!("sakshi-verify: audit {}", file.display());
            if text.trim_start().starts_with('{') {
                let export: ExportBundle = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not an audit export", file.display()))?;
                match export.verify(&key) {
                    Ok(v) => {
                        let c = v.checkpoint.checkpoint();
                        println!(
                            "  entries      #{}..#{} ({}) verified against the checkpoint at tree size {} ({})",
                            export.start,
                            export.start + export.entries.len() as u64,
                            export.entries.len(),
                            c.tree_size,
                            c.time.to_rfc3339()
                        );
                        println!("RESULT: PASS");
                        Ok(true)
                    }
                    Err(e) => {
                        println!("  - {}", error_chain(&e));
                        println!("RESULT: FAIL");
                        Ok(false)
                    }
                }
            } else {
                let result = SignedCheckpoint::parse(&text)
                    .map_err(|e| error_chain(&e))
                    .and_then(|cp| cp.verify(&key).map(|()| cp).map_err(|e| error_chain(&e)));
                match result {
                    Ok(cp) => {
                        let c = cp.checkpoint();
                        println!(
                            "  checkpoint   {} tree size {} root {} at {}: signature OK",
                            c.origin,
                            c.tree_size,
                            hex::encode(c.root),
                            c.time.to_rfc3339()
                        );
                        println!("RESULT: PASS");
                        Ok(true)
                    }
                    Err(e) => {
                        println!("  - {e}");
                        println!("RESULT: FAIL");
                        Ok(false)
                    }
                }
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("sakshi-verify: {e:#}");
            ExitCode::from(2)
        }
    }
}
