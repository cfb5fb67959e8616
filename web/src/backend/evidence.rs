//! Evidence bundles, per-framework compliance reports and the daily log review, computed by
//! `sakshi-reports` over the appliance's real audit log, plus the two adapters they need: a
//! [`QuoteSource`] over the appliance's TPM ([`TpmQuotes`]) and a [`GoldenSet`] over measured
//! boot's image policy ([`MeasuredGolden`]).
//!
//! Every call here blocks (SQLite, the TPM, gzip); the web layer runs them on blocking threads.
//! Bundles are written to a private temporary directory under the data directory and handed
//! back as an open file whose directory entry is already gone, so the caller can stream it
//! without holding it in memory and nothing is left behind.

use chrono::{DateTime, NaiveDate, Utc};
use sakshi_attest::Policy;
use sakshi_audit::{ApplianceKey, AuditLog, RetentionPolicy};
use sakshi_reports::{
    Catalog, CatalogError, ExportError, ExportOptions, FrameworkResult, LoadLedgerError,
    PatchRecord, Period, QuoteSource, ReportContext, RetentionStatus, ReviewError, Scope,
    SourceError, VmRecord, assess, bundle_file_name, daily_review, export_bundle, load_ledger,
    render_framework,
};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The appliance's TPM as the exporter's quote source.
pub struct TpmQuotes(pub sakshi_attest::Tpm);

impl QuoteSource for TpmQuotes {
    fn quote(&self, nonce: &[u8]) -> Result<sakshi_attest::Quote, SourceError> {
        self.0.quote(nonce).map_err(|e| Box::new(e) as SourceError)
    }
}

/// The golden (approved) boot measurements that measured boot appraises against.
pub trait GoldenSet: Send + Sync {
    /// A copy of the current golden values.
    fn policy(&self) -> Policy;
    /// Adds the patched image of `record` (if it names one); returns how many digests were
    /// added.
    fn approve(&self, record: &PatchRecord) -> Result<usize, crate::golden::GoldenError>;
}

/// Measured boot's persisted golden set ([`crate::golden::GoldenStore`]): approvals are
/// written to disk and take effect for the next boot.
pub struct MeasuredGolden {
    store: Arc<crate::golden::GoldenStore>,
}

impl MeasuredGolden {
    /// Wraps the golden store.
    pub fn new(store: Arc<crate::golden::GoldenStore>) -> MeasuredGolden {
        MeasuredGolden { store }
    }
}

impl GoldenSet for MeasuredGolden {
    fn policy(&self) -> Policy {
        self.store.policy()
    }

    fn approve(&self, record: &PatchRecord) -> Result<usize, crate::golden::GoldenError> {
        let mut added = 0;
        self.store.update(|p| {
            added = record.approve_into(p);
            added > 0
        })?;
        Ok(added)
    }
}

/// What an export is about.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// The period.
    pub period: Period,
    /// All, or one VM.
    pub scope: Scope,
    /// Who asked (user name).
    pub requested_by: String,
    /// The VM inventory at export time.
    pub inventory: Vec<VmRecord>,
    /// SIEM delivery of the audit log at export time (`None` without `[otlp]`).
    pub siem: Option<sakshi_reports::SiemStatus>,
    /// Generation time.
    pub now: DateTime<Utc>,
}

/// A written bundle, open for reading; its file is already unlinked.
#[derive(Debug)]
pub struct ExportedBundle {
    /// The bundle, positioned at its start.
    pub file: File,
    /// The file name it should be saved under (`Manifest::file_name`).
    pub file_name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Audit entries in the bundle's range.
    pub entries: u64,
    /// The quote nonce derived from the manifest (hex).
    pub quote_nonce: String,
    /// Control results, per framework: (id, pass, needs review, fail).
    pub results: Vec<(String, usize, usize, usize)>,
}

/// Why an evidence bundle could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceExportError {
    /// The temporary directory could not be made or the bundle reopened.
    #[error("evidence work directory {} failed", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The patch ledger could not be read.
    #[error("reading the patch ledger failed")]
    Ledger(#[source] LoadLedgerError),
    /// The exporter failed.
    #[error("building the evidence bundle failed")]
    Export(#[source] ExportError),
}

/// Why a compliance report could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// No built-in catalog has that id (or unique id prefix).
    #[error("unknown framework {name:?}; known: {known}")]
    UnknownFramework {
        /// What was asked for.
        name: String,
        /// The known ids, comma separated.
        known: String,
    },
    /// The patch ledger could not be read.
    #[error("reading the patch ledger failed")]
    Ledger(#[source] LoadLedgerError),
    /// Evaluating the period failed.
    #[error("evaluating the period failed")]
    Assess(#[source] ExportError),
    /// Rendering failed.
    #[error("rendering the report failed")]
    Render(#[source] askama::Error),
}

/// Why the daily review could not run or be recorded.
#[derive(Debug, thiserror::Error)]
pub enum DailyReviewError {
    /// The review itself failed (log unreadable, render).
    #[error("the daily review failed")]
    Review(#[source] ReviewError),
    /// The PCI DSS catalog is missing.
    #[error("no PCI DSS catalog is built in")]
    NoPciCatalog,
    /// The report could not be stored.
    #[error("storing the review report in {} failed", path.display())]
    Store {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The review's audit entry could not be appended.
    #[error("appending the review's audit entry failed")]
    Append(#[source] sakshi_audit::AppendError),
}

/// What a daily-review run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviewOutcome {
    /// The day was already reviewed (its report exists).
    AlreadyDone(PathBuf),
    /// Reviewed now: report stored at `path`, audit entry `seq`.
    Done {
        /// The stored report.
        path: PathBuf,
        /// The `audit.verify` entry.
        seq: u64,
        /// Whether the day's log verified.
        verified: bool,
    },
}

/// Evidence over the real audit log.
pub struct EvidenceService {
    log: Arc<AuditLog>,
    key: Arc<ApplianceKey>,
    quotes: Box<dyn QuoteSource + Send + Sync>,
    golden: Option<Arc<dyn GoldenSet>>,
    retention: RetentionPolicy,
    work_dir: PathBuf,
    reviews_dir: PathBuf,
    hostname: String,
    machine_id: Option<String>,
    catalogs: Vec<Catalog>,
    /// The anchor checkpoint (signed note) of the last bundle exported, so the next bundle
    /// proves the log consistent from it.
    anchor_path: PathBuf,
    /// The operator's data-location statement (from the configuration).
    location: Option<sakshi_reports::DataLocation>,
}

/// The built-in catalogs, loaded once (their validity is a unit test of `sakshi-reports`).
pub fn builtin_catalogs() -> Result<&'static [Catalog], &'static CatalogError> {
    static BUILTIN: std::sync::LazyLock<Result<Vec<Catalog>, CatalogError>> =
        std::sync::LazyLock::new(Catalog::builtin);
    BUILTIN.as_ref().map(Vec::as_slice)
}

/// The PCI DSS 6.3.3 time-to-patch limit (days) for `severity`, as the built-in catalog sets it.
pub fn patch_deadline_days(severity: sakshi_reports::Severity) -> Option<u32> {
    let cats = builtin_catalogs().ok()?;
    let pci = find_framework(cats, "pci-dss")?;
    pci.control("6.3.3")?.rules.iter().find_map(|r| match r {
        sakshi_reports::Rule::PatchSla { max_days } => max_days.get(&severity).copied(),
        _ => None,
    })
}

/// The catalog `name` names: an exact framework id or a unique id prefix (`pci-dss`).
pub fn find_framework<'a>(catalogs: &'a [Catalog], name: &str) -> Option<&'a Catalog> {
    if let Some(c) = catalogs.iter().find(|c| c.framework.id == name) {
        return Some(c);
    }
    let mut prefixed = catalogs
        .iter()
        .filter(|c| !name.is_empty() && c.framework.id.starts_with(name));
    match (prefixed.next(), prefixed.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

fn mkdir_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

impl EvidenceService {
    /// A service over `log` (kept under `retention`) signed by `key`, quoting with `quotes`,
    /// keeping its temporary files under `data_dir/evidence-tmp` and daily reviews under
    /// `data_dir/reviews`.
    pub fn new(
        log: Arc<AuditLog>,
        key: Arc<ApplianceKey>,
        quotes: Box<dyn QuoteSource + Send + Sync>,
        golden: Option<Arc<dyn GoldenSet>>,
        retention: RetentionPolicy,
        data_dir: &Path,
        hostname: String,
    ) -> Result<EvidenceService, EvidenceInitError> {
        let work_dir = data_dir.join("evidence-tmp");
        let reviews_dir = data_dir.join("reviews");
        for d in [&work_dir, &reviews_dir] {
            mkdir_private(d).map_err(|source| EvidenceInitError::Dir {
                path: d.clone(),
                source,
            })?;
        }
        let machine_id = std::fs::read_to_string("/etc/machine-id")
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        Ok(EvidenceService {
            log,
            key,
            quotes,
            golden,
            retention,
            work_dir,
            reviews_dir,
            hostname,
            machine_id,
            catalogs: Catalog::builtin().map_err(EvidenceInitError::Catalogs)?,
            anchor_path: data_dir.join("evidence-anchor.txt"),
            location: None,
        })
    }

    /// Bundles and reports carry `location` as the data-location statement.
    pub fn with_location(mut self, location: Option<sakshi_reports::DataLocation>) -> Self {
        self.location = location;
        self
    }

    /// The appliance host name bundles and reports carry.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The built-in frameworks: (id, name).
    pub fn frameworks(&self) -> Vec<(String, String)> {
        self.catalogs
            .iter()
            .map(|c| (c.framework.id.clone(), c.framework.name.clone()))
            .collect()
    }

    fn pci(&self) -> Option<&Catalog> {
        find_framework(&self.catalogs, "pci-dss")
    }

    /// The golden values bundles are appraised against.
    pub fn golden(&self) -> Policy {
        self.golden
            .as_ref()
            .map_or_else(Policy::default, |g| g.policy())
    }

    /// Approves a recorded patch's image into the golden set; `None` when the appliance has
    /// no golden set to update.
    pub fn approve(
        &self,
        record: &PatchRecord,
    ) -> Option<Result<usize, crate::golden::GoldenError>> {
        self.golden.as_ref().map(|g| g.approve(record))
    }

    /// Re-applies the approvals of every recorded patch (the policy lives in memory; the
    /// ledger in the audit log is what persists). Returns the digests added.
    pub fn restore_golden(&self) -> Result<usize, LoadLedgerError> {
        let Some(g) = &self.golden else {
            return Ok(0);
        };
        Ok(load_ledger(&self.log)?
            .iter()
            .map(|(_, r)| {
                g.approve(r).unwrap_or_else(|e| {
                    tracing::error!(error = %crate::ops::error_chain(&e), patch = %r.id, "cannot re-apply a patch's golden image");
                    0
                })
            })
            .sum())
    }

    /// The log's retention configuration and its oldest entry, as the retention controls
    /// (PCI DSS 10.5.1, CERT-In (iv)) need it. `None` when the log cannot be read.
    fn retention_status(&self, now: DateTime<Utc>) -> Option<RetentionStatus> {
        const DAY: u64 = 86_400;
        let oldest = self
            .log
            .query(&sakshi_audit::Query {
                limit: 1,
                ..sakshi_audit::Query::default()
            })
            .ok()?
            .entries
            .first()
            .map(|e| e.time);
        let days = |d: std::time::Duration| u32::try_from(d.as_secs() / DAY).unwrap_or(u32::MAX);
        Some(RetentionStatus {
            collected_at: now,
            online_days: days(self.retention.hot),
            total_days: days(self.retention.retain),
            oldest_online: oldest,
            oldest_retained: oldest,
            // The first entry is written when the log is created (appliance.start).
            log_created: oldest.unwrap_or(now),
        })
    }

    fn options(
        &self,
        period: Period,
        scope: Scope,
        requested_by: &str,
        inventory: Vec<VmRecord>,
        catalogs: Vec<Catalog>,
        now: DateTime<Utc>,
    ) -> Result<ExportOptions, LoadLedgerError> {
        let patches = load_ledger(&self.log)?
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        Ok(ExportOptions {
            period,
            scope,
            hostname: self.hostname.clone(),
            machine_id: self.machine_id.clone(),
            appliance_version: env!("CARGO_PKG_VERSION").to_owned(),
            generated_by: requested_by.to_owned(),
            previous_checkpoint: std::fs::read_to_string(&self.anchor_path)
                .ok()
                .filter(|s| !s.trim().is_empty()),
            catalogs,
            golden: self.golden(),
            inventory: Some(inventory),
            patches: Some(patches),
            time_sync: Some(super::timesync::collect(now)),
            retention: self.retention_status(now),
            location: self.location.clone(),
            siem: None,
            now,
        })
    }

    /// Builds and signs a bundle (with a fresh quote) and returns it open for reading.
    pub fn export(&self, req: ExportRequest) -> Result<ExportedBundle, EvidenceExportError> {
        let mut opts = self
            .options(
                req.period,
                req.scope.clone(),
                &req.requested_by,
                req.inventory,
                self.catalogs.clone(),
                req.now,
            )
            .map_err(EvidenceExportError::Ledger)?;
        opts.siem = req.siem;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| EvidenceExportError::Io { path, source }
        };
        let tmp = tempfile::Builder::new()
            .prefix("export-")
            .tempdir_in(&self.work_dir)
            .map_err(io(&self.work_dir))?;
        let file_name = bundle_file_name(&self.hostname, &req.scope, &req.period);
        let out = tmp.path().join(&file_name);
        let summary = export_bundle(&*self.log, &self.key, &*self.quotes, &opts, &out);
        self.log.release_read_memory();
        let summary = summary.map_err(EvidenceExportError::Export)?;
        let file = File::open(&out).map_err(io(&out))?;
        self.remember_anchor(summary.manifest.audit.anchor_tree_size);
        // The open descriptor keeps the data; the directory goes now.
        let dir = tmp.path().to_path_buf();
        tmp.close().map_err(io(&dir))?;
        Ok(ExportedBundle {
            file,
            file_name,
            bytes: summary.bytes,
            entries: summary.manifest.audit.entries,
            quote_nonce: summary.manifest.quote_nonce.clone(),
            results: summary
                .results
                .iter()
                .map(|r| {
                    (
                        r.framework.id.clone(),
                        r.summary.pass,
                        r.summary.needs_review,
                        r.summary.fail,
                    )
                })
                .collect(),
        })
    }

    /// Keeps the anchor checkpoint of the bundle just exported for the next one's consistency
    /// proof. Anchors only grow (each is the log's latest checkpoint at export time). A failure
    /// is logged, not fatal: the next bundle then proves consistency from an older anchor.
    fn remember_anchor(&self, tree_size: u64) {
        let note = match self.log.checkpoints(tree_size, tree_size) {
            Ok(cps) => match cps.first() {
                Some(c) => c.as_str().to_owned(),
                None => return,
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the bundle's anchor checkpoint");
                return;
            }
        };
        let tmp = self.anchor_path.with_extension("txt.tmp");
        let written = File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(note.as_bytes())?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, &self.anchor_path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(error = %e, path = %self.anchor_path.display(), "cannot keep the bundle's anchor checkpoint");
        }
    }

    /// The printable HTML report of one framework for a period (no quote is taken, so
    /// attestation controls need review).
    pub fn report(
        &self,
        framework: &str,
        period: Period,
        scope: Scope,
        requested_by: &str,
        inventory: Vec<VmRecord>,
        now: DateTime<Utc>,
    ) -> Result<(String, FrameworkResult), ReportError> {
        let catalog = find_framework(&self.catalogs, framework)
            .ok_or_else(|| ReportError::UnknownFramework {
                name: framework.to_owned(),
                known: self
                    .catalogs
                    .iter()
                    .map(|c| c.framework.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?
            .clone();
        let opts = self
            .options(
                period,
                scope.clone(),
                requested_by,
                inventory,
                vec![catalog],
                now,
            )
            .map_err(ReportError::Ledger)?;
        let mut results =
            assess(&*self.log, self.key.public_key(), &opts).map_err(ReportError::Assess)?;
        let result = results.pop().ok_or_else(|| ReportError::UnknownFramework {
            name: framework.to_owned(),
            known: String::new(),
        })?;
        let ctx = ReportContext {
            hostname: self.hostname.clone(),
            scope: scope.to_string(),
            period,
            generated_at: now,
            generated_by: requested_by.to_owned(),
            appliance_version: env!("CARGO_PKG_VERSION").to_owned(),
            appliance_key: self.key.public_key().fingerprint(),
            bundle_name: None,
        };
        let html = render_framework(&result, &ctx).map_err(ReportError::Render)?;
        Ok((html, result))
    }

    /// Reviews UTC `day` (PCI DSS 10.4.1.1) unless its report is already stored: stores the
    /// report as `reviews/<day>.html` and appends the review's `audit.verify` entry.
    pub fn daily_review(
        &self,
        day: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<ReviewOutcome, DailyReviewError> {
        let path = self.reviews_dir.join(format!("{day}.html"));
        if path.exists() {
            return Ok(ReviewOutcome::AlreadyDone(path));
        }
        let pci = self.pci().ok_or(DailyReviewError::NoPciCatalog)?;
        let review = daily_review(
            &*self.log,
            self.key.public_key(),
            &self.hostname,
            day,
            pci,
            now,
        );
        // The review scanned the day (and verified the chain): give the mapped pages back.
        self.log.release_read_memory();
        let review = review.map_err(DailyReviewError::Review)?;
        let store = |source| DailyReviewError::Store {
            path: path.clone(),
            source,
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".review-")
            .tempfile_in(&self.reviews_dir)
            .map_err(store)?;
        tmp.write_all(review.html.as_bytes()).map_err(store)?;
        tmp.as_file().sync_all().map_err(store)?;
        let receipt = self
            .log
            .append(review.audit_entry())
            .map_err(DailyReviewError::Append)?;
        tmp.persist_noclobber(&path).map_err(|e| store(e.error))?;
        Ok(ReviewOutcome::Done {
            path,
            seq: receipt.seq,
            verified: review.integrity.is_ok(),
        })
    }
}

/// Runs the daily review (PCI DSS 10.4.1.1) for the previous UTC day every `every`, first a
/// few seconds after start; a day already reviewed is skipped, so each day is reviewed once.
pub async fn daily_review_loop(svc: Arc<EvidenceService>, every: std::time::Duration) {
    let first = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut tick = tokio::time::interval_at(first, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Utc::now();
        let Some(day) = now.date_naive().pred_opt() else {
            continue;
        };
        let s = svc.clone();
        match tokio::task::spawn_blocking(move || s.daily_review(day, now)).await {
            Ok(Ok(ReviewOutcome::Done {
                path,
                seq,
                verified,
            })) => tracing::info!(
                review.day = %day,
                review.report = %path.display(),
                audit.seq = seq,
                review.verified = verified,
                "daily audit log review done"
            ),
            Ok(Ok(ReviewOutcome::AlreadyDone(_))) => {
                tracing::debug!(review.day = %day, "daily review already done")
            }
            Ok(Err(e)) => tracing::error!(
                review.day = %day,
                error = %crate::ops::error_chain(&e),
                "daily audit log review failed"
            ),
            Err(e) => tracing::error!(error = %e, "daily review task failed"),
        }
    }
}

/// Why the evidence service could not start.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceInitError {
    /// A directory could not be created.
    #[error("cannot create {}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The built-in catalogs do not load.
    #[error("the built-in control catalogs do not load")]
    Catalogs(#[source] CatalogError),
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use sakshi_attest::{EventLog, HashAlg, PcrValues, Quote, TpmKind};
    use sakshi_audit::{Action, AuditConfig, Query};

    /// A quote source that answers with a well-formed but unsigned quote (unit tests have no
    /// TPM; the bundle verifier reports its quote as bad, everything else must verify).
    pub struct FakeQuotes;

    impl QuoteSource for FakeQuotes {
        fn quote(&self, nonce: &[u8]) -> Result<Quote, SourceError> {
            Ok(Quote {
                attest: vec![0xff, 0x54, 0x43, 0x47, 0x80, 0x18],
                signature: vec![0, 0x18, 0, 0x0b],
                pcrs: PcrValues {
                    alg: HashAlg::Sha256,
                    values: vec![(23, vec![0u8; 32])],
                },
                event_log: EventLog::new(),
                ak_public_pem: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
                    .to_owned(),
                ak_public: vec![0, 1],
                tpm_kind: TpmKind::Software,
                nonce: nonce.to_vec(),
            })
        }
    }

    /// A service over a fresh SQLite log in `dir`, with the fake quote source and an in-memory
    /// golden set.
    pub fn test_service(dir: &Path) -> (Arc<EvidenceService>, Arc<AuditLog>, Arc<MemGolden>) {
        let key = Arc::new(ApplianceKey::generate().unwrap());
        let log = Arc::new(
            AuditLog::open(
                dir.join("evidence-audit.sqlite"),
                AuditConfig::default(),
                key.clone(),
                None,
            )
            .unwrap(),
        );
        let golden = Arc::new(MemGolden::default());
        let svc = EvidenceService::new(
            log.clone(),
            key,
            Box::new(FakeQuotes),
            Some(golden.clone()),
            RetentionPolicy::default(),
            dir,
            "test-host".to_owned(),
        )
        .unwrap();
        (Arc::new(svc), log, golden)
    }

    fn append_some(log: &AuditLog, n: usize) {
        for i in 0..n {
            log.append(
                sakshi_audit::NewEntry::new(
                    Action::VmCreate,
                    sakshi_audit::Actor::user("alice", sakshi_audit::AuthMethod::Session),
                    sakshi_audit::Origin::Internal,
                )
                .target(sakshi_audit::Target::new(
                    sakshi_audit::TargetKind::Vm,
                    format!("vm-{i}"),
                )),
            )
            .unwrap();
        }
    }

    #[test]
    fn export_writes_a_signed_bundle_that_verifies_except_for_the_fake_quote() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, log, _) = test_service(dir.path());
        append_some(&log, 5);
        let now = Utc::now();
        let period = Period::new(
            now - chrono::TimeDelta::hours(1),
            now + chrono::TimeDelta::seconds(1),
        )
        .unwrap();
        let b = svc
            .export(ExportRequest {
                period,
                scope: Scope::All,
                requested_by: "auditor".to_owned(),
                inventory: Vec::new(),
                siem: None,
                now,
            })
            .unwrap();
        assert_eq!(
            b.file_name,
            bundle_file_name("test-host", &Scope::All, &period)
        );
        assert!(b.entries >= 5, "{}", b.entries);
        assert_eq!(b.file.metadata().unwrap().len(), b.bytes);
        // Nothing is left in the work directory: the open file is all there is.
        assert_eq!(
            std::fs::read_dir(dir.path().join("evidence-tmp"))
                .unwrap()
                .count(),
            0
        );
        let report = sakshi_reports::verify_bundle(
            b.file,
            &sakshi_reports::VerifyOptions {
                key: log.public_key().clone(),
                previous_anchor: None,
            },
        );
        assert!(report.signature_ok);
        assert!(report.integrity.is_some(), "{:?}", report.problems);
        assert!(report.entries_checked >= 5);
        assert!(!report.problems.is_empty(), "a fake quote cannot verify");
        for p in &report.problems {
            assert!(
                matches!(p, sakshi_reports::BundleProblem::Quote(_)),
                "only the quote may fail: {p}"
            );
        }
    }

    #[test]
    fn daily_review_runs_once_per_day_and_is_audited() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, log, _) = test_service(dir.path());
        append_some(&log, 3);
        let now = Utc::now();
        let day = now.date_naive();
        let first = svc.daily_review(day, now).unwrap();
        let ReviewOutcome::Done {
            path,
            seq,
            verified,
        } = first
        else {
            panic!("not reviewed: {first:?}");
        };
        assert!(verified);
        let html = std::fs::read_to_string(&path).unwrap();
        assert!(html.contains(&day.to_string()));
        let entry = log.get(seq).unwrap().unwrap();
        assert_eq!(entry.action, Action::AuditVerify);
        assert_eq!(entry.actor.id, "review");
        assert_eq!(entry.details["review"], "daily");
        assert_eq!(
            svc.daily_review(day, now).unwrap(),
            ReviewOutcome::AlreadyDone(path)
        );
        let reviews = log
            .query(&Query {
                actions: vec![Action::AuditVerify],
                limit: 10,
                ..Query::default()
            })
            .unwrap();
        assert_eq!(reviews.entries.len(), 1);
    }

    /// A golden set kept in memory.
    #[derive(Default)]
    pub struct MemGolden(pub std::sync::Mutex<Policy>);

    impl GoldenSet for MemGolden {
        fn policy(&self) -> Policy {
            self.0.lock().unwrap().clone()
        }
        fn approve(&self, record: &PatchRecord) -> Result<usize, crate::golden::GoldenError> {
            Ok(record.approve_into(&mut self.0.lock().unwrap()))
        }
    }

    #[test]
    fn frameworks_are_found_by_id_or_unique_prefix() {
        let cats = Catalog::builtin().unwrap();
        assert_eq!(
            find_framework(&cats, "pci-dss").map(|c| c.framework.id.as_str()),
            Some("pci-dss-4.0.1")
        );
        assert_eq!(
            find_framework(&cats, "cert-in-2022").map(|c| c.framework.id.as_str()),
            Some("cert-in-2022")
        );
        // "rbi-" matches several catalogs; "" and unknown names match none.
        assert!(find_framework(&cats, "rbi-").is_none());
        assert!(find_framework(&cats, "").is_none());
        assert!(find_framework(&cats, "sox").is_none());
        assert_eq!(builtin_catalogs().unwrap().len(), cats.len());
        // PCI DSS 6.3.3: critical within one month; no deadline set for low.
        assert_eq!(
            patch_deadline_days(sakshi_reports::Severity::Critical),
            Some(30)
        );
        assert_eq!(patch_deadline_days(sakshi_reports::Severity::Low), None);
    }
}
