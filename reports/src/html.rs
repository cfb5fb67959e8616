//! Printable HTML reports (askama templates under `reports/templates/`, escaped by askama).

use askama::Template;
use chrono::{DateTime, Utc};

use crate::bundle::Manifest;
use crate::evaluate::{ControlResult, FrameworkResult, Status};
use crate::evidence::Period;

/// Who and what a report is about (printed in its header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportContext {
    /// Appliance host name.
    pub hostname: String,
    /// Scope (`all`, `vm:<id>`).
    pub scope: String,
    /// Period.
    pub period: Period,
    /// Generation time.
    pub generated_at: DateTime<Utc>,
    /// Who asked for it.
    pub generated_by: String,
    /// Sakshi version.
    pub appliance_version: String,
    /// Hex SHA-256 of the appliance public key.
    pub appliance_key: String,
    /// The evidence bundle the report belongs to, if any.
    pub bundle_name: Option<String>,
}

impl ReportContext {
    /// The context of a bundle.
    pub fn from_manifest(m: &Manifest) -> Self {
        ReportContext {
            hostname: m.host.hostname.clone(),
            scope: m.scope.to_string(),
            period: m.period,
            generated_at: m.generated_at,
            generated_by: m.generated_by.clone(),
            appliance_version: m.appliance_version.clone(),
            appliance_key: m.host.appliance_key.clone(),
            bundle_name: Some(m.file_name()),
        }
    }
}

struct ControlView<'a> {
    c: &'a ControlResult,
    anchor: String,
    status_class: &'static str,
    entries: String,
    evidence: String,
}

#[derive(Template)]
#[template(path = "framework.html")]
struct FrameworkPage<'a> {
    r: &'a FrameworkResult,
    ctx: &'a ReportContext,
    from: String,
    to: String,
    generated: String,
    controls: Vec<ControlView<'a>>,
}

fn status_class(s: Status) -> &'static str {
    match s {
        Status::Pass => "pass",
        Status::NeedsReview => "review",
        Status::Fail => "fail",
    }
}

fn fmt_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The printable compliance report of one framework for one period.
pub fn render_framework(r: &FrameworkResult, ctx: &ReportContext) -> Result<String, askama::Error> {
    let controls = r
        .controls
        .iter()
        .map(|c| ControlView {
            c,
            anchor: format!(
                "c-{}",
                c.id.chars()
                    .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '-' })
                    .collect::<String>()
            ),
            status_class: status_class(c.status),
            entries: c
                .entries
                .iter()
                .map(|s| format!("#{s}"))
                .collect::<Vec<_>>()
                .join(", "),
            evidence: c
                .evidence
                .iter()
                .map(|e| e.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect();
    FrameworkPage {
        r,
        ctx,
        from: fmt_time(&r.period.from()),
        to: fmt_time(&r.period.to()),
        generated: fmt_time(&r.generated_at),
        controls,
    }
    .render()
}
