//! `sakshi evidence export`, `sakshi report`, `sakshi patch record|list`: evidence bundles,
//! compliance reports and the patch ledger over the API.

use super::client::{Api, enc, query};
use super::{Remote, print_json, s, table};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::path::PathBuf;

/// `sakshi evidence ...`
#[derive(Debug, Subcommand)]
pub enum EvidenceCmd {
    /// Download a signed evidence bundle for a period and scope (check it offline with
    /// `sakshi-verify bundle FILE --key appliance.pub.pem`).
    Export {
        /// Start of the period, RFC 3339 (inclusive).
        #[arg(long)]
        from: String,
        /// End of the period, RFC 3339 (exclusive).
        #[arg(long)]
        to: String,
        /// `all` or `vm:ID`.
        #[arg(long, default_value = "all")]
        scope: String,
        /// Output file (or a directory: the appliance's file name is used).
        #[arg(long)]
        out: PathBuf,
    },
}

/// `sakshi report ...`
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Framework id or unique prefix (`pci-dss`, `rbi-itgrca-2023`, `cert-in-2022`, ...).
    #[arg(long)]
    framework: String,
    /// Start of the period, RFC 3339 (inclusive).
    #[arg(long)]
    from: String,
    /// End of the period, RFC 3339 (exclusive).
    #[arg(long)]
    to: String,
    /// `all` or `vm:ID`.
    #[arg(long)]
    scope: Option<String>,
    /// Output HTML file (or a directory).
    #[arg(long)]
    out: PathBuf,
}

/// `sakshi patch ...`
// Parsed once per process; boxing the arguments would only complicate the clap derive.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum PatchCmd {
    /// Record a patch in the ledger (an audit entry); with --golden-kernel, approve the patched
    /// guest image into measured boot's golden set.
    Record(RecordArgs),
    /// The ledger and per-CVE time-to-patch (PCI DSS 6.3.3).
    List,
}

/// `sakshi patch record` arguments.
#[derive(Debug, Args)]
pub struct RecordArgs {
    /// appliance, vmm, guest_kernel or guest_image.
    #[arg(long)]
    component: String,
    /// Version before the patch.
    #[arg(long)]
    from_version: String,
    /// Version after the patch.
    #[arg(long)]
    to_version: String,
    /// A fixed CVE as `CVE-ID:severity:vendor-release-date`, e.g.
    /// `CVE-2026-1234:critical:2026-11-02` (repeatable).
    #[arg(long = "cve", value_parser = parse_cve)]
    cves: Vec<Value>,
    /// When it was applied (RFC 3339); absent = known and pending.
    #[arg(long)]
    applied: Option<String>,
    /// Digest of what went into service, `[NAME=]SHA256` (repeatable).
    #[arg(long = "artifact-sha256", value_parser = parse_artifact)]
    artifacts: Vec<(Option<String>, String)>,
    /// Who approved the change.
    #[arg(long)]
    approver: String,
    /// SHA-256 of the patched guest kernel to approve into the golden set.
    #[arg(long)]
    golden_kernel: Option<String>,
    /// SHA-256 of the patched guest initrd (with --golden-kernel).
    #[arg(long, requires = "golden_kernel")]
    golden_initrd: Option<String>,
    /// Free text.
    #[arg(long)]
    notes: Option<String>,
}

/// Parses `CVE-ID:severity:YYYY-MM-DD` into the API's CVE object.
pub fn parse_cve(spec: &str) -> Result<Value, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [id, severity, released] = parts.as_slice() else {
        return Err(format!(
            "{spec:?}: expected CVE-ID:severity:release-date (e.g. CVE-2026-1234:critical:2026-11-02)"
        ));
    };
    let severity = severity.to_ascii_lowercase();
    if !["low", "medium", "high", "critical"].contains(&severity.as_str()) {
        return Err(format!(
            "{spec:?}: severity must be low, medium, high or critical"
        ));
    }
    if chrono::NaiveDate::parse_from_str(released, "%Y-%m-%d").is_err() {
        return Err(format!(
            "{spec:?}: the vendor release date must be YYYY-MM-DD"
        ));
    }
    Ok(json!({ "id": id, "severity": severity, "vendor_released": released }))
}

/// Parses `[NAME=]SHA256`.
pub fn parse_artifact(spec: &str) -> Result<(Option<String>, String), String> {
    let (name, sha) = match spec.split_once('=') {
        Some((n, h)) if !n.is_empty() => (Some(n.to_owned()), h),
        Some(_) => return Err(format!("{spec:?}: empty artifact name")),
        None => (None, spec),
    };
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{spec:?}: the SHA-256 must be 64 hex digits"));
    }
    Ok((name, sha.to_ascii_lowercase()))
}

impl RecordArgs {
    /// The `POST /api/v1/patches` body.
    pub fn body(&self) -> Value {
        let artifacts: Vec<Value> = self
            .artifacts
            .iter()
            .enumerate()
            .map(|(i, (name, sha))| {
                let name = name
                    .clone()
                    .unwrap_or_else(|| format!("{}-{}-{}", self.component, self.to_version, i + 1));
                json!({ "name": name, "sha256": sha })
            })
            .collect();
        let mut b = json!({
            "component": self.component,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "cves": self.cves,
            "artifacts": artifacts,
            "approver": self.approver,
        });
        if let Some(a) = &self.applied {
            b["applied_at"] = a.clone().into();
        }
        if let Some(k) = &self.golden_kernel {
            b["golden_image"] = json!({ "kernel_sha256": k });
            if let Some(i) = &self.golden_initrd {
                b["golden_image"]["initrd_sha256"] = i.clone().into();
            }
        }
        if let Some(n) = &self.notes {
            b["notes"] = n.clone().into();
        }
        b
    }
}

/// `sakshi evidence ...`
pub fn evidence(r: &Remote, cmd: EvidenceCmd) -> Result<i32> {
    let api = Api::new(&r.url, r.token.clone());
    match cmd {
        EvidenceCmd::Export {
            from,
            to,
            scope,
            out,
        } => {
            check_out(&out)?;
            let (path, bytes) = api.download(
                "/api/v1/evidence",
                Some(json!({ "from": from, "to": to, "scope": scope })),
                &out,
            )?;
            if r.json {
                print_json(&json!({ "file": path.display().to_string(), "bytes": bytes }))?;
            } else {
                println!(
                    "evidence bundle ({bytes} bytes) written to {}",
                    path.display()
                );
            }
        }
    }
    Ok(0)
}

/// `sakshi report ...`
pub fn report(r: &Remote, a: ReportArgs) -> Result<i32> {
    check_out(&a.out)?;
    let api = Api::new(&r.url, r.token.clone());
    let q = query(&[
        ("from", Some(a.from)),
        ("to", Some(a.to)),
        ("scope", a.scope),
    ]);
    let (path, bytes) = api.download(
        &format!("/api/v1/reports/{}{q}", enc(&a.framework)),
        None,
        &a.out,
    )?;
    if r.json {
        print_json(&json!({ "file": path.display().to_string(), "bytes": bytes }))?;
    } else {
        println!("report ({bytes} bytes) written to {}", path.display());
    }
    Ok(0)
}

/// `sakshi patch ...`
pub fn patch(r: &Remote, cmd: PatchCmd) -> Result<i32> {
    let api = Api::new(&r.url, r.token.clone());
    match cmd {
        PatchCmd::Record(args) => {
            let v = api.post("/api/v1/patches", Some(args.body()))?;
            if r.json {
                print_json(&v)?;
            } else {
                println!(
                    "recorded {} (audit entry {})",
                    s(&v["record"]["id"]),
                    s(&v["record"]["seq"])
                );
                match v["golden_set"]["approved"].as_bool() {
                    Some(true) => println!(
                        "golden set: {} digest(s) approved for measured boot",
                        s(&v["golden_set"]["digests_added"])
                    ),
                    Some(false) => eprintln!("note: this appliance has no golden set to update"),
                    None => {}
                }
            }
        }
        PatchCmd::List => {
            let v = api.get("/api/v1/patches")?;
            if r.json {
                print_json(&v)?;
                return Ok(0);
            }
            let records = v["records"]
                .as_array()
                .context("no records in the answer")?;
            let rows: Vec<Vec<String>> = records
                .iter()
                .map(|p| {
                    vec![
                        s(&p["seq"]),
                        s(&p["id"]),
                        s(&p["component"]),
                        format!("{} -> {}", s(&p["from_version"]), s(&p["to_version"])),
                        p["cves"]
                            .as_array()
                            .map(|c| c.iter().map(|c| s(&c["id"])).collect::<Vec<_>>().join(","))
                            .unwrap_or_default(),
                        if p["applied_at"].is_null() {
                            "pending".into()
                        } else {
                            s(&p["applied_at"])
                        },
                        s(&p["approver"]),
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(
                    &[
                        "ENTRY",
                        "PATCH",
                        "COMPONENT",
                        "VERSIONS",
                        "CVES",
                        "APPLIED",
                        "APPROVER"
                    ],
                    &rows
                )
            );
            let cves: Vec<Vec<String>> = v["cves"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    vec![
                        s(&c["cve"]),
                        s(&c["component"]),
                        s(&c["severity"]),
                        s(&c["vendor_released"]),
                        s(&c["days"]),
                        s(&c["deadline_days"]),
                        if c["fails_6_3_3"] == json!(true) {
                            format!("{} (FAILS PCI 6.3.3)", s(&c["sla"]))
                        } else {
                            s(&c["sla"])
                        },
                    ]
                })
                .collect();
            println!();
            print!(
                "{}",
                table::render(
                    &[
                        "CVE",
                        "COMPONENT",
                        "SEVERITY",
                        "RELEASED",
                        "DAYS",
                        "DEADLINE",
                        "STATUS"
                    ],
                    &cves
                )
            );
            let failing = v["failing"].as_u64().unwrap_or(0);
            if failing > 0 {
                println!("{failing} CVE(s) fail PCI DSS 6.3.3");
                return Ok(1);
            }
        }
    }
    Ok(0)
}

/// Refuses an output path whose parent does not exist (before anything is requested).
pub fn check_out(out: &std::path::Path) -> Result<()> {
    match out.parent() {
        Some(p) if !p.as_os_str().is_empty() && !p.is_dir() => {
            bail!("{} does not exist", p.display())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn the_cli_parses_evidence_report_and_patch_commands() {
        let cli = Cli::try_parse_from([
            "sakshi",
            "evidence",
            "export",
            "--from",
            "2026-11-01T00:00:00Z",
            "--to",
            "2026-12-01T00:00:00Z",
            "--scope",
            "vm:abc",
            "--out",
            "/tmp/b.tar.gz",
            "--url",
            "http://h:1",
        ])
        .unwrap();
        match cli.command {
            Command::Evidence {
                remote,
                cmd:
                    EvidenceCmd::Export {
                        from,
                        to,
                        scope,
                        out,
                    },
            } => {
                assert_eq!(remote.url, "http://h:1");
                assert_eq!(
                    (from.as_str(), to.as_str()),
                    ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z")
                );
                assert_eq!(scope, "vm:abc");
                assert_eq!(out, PathBuf::from("/tmp/b.tar.gz"));
            }
            other => panic!("unexpected {other:?}"),
        }
        // --from, --to and --out are required; the scope defaults to all.
        assert!(
            Cli::try_parse_from(["sakshi", "evidence", "export", "--from", "a", "--to", "b"])
                .is_err()
        );
        let cli = Cli::try_parse_from([
            "sakshi", "evidence", "export", "--from", "a", "--to", "b", "--out", "o",
        ])
        .unwrap();
        assert!(
            matches!(cli.command, Command::Evidence { cmd: EvidenceCmd::Export { ref scope, .. }, .. } if scope == "all")
        );

        let cli = Cli::try_parse_from([
            "sakshi",
            "report",
            "--framework",
            "pci-dss",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-02",
            "--out",
            "r.html",
        ])
        .unwrap();
        assert!(
            matches!(cli.command, Command::Report { ref args, .. } if args.framework == "pci-dss" && args.scope.is_none())
        );

        let h = "0".repeat(64);
        let cli = Cli::try_parse_from([
            "sakshi",
            "patch",
            "record",
            "--component",
            "guest_kernel",
            "--from-version",
            "6.1.1",
            "--to-version",
            "6.1.2",
            "--cve",
            "CVE-2026-1111:critical:2026-11-01",
            "--cve",
            "CVE-2026-2222:low:2026-10-01",
            "--applied",
            "2026-11-20T10:00:00Z",
            "--artifact-sha256",
            &format!("vmlinuz={h}"),
            "--approver",
            "cab-42",
            "--golden-kernel",
            &h,
        ])
        .unwrap();
        let Command::Patch {
            cmd: PatchCmd::Record(args),
            ..
        } = cli.command
        else {
            panic!("not a patch record");
        };
        let body = args.body();
        assert_eq!(body["component"], "guest_kernel");
        assert_eq!(body["cves"].as_array().unwrap().len(), 2);
        assert_eq!(body["cves"][1]["severity"], "low");
        assert_eq!(
            body["artifacts"][0],
            json!({ "name": "vmlinuz", "sha256": h })
        );
        assert_eq!(body["applied_at"], "2026-11-20T10:00:00Z");
        assert_eq!(body["golden_image"], json!({ "kernel_sha256": h }));
        assert!(body.get("notes").is_none());
        // A malformed --cve is refused by the parser, before anything is sent.
        assert!(
            Cli::try_parse_from([
                "sakshi",
                "patch",
                "record",
                "--component",
                "vmm",
                "--from-version",
                "1",
                "--to-version",
                "2",
                "--cve",
                "CVE-1:critical",
                "--approver",
                "x",
            ])
            .is_err()
        );
        // --golden-initrd needs --golden-kernel.
        assert!(
            Cli::try_parse_from([
                "sakshi",
                "patch",
                "record",
                "--component",
                "vmm",
                "--from-version",
                "1",
                "--to-version",
                "2",
                "--approver",
                "x",
                "--golden-initrd",
                &h,
            ])
            .is_err()
        );
        let cli = Cli::try_parse_from(["sakshi", "patch", "list", "--json"]).unwrap();
        assert!(
            matches!(cli.command, Command::Patch { ref remote, cmd: PatchCmd::List } if remote.json)
        );
    }

    #[test]
    fn cve_specs_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse_cve("CVE-2026-1234:Critical:2026-11-02").unwrap(),
            json!({ "id": "CVE-2026-1234", "severity": "critical", "vendor_released": "2026-11-02" })
        );
        assert!(parse_cve("CVE-2026-1234:critical").is_err());
        assert!(parse_cve("CVE-2026-1234:urgent:2026-11-02").is_err());
        assert!(parse_cve("CVE-2026-1234:high:02/11/2026").is_err());
    }

    #[test]
    fn artifacts_parse_with_or_without_a_name() {
        let h = "AB".repeat(32);
        assert_eq!(
            parse_artifact(&format!("vmlinuz={h}")).unwrap(),
            (Some("vmlinuz".to_owned()), "ab".repeat(32))
        );
        assert_eq!(parse_artifact(&h).unwrap(), (None, "ab".repeat(32)));
        assert!(parse_artifact("x=abc").is_err());
        assert!(parse_artifact(&format!("={h}")).is_err());
    }
}
