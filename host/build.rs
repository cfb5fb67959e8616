//! Builds the Sakshi test guest (host/guest/) and exports its path as `SAKSHI_TEST_GUEST`.
//!
//! The guest is a freestanding ELF that needs its own compiler flags, so this script runs
//! `rustc` (the `RUSTC` cargo gives build scripts) directly. Cargo applies RUSTFLAGS /
//! CARGO_ENCODED_RUSTFLAGS and wrappers (clippy-driver under `cargo clippy`) itself, on the
//! command lines it builds; rustc does not read them, so none of them reach the guest.

use std::env;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::process::Command;

/// Why the guest could not be built.
enum BuildError {
    /// A variable cargo always sets for build scripts is missing.
    MissingEnv(&'static str),
    /// `rustc` could not be started.
    Spawn(std::io::Error),
    /// `rustc` ran and failed; its diagnostics are in `stderr`.
    Rustc {
        status: std::process::ExitStatus,
        stderr: String,
    },
}

impl fmt::Debug for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::MissingEnv(name) => write!(f, "cargo did not set {name}"),
            BuildError::Spawn(e) => write!(f, "cannot run rustc for the test guest: {e}"),
            BuildError::Rustc { status, stderr } => {
                write!(f, "building the test guest failed ({status}):\n{stderr}")
            }
        }
    }
}

fn env_var(name: &'static str) -> Result<OsString, BuildError> {
    env::var_os(name).ok_or(BuildError::MissingEnv(name))
}

fn main() -> Result<(), BuildError> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);
    let rustc = env_var("RUSTC")?;

    let guest_dir = manifest_dir.join("guest");
    let main_rs = guest_dir.join("src").join("main.rs");
    let linker_script = guest_dir.join("linker.ld");
    let output = out_dir.join("sakshi-test-guest");

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=guest");

    let mut link_script_arg = OsString::from("link-arg=-T");
    link_script_arg.push(&linker_script);

    let result = Command::new(&rustc)
        .args([
            "--edition=2024",
            "--crate-type=bin",
            "--crate-name=sakshi_test_guest",
            "--target=x86_64-unknown-linux-gnu",
            "-D",
            "warnings",
            "-C",
            "panic=abort",
            "-C",
            "relocation-model=static",
            // Under KVM-PVM every guest instruction is emulated: optimise for instructions
            // executed, not size (-O3 runs ~10% fewer than -Os up to boot-complete).
            "-C",
            "opt-level=3",
            "-C",
            "codegen-units=1",
            "-C",
            "debuginfo=0",
            "-C",
            "strip=debuginfo",
            // Under PVM, KVM runs this guest through its instruction emulator, which lacks most
            // SSE instructions: keep the compiler from using them. rustc warns that the target
            // ABI wants sse2; the guest has no floating point, so that warning is moot.
            "-C",
            "target-feature=-sse,-sse2",
            "-C",
            "link-arg=-nostartfiles",
            "-C",
            "link-arg=-nostdlib",
            "-C",
            "link-arg=-static",
            "-C",
            "link-arg=-Wl,--build-id=none",
            "-C",
        ])
        .arg(link_script_arg)
        .arg("-o")
        .arg(&output)
        .arg(&main_rs)
        .output()
        .map_err(BuildError::Spawn)?;

    if !result.status.success() {
        return Err(BuildError::Rustc {
            status: result.status,
            stderr: String::from_utf8_lossy(&result.stderr).into_owned(),
        });
    }
    println!("cargo:rustc-env=SAKSHI_TEST_GUEST={}", output.display());
    Ok(())
}
