//! Streaming verification of a bundle's audit part: entries, chain, checkpoints and proofs.
//!
//! [`AuditChecker`] is built from `audit/proof.json` and `audit/checkpoints.jsonl`, then fed
//! `audit/entries.jsonl` one line at a time. Its memory does not grow with the number of
//! entries: it keeps the Merkle frontier (one hash per tree level), the running chain value
//! and the list of checkpoints. The exporter runs the same checker over what it writes.

use chrono::{DateTime, Utc};
use sakshi_audit::{
    AppliancePublicKey, Checkpoint, CheckpointParseError, CheckpointVerifyError, DecodeEntryError,
    Entry, ExportedEntry, Frontier, Hash, ProofError, RangeProof, SignedCheckpoint, TargetKind,
    chain_hash, leaf_hash, root_from_range, verify_consistency, verify_inclusion,
};

use super::{AUDIT_PROOF_FORMAT, AuditProof, Scope, ScopedEntry};
use crate::evidence::{LogIntegrity, Period};
use crate::stats::EntryStats;

/// Longest line accepted in `audit/entries.jsonl` or `audit/checkpoints.jsonl`, in bytes.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// What is wrong with a bundle's audit part. Each names the entry, line or checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum AuditCheckError {
    /// `audit/proof.json` is not a proof document.
    #[error("audit/proof.json is malformed")]
    ProofJson(#[source] serde_json::Error),
    /// Unknown proof format.
    #[error("audit/proof.json has format {0:?}, expected {AUDIT_PROOF_FORMAT}")]
    ProofFormat(String),
    /// The range is impossible.
    #[error("audit/proof.json: range {start}..{end} is invalid for anchor tree size {tree_size}")]
    Range {
        /// Start.
        start: u64,
        /// End.
        end: u64,
        /// Anchor size.
        tree_size: u64,
    },
    /// The left part of the range proof does not fit `start`.
    #[error("audit/proof.json: the range proof does not fit entry {start}")]
    RangeShape {
        /// Start.
        start: u64,
    },
    /// A checkpoint does not parse.
    #[error("{what} is not a valid checkpoint")]
    CheckpointParse {
        /// "the anchor checkpoint", "checkpoint on line 3", ...
        what: String,
        /// Why.
        #[source]
        source: CheckpointParseError,
    },
    /// A checkpoint line is not a JSON string.
    #[error("audit/checkpoints.jsonl line {line} is not a JSON string")]
    CheckpointLine {
        /// 1-based line.
        line: usize,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A checkpoint's signature does not verify under the key.
    #[error("{what} (tree size {tree_size}) is not signed by the given key")]
    CheckpointSignature {
        /// Which checkpoint.
        what: String,
        /// Its size.
        tree_size: u64,
        /// Why.
        #[source]
        source: CheckpointVerifyError,
    },
    /// A checkpoint belongs to another log.
    #[error("{what} has origin {found:?}, expected {expected:?}")]
    CheckpointOrigin {
        /// Which checkpoint.
        what: String,
        /// Its origin.
        found: String,
        /// The bundle's origin.
        expected: String,
    },
    /// A checkpoint lies outside the period's range or out of order.
    #[error(
        "checkpoint on line {line} (tree size {tree_size}) is outside {start}..={end} or out of order"
    )]
    CheckpointOrder {
        /// 1-based line.
        line: usize,
        /// Its size.
        tree_size: u64,
        /// Range start.
        start: u64,
        /// Range end.
        end: u64,
    },
    /// A checkpoint does not chain to the one before it (a checkpoint was removed or replaced).
    #[error(
        "checkpoint on line {line} (tree size {tree_size}) does not chain to the previous checkpoint"
    )]
    CheckpointChain {
        /// 1-based line.
        line: usize,
        /// Its size.
        tree_size: u64,
    },
    /// The entries do not produce a checkpoint's root.
    #[error("entries up to #{last} do not match the signed checkpoint at tree size {tree_size}")]
    CheckpointRoot {
        /// Its size.
        tree_size: u64,
        /// Last entry included (`tree_size - 1`).
        last: i128,
    },
    /// A line of `audit/entries.jsonl` is not an exported entry.
    #[error("audit/entries.jsonl line {line} is not a valid entry record")]
    EntryLine {
        /// 1-based line.
        line: u64,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A line is longer than [`MAX_LINE_BYTES`].
    #[error("{file} line {line} is longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong {
        /// Which file.
        file: &'static str,
        /// 1-based line.
        line: u64,
    },
    /// Entries are not consecutive.
    #[error("audit/entries.jsonl line {line} holds entry #{found}, expected #{expected}")]
    Sequence {
        /// 1-based line.
        line: u64,
        /// Seq found.
        found: u64,
        /// Seq expected.
        expected: u64,
    },
    /// An entry's bytes and its chain value disagree: the entry was changed.
    #[error("entry #{seq} was altered: its content does not match its chain value")]
    Chain {
        /// The entry.
        seq: u64,
    },
    /// A scoped entry's inclusion proof fails against the anchor.
    #[error("entry #{seq} was altered or is not in the log: its inclusion proof fails")]
    Inclusion {
        /// The entry.
        seq: u64,
        /// Why.
        #[source]
        source: ProofError,
    },
    /// A scoped bundle holds an entry about something else.
    #[error("entry #{seq} is outside the bundle's scope {scope}")]
    OutOfScope {
        /// The entry.
        seq: u64,
        /// The scope.
        scope: Scope,
    },
    /// Entries of a scoped bundle are not in increasing order.
    #[error("entries out of order in a scoped bundle: #{found} after #{previous}")]
    ScopedOrder {
        /// Seq found.
        found: u64,
        /// The seq before it.
        previous: u64,
    },
    /// An entry's canonical bytes are not a valid entry.
    #[error("entry #{seq} does not decode")]
    Decode {
        /// The entry.
        seq: u64,
        /// Why.
        #[source]
        source: DecodeEntryError,
    },
    /// An entry claims another position.
    #[error("entry #{seq} claims to be entry #{claimed}")]
    Misplaced {
        /// Its position.
        seq: u64,
        /// What it claims.
        claimed: u64,
    },
    /// An entry's time is outside the period.
    #[error("entry #{seq} has time {time}, outside the bundle's period")]
    OutsidePeriod {
        /// The entry.
        seq: u64,
        /// Its time.
        time: DateTime<Utc>,
    },
    /// More entries than the range holds.
    #[error("audit/entries.jsonl has more entries than the range {start}..{end}")]
    TooManyEntries {
        /// Start.
        start: u64,
        /// End.
        end: u64,
    },
    /// Fewer entries than the range holds.
    #[error("audit/entries.jsonl ends at entry #{found}; the range ends at #{end}")]
    MissingEntries {
        /// One past the last entry seen.
        found: u64,
        /// One past the last entry expected.
        end: u64,
    },
    /// The chain value after the last entry is not the one recorded.
    #[error("the chain value after the last entry differs from audit/proof.json's end_chain")]
    EndChain,
    /// The range proof does not give the anchor's root.
    #[error(
        "the entries and range proof do not match the anchor checkpoint (tree size {tree_size})"
    )]
    AnchorRoot {
        /// Anchor size.
        tree_size: u64,
        /// Why.
        #[source]
        source: ProofError,
    },
    /// The consistency proof from the previous bundle's checkpoint fails.
    #[error(
        "the log is not consistent with the previous bundle's checkpoint (tree size {old_size})"
    )]
    Consistency {
        /// Previous size.
        old_size: u64,
        /// Why.
        #[source]
        source: ProofError,
    },
}

/// Streaming checker of a bundle's audit part.
#[derive(Debug)]
pub struct AuditChecker {
    period: Period,
    scope: Scope,
    scoped_entries: u64,
    proof: AuditProof,
    anchor: Checkpoint,
    previous: Option<Checkpoint>,
    checkpoints: Vec<Checkpoint>,
    next_cp: usize,
    max_gap_secs: u64,
    frontier: Frontier,
    chain: Hash,
    next_seq: u64,
    line: u64,
    stats: Option<EntryStats>,
}

fn checked(
    note: &str,
    what: impl Fn() -> String,
    key: &AppliancePublicKey,
    origin: &str,
) -> Result<Checkpoint, AuditCheckError> {
    let cp = SignedCheckpoint::parse(note).map_err(|source| AuditCheckError::CheckpointParse {
        what: what(),
        source,
    })?;
    cp.verify(key)
        .map_err(|source| AuditCheckError::CheckpointSignature {
            what: what(),
            tree_size: cp.checkpoint().tree_size,
            source,
        })?;
    if cp.checkpoint().origin != origin {
        return Err(AuditCheckError::CheckpointOrigin {
            what: what(),
            found: cp.checkpoint().origin.chars().take(200).collect(),
            expected: origin.to_owned(),
        });
    }
    Ok(cp.checkpoint().clone())
}

impl AuditChecker {
    /// Check the proof and checkpoints (signatures, origin, order, chaining) and prepare to
    /// receive entries.
    pub fn new(
        proof_json: &[u8],
        checkpoints_jsonl: &[u8],
        key: &AppliancePublicKey,
        period: Period,
        scope: Scope,
    ) -> Result<Self, AuditCheckError> {
        let proof: AuditProof =
            serde_json::from_slice(proof_json).map_err(AuditCheckError::ProofJson)?;
        if proof.format != AUDIT_PROOF_FORMAT {
            return Err(AuditCheckError::ProofFormat(
                proof.format.chars().take(64).collect(),
            ));
        }
        let origin = proof.origin.clone();
        let anchor = checked(
            &proof.anchor,
            || "the anchor checkpoint".to_owned(),
            key,
            &origin,
        )?;
        if proof.start > proof.end || proof.end > anchor.tree_size {
            return Err(AuditCheckError::Range {
                start: proof.start,
                end: proof.end,
                tree_size: anchor.tree_size,
            });
        }
        let previous = match &proof.previous {
            Some(p) => Some(checked(
                &p.checkpoint,
                || "the previous bundle's checkpoint".to_owned(),
                key,
                &origin,
            )?),
            None => None,
        };
        let frontier = Frontier::from_parts(proof.start, proof.range.left.clone())
            .map_err(|_| AuditCheckError::RangeShape { start: proof.start })?;

        let mut checkpoints: Vec<Checkpoint> = Vec::new();
        let mut prev_hash: Option<Hash> = None;
        for (i, raw) in checkpoints_jsonl.split(|b| *b == b'\n').enumerate() {
            let line = i + 1;
            if raw.is_empty() {
                continue;
            }
            if raw.len() > MAX_LINE_BYTES {
                return Err(AuditCheckError::LineTooLong {
                    file: "audit/checkpoints.jsonl",
                    line: line as u64,
                });
            }
            let note: String = serde_json::from_slice(raw)
                .map_err(|source| AuditCheckError::CheckpointLine { line, source })?;
            let what = || format!("checkpoint on line {line}");
            let signed = SignedCheckpoint::parse(&note).map_err(|source| {
                AuditCheckError::CheckpointParse {
                    what: what(),
                    source,
                }
            })?;
            let cp = checked(&note, what, key, &origin)?;
            let in_order = checkpoints
                .last()
                .is_none_or(|p| p.tree_size <= cp.tree_size && p.time <= cp.time);
            if cp.tree_size < proof.start || cp.tree_size > proof.end || !in_order {
                return Err(AuditCheckError::CheckpointOrder {
                    line,
                    tree_size: cp.tree_size,
                    start: proof.start,
                    end: proof.end,
                });
            }
            if let Some(h) = prev_hash
                && cp.prev != Some(h)
            {
                return Err(AuditCheckError::CheckpointChain {
                    line,
                    tree_size: cp.tree_size,
                });
            }
            prev_hash = Some(signed.hash());
            checkpoints.push(cp);
        }
        let max_gap_secs = max_gap(&period, checkpoints.iter().chain([&anchor]).map(|c| c.time));
        let chain = proof.prev_chain;
        let next_seq = proof.start;
        let mut checker = AuditChecker {
            period,
            scope,
            scoped_entries: 0,
            proof,
            anchor,
            previous,
            checkpoints,
            next_cp: 0,
            max_gap_secs,
            frontier,
            chain,
            next_seq,
            line: 0,
            stats: None,
        };
        checker.check_roots()?;
        Ok(checker)
    }

    /// Also collect control statistics while checking.
    pub fn collect_stats(&mut self, stats: EntryStats) {
        self.stats = Some(stats);
    }

    fn check_roots(&mut self) -> Result<(), AuditCheckError> {
        while let Some(cp) = self.checkpoints.get(self.next_cp) {
            if cp.tree_size != self.frontier.size() {
                break;
            }
            if cp.root != self.frontier.root() {
                return Err(AuditCheckError::CheckpointRoot {
                    tree_size: cp.tree_size,
                    last: i128::from(cp.tree_size) - 1,
                });
            }
            self.next_cp += 1;
        }
        Ok(())
    }

    /// Check one line of `audit/entries.jsonl` (without its newline).
    pub fn push_line(&mut self, line: &[u8]) -> Result<(), AuditCheckError> {
        self.line += 1;
        let n = self.line;
        if line.len() > MAX_LINE_BYTES {
            return Err(AuditCheckError::LineTooLong {
                file: "audit/entries.jsonl",
                line: n,
            });
        }
        if self.scope != Scope::All {
            let e: ScopedEntry = serde_json::from_slice(line)
                .map_err(|source| AuditCheckError::EntryLine { line: n, source })?;
            return self.push_scoped(&e);
        }
        let e: ExportedEntry = serde_json::from_slice(line)
            .map_err(|source| AuditCheckError::EntryLine { line: n, source })?;
        self.push(&e)
    }

    /// Check one entry of a scoped bundle: in range, in order, in scope, and included in the
    /// anchor's tree. (A scoped bundle proves each entry is in the signed log; only an `all`
    /// bundle proves that none is missing.)
    pub fn push_scoped(&mut self, e: &ScopedEntry) -> Result<(), AuditCheckError> {
        if e.seq < self.next_seq || e.seq >= self.proof.end {
            if e.seq >= self.proof.start && e.seq < self.proof.end {
                return Err(AuditCheckError::ScopedOrder {
                    found: e.seq,
                    previous: self.next_seq.saturating_sub(1),
                });
            }
            return Err(AuditCheckError::TooManyEntries {
                start: self.proof.start,
                end: self.proof.end,
            });
        }
        let leaf = leaf_hash(e.canonical.as_bytes());
        verify_inclusion(
            e.seq,
            self.anchor.tree_size,
            &leaf,
            &e.inclusion,
            &self.anchor.root,
        )
        .map_err(|source| AuditCheckError::Inclusion { seq: e.seq, source })?;
        let entry = Entry::decode(e.canonical.as_bytes())
            .map_err(|source| AuditCheckError::Decode { seq: e.seq, source })?;
        if entry.seq != e.seq {
            return Err(AuditCheckError::Misplaced {
                seq: e.seq,
                claimed: entry.seq,
            });
        }
        if !self.period.contains(entry.time) {
            return Err(AuditCheckError::OutsidePeriod {
                seq: e.seq,
                time: entry.time,
            });
        }
        if !in_scope(&self.scope, &entry) {
            return Err(AuditCheckError::OutOfScope {
                seq: e.seq,
                scope: self.scope.clone(),
            });
        }
        self.next_seq = e.seq + 1;
        self.scoped_entries += 1;
        if let Some(s) = &mut self.stats {
            s.observe(&entry);
        }
        Ok(())
    }

    /// Check one exported entry.
    pub fn push(&mut self, e: &ExportedEntry) -> Result<(), AuditCheckError> {
        let n = self.line;
        if self.next_seq >= self.proof.end {
            return Err(AuditCheckError::TooManyEntries {
                start: self.proof.start,
                end: self.proof.end,
            });
        }
        if e.seq != self.next_seq {
            return Err(AuditCheckError::Sequence {
                line: n,
                found: e.seq,
                expected: self.next_seq,
            });
        }
        let leaf = leaf_hash(e.canonical.as_bytes());
        let chain = chain_hash(&self.chain, &leaf);
        if chain != e.chain {
            return Err(AuditCheckError::Chain { seq: e.seq });
        }
        let entry = Entry::decode(e.canonical.as_bytes())
            .map_err(|source| AuditCheckError::Decode { seq: e.seq, source })?;
        if entry.seq != e.seq {
            return Err(AuditCheckError::Misplaced {
                seq: e.seq,
                claimed: entry.seq,
            });
        }
        if !self.period.contains(entry.time) {
            return Err(AuditCheckError::OutsidePeriod {
                seq: e.seq,
                time: entry.time,
            });
        }
        self.chain = chain;
        self.frontier.push(leaf);
        self.next_seq += 1;
        self.check_roots()?;
        if let Some(s) = &mut self.stats {
            s.observe(&entry);
        }
        Ok(())
    }

    /// The scope being checked.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// Entries checked so far.
    pub fn entries_checked(&self) -> u64 {
        match self.scope {
            Scope::All => self.next_seq - self.proof.start,
            Scope::Vm(_) => self.scoped_entries,
        }
    }

    /// Finish: every entry present, end chain, anchor root, consistency with the previous
    /// bundle. Returns the integrity summary and the collected statistics.
    pub fn finish(self) -> Result<(LogIntegrity, Option<EntryStats>), AuditCheckError> {
        if self.scope != Scope::All {
            let consistent_from = self.consistency()?;
            return Ok((self.integrity(consistent_from), self.stats));
        }
        if self.next_seq != self.proof.end {
            return Err(AuditCheckError::MissingEntries {
                found: self.next_seq,
                end: self.proof.end,
            });
        }
        if self.chain != self.proof.end_chain {
            return Err(AuditCheckError::EndChain);
        }
        let tree_size = self.anchor.tree_size;
        let rest = RangeProof {
            left: self.frontier.nodes().to_vec(),
            right: self.proof.range.right.clone(),
        };
        let root = root_from_range(self.proof.end, &[], tree_size, &rest)
            .map_err(|source| AuditCheckError::AnchorRoot { tree_size, source })?;
        if root != self.anchor.root {
            return Err(AuditCheckError::AnchorRoot {
                tree_size,
                source: ProofError::RootMismatch {
                    computed: hex::encode(root),
                },
            });
        }
        let consistent_from = self.consistency()?;
        Ok((self.integrity(consistent_from), self.stats))
    }

    fn consistency(&self) -> Result<Option<u64>, AuditCheckError> {
        match (&self.previous, &self.proof.previous) {
            (Some(prev), Some(p)) => {
                verify_consistency(
                    prev.tree_size,
                    self.anchor.tree_size,
                    &prev.root,
                    &self.anchor.root,
                    &p.consistency,
                )
                .map_err(|source| AuditCheckError::Consistency {
                    old_size: prev.tree_size,
                    source,
                })?;
                Ok(Some(prev.tree_size))
            }
            _ => Ok(None),
        }
    }

    fn integrity(&self, consistent_from: Option<u64>) -> LogIntegrity {
        LogIntegrity {
            problems: Vec::new(),
            start: self.proof.start,
            end: self.proof.end,
            checkpoints: self.checkpoints.len() as u64
                + u64::from(!self.checkpoints.contains(&self.anchor)),
            max_checkpoint_gap_secs: self.max_gap_secs,
            consistent_from,
        }
    }

    /// The proof document.
    pub fn proof(&self) -> &AuditProof {
        &self.proof
    }

    /// The chain value after the entries seen so far.
    #[cfg(feature = "export")]
    pub(crate) fn chain(&self) -> Hash {
        self.chain
    }

    /// Set the expected end chain (the exporter learns it only after streaming).
    #[cfg(feature = "export")]
    pub(crate) fn set_end_chain(&mut self, chain: Hash) {
        self.proof.end_chain = chain;
    }
}

/// True when `entry` is about the scope's object.
pub(crate) fn in_scope(scope: &Scope, entry: &Entry) -> bool {
    match scope {
        Scope::All => true,
        Scope::Vm(id) => entry
            .target
            .as_ref()
            .is_some_and(|t| t.kind == TargetKind::Vm && t.id == *id),
    }
}

/// Largest interval inside `period` without a checkpoint, in seconds.
fn max_gap(period: &Period, times: impl Iterator<Item = DateTime<Utc>>) -> u64 {
    let mut times: Vec<DateTime<Utc>> = times.collect();
    times.sort();
    let mut prev = period.from();
    let mut gap = 0i64;
    for t in times {
        if t <= period.from() {
            continue;
        }
        let t = t.min(period.to());
        gap = gap.max((t - prev).num_seconds());
        prev = t;
        if t >= period.to() {
            break;
        }
    }
    gap = gap.max((period.to() - prev).num_seconds());
    gap.max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, TimeZone};

    #[test]
    fn gaps_are_measured_inside_the_period() {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        let p = Period::new(t0, t0 + TimeDelta::hours(1)).unwrap();
        let at = |m: i64| t0 + TimeDelta::minutes(m);
        assert_eq!(
            max_gap(&p, [at(-5), at(10), at(20), at(65)].into_iter()),
            40 * 60
        );
        assert_eq!(max_gap(&p, [at(30)].into_iter()), 30 * 60);
        assert_eq!(max_gap(&p, std::iter::empty()), 60 * 60);
        assert_eq!(max_gap(&p, [at(0), at(59)].into_iter()), 59 * 60);
    }
}
