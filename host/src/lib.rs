//! Sakshi's micro-VM runtime.
//!
//! `sakshi-vmm` runs ONE micro-VM per process (KVM via kvm-ioctls, guest memory via vm-memory,
//! kernels via linux-loader, legacy devices via vm-superio); the [`supervisor`] spawns, tracks
//! and reaps those processes. The process contract (config, events, exit codes, control
//! socket) is in `docs/CONTRACTS.md`; memory layout, devices and ports in `docs/VMM.md`.
#![deny(missing_docs)]

mod config;
mod control;
mod cpuid;
mod devices;
mod events;
mod gdt;
mod kvm;
mod layout;
mod loader;
mod mptable;
mod vcpu;
mod vmm;

pub mod bench;
pub mod supervisor;
pub mod test_guest;

pub use config::{
    BootMode, ConfigError, ConsoleConfig, CpuConfig, CpuFeature, Field, MAX_CMDLINE_LEN,
    MAX_MEMORY_MIB, MAX_VCPUS, MIN_MEMORY_MIB, PvmWorkarounds, VmConfig,
};
pub use control::{
    ControlError, ControlRequest, ControlResponse, ErrorKind, MAX_REQUEST_LINE, MAX_TAIL_BYTES,
    RunState, VmStatus,
};
pub use cpuid::CpuPolicy;
pub use events::{EventKind, ExitReason, StopMode, VmmEvent};
pub use kvm::{KvmError, pvm_host};
pub use loader::LoadError;
pub use mptable::MpTableError;
pub use vmm::{Outcome, StartError, VmmOptions, run};
