//! In-memory fakes behind [`VmBackend`] and [`AuditStore`] for router tests (unit tests only).

use crate::backend::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// A VM host that keeps VMs in a map and follows the supervisor's state machine.
#[derive(Default)]
pub struct FakeVms {
    vms: Mutex<BTreeMap<String, VmDetail>>,
    next: Mutex<u32>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

impl FakeVms {
    fn with<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut VmDetail) -> Result<T, VmError>,
    ) -> Result<T, VmError> {
        let mut map = self.vms.lock().unwrap();
        let vm = map
            .get_mut(id)
            .ok_or_else(|| VmError::NotFound(id.to_owned()))?;
        f(vm)
    }

    fn transition(
        &self,
        id: &str,
        op: &'static str,
        from: &[VmState],
        to: VmState,
    ) -> Result<VmDetail, VmError> {
        self.with(id, |vm| {
            if !from.contains(&vm.summary.state) {
                return Err(VmError::InvalidState {
                    id: id.to_owned(),
                    state: vm.summary.state,
                    op,
                });
            }
            vm.summary.state = to;
            if to == VmState::Running && op == "start" {
                vm.summary.boot_latency_us = Some(1234);
                vm.summary.rss_kib = Some(2048);
            }
            vm.history.push(StateChange {
                state: to,
                at: now(),
                reason: Some(format!("{op} requested")),
            });
            Ok(vm.clone())
        })
    }
}

impl VmBackend for FakeVms {
    fn host_info(&self) -> HostInfo {
        HostInfo {
            hostname: "test-host".into(),
            kvm_mode: "fake".into(),
            tpm_kind: "none (fake)".into(),
            attestation: "not attested (fake backend)".into(),
        }
    }

    fn create(&self, spec: VmSpec) -> Result<VmDetail, VmError> {
        if spec.cmdline.contains("reject-me") {
            return Err(VmError::Rejected {
                field: "cmdline",
                reason: "the fake host refuses this".into(),
            });
        }
        let mut n = self.next.lock().unwrap();
        *n += 1;
        let id = format!("vm-{:04}", *n);
        let measurements = vec![Measurement {
            what: "kernel".into(),
            sha256: spec.kernel.sha256.clone(),
            pcr: Some(9),
            approved: Some(true),
        }];
        let d = VmDetail {
            summary: VmSummary {
                id: id.clone(),
                name: spec.name,
                state: VmState::Created,
                vcpus: spec.vcpus,
                memory_mib: spec.memory_mib,
                created_at: now(),
                boot_latency_us: None,
                rss_kib: None,
                kernel_sha256: spec.kernel.sha256,
                trace_id: spec.trace_id,
            },
            cmdline: spec.cmdline,
            initrd_sha256: spec.initrd.map(|i| i.sha256),
            exit_reason: None,
            history: vec![StateChange {
                state: VmState::Created,
                at: now(),
                reason: None,
            }],
            measurements,
        };
        self.vms.lock().unwrap().insert(id, d.clone());
        Ok(d)
    }

    fn list(&self) -> Result<Vec<VmSummary>, VmError> {
        Ok(self
            .vms
            .lock()
            .unwrap()
            .values()
            .rev()
            .map(|d| d.summary.clone())
            .collect())
    }

    fn show(&self, id: &str) -> Result<VmDetail, VmError> {
        self.with(id, |vm| Ok(vm.clone()))
    }

    fn start(&self, id: &str) -> Result<VmDetail, VmError> {
        // Like the supervisor: only a created VM boots; stopped and failed are final.
        self.transition(id, "start", &[VmState::Created], VmState::Running)
    }

    fn pause(&self, id: &str) -> Result<VmDetail, VmError> {
        self.transition(id, "pause", &[VmState::Running], VmState::Paused)
    }

    fn resume(&self, id: &str) -> Result<VmDetail, VmError> {
        self.transition(id, "resume", &[VmState::Paused], VmState::Running)
    }

    fn stop(&self, id: &str) -> Result<VmDetail, VmError> {
        use VmState::*;
        self.transition(id, "stop", &[Booting, Running, Paused], Stopped)
    }

    fn destroy(&self, id: &str) -> Result<(), VmError> {
        self.vms
            .lock()
            .unwrap()
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| VmError::NotFound(id.to_owned()))
    }

    fn console_tail(&self, id: &str, bytes: usize) -> Result<String, VmError> {
        self.with(id, |vm| {
            let text = format!(
                "SAKSHI-TEST-GUEST v1 entry=linux64\ncmdline: {}\nboot-complete\n",
                vm.cmdline
            );
            let start = text.len().saturating_sub(bytes);
            Ok(text[start..].to_owned())
        })
    }
}

/// An audit log in memory: hash chain, no Merkle tree (proofs are placeholders).
#[derive(Default)]
pub struct MemAudit {
    entries: Mutex<Vec<AuditEntryView>>,
}

impl MemAudit {
    /// Everything appended so far, oldest first.
    pub fn all(&self) -> Vec<AuditEntryView> {
        self.entries.lock().unwrap().clone()
    }

    /// The last entry.
    pub fn last(&self) -> Option<AuditEntryView> {
        self.entries.lock().unwrap().last().cloned()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

fn matches(f: &AuditFilter, e: &AuditEntryView) -> bool {
    f.actor.as_ref().is_none_or(|a| *a == e.actor)
        && f.action.as_ref().is_none_or(|a| {
            if a.ends_with('.') {
                e.action.starts_with(a.as_str())
            } else {
                *a == e.action
            }
        })
        && f.target.as_ref().is_none_or(|t| *t == e.target)
        && f.outcome.is_none_or(|o| o == e.outcome)
        && f.since
            .as_ref()
            .is_none_or(|s| e.time.as_str() >= s.as_str())
        && f.until
            .as_ref()
            .is_none_or(|u| e.time.as_str() < u.as_str())
}

impl AuditStore for MemAudit {
    fn append(&self, r: AuditRecord) -> Result<u64, AuditAppendError> {
        let mut v = self.entries.lock().unwrap();
        let index = v.len() as u64;
        let prev = v
            .last()
            .and_then(|e| e.entry_hash.clone())
            .unwrap_or_default();
        let hash = hex::encode(Sha256::digest(format!(
            "{prev}|{}|{}|{}|{}",
            r.actor,
            r.action.as_str(),
            r.target,
            r.details
        )));
        v.push(AuditEntryView {
            index,
            time: now(),
            actor: r.actor,
            origin: r.origin,
            action: r.action.as_str().to_owned(),
            target: r.target,
            outcome: r.outcome,
            details: r.details,
            trace_id: r.trace_id,
            entry_hash: Some(hash),
        });
        Ok(index)
    }

    fn query(
        &self,
        f: &AuditFilter,
        cursor: AuditCursor,
        limit: u32,
    ) -> Result<AuditPage, AuditQueryError> {
        let v = self.entries.lock().unwrap();
        let all: Vec<AuditEntryView> = v
            .iter()
            .filter(|e| matches(f, e))
            .map(|e| AuditEntryView {
                entry_hash: None,
                ..e.clone()
            })
            .collect();
        let all: Vec<&AuditEntryView> = all.iter().collect();
        let limit = limit as usize;
        let mut page: Vec<AuditEntryView> = match cursor {
            AuditCursor::Newest => all.iter().rev().take(limit).map(|e| (*e).clone()).collect(),
            AuditCursor::Before(b) => all
                .iter()
                .rev()
                .filter(|e| e.index < b)
                .take(limit)
                .map(|e| (*e).clone())
                .collect(),
            AuditCursor::After(a) => {
                let mut p: Vec<_> = all
                    .iter()
                    .filter(|e| e.index > a)
                    .take(limit)
                    .map(|e| (*e).clone())
                    .collect();
                p.reverse();
                p
            }
        };
        page.truncate(limit);
        let older = page
            .last()
            .is_some_and(|l| all.iter().any(|e| e.index < l.index));
        let newer = page
            .first()
            .is_some_and(|f| all.iter().any(|e| e.index > f.index));
        Ok(AuditPage {
            next_before: older.then(|| page.last().map(|e| e.index)).flatten(),
            prev_after: newer.then(|| page.first().map(|e| e.index)).flatten(),
            entries: page,
        })
    }

    fn entry(&self, index: u64) -> Result<AuditEntryView, AuditQueryError> {
        self.entries
            .lock()
            .unwrap()
            .get(index as usize)
            .cloned()
            .ok_or_else(|| AuditQueryError::NotFound(format!("no entry {index}")))
    }

    fn head(&self) -> Result<(u64, String), AuditQueryError> {
        let v = self.entries.lock().unwrap();
        Ok((
            v.len() as u64,
            v.last()
                .and_then(|e| e.entry_hash.clone())
                .unwrap_or_default(),
        ))
    }

    fn verify(&self) -> Result<VerifyReport, AuditQueryError> {
        let (size, root) = self.head()?;
        Ok(VerifyReport {
            ok: true,
            entries: size,
            root,
            checkpoints_checked: 0,
            first_bad_index: None,
            problem: None,
        })
    }

    fn inclusion_proof(
        &self,
        index: u64,
        tree_size: u64,
    ) -> Result<InclusionProofView, AuditQueryError> {
        let (size, root) = self.head()?;
        if tree_size > size {
            return Err(AuditQueryError::Invalid {
                field: "tree_size",
                reason: format!("the log has {size} entries"),
            });
        }
        let e = self.entry(index)?;
        Ok(InclusionProofView {
            index,
            tree_size,
            leaf_hash: e.entry_hash.unwrap_or_default(),
            root,
            path: vec!["00".repeat(32)],
        })
    }

    fn consistency_proof(
        &self,
        from_size: u64,
        to_size: u64,
    ) -> Result<ConsistencyProofView, AuditQueryError> {
        let (_, root) = self.head()?;
        Ok(ConsistencyProofView {
            from_size,
            to_size,
            from_root: root.clone(),
            to_root: root,
            path: vec![],
        })
    }

    fn checkpoints(&self, _limit: u32) -> Result<Vec<CheckpointView>, AuditQueryError> {
        let (size, root) = self.head()?;
        Ok(vec![CheckpointView {
            size,
            root: root.clone(),
            time: now(),
            text: format!("sakshi/test\n{size}\n{root}\n"),
        }])
    }
}
