//! Building an evidence bundle from the appliance's audit log (feature `export`).

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use flate2::Compression;
use flate2::write::GzEncoder;
use sakshi_attest::{Policy, Quote, quote_files};
use sakshi_audit::{
    ApplianceKey, AppliancePublicKey, CheckpointParseError, Entry, SignError, SignedCheckpoint,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::audit_check::{AuditCheckError, AuditChecker, in_scope};
use super::source::{AuditSource, SourceError};
use super::{
    AUDIT_PROOF_FORMAT, AuditProof, AuditSummary, BUNDLE_FORMAT, FileEntry, HostIdentity, Manifest,
    PreviousCheckpoint, Scope, ScopedEntry, paths,
};
use crate::catalog::Catalog;
use crate::evaluate::{FrameworkResult, evaluate};
use crate::evidence::{
    AttestationSummary, DataLocation, Evidence, LogIntegrity, Period, RetentionStatus, SiemStatus,
    TimeSync, VmRecord,
};
use crate::patch::{PatchRecord, cve_statuses};
use crate::stats::EntryStats;

/// Produces a fresh TPM quote over a nonce (the appliance's `sakshi_attest::Tpm`).
pub trait QuoteSource {
    /// Quote the measurement PCRs with `nonce` as qualifying data, with the event log.
    fn quote(&self, nonce: &[u8]) -> Result<Quote, SourceError>;
}

/// What goes into a bundle besides the audit log.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The period.
    pub period: Period,
    /// The scope: everything, or one VM's entries (with inclusion proofs) and inventory.
    pub scope: Scope,
    /// Host name and machine id (the key fingerprint is filled in from the signing key).
    pub hostname: String,
    /// `/etc/machine-id`, if known.
    pub machine_id: Option<String>,
    /// Sakshi version.
    pub appliance_version: String,
    /// Who asked for the bundle.
    pub generated_by: String,
    /// The previous bundle's anchor checkpoint (signed note), to prove consistency from it.
    pub previous_checkpoint: Option<String>,
    /// Catalogs to evaluate.
    pub catalogs: Vec<Catalog>,
    /// The golden values the quote is appraised against.
    pub golden: Policy,
    /// VM inventory.
    pub inventory: Option<Vec<VmRecord>>,
    /// Patch ledger.
    pub patches: Option<Vec<PatchRecord>>,
    /// Time synchronisation.
    pub time_sync: Option<TimeSync>,
    /// Retention.
    pub retention: Option<RetentionStatus>,
    /// Data location.
    pub location: Option<DataLocation>,
    /// SIEM delivery.
    pub siem: Option<SiemStatus>,
    /// Generation time.
    pub now: DateTime<Utc>,
}

/// What [`export_bundle`] wrote.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    /// The file written.
    pub path: PathBuf,
    /// The signed manifest.
    pub manifest: Manifest,
    /// Control results per framework.
    pub results: Vec<FrameworkResult>,
    /// Size of the bundle file.
    pub bytes: u64,
}

/// Why an export failed. No output file is left behind.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The output file already exists.
    #[error("{0} already exists; evidence bundles are never overwritten")]
    OutputExists(PathBuf),
    /// The audit log failed.
    #[error("reading the audit log failed while {what}")]
    Source {
        /// What the exporter was doing.
        what: &'static str,
        /// The log's error.
        #[source]
        source: SourceError,
    },
    /// The previous bundle's checkpoint does not parse.
    #[error("the previous bundle's checkpoint is malformed")]
    PreviousCheckpoint(#[source] CheckpointParseError),
    /// The previous checkpoint is from another log or newer than the anchor.
    #[error(
        "the previous bundle's checkpoint (origin {origin:?}, tree size {tree_size}) does not precede this log's anchor"
    )]
    PreviousMismatch {
        /// Its origin.
        origin: String,
        /// Its size.
        tree_size: u64,
    },
    /// The log failed its own verification while being exported.
    #[error("the audit log does not verify for this period; run `sakshi audit verify`")]
    Integrity(#[source] AuditCheckError),
    /// The TPM could not quote.
    #[error("the TPM quote failed")]
    Quote(#[source] SourceError),
    /// The quote files could not be written.
    #[error("writing the quote files failed")]
    QuoteFiles(#[source] sakshi_attest::WriteDirError),
    /// Signing the manifest failed.
    #[error("signing the manifest failed")]
    Sign(#[source] SignError),
    /// A report could not be rendered.
    #[error("rendering the {framework} report failed")]
    Render {
        /// The framework.
        framework: String,
        /// Why.
        #[source]
        source: askama::Error,
    },
    /// Reading or writing a file failed.
    #[error("I/O on {path} failed")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn src(what: &'static str) -> impl FnOnce(SourceError) -> ExportError {
    move |source| ExportError::Source { what, source }
}

fn json_file<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Plain data structures: serialisation cannot fail.
    let mut v = serde_json::to_vec_pretty(value).unwrap_or_default();
    v.push(b'\n');
    v
}

/// A writer that hashes and counts what passes through.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn entry_of(path: &str, bytes: &[u8]) -> FileEntry {
    FileEntry {
        path: path.to_owned(),
        sha256: hex::encode(Sha256::digest(bytes)),
        size: bytes.len() as u64,
    }
}

#[derive(Serialize)]
struct RetentionAndLocation<'a> {
    retention: &'a Option<RetentionStatus>,
    data_location: &'a Option<DataLocation>,
}

#[derive(Serialize)]
struct Ledger<'a> {
    records: &'a [PatchRecord],
    cve_status: Vec<crate::patch::CveStatus>,
}

/// Build, sign and write an evidence bundle to `out` (a new file). Memory stays bounded:
/// entries stream from the log through a temporary file next to `out`.
pub fn export_bundle(
    source: &dyn AuditSource,
    key: &ApplianceKey,
    quotes: &dyn QuoteSource,
    opts: &ExportOptions,
    out: &Path,
) -> Result<ExportSummary, ExportError> {
    if out.exists() {
        return Err(ExportError::OutputExists(out.to_path_buf()));
    }
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let period = opts.period;
    let tmp = tempfile::Builder::new()
        .prefix(".sakshi-evidence-")
        .tempdir_in(&dir)
        .map_err(io_err(&dir))?;
    let entries_path = tmp.path().join("entries.jsonl");
    let file = File::create(&entries_path).map_err(io_err(&entries_path))?;
    let mut w = Hashing {
        inner: BufWriter::with_capacity(1 << 20, file),
        hash: Sha256::new(),
        size: 0,
    };

    // 1-2. The audit range, its anchor and proofs; the entries streamed to a temporary file
    // and checked as they go.
    let checked = check_range(
        source,
        key.public_key(),
        period,
        &opts.scope,
        opts.previous_checkpoint.as_deref(),
        &opts.catalogs,
        &mut |line: &[u8]| w.write_all(line),
    )?;
    w.flush().map_err(io_err(&entries_path))?;
    let entries_entry = FileEntry {
        path: paths::ENTRIES.to_owned(),
        sha256: hex::encode(w.hash.finalize()),
        size: w.size,
    };
    drop(w.inner);
    let CheckedRange {
        proof,
        checkpoints_jsonl,
        integrity,
        stats,
        anchor_size,
    } = checked;
    let (origin, start, end) = (proof.origin.clone(), proof.start, proof.end);

    // 3. The small files.
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (paths::AUDIT_PROOF.into(), json_file(&proof)),
        (paths::CHECKPOINTS.into(), checkpoints_jsonl),
        (
            paths::GOLDEN.into(),
            format!("{}\n", opts.golden.to_json()).into_bytes(),
        ),
    ];
    let inventory: Option<Vec<VmRecord>> = match &opts.scope {
        Scope::All => opts.inventory.clone(),
        Scope::Vm(id) => opts
            .inventory
            .as_ref()
            .map(|v| v.iter().filter(|r| r.id == *id).cloned().collect()),
    };
    if let Some(inv) = &inventory {
        files.push((paths::INVENTORY.into(), json_file(inv)));
    }
    if let Some(p) = &opts.patches {
        files.push((
            paths::PATCHES.into(),
            json_file(&Ledger {
                records: p,
                cve_status: cve_statuses(p, period.to()),
            }),
        ));
    }
    files.push((
        paths::RETENTION_LOCATION.into(),
        json_file(&RetentionAndLocation {
            retention: &opts.retention,
            data_location: &opts.location,
        }),
    ));
    if let Some(t) = &opts.time_sync {
        files.push((paths::TIME_SYNC.into(), json_file(t)));
    }
    if let Some(s) = &opts.siem {
        files.push((paths::SIEM.into(), json_file(s)));
    }

    // 4. The nonce over everything so far, then the quote.
    let mut manifest = Manifest {
        format: BUNDLE_FORMAT.to_owned(),
        period,
        scope: opts.scope.clone(),
        host: HostIdentity {
            hostname: opts.hostname.clone(),
            machine_id: opts.machine_id.clone(),
            appliance_key: key.public_key().fingerprint(),
        },
        appliance_version: opts.appliance_version.clone(),
        generated_at: opts.now,
        generated_by: opts.generated_by.clone(),
        audit: AuditSummary {
            origin,
            start,
            end,
            entries: end - start,
            anchor_tree_size: anchor_size,
        },
        quote_nonce: String::new(),
        files: files
            .iter()
            .map(|(p, b)| entry_of(p, b))
            .chain([entries_entry.clone()])
            .collect(),
    };
    let nonce = manifest.quote_nonce();
    manifest.quote_nonce = hex::encode(nonce);
    let quote = quotes.quote(&nonce).map_err(ExportError::Quote)?;
    let quote_dir = tmp.path().join("quote");
    quote
        .write_dir(&quote_dir)
        .map_err(ExportError::QuoteFiles)?;
    let mut quote_files_out = Vec::new();
    for name in [
        quote_files::META,
        quote_files::MESSAGE,
        quote_files::SIGNATURE,
        quote_files::PCRS,
        quote_files::AK_PEM,
        quote_files::AK_PUBLIC,
        quote_files::EVENTLOG_CEL,
        quote_files::EVENTLOG_BIN,
    ] {
        let p = quote_dir.join(name);
        let bytes = std::fs::read(&p).map_err(io_err(&p))?;
        quote_files_out.push((format!("{}{name}", paths::QUOTE_DIR), bytes));
    }
    let attestation = summarize_quote(&quote, &nonce, &opts.golden);

    // 5. Evaluate the controls and render the reports.
    let mut evidence = Evidence::new(period);
    evidence.entries = stats;
    evidence.log = Some(integrity);
    evidence.attestation = Some(attestation);
    evidence.inventory = inventory;
    evidence.patches = opts.patches.clone();
    evidence.time_sync = opts.time_sync.clone();
    evidence.retention = opts.retention.clone();
    evidence.location = opts.location.clone();
    evidence.siem = opts.siem.clone();
    let results: Vec<FrameworkResult> = opts
        .catalogs
        .iter()
        .map(|c| evaluate(c, &evidence, opts.now))
        .collect();
    let context = crate::html::ReportContext::from_manifest(&manifest);
    let mut derived = vec![(
        paths::RESULTS.to_owned(),
        json_file(&crate::oscal::assessment_results(&results, &context)),
    )];
    for r in &results {
        let html =
            crate::html::render_framework(r, &context).map_err(|source| ExportError::Render {
                framework: r.framework.id.clone(),
                source,
            })?;
        derived.push((
            format!("{}{}.html", paths::REPORTS_DIR, r.framework.id),
            html.into_bytes(),
        ));
    }

    // 6. The final manifest (archive order), its signature, and the archive.
    let (first, rest) = files.split_at(3);
    let ordered: Vec<&(String, Vec<u8>)> = first
        .iter()
        .chain(&quote_files_out)
        .chain(rest)
        .chain(&derived)
        .collect();
    manifest.files = ordered
        .iter()
        .map(|(p, b)| entry_of(p, b))
        .chain([entries_entry])
        .collect();
    debug_assert_eq!(hex::encode(manifest.quote_nonce()), manifest.quote_nonce);
    let manifest_bytes = json_file(&manifest);
    let signature = crate::sign::sign_message(key, &manifest_bytes).map_err(ExportError::Sign)?;

    let partial = tempfile::Builder::new()
        .prefix(".sakshi-evidence-")
        .suffix(".partial")
        .tempfile_in(&dir)
        .map_err(io_err(&dir))?;
    {
        let gz = GzEncoder::new(
            BufWriter::with_capacity(1 << 20, partial.as_file()),
            Compression::fast(),
        );
        let mut tar = tar::Builder::new(gz);
        let mtime = u64::try_from(opts.now.timestamp()).unwrap_or(0);
        let add = |tar: &mut tar::Builder<_>,
                   path: &str,
                   size: u64,
                   data: &mut dyn Read|
         -> io::Result<()> {
            let mut h = tar::Header::new_ustar();
            h.set_size(size);
            h.set_mode(0o644);
            h.set_mtime(mtime);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, path, data)
        };
        let out_err = io_err(partial.path());
        let result = (|| -> io::Result<()> {
            add(
                &mut tar,
                paths::MANIFEST,
                manifest_bytes.len() as u64,
                &mut manifest_bytes.as_slice(),
            )?;
            add(
                &mut tar,
                paths::SIGNATURE,
                signature.len() as u64,
                &mut signature.as_bytes(),
            )?;
            for (p, b) in &ordered {
                add(&mut tar, p, b.len() as u64, &mut b.as_slice())?;
            }
            let mut f = File::open(&entries_path)?;
            let size = f.metadata()?.len();
            add(&mut tar, paths::ENTRIES, size, &mut f)?;
            let gz = tar.into_inner()?;
            let mut buf = gz.finish()?;
            buf.flush()?;
            Ok(())
        })();
        result.map_err(out_err)?;
    }
    partial
        .as_file()
        .sync_all()
        .map_err(io_err(partial.path()))?;
    let file = partial.persist_noclobber(out).map_err(|e| {
        if e.error.kind() == io::ErrorKind::AlreadyExists {
            ExportError::OutputExists(out.to_path_buf())
        } else {
            ExportError::Io {
                path: out.to_path_buf(),
                source: e.error,
            }
        }
    })?;
    let bytes = file.metadata().map_err(io_err(out))?.len();
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(ExportSummary {
        path: out.to_path_buf(),
        manifest,
        results,
        bytes,
    })
}

/// Evaluate the catalogs for a period without writing a bundle (for the dashboard's and
/// CLI's HTML reports: render each result with [`crate::render_framework`]). The audit range
/// is verified as for a bundle; no quote is taken, so attestation rules need review.
pub fn assess(
    source: &dyn AuditSource,
    key: &AppliancePublicKey,
    opts: &ExportOptions,
) -> Result<Vec<FrameworkResult>, ExportError> {
    let checked = check_range(
        source,
        key,
        opts.period,
        &opts.scope,
        opts.previous_checkpoint.as_deref(),
        &opts.catalogs,
        &mut |_| Ok(()),
    )?;
    let mut evidence = Evidence::new(opts.period);
    evidence.entries = checked.stats;
    evidence.log = Some(checked.integrity);
    evidence.inventory = match &opts.scope {
        Scope::All => opts.inventory.clone(),
        Scope::Vm(id) => opts
            .inventory
            .as_ref()
            .map(|v| v.iter().filter(|r| r.id == *id).cloned().collect()),
    };
    evidence.patches = opts.patches.clone();
    evidence.time_sync = opts.time_sync.clone();
    evidence.retention = opts.retention.clone();
    evidence.location = opts.location.clone();
    evidence.siem = opts.siem.clone();
    Ok(opts
        .catalogs
        .iter()
        .map(|c| evaluate(c, &evidence, opts.now))
        .collect())
}

/// The verified audit range of a period.
pub(crate) struct CheckedRange {
    pub(crate) proof: AuditProof,
    pub(crate) checkpoints_jsonl: Vec<u8>,
    pub(crate) integrity: LogIntegrity,
    pub(crate) stats: Option<EntryStats>,
    pub(crate) anchor_size: u64,
}

/// Read the period's range from the log, hand every entry line (JSON + newline) to `sink`,
/// and check it all as an auditor would, collecting statistics for `catalogs`.
pub(crate) fn check_range(
    source: &dyn AuditSource,
    key: &AppliancePublicKey,
    period: Period,
    scope: &Scope,
    previous_checkpoint: Option<&str>,
    catalogs: &[Catalog],
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<CheckedRange, ExportError> {
    let origin = source.origin();
    let (start, end) = source
        .seq_range(&period)
        .map_err(src("finding the period's entries"))?;
    let (anchor, range, prev_chain) = source
        .anchor(start, end)
        .map_err(src("reading the anchor checkpoint"))?;
    let anchor_size = anchor.checkpoint().tree_size;
    let checkpoints = source
        .checkpoints(start, end)
        .map_err(src("reading checkpoints"))?;
    let previous = match previous_checkpoint {
        None => None,
        Some(note) => {
            let prev = SignedCheckpoint::parse(note).map_err(ExportError::PreviousCheckpoint)?;
            let c = prev.checkpoint();
            if c.origin != origin || c.tree_size > anchor_size {
                return Err(ExportError::PreviousMismatch {
                    origin: c.origin.clone(),
                    tree_size: c.tree_size,
                });
            }
            let consistency = source
                .consistency_proof(c.tree_size, anchor_size)
                .map_err(src("building the consistency proof"))?;
            Some(PreviousCheckpoint {
                checkpoint: note.to_owned(),
                consistency,
            })
        }
    };
    let mut proof = AuditProof {
        format: AUDIT_PROOF_FORMAT.to_owned(),
        origin,
        start,
        end,
        prev_chain,
        end_chain: prev_chain,
        anchor: anchor.as_str().to_owned(),
        range,
        previous,
    };
    let mut checkpoints_jsonl = Vec::new();
    for c in &checkpoints {
        checkpoints_jsonl.extend_from_slice(
            serde_json::to_string(c.as_str())
                .unwrap_or_default()
                .as_bytes(),
        );
        checkpoints_jsonl.push(b'\n');
    }
    // The whole range is always checked; a scoped bundle also checks what it writes.
    let proof_json = json_file(&proof);
    let mut full = AuditChecker::new(&proof_json, &checkpoints_jsonl, key, period, Scope::All)
        .map_err(ExportError::Integrity)?;
    let mut scoped = match scope {
        Scope::All => None,
        s => Some(
            AuditChecker::new(&proof_json, &checkpoints_jsonl, key, period, s.clone())
                .map_err(ExportError::Integrity)?,
        ),
    };
    match &mut scoped {
        Some(c) => c.collect_stats(EntryStats::new(period, catalogs)),
        None => full.collect_stats(EntryStats::new(period, catalogs)),
    }
    let mut check_failure = None;
    let mut line = Vec::with_capacity(4096);
    source
        .for_each_entry(start, end, &mut |e| {
            if let Err(err) = full.push(&e) {
                check_failure = Some(err);
                return Err("stopped: the log does not verify".into());
            }
            line.clear();
            match &mut scoped {
                None => serde_json::to_writer(&mut line, &e)?,
                Some(sc) => {
                    let entry = Entry::decode(e.canonical.as_bytes())?;
                    if !in_scope(sc.scope(), &entry) {
                        return Ok(());
                    }
                    let inclusion = source.inclusion_proof(e.seq, anchor_size)?;
                    let se = ScopedEntry {
                        seq: e.seq,
                        canonical: e.canonical,
                        inclusion,
                    };
                    if let Err(err) = sc.push_scoped(&se) {
                        check_failure = Some(err);
                        return Err("stopped: the log does not verify".into());
                    }
                    serde_json::to_writer(&mut line, &se)?;
                }
            }
            line.push(b'\n');
            sink(&line)?;
            Ok(())
        })
        .map_err(|e| match check_failure.take() {
            Some(err) => ExportError::Integrity(err),
            None => ExportError::Source {
                what: "reading entries",
                source: e,
            },
        })?;
    proof.end_chain = full.chain();
    full.set_end_chain(proof.end_chain);
    let (integrity, mut stats) = full.finish().map_err(ExportError::Integrity)?;
    if let Some(sc) = scoped {
        stats = sc.finish().map_err(ExportError::Integrity)?.1;
    }
    Ok(CheckedRange {
        proof,
        checkpoints_jsonl,
        integrity,
        stats,
        anchor_size,
    })
}

/// Verify the fresh quote the way an auditor will, for the control results.
pub(crate) fn summarize_quote(quote: &Quote, nonce: &[u8], golden: &Policy) -> AttestationSummary {
    match sakshi_attest::verify_quote(quote, &sakshi_attest::VerifyOptions::new(nonce, golden)) {
        Ok(report) => AttestationSummary {
            verified: true,
            error: None,
            software_tpm: report.tpm_kind.is_software(),
            findings: report
                .findings
                .iter()
                .map(crate::bundle::verify::describe_finding)
                .collect(),
            vm_boots: report.vm_boots.len() as u64,
        },
        Err(e) => AttestationSummary {
            verified: false,
            error: Some(crate::bundle::verify::error_chain(&e)),
            software_tpm: quote.tpm_kind.is_software(),
            findings: Vec::new(),
            vm_boots: 0,
        },
    }
}
