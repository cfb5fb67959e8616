//! Offline verification of an evidence bundle: no KVM, TPM, database or network.
//!
//! [`verify_bundle`] reads the archive once, front to back. It checks the manifest's Sigstore
//! signature with the trusted key, every file against the manifest (changed, added, removed,
//! duplicated), the audit entries, chain, checkpoints and proofs ([`super::AuditChecker`],
//! streaming), and the TPM quote (signature, nonce derived from the manifest, event-log
//! replay, appraisal against the bundled golden values). Every problem found is reported,
//! each naming the file, entry or checkpoint concerned.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use flate2::read::GzDecoder;
use sakshi_attest::{
    Finding, Policy, PolicyParseError, Quote, ReadDirError, VerifyError, quote_files,
};
use sakshi_audit::AppliancePublicKey;
use sha2::{Digest, Sha256};

use super::audit_check::{AuditCheckError, AuditChecker, MAX_LINE_BYTES};
use super::{AuditProof, BUNDLE_FORMAT, Manifest, is_safe_path, paths};
use crate::evidence::LogIntegrity;
use crate::sign::{SignatureCheckError, verify_message};

/// Largest `manifest.json` accepted.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;
/// Largest file the verifier holds in memory (proof, checkpoints, quote, event log).
pub const MAX_BUFFERED_BYTES: u64 = 64 << 20;
/// Most files a bundle may list.
pub const MAX_FILES: usize = 10_000;

/// What the verifier is given besides the bundle.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The trusted appliance public key.
    pub key: AppliancePublicKey,
    /// The anchor checkpoint of the auditor's previous bundle: this bundle must prove
    /// consistency from exactly that checkpoint.
    pub previous_anchor: Option<String>,
}

/// One thing wrong with a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleProblem {
    /// Not a readable gzip-compressed tar file (or truncated).
    #[error("the bundle is not a readable tar.gz archive")]
    Archive(#[source] io::Error),
    /// Data follows the end of the tar archive.
    #[error("data follows the end of the archive")]
    TrailingData,
    /// The manifest or its signature is not where it must be.
    #[error("file {position} of the archive is {found:?}; expected {expected}")]
    Layout {
        /// 1-based position.
        position: usize,
        /// Found path.
        found: String,
        /// Expected path.
        expected: &'static str,
    },
    /// The manifest does not parse.
    #[error("manifest.json is malformed")]
    ManifestJson(#[source] serde_json::Error),
    /// Unknown bundle format.
    #[error("manifest.json has format {0:?}, expected {BUNDLE_FORMAT}")]
    ManifestFormat(String),
    /// The manifest lists an unsafe or duplicate path, or too many files.
    #[error("manifest.json lists an unsafe, duplicate or excess path {0:?}")]
    ManifestPath(String),
    /// The manifest's audit summary disagrees with the proof.
    #[error("manifest.json audit.{field} disagrees with audit/proof.json")]
    ManifestAudit {
        /// Which field.
        field: &'static str,
    },
    /// A file is larger than the verifier accepts.
    #[error("{path} is larger than {limit} bytes")]
    TooLarge {
        /// The file.
        path: String,
        /// The limit.
        limit: u64,
    },
    /// The manifest signature does not verify.
    #[error("the signature over manifest.json does not verify")]
    Signature(#[source] SignatureCheckError),
    /// A tar member is not a regular file.
    #[error("{0}: not a regular file")]
    NotRegularFile(String),
    /// A tar member has an unsafe name.
    #[error("{0:?}: unsafe file name in the archive")]
    UnsafePath(String),
    /// A file is in the archive but not in the manifest.
    #[error("{0}: file is not listed in the manifest (added)")]
    UnexpectedFile(String),
    /// A file appears twice in the archive.
    #[error("{0}: appears more than once in the archive")]
    DuplicateFile(String),
    /// A file is in the manifest but not in the archive.
    #[error("{0}: listed in the manifest but missing from the archive (removed)")]
    MissingFile(String),
    /// A file's digest differs from the manifest's.
    #[error("{path}: SHA-256 {actual} differs from the manifest's {expected} (file changed)")]
    Digest {
        /// The file.
        path: String,
        /// Manifest digest.
        expected: String,
        /// Actual digest.
        actual: String,
    },
    /// A file's size differs from the manifest's.
    #[error("{path}: {actual} bytes, the manifest says {expected} (file changed)")]
    Size {
        /// The file.
        path: String,
        /// Manifest size.
        expected: u64,
        /// Actual size.
        actual: u64,
    },
    /// Files are out of the order streaming verification needs.
    #[error("{0} must come after audit/proof.json and audit/checkpoints.jsonl")]
    Order(&'static str),
    /// The audit part does not verify.
    #[error("audit log verification failed")]
    Audit(#[source] AuditCheckError),
    /// The previous bundle's anchor is not the checkpoint this bundle proves consistency from.
    #[error("this bundle does not continue from the previous bundle's checkpoint")]
    Previous,
    /// `quote_nonce` is not the nonce derived from the manifest.
    #[error("manifest.json quote_nonce is not the nonce derived from the manifest")]
    NonceField,
    /// The golden values do not parse.
    #[error("attestation/golden.json is malformed")]
    Golden(#[source] PolicyParseError),
    /// The quote files do not form a quote.
    #[error("the quote files under attestation/quote/ are malformed")]
    QuoteFiles(#[source] ReadDirError),
    /// The quote does not verify.
    #[error("the TPM quote does not verify")]
    Quote(#[source] VerifyError),
    /// Writing the quote files for parsing failed.
    #[error("staging the quote files failed")]
    QuoteStaging(#[source] io::Error),
}

/// What the quote showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteSummary {
    /// The notice for the TPM kind (empty for hardware).
    pub tpm_notice: String,
    /// True for a software TPM.
    pub software_tpm: bool,
    /// AK name (hex).
    pub ak_name: String,
    /// Event-log records replayed.
    pub records: usize,
    /// VM boots in the log.
    pub vm_boots: usize,
    /// Audit checkpoints bound into the PCR.
    pub audit_checkpoints: usize,
    /// Appraisal findings (unapproved images, malformed boots).
    pub findings: Vec<String>,
}

/// The verifier's result.
#[derive(Debug, Default)]
pub struct BundleReport {
    /// The manifest, when it parsed.
    pub manifest: Option<Manifest>,
    /// True when the manifest signature verified.
    pub signature_ok: bool,
    /// Files whose digest and size matched.
    pub files_ok: usize,
    /// Entries checked.
    pub entries_checked: u64,
    /// Audit verification summary, when it succeeded.
    pub integrity: Option<LogIntegrity>,
    /// Quote verification summary, when it succeeded.
    pub quote: Option<QuoteSummary>,
    /// Everything wrong, in the order found.
    pub problems: Vec<BundleProblem>,
}

impl BundleReport {
    /// True when nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.signature_ok
    }
}

/// A reader that hashes and counts what it reads.
struct HashingReader<R> {
    inner: R,
    hash: Sha256,
    size: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

enum LineRead {
    Eof,
    Complete,
    TooLong,
}

/// Read one line (without `\n`) into `buf`, consuming but not storing beyond `cap` bytes.
fn read_line_capped(r: &mut impl BufRead, buf: &mut Vec<u8>, cap: usize) -> io::Result<LineRead> {
    buf.clear();
    let mut any = false;
    let mut too_long = false;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(if !any {
                LineRead::Eof
            } else if too_long {
                LineRead::TooLong
            } else {
                LineRead::Complete
            });
        }
        any = true;
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            if buf.len() + take > cap {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&chunk[..take]);
            }
        }
        r.consume(if done { take + 1 } else { take });
        if done {
            return Ok(if too_long {
                LineRead::TooLong
            } else {
                LineRead::Complete
            });
        }
    }
}

fn buffered(path: &str) -> bool {
    path == paths::AUDIT_PROOF
        || path == paths::CHECKPOINTS
        || path == paths::GOLDEN
        || path.starts_with(paths::QUOTE_DIR)
}

/// Verify a bundle file.
pub fn verify_bundle_file(path: &Path, opts: &VerifyOptions) -> BundleReport {
    match File::open(path) {
        Ok(f) => verify_bundle(f, opts),
        Err(e) => BundleReport {
            problems: vec![BundleProblem::Archive(e)],
            ..BundleReport::default()
        },
    }
}

/// Verify a bundle read from `reader` (a `.tar.gz` stream).
pub fn verify_bundle(reader: impl Read, opts: &VerifyOptions) -> BundleReport {
    let mut report = BundleReport::default();
    let mut archive = tar::Archive::new(GzDecoder::new(BufReader::with_capacity(1 << 20, reader)));
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => {
            report.problems.push(BundleProblem::Archive(e));
            return report;
        }
    };
    let mut manifest_bytes: Vec<u8> = Vec::new();
    let mut expected: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut held: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut audit_done = false;
    for (i, entry) in entries.enumerate() {
        let position = i + 1;
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                report.problems.push(BundleProblem::Archive(e));
                break;
            }
        };
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if position <= 2 {
            let (want, limit) = if position == 1 {
                (paths::MANIFEST, MAX_MANIFEST_BYTES)
            } else {
                (
                    paths::SIGNATURE,
                    crate::sign::MAX_SIGSTORE_BUNDLE_BYTES as u64,
                )
            };
            if path != want {
                report.problems.push(BundleProblem::Layout {
                    position,
                    found: path,
                    expected: want,
                });
                return report;
            }
            let mut bytes = Vec::new();
            if let Err(e) = (&mut entry).take(limit + 1).read_to_end(&mut bytes) {
                report.problems.push(BundleProblem::Archive(e));
                return report;
            }
            if bytes.len() as u64 > limit {
                report
                    .problems
                    .push(BundleProblem::TooLarge { path, limit });
                return report;
            }
            if position == 1 {
                match parse_manifest(&bytes) {
                    Ok(m) => {
                        for f in &m.files {
                            if expected.len() >= MAX_FILES
                                || !is_safe_path(&f.path)
                                || f.path == paths::MANIFEST
                                || f.path == paths::SIGNATURE
                                || expected
                                    .insert(f.path.clone(), (f.sha256.clone(), f.size))
                                    .is_some()
                            {
                                report.problems.push(BundleProblem::ManifestPath(
                                    f.path.chars().take(120).collect(),
                                ));
                            }
                        }
                        report.manifest = Some(m);
                    }
                    Err(p) => {
                        report.problems.push(p);
                        return report;
                    }
                }
                manifest_bytes = bytes;
            } else {
                match verify_message(&bytes, &manifest_bytes, &opts.key) {
                    Ok(()) => report.signature_ok = true,
                    Err(e) => report.problems.push(BundleProblem::Signature(e)),
                }
            }
            continue;
        }
        if entry.header().entry_type() != tar::EntryType::Regular {
            report.problems.push(BundleProblem::NotRegularFile(path));
            continue;
        }
        if !is_safe_path(&path) {
            report
                .problems
                .push(BundleProblem::UnsafePath(path.chars().take(120).collect()));
            continue;
        }
        let Some((want_sha, want_size)) = expected.get(&path).cloned() else {
            report.problems.push(BundleProblem::UnexpectedFile(path));
            continue;
        };
        if !seen.insert(path.clone()) {
            report.problems.push(BundleProblem::DuplicateFile(path));
            continue;
        }
        let mut r = HashingReader {
            inner: &mut entry,
            hash: Sha256::new(),
            size: 0,
        };
        let read = if path == paths::ENTRIES {
            audit_done = true;
            match make_checker(&held, &report, opts) {
                Ok(c) => stream_entries(&mut r, c, &mut report),
                Err(p) => {
                    report.problems.push(p);
                    io::copy(&mut r, &mut io::sink()).map(|_| ())
                }
            }
        } else if buffered(&path) {
            let mut bytes = Vec::new();
            let res = (&mut r)
                .take(MAX_BUFFERED_BYTES + 1)
                .read_to_end(&mut bytes)
                .map(|_| ());
            if bytes.len() as u64 > MAX_BUFFERED_BYTES {
                report.problems.push(BundleProblem::TooLarge {
                    path: path.clone(),
                    limit: MAX_BUFFERED_BYTES,
                });
                let _ = io::copy(&mut r, &mut io::sink());
            } else {
                held.insert(path.clone(), bytes);
            }
            res
        } else {
            io::copy(&mut r, &mut io::sink()).map(|_| ())
        };
        if let Err(e) = read {
            report.problems.push(BundleProblem::Archive(e));
            break;
        }
        let actual = hex::encode(r.hash.finalize());
        if r.size != want_size {
            report.problems.push(BundleProblem::Size {
                path: path.clone(),
                expected: want_size,
                actual: r.size,
            });
        } else if actual != want_sha {
            report.problems.push(BundleProblem::Digest {
                path: path.clone(),
                expected: want_sha,
                actual,
            });
        } else {
            report.files_ok += 1;
        }
        if path == paths::CHECKPOINTS || path == paths::AUDIT_PROOF {
            // Proof and checkpoints must precede the entries.
            if audit_done {
                report.problems.push(BundleProblem::Order(paths::ENTRIES));
            }
        }
    }
    // Read to the end of the compressed stream: the gzip trailer (CRC, length) must check
    // out and nothing but tar padding may follow the archive.
    let mut rest = archive.into_inner();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if buf[..n].iter().any(|b| *b != 0) {
                    report.problems.push(BundleProblem::TrailingData);
                    break;
                }
            }
            Err(e) => {
                report.problems.push(BundleProblem::Archive(e));
                break;
            }
        }
    }
    for path in expected.keys() {
        if !seen.contains(path) {
            report
                .problems
                .push(BundleProblem::MissingFile(path.clone()));
        }
    }
    if let Some(m) = report.manifest.take() {
        check_quote(&m, &held, &mut report);
        report.manifest = Some(m);
    }
    report
}

fn parse_manifest(bytes: &[u8]) -> Result<Manifest, BundleProblem> {
    let m: Manifest = serde_json::from_slice(bytes).map_err(BundleProblem::ManifestJson)?;
    if m.format != BUNDLE_FORMAT {
        return Err(BundleProblem::ManifestFormat(
            m.format.chars().take(64).collect(),
        ));
    }
    Ok(m)
}

fn make_checker(
    held: &BTreeMap<String, Vec<u8>>,
    report: &BundleReport,
    opts: &VerifyOptions,
) -> Result<AuditChecker, BundleProblem> {
    let (Some(proof), Some(cps), Some(m)) = (
        held.get(paths::AUDIT_PROOF),
        held.get(paths::CHECKPOINTS),
        &report.manifest,
    ) else {
        return Err(BundleProblem::Order(paths::ENTRIES));
    };
    let checker = AuditChecker::new(proof, cps, &opts.key, m.period, m.scope.clone())
        .map_err(BundleProblem::Audit)?;
    let p: &AuditProof = checker.proof();
    let a = &m.audit;
    for (field, ok) in [
        ("origin", a.origin == p.origin),
        ("start", a.start == p.start),
        ("end", a.end == p.end),
        ("entries", a.entries == p.end.saturating_sub(p.start)),
    ] {
        if !ok {
            return Err(BundleProblem::ManifestAudit { field });
        }
    }
    if let Some(prev) = &opts.previous_anchor {
        let same = p
            .previous
            .as_ref()
            .is_some_and(|x| x.checkpoint.trim_end() == prev.trim_end());
        if !same {
            return Err(BundleProblem::Previous);
        }
    }
    Ok(checker)
}

/// Lines handed from the reading thread to the checking thread at a time.
const BATCH_LINES: usize = 2048;

/// A batch of lines: one buffer and the end offset of each line (`None` = line too long).
#[derive(Default)]
struct Batch {
    data: Vec<u8>,
    ends: Vec<Option<usize>>,
}

/// Read `audit/entries.jsonl` on this thread (decompression and the file digest) while a
/// second thread checks the lines (parsing, hashing, proofs). Memory stays bounded: at most
/// a few batches are in flight.
fn stream_entries(
    r: &mut impl Read,
    checker: AuditChecker,
    report: &mut BundleReport,
) -> io::Result<()> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(4);
    let (back_tx, back_rx) = std::sync::mpsc::channel::<Batch>();
    let (checker, failure, read_result) = std::thread::scope(|s| {
        let worker = s.spawn(move || {
            let mut checker = checker;
            let mut failure = None;
            for batch in rx {
                if failure.is_none() {
                    let mut start = 0;
                    for end in &batch.ends {
                        let res = match end {
                            Some(end) => {
                                let r = checker.push_line(&batch.data[start..*end]);
                                start = *end;
                                r
                            }
                            None => Err(AuditCheckError::LineTooLong {
                                file: "audit/entries.jsonl",
                                line: checker.entries_checked() + 1,
                            }),
                        };
                        if let Err(e) = res {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                let _ = back_tx.send(batch);
            }
            (checker, failure)
        });
        let mut reader = BufReader::with_capacity(1 << 20, r);
        let mut line = Vec::with_capacity(4096);
        let mut batch = Batch::default();
        let read_result = loop {
            let kind = match read_line_capped(&mut reader, &mut line, MAX_LINE_BYTES) {
                Ok(k) => k,
                Err(e) => break Err(e),
            };
            match kind {
                LineRead::Eof => break Ok(()),
                LineRead::Complete => {
                    batch.data.extend_from_slice(&line);
                    batch.ends.push(Some(batch.data.len()));
                }
                LineRead::TooLong => batch.ends.push(None),
            }
            if batch.ends.len() >= BATCH_LINES {
                let mut next = back_rx.try_recv().unwrap_or_default();
                next.data.clear();
                next.ends.clear();
                if tx.send(std::mem::replace(&mut batch, next)).is_err() {
                    break Ok(());
                }
            }
        };
        if !batch.ends.is_empty() {
            let _ = tx.send(batch);
        }
        drop(tx);
        let (checker, failure) = match worker.join() {
            Ok(x) => x,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        (checker, failure, read_result)
    });
    read_result?;
    report.entries_checked = checker.entries_checked();
    match failure {
        Some(e) => report.problems.push(BundleProblem::Audit(e)),
        None => match checker.finish() {
            Ok((integrity, _)) => report.integrity = Some(integrity),
            Err(e) => report.problems.push(BundleProblem::Audit(e)),
        },
    }
    Ok(())
}

fn check_quote(m: &Manifest, held: &BTreeMap<String, Vec<u8>>, report: &mut BundleReport) {
    let nonce = m.quote_nonce();
    if m.quote_nonce != hex::encode(nonce) {
        report.problems.push(BundleProblem::NonceField);
    }
    let golden = match held.get(paths::GOLDEN) {
        Some(b) => match Policy::from_json(b) {
            Ok(p) => p,
            Err(e) => {
                report.problems.push(BundleProblem::Golden(e));
                return;
            }
        },
        // Reported as a missing file already.
        None => return,
    };
    let quote = match stage_quote(held) {
        Ok(Some(q)) => q,
        Ok(None) => return,
        Err(p) => {
            report.problems.push(p);
            return;
        }
    };
    match sakshi_attest::verify_quote(&quote, &sakshi_attest::VerifyOptions::new(&nonce, &golden)) {
        Ok(r) => {
            report.quote = Some(QuoteSummary {
                tpm_notice: r.tpm_notice.to_owned(),
                software_tpm: r.tpm_kind.is_software(),
                ak_name: r.ak_name.clone(),
                records: r.records,
                vm_boots: r.vm_boots.len(),
                audit_checkpoints: r.audit_checkpoints.len(),
                findings: r.findings.iter().map(describe_finding).collect(),
            })
        }
        Err(e) => report.problems.push(BundleProblem::Quote(e)),
    }
}

/// Parse the quote files held in memory (through a private temporary directory, which is
/// how the attest crate reads them). `None` when the quote files were not all present.
fn stage_quote(held: &BTreeMap<String, Vec<u8>>) -> Result<Option<Quote>, BundleProblem> {
    let names = [
        quote_files::META,
        quote_files::MESSAGE,
        quote_files::SIGNATURE,
        quote_files::PCRS,
        quote_files::AK_PEM,
        quote_files::AK_PUBLIC,
        quote_files::EVENTLOG_CEL,
    ];
    let mut files = Vec::new();
    for n in names {
        match held.get(&format!("{}{n}", paths::QUOTE_DIR)) {
            Some(b) => files.push((n, b)),
            None => return Ok(None),
        }
    }
    let dir = tempfile::tempdir().map_err(BundleProblem::QuoteStaging)?;
    for (n, b) in files {
        std::fs::write(dir.path().join(n), b).map_err(BundleProblem::QuoteStaging)?;
    }
    Quote::read_dir(dir.path())
        .map(Some)
        .map_err(BundleProblem::QuoteFiles)
}

/// A one-line description of an appraisal finding.
pub(crate) fn describe_finding(f: &Finding) -> String {
    match f {
        Finding::NotApproved {
            recnum,
            vm_id,
            component,
            sha256,
        } => {
            format!(
                "record {recnum}: VM {vm_id} booted an unapproved {} (sha256 {sha256})",
                component.name()
            )
        }
        Finding::UnknownCheckpoint { recnum, tree_size } => {
            format!("record {recnum}: audit checkpoint at tree size {tree_size} is not known")
        }
        Finding::MalformedBoot { vm_id, boot } => {
            format!("VM {vm_id} boot at record {boot} is incomplete")
        }
    }
}

/// An error and its sources, joined with ": ".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
