//! Streaming verification of a whole log: hash chain, every leaf against the tree, every
//! checkpoint's signature, chain and root, and consistency with externally held checkpoints.
//!
//! This module is pure (no SQLite); the database side feeds it rows in sequence order.

use std::fmt;
use std::time::Duration;

use crate::checkpoint::{CheckpointParseError, SignedCheckpoint};
use crate::key::AppliancePublicKey;
use crate::merkle::{Frontier, GENESIS_CHAIN, Hash, chain_hash, leaf_hash};

/// Findings kept in a report (the count of all findings is kept too).
pub const MAX_FINDINGS: usize = 64;

/// The kind of damage, without its location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DamageKind {
    /// An entry is absent from the sequence (deleted).
    MissingEntry,
    /// An entry's bytes no longer match its stored leaf hash (modified).
    ModifiedEntry,
    /// An entry sits at a position other than the one it was written at (reordered,
    /// renumbered, inserted).
    MisplacedEntry,
    /// An entry is not decodable.
    MalformedEntry,
    /// The hash chain does not continue.
    ChainBroken,
    /// A stored interior Merkle node is wrong.
    NodeCorrupt,
    /// A signed checkpoint's root does not match the entries (history rewritten).
    RootMismatch,
    /// A checkpoint's signature is missing or invalid (forged or replaced).
    BadCheckpointSignature,
    /// A checkpoint does not name its predecessor's hash (checkpoints deleted or replaced).
    CheckpointChainBroken,
    /// A checkpoint cannot be parsed.
    MalformedCheckpoint,
    /// A checkpoint belongs to another log.
    ForeignCheckpoint,
    /// Checkpoints go backwards in size or time.
    CheckpointOrder,
    /// The log has no signed checkpoint at all.
    NoCheckpoint,
    /// A checkpoint covers entries the log no longer has (tail truncated).
    TruncatedTail,
    /// An externally held checkpoint is ahead of the log (rolled back or truncated).
    RolledBack,
    /// An externally held checkpoint disagrees with the log (history rewritten).
    ExternalMismatch,
    /// An externally held checkpoint is not signed by the trusted key.
    ExternalBadSignature,
    /// The retained-prefix record of expired entries is corrupt.
    BadRetentionBase,
    /// An archive segment that should exist is missing.
    MissingSegment,
    /// An archive segment does not verify (hash, signature or proof).
    BadSegment,
}

/// One piece of damage, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Damage {
    /// Entry `index` is missing.
    #[error("entry {index} is missing (the next stored entry is {next})")]
    MissingEntry {
        /// First missing index.
        index: u64,
        /// The next index present.
        next: u64,
    },
    /// Entry `index` was modified.
    #[error("entry {index} was modified: its bytes do not match its stored leaf hash")]
    ModifiedEntry {
        /// Index.
        index: u64,
    },
    /// Entry `index` says it is entry `claimed`.
    #[error("entry {index} is misplaced: it was written as entry {claimed}")]
    MisplacedEntry {
        /// Position.
        index: u64,
        /// Sequence number inside the entry.
        claimed: u64,
    },
    /// Entry `index` is not a decodable entry.
    #[error("entry {index} is malformed: not a decodable entry")]
    MalformedEntry {
        /// Index.
        index: u64,
    },
    /// The chain value stored at `index` is wrong.
    #[error("hash chain broken at entry {index}")]
    ChainBroken {
        /// Index.
        index: u64,
    },
    /// A stored interior node is wrong.
    #[error("stored Merkle node (level {level}) at entry {index} is corrupt")]
    NodeCorrupt {
        /// Entry that stores it.
        index: u64,
        /// Node level.
        level: u32,
    },
    /// The signed root at `tree_size` differs from the root of the stored entries.
    #[error(
        "checkpoint at tree size {tree_size}: signed root does not match the entries; \
         the first bad entry is in [{from}, {tree_size})"
    )]
    RootMismatch {
        /// Checkpoint size.
        tree_size: u64,
        /// Size of the last checkpoint that still matched.
        from: u64,
    },
    /// Checkpoint number `position` (0-based, in log order) has no valid signature.
    #[error(
        "checkpoint #{position} (tree size {tree_size}) has no valid signature by the trusted key"
    )]
    BadCheckpointSignature {
        /// Position in the checkpoint sequence.
        position: u64,
        /// Its tree size.
        tree_size: u64,
    },
    /// Checkpoint `position` does not name its predecessor.
    #[error("checkpoint #{position} (tree size {tree_size}) does not chain to checkpoint #{}", position.saturating_sub(1))]
    CheckpointChainBroken {
        /// Position.
        position: u64,
        /// Its tree size.
        tree_size: u64,
    },
    /// Checkpoint `position` cannot be parsed.
    #[error("checkpoint #{position} is malformed")]
    MalformedCheckpoint {
        /// Position.
        position: u64,
        /// Why.
        #[source]
        error: CheckpointParseError,
    },
    /// Checkpoint `position` names another log.
    #[error("checkpoint #{position} belongs to log {found:?}, not {expected:?}")]
    ForeignCheckpoint {
        /// Position.
        position: u64,
        /// Its origin.
        found: String,
        /// This log's origin.
        expected: String,
    },
    /// Checkpoint `position` goes backwards.
    #[error("checkpoint #{position} (tree size {tree_size}) goes back in size or time")]
    CheckpointOrder {
        /// Position.
        position: u64,
        /// Its tree size.
        tree_size: u64,
    },
    /// No checkpoint at all.
    #[error("the log has no signed checkpoint, so nothing in it can be authenticated")]
    NoCheckpoint,
    /// A checkpoint is beyond the last entry.
    #[error(
        "checkpoint at tree size {tree_size} covers entries the log no longer has (log size {log_size}): tail truncated"
    )]
    TruncatedTail {
        /// Checkpoint size.
        tree_size: u64,
        /// Entries present.
        log_size: u64,
    },
    /// An external checkpoint is ahead of the log.
    #[error(
        "external checkpoint at tree size {tree_size} is ahead of the log (size {log_size}): log rolled back or truncated"
    )]
    RolledBack {
        /// External size.
        tree_size: u64,
        /// Log size.
        log_size: u64,
    },
    /// An external checkpoint's root differs from the log's root at its size.
    #[error(
        "external checkpoint at tree size {tree_size} does not match the log: history rewritten; \
         the first bad entry is in [{from}, {tree_size})"
    )]
    ExternalMismatch {
        /// External size.
        tree_size: u64,
        /// Size of the last checkpoint that still matched.
        from: u64,
    },
    /// External checkpoint `position` (as given) is not signed by the trusted key.
    #[error("external checkpoint #{position} is not signed by the trusted key")]
    ExternalBadSignature {
        /// Position in the list given.
        position: usize,
    },
    /// The record of expired entries does not fit the log.
    #[error("the record of expired entries (before {size}) is corrupt")]
    BadRetentionBase {
        /// Entries expired.
        size: u64,
    },
    /// The archive segment of entries `[start, end)` is missing.
    #[error("archive segment of entries [{start}, {end}) is missing")]
    MissingSegment {
        /// First entry.
        start: u64,
        /// One past the last.
        end: u64,
    },
    /// The archive segment of entries `[start, end)` does not verify.
    #[error("archive segment of entries [{start}, {end}) does not verify (modified or replaced)")]
    BadSegment {
        /// First entry.
        start: u64,
        /// One past the last.
        end: u64,
    },
}

impl Damage {
    /// The kind of damage.
    pub fn kind(&self) -> DamageKind {
        match self {
            Damage::MissingEntry { .. } => DamageKind::MissingEntry,
            Damage::ModifiedEntry { .. } => DamageKind::ModifiedEntry,
            Damage::MisplacedEntry { .. } => DamageKind::MisplacedEntry,
            Damage::MalformedEntry { .. } => DamageKind::MalformedEntry,
            Damage::ChainBroken { .. } => DamageKind::ChainBroken,
            Damage::NodeCorrupt { .. } => DamageKind::NodeCorrupt,
            Damage::RootMismatch { .. } => DamageKind::RootMismatch,
            Damage::BadCheckpointSignature { .. } => DamageKind::BadCheckpointSignature,
            Damage::CheckpointChainBroken { .. } => DamageKind::CheckpointChainBroken,
            Damage::MalformedCheckpoint { .. } => DamageKind::MalformedCheckpoint,
            Damage::ForeignCheckpoint { .. } => DamageKind::ForeignCheckpoint,
            Damage::CheckpointOrder { .. } => DamageKind::CheckpointOrder,
            Damage::NoCheckpoint => DamageKind::NoCheckpoint,
            Damage::TruncatedTail { .. } => DamageKind::TruncatedTail,
            Damage::RolledBack { .. } => DamageKind::RolledBack,
            Damage::ExternalMismatch { .. } => DamageKind::ExternalMismatch,
            Damage::ExternalBadSignature { .. } => DamageKind::ExternalBadSignature,
            Damage::BadRetentionBase { .. } => DamageKind::BadRetentionBase,
            Damage::MissingSegment { .. } => DamageKind::MissingSegment,
            Damage::BadSegment { .. } => DamageKind::BadSegment,
        }
    }

    /// The first entry index known (or, for range findings, the lowest index that may be)
    /// bad; `None` for damage not tied to an entry (e.g. a forged checkpoint signature).
    pub fn first_bad_index(&self) -> Option<u64> {
        match *self {
            Damage::MissingEntry { index, .. }
            | Damage::ModifiedEntry { index }
            | Damage::MisplacedEntry { index, .. }
            | Damage::MalformedEntry { index }
            | Damage::ChainBroken { index }
            | Damage::NodeCorrupt { index, .. } => Some(index),
            Damage::RootMismatch { from, .. } | Damage::ExternalMismatch { from, .. } => Some(from),
            Damage::TruncatedTail { log_size, .. } | Damage::RolledBack { log_size, .. } => {
                Some(log_size)
            }
            Damage::BadRetentionBase { size } => Some(size),
            Damage::MissingSegment { start, .. } | Damage::BadSegment { start, .. } => Some(start),
            _ => None,
        }
    }

    /// True when the index is exact (not a lower bound of a range).
    fn is_exact(&self) -> bool {
        !matches!(
            self,
            Damage::RootMismatch { .. }
                | Damage::ExternalMismatch { .. }
                | Damage::TruncatedTail { .. }
                | Damage::RolledBack { .. }
                | Damage::MissingSegment { .. }
                | Damage::BadSegment { .. }
        )
    }
}

/// Where the trusted public key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// Given by the caller (key file, configuration).
    Given,
    /// Read from the log's own metadata: only proves self-consistency, not authorship.
    LogMetadata,
}

/// The state of the log before its first retained entry (after expiry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedBase {
    /// Entries expired: the first retained index.
    pub size: u64,
    /// Chain value of entry `size - 1`.
    pub chain: Hash,
    /// Frontier of `[0, size)`.
    pub frontier: Frontier,
}

/// The outcome of a verification run. `Display` is the human report.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// Where the log is (path or a description).
    pub source: String,
    /// The log's origin line.
    pub origin: String,
    /// Fingerprint (hex SHA-256 of the SPKI) of the key checkpoints were checked with.
    pub key_fingerprint: String,
    /// Where that key came from.
    pub key_source: KeySource,
    /// Entries in the log (= next sequence number), including archived and expired ones.
    pub log_size: u64,
    /// Entries expired (rows gone; covered by the retained base record).
    pub expired: u64,
    /// Entries whose bodies are sealed in archive segments (hashes still in the log).
    pub archived: u64,
    /// Entries whose bytes were hashed and checked.
    pub entries_checked: u64,
    /// Archive segments that verified.
    pub segments_checked: u64,
    /// Checkpoints in the log.
    pub checkpoints: u64,
    /// Checkpoints whose root was recomputed from entries and matched.
    pub checkpoint_roots_checked: u64,
    /// Latest checkpoint: (tree size, time).
    pub latest_checkpoint: Option<(u64, String)>,
    /// External checkpoints given / found consistent.
    pub external_given: usize,
    /// External checkpoints that matched.
    pub external_consistent: usize,
    /// Entries after the latest checkpoint (covered only by the hash chain so far).
    pub unsigned_tail: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Findings (at most [`MAX_FINDINGS`]).
    pub findings: Vec<Damage>,
    /// All findings, including those not kept.
    pub findings_total: u64,
}

impl VerifyReport {
    /// True when nothing is wrong.
    pub fn is_intact(&self) -> bool {
        self.findings_total == 0
    }

    /// The headline finding: the exact finding with the lowest index, else the range finding
    /// with the lowest index, else the first finding.
    pub fn first_damage(&self) -> Option<&Damage> {
        self.findings.iter().min_by_key(|d| {
            let class = match (d.first_bad_index(), d.is_exact()) {
                (Some(_), true) => 0,
                (Some(_), false) => 1,
                (None, _) => 2,
            };
            (class, d.first_bad_index().unwrap_or(u64::MAX))
        })
    }

    /// `Ok(self)` when intact, else the headline damage.
    pub fn into_result(self) -> Result<VerifyReport, Damage> {
        match self.first_damage() {
            None => Ok(self),
            Some(d) => Err(d.clone()),
        }
    }

    /// Whether any finding has this kind.
    pub fn has(&self, kind: DamageKind) -> bool {
        self.findings.iter().any(|d| d.kind() == kind)
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "audit log:    {}", self.source)?;
        writeln!(f, "origin:       {}", self.origin)?;
        let ks = match self.key_source {
            KeySource::Given => "given",
            KeySource::LogMetadata => {
                "read from the log itself: proves consistency, not authorship"
            }
        };
        writeln!(f, "key:          sha256:{} ({ks})", self.key_fingerprint)?;
        writeln!(
            f,
            "entries:      {} (checked {}, archived {} in {} verified segments, expired {})",
            self.log_size, self.entries_checked, self.archived, self.segments_checked, self.expired
        )?;
        match &self.latest_checkpoint {
            Some((size, time)) => writeln!(
                f,
                "checkpoints:  {} (roots recomputed: {}); latest: size {size} at {time}",
                self.checkpoints, self.checkpoint_roots_checked
            )?,
            None => writeln!(f, "checkpoints:  none")?,
        }
        writeln!(
            f,
            "unsigned:     {} entries after the latest checkpoint",
            self.unsigned_tail
        )?;
        if self.external_given > 0 {
            writeln!(
                f,
                "external:     {} given, {} consistent",
                self.external_given, self.external_consistent
            )?;
        }
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.entries_checked as f64 / secs
        } else {
            0.0
        };
        writeln!(f, "elapsed:      {:.3} s ({:.0} entries/s)", secs, rate)?;
        match self.first_damage() {
            None => writeln!(f, "result:       INTACT"),
            Some(d) => {
                match d.first_bad_index() {
                    Some(i) => writeln!(f, "result:       DAMAGED at index {i}: {d}")?,
                    None => writeln!(f, "result:       DAMAGED: {d}")?,
                }
                writeln!(f, "findings ({} total):", self.findings_total)?;
                for d in &self.findings {
                    writeln!(f, "  - {d}")?;
                }
                if self.findings_total > self.findings.len() as u64 {
                    writeln!(
                        f,
                        "  ... {} more",
                        self.findings_total - self.findings.len() as u64
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// A stored row, as the verifier sees it.
#[derive(Debug, Clone, Copy)]
pub struct LeafRow<'a> {
    /// The row's sequence number.
    pub seq: u64,
    /// Canonical entry bytes; `None` when sealed into an archive segment.
    pub body: Option<&'a [u8]>,
    /// Stored leaf hash.
    pub leaf_hash: &'a [u8],
    /// Stored chain value.
    pub chain: &'a [u8],
    /// Stored interior nodes completed by this leaf (levels 1.., 32 bytes each).
    pub nodes: &'a [u8],
}

struct SeqOnly {
    seq: u64,
}

struct Target {
    size: u64,
    root: Hash,
    external: Option<usize>,
}

/// The streaming verifier. Feed checkpoints first, then rows in sequence order, then call
/// [`LogVerifier::finish`].
pub struct LogVerifier {
    key: AppliancePublicKey,
    key_source: KeySource,
    origin: String,
    source: String,
    started: std::time::Instant,
    frontier: Frontier,
    chain: Hash,
    next: u64,
    base_size: u64,
    targets: Vec<Target>,
    next_target: usize,
    last_good_size: u64,
    checkpoints: u64,
    roots_checked: u64,
    latest: Option<(u64, String)>,
    external_given: usize,
    external_consistent: usize,
    archived: u64,
    entries_checked: u64,
    segments_checked: u64,
    findings: Vec<Damage>,
    findings_total: u64,
    prepared: bool,
    tree_broken: Option<u64>,
    misplaced_offset: Option<i128>,
    last_good_external: u64,
    root_mismatch_seen: bool,
    external_mismatch_seen: bool,
    node_damage_seen: bool,
}

impl LogVerifier {
    /// A verifier for the log named `origin`, checking signatures with `key`.
    pub fn new(key: AppliancePublicKey, key_source: KeySource, origin: &str, source: &str) -> Self {
        LogVerifier {
            key,
            key_source,
            origin: origin.to_owned(),
            source: source.to_owned(),
            started: std::time::Instant::now(),
            frontier: Frontier::new(),
            chain: GENESIS_CHAIN,
            next: 0,
            base_size: 0,
            targets: Vec::new(),
            next_target: 0,
            last_good_size: 0,
            checkpoints: 0,
            roots_checked: 0,
            latest: None,
            external_given: 0,
            external_consistent: 0,
            archived: 0,
            entries_checked: 0,
            segments_checked: 0,
            findings: Vec::new(),
            findings_total: 0,
            prepared: false,
            tree_broken: None,
            misplaced_offset: None,
            last_good_external: 0,
            root_mismatch_seen: false,
            external_mismatch_seen: false,
            node_damage_seen: false,
        }
    }

    /// Start from a retained base (entries before `base.size` expired).
    pub fn set_base(&mut self, base: RetainedBase) {
        self.next = base.size;
        self.base_size = base.size;
        self.last_good_size = base.size;
        self.last_good_external = base.size;
        self.chain = base.chain;
        self.frontier = base.frontier;
    }

    /// The key checkpoints are checked with.
    pub fn key(&self) -> &AppliancePublicKey {
        &self.key
    }

    /// Count an archive segment that verified.
    pub fn segment_ok(&mut self) {
        self.segments_checked += 1;
    }

    /// Record damage found outside the verifier (e.g. by the storage layer).
    pub fn report(&mut self, d: Damage) {
        self.findings_total += 1;
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(d);
        }
    }

    /// Check the log's own checkpoints, in the order they were written.
    pub fn add_checkpoints<'a>(&mut self, notes: impl IntoIterator<Item = &'a str>) {
        let mut prev: Option<(Hash, u64, String)> = None;
        for (position, note) in notes.into_iter().enumerate() {
            let position = position as u64;
            self.checkpoints += 1;
            let cp = match SignedCheckpoint::parse(note) {
                Ok(cp) => cp,
                Err(error) => {
                    self.report(Damage::MalformedCheckpoint { position, error });
                    prev = None;
                    continue;
                }
            };
            let c = cp.checkpoint();
            let tree_size = c.tree_size;
            if c.origin != self.origin {
                self.report(Damage::ForeignCheckpoint {
                    position,
                    found: c.origin.clone(),
                    expected: self.origin.clone(),
                });
            }
            let signed = cp.verify(&self.key).is_ok();
            if !signed {
                self.report(Damage::BadCheckpointSignature {
                    position,
                    tree_size,
                });
            }
            let expected_prev = prev.as_ref().map(|p| p.0);
            // The first stored checkpoint may follow expired ones; only later ones must chain.
            if position > 0 && c.prev != expected_prev {
                self.report(Damage::CheckpointChainBroken {
                    position,
                    tree_size,
                });
            }
            let time = crate::entry::format_time(&c.time);
            if let Some((_, psize, ptime)) = &prev
                && (tree_size < *psize || time < *ptime)
            {
                self.report(Damage::CheckpointOrder {
                    position,
                    tree_size,
                });
            }
            if signed {
                self.targets.push(Target {
                    size: tree_size,
                    root: c.root,
                    external: None,
                });
            }
            self.latest = Some((tree_size, time.clone()));
            prev = Some((cp.hash(), tree_size, time));
        }
    }

    /// Check externally held checkpoints (e.g. copies kept off the appliance).
    pub fn add_external(&mut self, checkpoints: &[SignedCheckpoint]) {
        for (position, cp) in checkpoints.iter().enumerate() {
            self.external_given += 1;
            if cp.verify(&self.key).is_err() || cp.checkpoint().origin != self.origin {
                self.report(Damage::ExternalBadSignature { position });
                continue;
            }
            let c = cp.checkpoint();
            self.targets.push(Target {
                size: c.tree_size,
                root: c.root,
                external: Some(position),
            });
        }
    }

    fn prepare(&mut self) {
        if self.prepared {
            return;
        }
        self.prepared = true;
        self.targets.sort_by_key(|t| (t.size, t.external.is_some()));
        // Targets before the retained base cannot be recomputed.
        while self.next_target < self.targets.len()
            && self.targets[self.next_target].size < self.base_size
        {
            self.next_target += 1;
        }
        self.check_targets();
    }

    fn check_targets(&mut self) {
        while let Some(t) = self.targets.get(self.next_target) {
            if t.size != self.next {
                break;
            }
            let (size, root, external) = (t.size, t.root, t.external);
            self.next_target += 1;
            if self.tree_broken.is_none() && self.frontier.root() == root {
                match external {
                    Some(_) => {
                        self.external_consistent += 1;
                        self.last_good_external = size;
                    }
                    None => self.roots_checked += 1,
                }
                self.last_good_size = size;
                continue;
            }
            // Once a root fails, every later root fails too: report the first of each kind.
            // An external checkpoint that disagrees puts the log's own checkpoints under
            // suspicion, so its range starts at the last external checkpoint that matched.
            match external {
                Some(_) if !self.external_mismatch_seen => {
                    self.external_mismatch_seen = true;
                    let from = self.last_good_external;
                    self.report(Damage::ExternalMismatch {
                        tree_size: size,
                        from,
                    });
                }
                None if !self.root_mismatch_seen => {
                    self.root_mismatch_seen = true;
                    let from = self.last_good_size;
                    self.report(Damage::RootMismatch {
                        tree_size: size,
                        from,
                    });
                }
                _ => {}
            }
        }
    }

    /// Feed the next stored row. Rows must come in ascending `seq` order.
    ///
    /// Every check is local, so one piece of damage is reported once: the body is checked
    /// against the stored leaf hash, the stored chain against the previous stored chain and
    /// the stored leaf hash, stored nodes against nodes computed from stored leaf hashes, and
    /// those leaf hashes against every signed root.
    pub fn push(&mut self, row: LeafRow<'_>) {
        self.prepare();
        let mut after_gap = false;
        if row.seq > self.next {
            self.report(Damage::MissingEntry {
                index: self.next,
                next: row.seq,
            });
            if self.tree_broken.is_none() {
                self.tree_broken = Some(self.next);
            }
            // Targets inside the gap can no longer be checked; count them as failing.
            while self.next < row.seq {
                self.next += 1;
                self.check_targets();
            }
            after_gap = true;
        }
        let index = row.seq;
        let stored_leaf: Option<Hash> = row.leaf_hash.try_into().ok();
        if let Some(body) = row.body {
            self.entries_checked += 1;
            if stored_leaf != Some(leaf_hash(body)) {
                self.report(Damage::ModifiedEntry { index });
            }
            match crate::canonical::claimed_seq(body)
                .map(|seq| SeqOnly { seq })
                .ok_or(())
            {
                Ok(s) if s.seq == index => {}
                Ok(s) => {
                    // A shifted run (renumbered after a deletion or insertion) is reported once.
                    let offset = i128::from(s.seq) - i128::from(index);
                    if self.misplaced_offset != Some(offset) {
                        self.misplaced_offset = Some(offset);
                        self.report(Damage::MisplacedEntry {
                            index,
                            claimed: s.seq,
                        });
                    }
                }
                Err(_) => self.report(Damage::MalformedEntry { index }),
            }
        } else {
            self.archived += 1;
        }
        let leaf = match stored_leaf {
            Some(h) => h,
            None => {
                self.report(Damage::MalformedEntry { index });
                row.body.map(leaf_hash).unwrap_or([0u8; 32])
            }
        };
        let chain = chain_hash(&self.chain, &leaf);
        match <[u8; 32]>::try_from(row.chain) {
            Ok(c) => {
                if c != chain && !after_gap {
                    self.report(Damage::ChainBroken { index });
                }
                self.chain = c;
            }
            Err(_) => {
                self.report(Damage::ChainBroken { index });
                self.chain = chain;
            }
        }
        if self.tree_broken.is_none() {
            let mut bad_level = None;
            let mut expected_nodes = 0usize;
            self.frontier.push_with(leaf, |level, _, hash| {
                let at = (level as usize - 1) * 32;
                expected_nodes += 1;
                if bad_level.is_none() && row.nodes.get(at..at + 32) != Some(&hash[..]) {
                    bad_level = Some(level);
                }
            });
            if bad_level.is_none() && row.nodes.len() != expected_nodes * 32 {
                bad_level = Some(expected_nodes as u32 + 1);
            }
            if let Some(level) = bad_level
                && !self.node_damage_seen
            {
                self.node_damage_seen = true;
                self.report(Damage::NodeCorrupt { index, level });
            }
        }
        self.next = index + 1;
        self.check_targets();
    }

    /// Finish: report checkpoints beyond the log, and build the report.
    pub fn finish(mut self) -> VerifyReport {
        self.prepare();
        let log_size = self.next;
        for t in &self.targets[self.next_target..] {
            let d = match t.external {
                Some(_) => Damage::RolledBack {
                    tree_size: t.size,
                    log_size,
                },
                None => Damage::TruncatedTail {
                    tree_size: t.size,
                    log_size,
                },
            };
            self.findings_total += 1;
            if self.findings.len() < MAX_FINDINGS {
                self.findings.push(d);
            }
        }
        if self.checkpoints == 0 {
            self.report(Damage::NoCheckpoint);
        }
        let unsigned_tail = log_size.saturating_sub(self.latest.as_ref().map_or(0, |l| l.0));
        VerifyReport {
            source: self.source,
            origin: self.origin,
            key_fingerprint: self.key.fingerprint(),
            key_source: self.key_source,
            log_size,
            expired: self.base_size,
            archived: self.archived,
            entries_checked: self.entries_checked,
            segments_checked: self.segments_checked,
            checkpoints: self.checkpoints,
            checkpoint_roots_checked: self.roots_checked,
            latest_checkpoint: self.latest,
            external_given: self.external_given,
            external_consistent: self.external_consistent,
            unsigned_tail,
            elapsed: self.started.elapsed(),
            findings: self.findings,
            findings_total: self.findings_total,
        }
    }
}
