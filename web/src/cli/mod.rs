//! The `sakshi` command line: `serve` runs the appliance; every other verb talks to its API
//! (`--url`, token from `SAKSHI_TOKEN`), except `audit verify`, which checks a database offline,
//! and `bench`, which runs locally.

mod attest;
mod client;
mod evidence;
mod table;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use client::{Api, enc, query};
use serde_json::{Value, json};
use std::io::Read;
use std::path::PathBuf;

/// Sakshi: a compliance appliance with its own micro-VM host.
#[derive(Debug, Parser)]
#[command(name = "sakshi", version, about)]
pub struct Cli {
    /// PEM file of the CA (or self-signed certificate) to trust for an `https://` appliance
    /// instead of the system's roots.
    #[arg(long, env = "SAKSHI_CA_CERT", global = true, value_name = "FILE")]
    ca_cert: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// Where the API is and how to authenticate.
#[derive(Debug, Args, Clone)]
pub struct Remote {
    /// Appliance URL.
    #[arg(
        long,
        env = "SAKSHI_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// API token (`skt_...`).
    #[arg(long, env = "SAKSHI_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the appliance (API, dashboard, supervisor).
    Serve {
        /// Configuration file (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override `[data] dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Override `[server] listen`.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Exchange a user name and password for an API token; prints `export SAKSHI_TOKEN=...`.
    Login {
        #[command(flatten)]
        remote: Remote,
        /// User name.
        #[arg(long)]
        user: String,
        /// Token label.
        #[arg(long, default_value = "cli")]
        name: String,
        /// Token lifetime in days.
        #[arg(long)]
        days: Option<u32>,
    },
    /// Micro-VMs.
    Vm {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        cmd: VmCmd,
    },
    /// Boot images.
    Image {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        cmd: ImageCmd,
    },
    /// The audit log.
    Audit {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// TPM attestation.
    Attest {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        cmd: AttestCmd,
    },
    /// Evidence bundles for auditors.
    Evidence {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        cmd: evidence::EvidenceCmd,
    },
    /// Printable compliance report of one framework for a period.
    Report {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        args: evidence::ReportArgs,
    },
    /// The patch ledger (PCI DSS 6.3.3 time-to-patch).
    Patch {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        cmd: evidence::PatchCmd,
    },
    /// Users (admin).
    User {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// API tokens.
    Token {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Appliance overview.
    Status {
        #[command(flatten)]
        remote: Remote,
    },
    /// Reproducible benchmarks.
    Bench {
        #[command(subcommand)]
        cmd: BenchCmd,
    },
}

#[derive(Debug, Subcommand)]
enum VmCmd {
    /// List VMs.
    List,
    /// Show one VM.
    Show { id: String },
    /// Create a VM from stored images.
    Create {
        /// Name.
        #[arg(long)]
        name: String,
        /// Kernel image SHA-256.
        #[arg(long)]
        kernel: String,
        /// Initrd image SHA-256.
        #[arg(long)]
        initrd: Option<String>,
        /// Kernel command line.
        #[arg(long, default_value = "")]
        cmdline: String,
        /// vCPUs.
        #[arg(long, default_value_t = 1)]
        vcpus: u8,
        /// Memory, MiB.
        #[arg(long, default_value_t = 64)]
        memory: u32,
        /// Boot right away.
        #[arg(long)]
        start: bool,
    },
    /// Boot a VM.
    Start { id: String },
    /// Pause a VM.
    Pause { id: String },
    /// Resume a VM.
    Resume { id: String },
    /// Stop a VM.
    Stop { id: String },
    /// Destroy a VM.
    Destroy { id: String },
    /// Print the end of a VM's console.
    Console {
        id: String,
        /// Bytes from the end.
        #[arg(long, default_value_t = 4096)]
        bytes: usize,
    },
}

#[derive(Debug, Subcommand)]
enum ImageCmd {
    /// List images.
    List,
    /// Upload an image file.
    Add {
        file: PathBuf,
        /// Label.
        #[arg(long)]
        name: Option<String>,
        /// kernel or initrd.
        #[arg(long, default_value = "kernel")]
        kind: String,
    },
    /// Show an image.
    Show { sha256: String },
}

#[derive(Debug, Subcommand)]
enum AttestCmd {
    /// Ask the appliance's TPM for a quote over the measurement PCR and write the quote files
    /// (check them with `tpm2_checkquote` or `sakshi_attest::verify_dir`).
    Quote {
        /// Freshness nonce, hex, 1-64 bytes.
        #[arg(long)]
        nonce: String,
        /// Output directory (must not exist or be empty).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCmd {
    /// Newest entries (with filters); `--before` pages back.
    Tail {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        actor: Option<String>,
        /// Exact action or prefix ending in '.'.
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        target: Option<String>,
        /// success, failure or denied.
        #[arg(long)]
        outcome: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        before: Option<u64>,
    },
    /// One entry.
    Show { index: u64 },
    /// Inclusion proof of an entry.
    Proof {
        index: u64,
        #[arg(long)]
        tree_size: Option<u64>,
    },
    /// Consistency proof between two tree sizes.
    Consistency {
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: Option<u64>,
    },
    /// Latest signed checkpoints.
    Checkpoint {
        #[arg(long, default_value_t = 1)]
        limit: u32,
        /// Write the newest checkpoint note to this file (to hold outside the appliance).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Verify an audit database offline (default), or ask the appliance (`--remote`).
    Verify {
        /// The database file.
        #[arg(long)]
        db: Option<PathBuf>,
        /// Checkpoint notes held outside the appliance; the log must be consistent with them.
        #[arg(long = "checkpoint")]
        checkpoints: Vec<PathBuf>,
        /// The appliance public key (PEM) to trust instead of the one stored in the log.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Ask the running appliance instead.
        #[arg(long)]
        remote: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UserCmd {
    /// List users.
    List,
    /// Add a user; the password is read from stdin.
    Add {
        name: String,
        #[arg(long)]
        role: String,
    },
    /// Delete a user.
    Delete { name: String },
    /// Reset a user's password; the new one is read from stdin.
    Passwd { name: String },
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Your tokens (`--all`: everyone's, admins).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Issue a token.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        days: Option<u32>,
    },
    /// Revoke a token.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
enum BenchCmd {
    /// Boot latency of sakshi-vmm vs QEMU microvm, and idle VM density.
    Boot {
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// Boots per peer.
        #[arg(long, default_value_t = 30)]
        runs: usize,
        /// The sakshi-vmm binary (default: next to sakshi).
        #[arg(long)]
        vmm: Option<PathBuf>,
        /// Idle VMs to hold (0 skips).
        #[arg(long, default_value_t = 50)]
        idle: usize,
    },
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn items(v: &Value) -> &[Value] {
    v["items"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn print_vm(v: &Value) {
    println!("id:        {}", s(&v["id"]));
    println!("name:      {}", s(&v["name"]));
    println!("state:     {}", s(&v["state"]));
    println!("vcpus:     {}", s(&v["vcpus"]));
    println!("memory:    {} MiB", s(&v["memory_mib"]));
    println!("boot:      {} us", s(&v["boot_latency_us"]));
    println!("kernel:    {}", s(&v["kernel_sha256"]));
    println!("cmdline:   {}", s(&v["cmdline"]));
    println!("trace id:  {}", s(&v["trace_id"]));
    if !v["exit_reason"].is_null() {
        println!("exit:      {}", s(&v["exit_reason"]));
    }
    for m in v["measurements"].as_array().into_iter().flatten() {
        println!(
            "measured:  {:<8} {} (pcr {})",
            s(&m["what"]),
            s(&m["sha256"]),
            s(&m["pcr"])
        );
    }
    for h in v["history"].as_array().into_iter().flatten() {
        println!(
            "history:   {}  {:<8} {}",
            s(&h["at"]),
            s(&h["state"]),
            h["reason"].as_str().unwrap_or("")
        );
    }
}

fn read_password(prompt: &str) -> Result<String> {
    if let Ok(p) = std::env::var("SAKSHI_PASSWORD") {
        return Ok(p);
    }
    eprint!("{prompt}");
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("reading the password from stdin")?;
    Ok(s.lines().next().unwrap_or("").to_owned())
}

/// Runs the CLI; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    client::trust(cli.ca_cert.as_deref())?;
    match cli.command {
        Command::Serve {
            config,
            data_dir,
            listen,
        } => serve(config, data_dir, listen),
        Command::Login {
            remote,
            user,
            name,
            days,
        } => {
            let api = Api::new(&remote.url, None);
            let password = read_password("password: ")?;
            let t = api.post(
                "/api/v1/auth/token",
                Some(json!({ "username": user, "password": password, "name": name, "expires_in_days": days })),
            )?;
            if remote.json {
                print_json(&t)?;
            } else {
                println!("export SAKSHI_TOKEN={}", s(&t["secret"]));
                eprintln!(
                    "token {} ({}) expires {}",
                    s(&t["id"]),
                    s(&t["role"]),
                    s(&t["expires_at"])
                );
            }
            Ok(0)
        }
        Command::Vm { remote, cmd } => vm(&remote, cmd),
        Command::Image { remote, cmd } => image(&remote, cmd),
        Command::Audit { remote, cmd } => audit(&remote, cmd),
        Command::Attest { remote, cmd } => attest(&remote, cmd),
        Command::Evidence { remote, cmd } => evidence::evidence(&remote, cmd),
        Command::Report { remote, args } => evidence::report(&remote, args),
        Command::Patch { remote, cmd } => evidence::patch(&remote, cmd),
        Command::User { remote, cmd } => user(&remote, cmd),
        Command::Token { remote, cmd } => token(&remote, cmd),
        Command::Status { remote } => {
            let api = Api::new(&remote.url, remote.token.clone());
            let o = api.get("/api/v1/overview")?;
            if remote.json {
                print_json(&o)?;
            } else {
                println!("host:        {}", s(&o["host"]["hostname"]));
                println!("kvm:         {}", s(&o["host"]["kvm_mode"]));
                println!("tpm:         {}", s(&o["host"]["tpm_kind"]));
                println!("attestation: {}", s(&o["host"]["attestation"]));
                println!(
                    "vms:         {} total, {} running, {} failed",
                    s(&o["vms"]["total"]),
                    s(&o["vms"]["running"]),
                    s(&o["vms"]["failed"])
                );
                println!(
                    "audit:       {} entries, root {}",
                    s(&o["audit_size"]),
                    s(&o["audit_root"])
                );
                println!(
                    "version:     {} (sha256 {})",
                    s(&o["version"]),
                    s(&o["binary_sha256"])
                );
            }
            Ok(0)
        }
        Command::Bench { cmd } => bench(cmd),
    }
}

fn serve(
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
) -> Result<i32> {
    let mut cfg = match &config {
        Some(p) => sakshi_web::Config::load(p)?,
        None => sakshi_web::Config::default(),
    };
    if let Some(d) = data_dir {
        cfg.data.dir = d;
    }
    if let Some(l) = listen {
        cfg.server.listen = l;
    }
    cfg.validate()?;
    // A bounded blocking pool (SQLite, argon2, the supervisor): enough for 100+ concurrent
    // clients on a small appliance, and idle threads (and their malloc arenas) go away soon.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(32)
        .thread_keep_alive(std::time::Duration::from_secs(5))
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        sakshi_web::serve(cfg, shutdown).await
    })?;
    Ok(0)
}

fn vm(r: &Remote, cmd: VmCmd) -> Result<i32> {
    let api = Api::new(&r.url, r.token.clone());
    let one = |v: Value| -> Result<i32> {
        if r.json {
            print_json(&v)?;
        } else {
            print_vm(&v);
        }
        Ok(0)
    };
    match cmd {
        VmCmd::List => {
            let v = api.get("/api/v1/vms")?;
            if r.json {
                print_json(&v)?;
            } else {
                let rows: Vec<Vec<String>> = items(&v)
                    .iter()
                    .map(|x| {
                        vec![
                            s(&x["id"]),
                            s(&x["name"]),
                            s(&x["state"]),
                            s(&x["vcpus"]),
                            format!("{} MiB", s(&x["memory_mib"])),
                            x["boot_latency_us"].as_u64().map_or("-".into(), |u| format!("{:.1} ms", u as f64 / 1000.0)),
                            s(&x["created_at"]),
                        ]
                    })
                    .collect();
                print!("{}", table::render(&["ID", "NAME", "STATE", "VCPUS", "MEMORY", "BOOT", "CREATED"], &rows));
            }
            Ok(0)
        }
        VmCmd::Show { id } => one(api.get(&format!("/api/v1/vms/{}", enc(&id)))?),
        VmCmd::Create { name, kernel, initrd, cmdline, vcpus, memory, start } => one(api.post(
            "/api/v1/vms",
            Some(json!({ "name": name, "kernel_sha256": kernel, "initrd_sha256": initrd, "cmdline": cmdline,
                         "vcpus": vcpus, "memory_mib": memory, "start": start })),
        )?),
        VmCmd::Start { id } => one(api.post(&format!("/api/v1/vms/{}/start", enc(&id)), None)?),
        VmCmd::Pause { id } => one(api.post(&format!("/api/v1/vms/{}/pause", enc(&id)), None)?),
        VmCmd::Resume { id } => one(api.post(&format!("/api/v1/vms/{}/resume", enc(&id)), None)?),
        VmCmd::Stop { id } => one(api.post(&format!("/api/v1/vms/{}/stop", enc(&id)), None)?),
        VmCmd::Destroy { id } => {
            api.delete(&format!("/api/v1/vms/{}", enc(&id)))?;
            if !r.json {
                println!("destroyed {id}");
            }
            Ok(0)
        }
        VmCmd::Console { id, bytes } => {
            let v = api.get(&format!("/api/v1/vms/{}/console?bytes={bytes}", enc(&id)))?;
            if r.json {
                print_json(&v)?;
            } else {
                print!("{}", v["text"].as_str().unwrap_or(""));
            }
            Ok(0)
        }
    }
}

fn image(r: &Remote, cmd: ImageCmd) -> Result<i32> {
    let api = Api::new(&r.url, r.token.clone());
    let print_one = |v: &Value| -> Result<()> {
        if r.json {
            print_json(v)
        } else {
            println!(
                "{}  {}  {}  {} bytes",
                s(&v["sha256"]),
                s(&v["kind"]),
                s(&v["name"]),
                s(&v["size"])
            );
            Ok(())
        }
    };
    match cmd {
        ImageCmd::List => {
            let v = api.get("/api/v1/images")?;
            if r.json {
                print_json(&v)?;
            } else {
                let rows: Vec<Vec<String>> = items(&v)
                    .iter()
                    .map(|x| {
                        vec![
                            s(&x["sha256"]),
                            s(&x["kind"]),
                            s(&x["name"]),
                            s(&x["size"]),
                            s(&x["added_by"]),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table::render(&["SHA256", "KIND", "NAME", "BYTES", "BY"], &rows)
                );
            }
        }
        ImageCmd::Add { file, name, kind } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let name = name.unwrap_or_else(|| {
                file.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "image".into())
            });
            let v = api.post_bytes(
                &format!(
                    "/api/v1/images{}",
                    query(&[("name", Some(name)), ("kind", Some(kind))])
                ),
                &bytes,
            )?;
            print_one(&v)?;
        }
        ImageCmd::Show { sha256 } => {
            print_one(&api.get(&format!("/api/v1/images/{}", enc(&sha256)))?)?
        }
    }
    Ok(0)
}

fn audit(r: &Remote, cmd: AuditCmd) -> Result<i32> {
    let api = Api::new(&r.url, r.token.clone());
    match cmd {
        AuditCmd::Tail {
            limit,
            actor,
            action,
            target,
            outcome,
            since,
            until,
            before,
        } => {
            let q = query(&[
                ("limit", Some(limit.to_string())),
                ("actor", actor),
                ("action", action),
                ("target", target),
                ("outcome", outcome),
                ("since", since),
                ("until", until),
                ("before", before.map(|b| b.to_string())),
            ]);
            let v = api.get(&format!("/api/v1/audit/entries{q}"))?;
            if r.json {
                print_json(&v)?;
            } else {
                let rows: Vec<Vec<String>> = v["entries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        vec![
                            s(&e["index"]),
                            s(&e["time"]),
                            s(&e["actor"]),
                            s(&e["origin"]),
                            s(&e["action"]),
                            s(&e["outcome"]),
                            s(&e["target"]),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table::render(
                        &[
                            "#", "TIME", "ACTOR", "ORIGIN", "ACTION", "OUTCOME", "TARGET"
                        ],
                        &rows
                    )
                );
                if let Some(b) = v["next_before"].as_u64() {
                    println!("(older: --before {b})");
                }
            }
        }
        AuditCmd::Show { index } => {
            print_json(&api.get(&format!("/api/v1/audit/entries/{index}"))?)?
        }
        AuditCmd::Proof { index, tree_size } => {
            let q = query(&[("tree_size", tree_size.map(|t| t.to_string()))]);
            print_json(&api.get(&format!("/api/v1/audit/entries/{index}/proof{q}"))?)?
        }
        AuditCmd::Consistency { from, to } => {
            let q = query(&[
                ("from", Some(from.to_string())),
                ("to", to.map(|t| t.to_string())),
            ]);
            print_json(&api.get(&format!("/api/v1/audit/consistency{q}"))?)?
        }
        AuditCmd::Checkpoint { limit, out } => {
            let v = api.get(&format!("/api/v1/audit/checkpoints?limit={limit}"))?;
            if let Some(path) = out {
                let text = items(&v)
                    .first()
                    .and_then(|c| c["text"].as_str())
                    .context("no checkpoint yet")?;
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if r.json {
                print_json(&v)?;
            } else {
                for c in items(&v) {
                    print!("{}", c["text"].as_str().unwrap_or(""));
                    println!();
                }
            }
        }
        AuditCmd::Verify {
            db,
            checkpoints,
            key,
            remote,
        } => {
            if remote {
                let v = api.post("/api/v1/audit/verify", None)?;
                print_json(&v)?;
                return Ok(if v["ok"] == json!(true) { 0 } else { 1 });
            }
            return verify_offline(db, &checkpoints, key, r.json);
        }
    }
    Ok(0)
}

fn verify_offline(
    db: Option<PathBuf>,
    checkpoints: &[PathBuf],
    key: Option<PathBuf>,
    as_json: bool,
) -> Result<i32> {
    let db = db.unwrap_or_else(|| sakshi_web::DataConfig::default().dir.join("audit.sqlite"));
    let mut external = Vec::new();
    for p in checkpoints {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        external.push(
            sakshi_audit::SignedCheckpoint::parse(&text)
                .with_context(|| format!("parsing checkpoint {}", p.display()))?,
        );
    }
    let trusted_key = match key {
        Some(p) => {
            let pem =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            Some(
                sakshi_audit::AppliancePublicKey::from_pem(&pem)
                    .with_context(|| format!("parsing key {}", p.display()))?,
            )
        }
        None => None,
    };
    let report = sakshi_audit::verify_database(
        &db,
        &sakshi_audit::VerifyOptions {
            trusted_key,
            external_checkpoints: external,
        },
    )
    .with_context(|| format!("verifying {}", db.display()))?;
    if as_json {
        print_json(&json!({
            "ok": report.is_intact(),
            "log_size": report.log_size,
            "entries_checked": report.entries_checked,
            "checkpoints": report.checkpoints,
            "checkpoint_roots_checked": report.checkpoint_roots_checked,
            "external_given": report.external_given,
            "external_consistent": report.external_consistent,
            "first_bad_index": report.first_damage().and_then(|d| d.first_bad_index()),
            "problem": report.first_damage().map(|d| d.to_string()),
        }))?;
    } else {
        print!("{report}");
    }
    Ok(if report.is_intact() { 0 } else { 1 })
}

fn attest(r: &Remote, cmd: AttestCmd) -> Result<i32> {
    let api = Api::new(&r.url, r.token.clone());
    match cmd {
        AttestCmd::Quote { nonce, out } => {
            let v = api.post("/api/v1/attestations", Some(json!({ "nonce": nonce })))?;
            let quote = attest::decode_quote(&v).context("decoding the appliance's quote")?;
            quote
                .write_dir(&out)
                .with_context(|| format!("writing {}", out.display()))?;
            if r.json {
                print_json(&v)?;
            } else {
                println!(
                    "quote ({} PCR(s), {} event(s)) written to {}",
                    quote.pcrs.values.len(),
                    quote.event_log.len(),
                    out.display()
                );
            }
            if let Some(n) = v["tpm_kind_notice"].as_str() {
                eprintln!("note: {n}");
            }
        }
    }
    Ok(0)
}

fn user(r: &Remote, cmd: UserCmd) -> Result<i32> {
    let api = Api::new(&r.url, r.token.clone());
    match cmd {
        UserCmd::List => {
            let v = api.get("/api/v1/users")?;
            if r.json {
                print_json(&v)?;
            } else {
                let rows: Vec<Vec<String>> = items(&v)
                    .iter()
                    .map(|u| vec![s(&u["name"]), s(&u["role"]), s(&u["created_at"])])
                    .collect();
                print!("{}", table::render(&["NAME", "ROLE", "CREATED"], &rows));
            }
        }
        UserCmd::Add { name, role } => {
            let password = read_password("password for the new user: ")?;
            let v = api.post(
                "/api/v1/users",
                Some(json!({ "name": name, "role": role, "password": password })),
            )?;
            if r.json {
                print_json(&v)?;
            } else {
                println!("created {} ({})", s(&v["name"]), s(&v["role"]));
            }
        }
        UserCmd::Delete { name } => {
            api.delete(&format!("/api/v1/users/{}", enc(&name)))?;
            println!("deleted {name}");
        }
        UserCmd::Passwd { name } => {
            let password = read_password("new password: ")?;
            api.put(
                &format!("/api/v1/users/{}/password", enc(&name)),
                json!({ "password": password }),
            )?;
            println!("password of {name} reset");
        }
    }
    Ok(0)
}

fn token(r: &Remote, cmd: TokenCmd) -> Result<i32> {
    let api = Api::new(&r.url, r.token.clone());
    match cmd {
        TokenCmd::List { all } => {
            let v = api.get(if all {
                "/api/v1/tokens?all=true"
            } else {
                "/api/v1/tokens"
            })?;
            if r.json {
                print_json(&v)?;
            } else {
                let rows: Vec<Vec<String>> = items(&v)
                    .iter()
                    .map(|t| {
                        vec![
                            s(&t["id"]),
                            s(&t["owner"]),
                            s(&t["name"]),
                            s(&t["role"]),
                            s(&t["expires_at"]),
                            if t["revoked_at"].is_null() {
                                "".into()
                            } else {
                                "revoked".into()
                            },
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table::render(&["ID", "OWNER", "NAME", "ROLE", "EXPIRES", ""], &rows)
                );
            }
        }
        TokenCmd::Create { name, role, days } => {
            let v = api.post(
                "/api/v1/tokens",
                Some(json!({ "name": name, "role": role, "expires_in_days": days })),
            )?;
            if r.json {
                print_json(&v)?;
            } else {
                println!("{}", s(&v["secret"]));
            }
        }
        TokenCmd::Revoke { id } => {
            api.delete(&format!("/api/v1/tokens/{}", enc(&id)))?;
            println!("revoked {id}");
        }
    }
    Ok(0)
}

fn bench(cmd: BenchCmd) -> Result<i32> {
    match cmd {
        BenchCmd::Boot {
            json,
            runs,
            vmm,
            idle,
        } => {
            let vmm = vmm.unwrap_or_else(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|p| p.parent().map(|d| d.join("sakshi-vmm")))
                    .unwrap_or_else(|| PathBuf::from("sakshi-vmm"))
            });
            let mut opts = sakshi_host::bench::BootBenchOptions::new(
                vmm,
                sakshi_host::test_guest::test_guest_path(),
            );
            opts.runs = runs;
            opts.idle_target = idle;
            let report = sakshi_host::bench::boot(&opts)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            Ok(0)
        }
    }
}
