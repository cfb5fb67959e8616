//! `sakshi-vmm` on bad input: every refusal is exit status 1 with one line on stderr naming the
//! problem, and leaves no socket or file behind. These fail before KVM is opened.

#[path = "kvm_vmm_common/mod.rs"]
mod common;

use anyhow::Result;
use common::{guest, run_refused};
use serde_json::{Value, json};

/// Runs a refused config and checks the common contract; returns stderr.
fn refused(config: Value) -> Result<String> {
    let (status, stderr, left) = run_refused(&config)?;
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("sakshi-vmm: error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(left, ["vm.json"], "nothing left behind");
    Ok(stderr)
}

fn scratch(name: &str, bytes: &[u8]) -> Result<(tempfile::TempDir, std::path::PathBuf)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(name);
    std::fs::write(&path, bytes)?;
    Ok((dir, path))
}

#[test]
fn vmm_refuses_missing_kernel() -> Result<()> {
    let e = refused(json!({"kernel": "/nonexistent/vmlinux"}))?;
    assert!(e.contains("field `kernel`"), "{e}");
    Ok(())
}

#[test]
fn vmm_refuses_unknown_field() -> Result<()> {
    let e = refused(json!({"kernel": guest(), "memroy_mib": 64}))?;
    assert!(e.contains("memroy_mib"), "{e}");
    Ok(())
}

#[test]
fn vmm_refuses_zero_vcpus() -> Result<()> {
    let e = refused(json!({"kernel": guest(), "vcpus": 0}))?;
    assert!(e.contains("field `vcpus`"), "{e}");
    Ok(())
}

#[test]
fn vmm_refuses_memory_out_of_bounds() -> Result<()> {
    let e = refused(json!({"kernel": guest(), "memory_mib": 8}))?;
    assert!(e.contains("field `memory_mib`"), "{e}");
    Ok(())
}

#[test]
fn vmm_refuses_cmdline_too_long() -> Result<()> {
    let e = refused(json!({"kernel": guest(), "cmdline": "x".repeat(5000)}))?;
    assert!(e.contains("field `cmdline`"), "{e}");
    Ok(())
}

#[test]
fn vmm_refuses_initrd_larger_than_memory() -> Result<()> {
    let (_d, initrd) = scratch("initrd", &vec![7u8; 17 << 20])?;
    let e = refused(json!({"kernel": guest(), "memory_mib": 16, "initrd": initrd}))?;
    assert!(e.contains("initrd of 17825792 bytes does not fit"), "{e}");
    Ok(())
}

#[test]
fn vmm_refuses_truncated_elf() -> Result<()> {
    let bytes = std::fs::read(guest())?;
    for len in [3, 64, 200, bytes.len() / 2] {
        let (_d, k) = scratch("vmlinux", &bytes[..len])?;
        let e = refused(json!({"kernel": k}))?;
        assert!(e.contains("kernel"), "len {len}: {e}");
    }
    Ok(())
}

#[test]
fn vmm_refuses_corrupt_elf() -> Result<()> {
    let mut bytes = std::fs::read(guest())?;
    bytes[4] = 1; // ELFCLASS32
    let (_d, k) = scratch("vmlinux", &bytes)?;
    let e = refused(json!({"kernel": k}))?;
    assert!(e.contains("not a 64-bit x86-64"), "{e}");
    let mut bytes = std::fs::read(guest())?;
    bytes[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes()); // e_phoff
    let (_d, k) = scratch("vmlinux", &bytes)?;
    let e = refused(json!({"kernel": k}))?;
    assert!(e.contains("cannot load ELF kernel"), "{e}");
    Ok(())
}

#[test]
fn vmm_refuses_corrupt_bzimage() -> Result<()> {
    // A bzImage header whose setup sectors run past the end of the file.
    let mut img = vec![0u8; 0x400];
    img[0x1f1] = 0xff;
    img[0x202..0x206].copy_from_slice(b"HdrS");
    img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    img[0x211] = 1;
    img[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
    let (_d, k) = scratch("bzImage", &img)?;
    let e = refused(json!({"kernel": k}))?;
    assert!(e.contains("bzImage"), "{e}");
    // An old (32-bit only) bzImage.
    img[0x1f1] = 1;
    img[0x206..0x208].copy_from_slice(&0x0206u16.to_le_bytes());
    let (_d, k) = scratch("bzImage", &img)?;
    let e = refused(json!({"kernel": k}))?;
    assert!(e.contains("no 64-bit entry"), "{e}");
    Ok(())
}

#[test]
fn vmm_refuses_garbage_kernel() -> Result<()> {
    let (_d, k) = scratch("kernel", &[0xcc; 8192])?;
    let e = refused(json!({"kernel": k}))?;
    assert!(e.contains("neither an ELF image nor a bzImage"), "{e}");
    Ok(())
}

#[test]
fn vmm_refuses_missing_config_file() -> Result<()> {
    let out = std::process::Command::new(common::vmm_bin())
        .args(["--config", "/nonexistent/vm.json"])
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("cannot read config file"), "{e}");
    Ok(())
}

#[test]
fn vmm_refuses_bad_events_fd_and_leaves_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("vm.json");
    let console = dir.path().join("console.log");
    std::fs::write(
        &config,
        serde_json::to_vec(&json!({"kernel": guest(), "console": {"file": console}}))?,
    )?;
    let out = std::process::Command::new(common::vmm_bin())
        .arg("--config")
        .arg(&config)
        .arg("--api-sock")
        .arg(dir.path().join("vmm.sock"))
        .args(["--events-fd", "999"])
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--events-fd 999"));
    let left: Vec<_> = std::fs::read_dir(dir.path())?.collect();
    assert_eq!(left.len(), 1, "only vm.json: {left:?}");
    Ok(())
}

#[test]
fn kvm_vmm_refuses_existing_socket_path_and_removes_its_console_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("vm.json");
    let console = dir.path().join("console.log");
    let sock = dir.path().join("taken.sock");
    std::fs::write(&sock, b"not a socket")?;
    std::fs::write(
        &config,
        serde_json::to_vec(&json!({"kernel": guest(), "console": {"file": console}}))?,
    )?;
    let out = std::process::Command::new(common::vmm_bin())
        .arg("--config")
        .arg(&config)
        .arg("--api-sock")
        .arg(&sock)
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot bind control socket"));
    assert!(
        !console.exists(),
        "console file created by the failed start is removed"
    );
    assert_eq!(
        std::fs::read(&sock)?,
        b"not a socket",
        "foreign file untouched"
    );
    Ok(())
}

#[test]
fn vmm_prints_test_guest_path() -> Result<()> {
    let out = std::process::Command::new(common::vmm_bin())
        .arg("--print-test-guest")
        .output()?;
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout)?.trim_end(),
        guest().to_str().unwrap()
    );
    Ok(())
}
