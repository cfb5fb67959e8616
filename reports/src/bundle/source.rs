//! Where the exporter reads the audit log from.
//!
//! [`AuditSource`] is what [`super::export_bundle`] needs from a log: the sequence range of a
//! period, checkpoints, an anchor checkpoint with a range proof, consistency proofs and a
//! streaming read of entries. It is implemented for the SQLite [`AuditLog`].

use sakshi_audit::{AuditLog, ExportedEntry, Hash, Query, RangeProof, SignedCheckpoint};

use crate::evidence::Period;

/// A failure of the underlying log (its own typed error, boxed).
pub type SourceError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The exporter's view of an audit log.
pub trait AuditSource {
    /// The log's origin line.
    fn origin(&self) -> String;
    /// `[start, end)`: the entries whose time falls in the period.
    fn seq_range(&self, period: &Period) -> Result<(u64, u64), SourceError>;
    /// Signed checkpoints with tree size in `[from, to]`, in log order.
    fn checkpoints(&self, from: u64, to: u64) -> Result<Vec<SignedCheckpoint>, SourceError>;
    /// A signed checkpoint with tree size >= `end` (writing one if needed), the compact-range
    /// proof of `[start, end)` in its tree, and the chain value before `start`.
    fn anchor(
        &self,
        start: u64,
        end: u64,
    ) -> Result<(SignedCheckpoint, RangeProof, Hash), SourceError>;
    /// RFC 9162 inclusion proof of entry `seq` in the tree of `tree_size` entries.
    fn inclusion_proof(&self, seq: u64, tree_size: u64) -> Result<Vec<Hash>, SourceError>;
    /// RFC 9162 consistency proof between two tree sizes.
    fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, SourceError>;
    /// Call `f` for every entry in `[start, end)`, in order, with bounded memory.
    fn for_each_entry(
        &self,
        start: u64,
        end: u64,
        f: &mut dyn FnMut(ExportedEntry) -> Result<(), SourceError>,
    ) -> Result<(), SourceError>;
}

/// Entries read per export call when streaming from SQLite.
const CHUNK: u64 = 4096;

/// The anchor could not be pinned: checkpoints kept arriving between reads.
#[derive(Debug, thiserror::Error)]
#[error("the latest checkpoint changed while the range proof was being read; retry the export")]
pub struct AnchorRace;

impl AuditSource for AuditLog {
    fn origin(&self) -> String {
        AuditLog::origin(self).to_owned()
    }

    fn seq_range(&self, period: &Period) -> Result<(u64, u64), SourceError> {
        let first = |q: Query| -> Result<Option<u64>, SourceError> {
            Ok(self.query(&q)?.entries.first().map(|e| e.seq))
        };
        let size = self.size()?;
        let start = first(Query {
            since: Some(period.from()),
            limit: 1,
            ..Query::default()
        })?
        .unwrap_or(size);
        // Times are assigned at append and never go backwards, so seq order is time order.
        let end = first(Query {
            since: Some(period.to()),
            limit: 1,
            ..Query::default()
        })?
        .unwrap_or(size);
        Ok((start.min(end), end))
    }

    fn checkpoints(&self, from: u64, to: u64) -> Result<Vec<SignedCheckpoint>, SourceError> {
        Ok(AuditLog::checkpoints(self, from, to)?)
    }

    fn anchor(
        &self,
        start: u64,
        end: u64,
    ) -> Result<(SignedCheckpoint, RangeProof, Hash), SourceError> {
        let covered = self
            .latest_checkpoint()?
            .is_some_and(|c| c.checkpoint().tree_size >= end);
        if !covered {
            self.checkpoint()?;
        }
        for _ in 0..5 {
            let left = self.export(start, start)?;
            let right = self.export(end, end)?;
            if left.checkpoint == right.checkpoint {
                let cp = SignedCheckpoint::parse(&right.checkpoint)?;
                let proof = RangeProof {
                    left: left.proof.left,
                    right: right.proof.right,
                };
                return Ok((cp, proof, left.prev_chain));
            }
        }
        Err(Box::new(AnchorRace))
    }

    fn inclusion_proof(&self, seq: u64, tree_size: u64) -> Result<Vec<Hash>, SourceError> {
        Ok(AuditLog::inclusion_proof(self, seq, tree_size)?.hashes)
    }

    fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, SourceError> {
        Ok(AuditLog::consistency_proof(self, old_size, new_size)?.hashes)
    }

    fn for_each_entry(
        &self,
        start: u64,
        end: u64,
        f: &mut dyn FnMut(ExportedEntry) -> Result<(), SourceError>,
    ) -> Result<(), SourceError> {
        let mut s = start;
        while s < end {
            let e = (s + CHUNK).min(end);
            for entry in self.export(s, e)?.entries {
                f(entry)?;
            }
            s = e;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod memory {
    //! An in-memory log for unit tests.
    use chrono::{DateTime, Utc};
    use sakshi_audit::{
        ApplianceKey, Checkpoint, Entry, ExportedEntry, GENESIS_CHAIN, Hash, MemoryTree, NewEntry,
        RangeProof, SignedCheckpoint, chain_hash, consistency_proof, inclusion_proof, leaf_hash,
        range_proof,
    };

    use super::{AuditSource, SourceError};
    use crate::evidence::Period;

    pub(crate) struct MemorySource {
        pub(crate) origin: String,
        pub(crate) key: ApplianceKey,
        pub(crate) entries: Vec<(ExportedEntry, DateTime<Utc>)>,
        pub(crate) leaves: Vec<Hash>,
        pub(crate) checkpoints: Vec<SignedCheckpoint>,
    }

    impl MemorySource {
        pub(crate) fn new(key: ApplianceKey) -> Self {
            MemorySource {
                origin: "sakshi.test/audit/1".into(),
                key,
                entries: Vec::new(),
                leaves: Vec::new(),
                checkpoints: Vec::new(),
            }
        }

        pub(crate) fn append(&mut self, new: NewEntry, time: DateTime<Utc>) -> u64 {
            let seq = self.entries.len() as u64;
            let canonical = Entry::from_new(new, seq, time).canonical().unwrap();
            let leaf = leaf_hash(canonical.as_bytes());
            let prev = self.entries.last().map_or(GENESIS_CHAIN, |(e, _)| e.chain);
            let chain = chain_hash(&prev, &leaf);
            self.leaves.push(leaf);
            self.entries.push((
                ExportedEntry {
                    seq,
                    canonical,
                    chain,
                },
                time,
            ));
            seq
        }

        pub(crate) fn checkpoint(&mut self, time: DateTime<Utc>) -> SignedCheckpoint {
            let tree = MemoryTree::new(self.leaves.clone());
            let cp = Checkpoint {
                origin: self.origin.clone(),
                tree_size: tree.size(),
                root: tree.root_at(tree.size()),
                time,
                prev: self.checkpoints.last().map(|c| c.hash()),
            }
            .sign(&self.key)
            .unwrap();
            self.checkpoints.push(cp.clone());
            cp
        }
    }

    impl AuditSource for MemorySource {
        fn origin(&self) -> String {
            self.origin.clone()
        }

        fn seq_range(&self, period: &Period) -> Result<(u64, u64), SourceError> {
            let pos = |pred: &dyn Fn(&DateTime<Utc>) -> bool| {
                self.entries
                    .iter()
                    .position(|(_, t)| pred(t))
                    .map_or(self.entries.len() as u64, |p| p as u64)
            };
            Ok((pos(&|t| *t >= period.from()), pos(&|t| *t >= period.to())))
        }

        fn checkpoints(&self, from: u64, to: u64) -> Result<Vec<SignedCheckpoint>, SourceError> {
            Ok(self
                .checkpoints
                .iter()
                .filter(|c| (from..=to).contains(&c.checkpoint().tree_size))
                .cloned()
                .collect())
        }

        fn anchor(
            &self,
            start: u64,
            end: u64,
        ) -> Result<(SignedCheckpoint, RangeProof, Hash), SourceError> {
            let cp = self
                .checkpoints
                .iter()
                .find(|c| c.checkpoint().tree_size >= end)
                .cloned()
                .ok_or("no checkpoint covers the range")?;
            let tree = MemoryTree::new(self.leaves.clone());
            let proof = range_proof(&tree, start, end, cp.checkpoint().tree_size)?;
            let prev = if start == 0 {
                GENESIS_CHAIN
            } else {
                self.entries[start as usize - 1].0.chain
            };
            Ok((cp, proof, prev))
        }

        fn inclusion_proof(&self, seq: u64, tree_size: u64) -> Result<Vec<Hash>, SourceError> {
            Ok(inclusion_proof(
                &MemoryTree::new(self.leaves.clone()),
                seq,
                tree_size,
            )?)
        }

        fn consistency_proof(
            &self,
            old_size: u64,
            new_size: u64,
        ) -> Result<Vec<Hash>, SourceError> {
            Ok(consistency_proof(
                &MemoryTree::new(self.leaves.clone()),
                old_size,
                new_size,
            )?)
        }

        fn for_each_entry(
            &self,
            start: u64,
            end: u64,
            f: &mut dyn FnMut(ExportedEntry) -> Result<(), SourceError>,
        ) -> Result<(), SourceError> {
            for (e, _) in &self.entries[start as usize..end as usize] {
                f(e.clone())?;
            }
            Ok(())
        }
    }
}
