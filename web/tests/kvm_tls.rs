//! `sakshi serve` over TLS (`[server.tls]`, a certificate from a private CA made with the
//! openssl CLI): the CLI talks to it over https when it trusts that CA (`--ca-cert` or
//! `SAKSHI_CA_CERT`) and refuses it otherwise; the dashboard's cookies carry `Secure`.

mod common;

use anyhow::{Context, Result, bail, ensure};
use common::{Daemon, sakshi_bin, write_config};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// Runs the openssl CLI in `dir`.
fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl")?;
    ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A P-256 CA named `name` in `dir`: `<name>.pem` (certificate) and `<name>.key`.
fn make_ca(dir: &Path, name: &str) -> Result<PathBuf> {
    let subject = format!("/CN=Sakshi test CA {name}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ],
    )?;
    Ok(dir.join(format!("{name}.pem")))
}

/// A server certificate for 127.0.0.1 / localhost signed by CA `ca`: (`server.pem`,
/// `server.key`, PKCS#8).
fn make_server_cert(dir: &Path, ca: &str) -> Result<(PathBuf, PathBuf)> {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    )?;
    let key = std::fs::read_to_string(dir.join("server.key"))?;
    ensure!(
        key.contains("BEGIN PRIVATE KEY"),
        "openssl wrote no PKCS#8 key"
    );
    Ok((dir.join("server.pem"), dir.join("server.key")))
}

/// Runs the `sakshi` CLI against `url` with `envs` (and no inherited Sakshi variables).
fn cli(url: &str, args: &[&str], envs: &[(&str, &str)]) -> Result<Output> {
    let mut cmd = Command::new(sakshi_bin());
    cmd.args(args)
        .env("SAKSHI_URL", url)
        .env_remove("SAKSHI_TOKEN")
        .env_remove("SAKSHI_CA_CERT")
        .env_remove("SAKSHI_PASSWORD");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    Ok(cmd.output()?)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The `Set-Cookie` values of a response.
fn set_cookies(r: &http::Response<ureq::Body>) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect()
}

/// `name=value` of the cookie `name` among `cookies`.
fn cookie_pair(cookies: &[String], name: &str) -> Option<String> {
    cookies
        .iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .and_then(|c| c.split(';').next())
        .map(str::to_owned)
}

#[test]
fn kvm_swtpm_cli_talks_tls_with_a_private_ca_and_cookies_are_secure() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let pki = tmp.path();
    let ca = make_ca(pki, "ca")?;
    let other_ca = make_ca(pki, "other")?;
    let (cert, key) = make_server_cert(pki, "ca")?;

    let data = tmp.path().join("data");
    let cfg = write_config(
        &data,
        "",
        &format!(
            "[demo]\nenabled = false\n[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    )?;
    let d = Daemon::start(&cfg)?;
    ensure!(d.url.starts_with("https://127.0.0.1:"), "{}", d.url);
    let password = d.admin_password.clone().context("no admin password")?;
    let ca_s = ca.to_str().context("path")?;

    // Login over https with --ca-cert: the token comes back.
    let out = cli(
        &d.url,
        &[
            "login",
            "--user",
            "admin",
            "--name",
            "tls",
            "--days",
            "1",
            "--ca-cert",
            ca_s,
        ],
        &[("SAKSHI_PASSWORD", &password)],
    )?;
    ensure!(out.status.success(), "login: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let token = stdout
        .trim()
        .strip_prefix("export SAKSHI_TOKEN=")
        .context("no token line")?
        .to_owned();

    // A read over https with the CA from the environment.
    let out = cli(
        &d.url,
        &["vm", "list", "--json"],
        &[("SAKSHI_TOKEN", &token), ("SAKSHI_CA_CERT", ca_s)],
    )?;
    ensure!(out.status.success(), "vm list: {}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(v["items"].is_array(), "{v}");

    // Without the CA (system roots only) and with an unrelated CA the certificate is refused.
    for extra in [
        &[][..],
        &["--ca-cert", other_ca.to_str().context("path")?][..],
    ] {
        let mut args = vec!["status"];
        args.extend_from_slice(extra);
        let out = cli(&d.url, &args, &[("SAKSHI_TOKEN", &token)])?;
        let err = text(&out.stderr);
        ensure!(
            !out.status.success(),
            "status {extra:?} succeeded: {}",
            text(&out.stdout)
        );
        ensure!(
            err.to_lowercase().contains("certificate"),
            "status {extra:?}: {err}"
        );
    }
    // A CA file that holds no certificate is refused up front.
    let out = cli(
        &d.url,
        &["status", "--ca-cert", key.to_str().context("path")?],
        &[],
    )?;
    ensure!(!out.status.success(), "a key as CA was accepted");
    ensure!(
        text(&out.stderr).contains("no PEM certificate"),
        "{}",
        text(&out.stderr)
    );

    // The dashboard over TLS: every cookie it sets is Secure (and HttpOnly, SameSite=Strict).
    let roots = ureq::tls::RootCerts::Specific(std::sync::Arc::new(vec![
        ureq::tls::Certificate::from_pem(&std::fs::read(&ca)?)?,
    ]));
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .provider(ureq::tls::TlsProvider::NativeTls)
                    .root_certs(roots)
                    .build(),
            )
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(60)))
            .build(),
    );
    let mut r = agent.get(format!("{}/login", d.url)).call()?;
    let cookies = set_cookies(&r);
    let page = r.body_mut().read_to_string()?;
    let csrf_cookie = cookies.first().context("GET /login set no cookie")?;
    let (name, value) = csrf_cookie
        .split(';')
        .next()
        .and_then(|p| p.split_once('='))
        .context("malformed cookie")?;
    ensure!(
        page.contains(value),
        "the login form does not carry the CSRF value"
    );
    let r = agent
        .post(format!("{}/login", d.url))
        .header("Cookie", &format!("{name}={value}"))
        .send_form([
            ("username", "admin"),
            ("password", password.as_str()),
            ("csrf", value),
            ("next", "/"),
        ])?;
    ensure!(r.status().is_redirection(), "login: {}", r.status());
    let all: Vec<String> = cookies.iter().cloned().chain(set_cookies(&r)).collect();
    let session = cookie_pair(&all, "sakshi_session").context("no session cookie")?;
    for c in &all {
        for attr in ["Secure", "HttpOnly", "SameSite=Strict"] {
            if !c.split(';').any(|a| a.trim() == attr) {
                bail!("cookie without {attr}: {c}");
            }
        }
    }
    let r = agent
        .get(format!("{}/audit", d.url))
        .header("Cookie", &session)
        .call()?;
    ensure!(r.status() == 200, "dashboard over TLS: {}", r.status());

    d.stop()
}
