//! Control catalogs: one TOML file per framework under `reports/catalogs/`, reviewed by people.
//!
//! A catalog names the framework, then lists controls. Each control has an id, a title, a
//! summary of the requirement in our own words, whether that summary was checked against the
//! official text, the kinds of evidence it uses, and one or more automated [`Rule`]s. The
//! rules are data interpreted by [`crate::evaluate`]; the set of rule kinds is fixed in code.
//!
//! [`Catalog::validate`] rejects anything a reviewer could get wrong without noticing:
//! duplicate ids, empty texts, action names the audit log does not have, rules that use
//! evidence the control does not declare, zero or absurd thresholds.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use sakshi_audit::{Action, ActorKind, Entry};
use serde::{Deserialize, Serialize};

/// The catalogs shipped with Sakshi, as `(file name, TOML text)`.
pub const BUILTIN_CATALOGS: &[(&str, &str)] = &[
    (
        "pci-dss-4.0.1.toml",
        include_str!("../catalogs/pci-dss-4.0.1.toml"),
    ),
    (
        "rbi-itgrca-2023.toml",
        include_str!("../catalogs/rbi-itgrca-2023.toml"),
    ),
    (
        "rbi-it-outsourcing-2023.toml",
        include_str!("../catalogs/rbi-it-outsourcing-2023.toml"),
    ),
    (
        "rbi-payment-data-2018.toml",
        include_str!("../catalogs/rbi-payment-data-2018.toml"),
    ),
    (
        "cert-in-2022.toml",
        include_str!("../catalogs/cert-in-2022.toml"),
    ),
    ("dpdp-2023.toml", include_str!("../catalogs/dpdp-2023.toml")),
];

/// Largest catalog file accepted, in bytes.
pub const MAX_CATALOG_BYTES: usize = 1 << 20;

/// A framework's control catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// The framework this catalog covers.
    pub framework: Framework,
    /// The controls, in the order the report shows them.
    #[serde(rename = "control")]
    pub controls: Vec<Control>,
}

/// Identification of a framework.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Framework {
    /// Short identifier used in file names and OSCAL ids, e.g. `pci-dss-4.0.1`
    /// (lowercase letters, digits, `.` and `-`).
    pub id: String,
    /// Human name, e.g. `PCI DSS`.
    pub name: String,
    /// Version or date of the text, e.g. `4.0.1`.
    pub version: String,
    /// Who issued it.
    pub issuer: String,
    /// The document reference (circular number, title) the controls cite.
    pub reference: String,
    /// What the catalog's authors could and could not check against the official text.
    pub source_note: String,
}

/// One control of a framework.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// The framework's clause id, e.g. `10.2.1.2`.
    pub id: String,
    /// Short title.
    pub title: String,
    /// The requirement, summarised in our own words.
    pub summary: String,
    /// True only when the summary and the clause reference were checked against the official
    /// text; reports mark the others "wording not verified".
    pub wording_verified: bool,
    /// Evidence the control's rules use.
    pub evidence: Vec<EvidenceKind>,
    /// What a human reviewer should know about how Sakshi maps the clause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Automated rules; the control's status is the worst of theirs.
    #[serde(rename = "rule")]
    pub rules: Vec<Rule>,
}

/// Kinds of evidence a bundle can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvidenceKind {
    /// The audit entries of the period (`audit/entries.jsonl`).
    AuditEntries,
    /// Signed checkpoints and the proofs tying entries to them.
    Checkpoints,
    /// The TPM quote, event log and appraisal against golden values.
    Attestation,
    /// The VM inventory.
    Inventory,
    /// The patch ledger.
    PatchLedger,
    /// Time synchronisation state.
    TimeSync,
    /// Retention configuration and the age of the oldest entry.
    Retention,
    /// Where data is stored (data-location statement).
    DataLocation,
    /// Delivery of the log to the SIEM (off-box copy).
    SiemDelivery,
    /// Evidence only people can supply (documents, test reports).
    Manual,
}

impl EvidenceKind {
    /// The kebab-case name used in catalogs.
    pub fn as_str(self) -> &'static str {
        match self {
            EvidenceKind::AuditEntries => "audit-entries",
            EvidenceKind::Checkpoints => "checkpoints",
            EvidenceKind::Attestation => "attestation",
            EvidenceKind::Inventory => "inventory",
            EvidenceKind::PatchLedger => "patch-ledger",
            EvidenceKind::TimeSync => "time-sync",
            EvidenceKind::Retention => "retention",
            EvidenceKind::DataLocation => "data-location",
            EvidenceKind::SiemDelivery => "siem-delivery",
            EvidenceKind::Manual => "manual",
        }
    }
}

impl fmt::Display for EvidenceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An action name or a family pattern: `vm.create`, `vm.*`, `user.*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ActionPattern(pub String);

impl ActionPattern {
    /// True when `action` is named by this pattern.
    pub fn matches(&self, action: Action) -> bool {
        let name = action.as_str();
        match self.0.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == self.0,
        }
    }

    /// The audit actions this pattern names.
    pub fn actions(&self) -> Vec<Action> {
        Action::ALL
            .iter()
            .copied()
            .filter(|a| self.matches(*a))
            .collect()
    }
}

impl fmt::Display for ActionPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Success or failure filter of an [`EntryMatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeFilter {
    /// Only successful entries.
    Success,
    /// Only failed entries.
    Failure,
}

/// Which audit entries a rule looks at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryMatch {
    /// Action name or family pattern.
    pub action: ActionPattern,
    /// Only successes or only failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<OutcomeFilter>,
    /// Only entries by this kind of actor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_kind: Option<ActorKind>,
    /// Only entries whose `details` object has these top-level values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, serde_json::Value>,
}

impl EntryMatch {
    /// True when `entry` is selected.
    pub fn matches(&self, entry: &Entry) -> bool {
        if !self.action.matches(entry.action) {
            return false;
        }
        match self.outcome {
            Some(OutcomeFilter::Success) if !entry.outcome.is_success() => return false,
            Some(OutcomeFilter::Failure) if entry.outcome.is_success() => return false,
            _ => {}
        }
        if let Some(kind) = self.actor_kind
            && entry.actor.kind != kind
        {
            return false;
        }
        self.details
            .iter()
            .all(|(k, v)| entry.details.get(k) == Some(v))
    }
}

impl fmt::Display for EntryMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.action)?;
        if let Some(o) = self.outcome {
            write!(
                f,
                " ({})",
                if o == OutcomeFilter::Success {
                    "success"
                } else {
                    "failure"
                }
            )?;
        }
        if let Some(k) = self.actor_kind {
            let k = match k {
                ActorKind::User => "user",
                ActorKind::ApiToken => "api token",
                ActorKind::Service => "service",
            };
            write!(f, " by {k}")?;
        }
        for (k, v) in &self.details {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

/// A failure and the entry that shows it was dealt with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailurePair {
    /// Entries that report a failure of a control.
    pub failure: EntryMatch,
    /// A later entry that shows recovery.
    pub recovery: EntryMatch,
}

/// Patch severity (CVSS qualitative rating).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// CVSS 0.1-3.9.
    Low,
    /// CVSS 4.0-6.9.
    Medium,
    /// CVSS 7.0-8.9.
    High,
    /// CVSS 9.0-10.0.
    Critical,
}

impl Severity {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An automated rule. Each kind says which evidence it needs ([`Rule::needs`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    /// The listed kinds of events are recorded: pass when at least one matching entry is in
    /// the period, needs review when none is (nothing to show, or nothing happened).
    EventsRecorded {
        /// What to look for.
        #[serde(rename = "match")]
        matches: Vec<EntryMatch>,
    },
    /// Every entry of the period carries the PCI 10.2.2 fields: who (with authentication),
    /// from where, what, on which object, when, and the result with a reason for failures.
    RecordFields,
    /// Every successful matching entry was made by an authenticated user or token.
    ActionsAuthenticated {
        /// What to look at.
        #[serde(rename = "match")]
        matches: Vec<EntryMatch>,
    },
    /// The hash chain and Merkle proofs verify, checkpoints are signed and consistent with
    /// the previous bundle, and no interval between checkpoints exceeds the limit.
    LogIntegrity {
        /// Largest allowed gap between consecutive checkpoints, in minutes.
        max_checkpoint_gap_minutes: u32,
    },
    /// A matching entry occurs in every window of `every_hours` of the period.
    Periodic {
        /// What to look for.
        #[serde(rename = "match")]
        matches: Vec<EntryMatch>,
        /// Window length in hours (24 = daily, 168 = weekly).
        every_hours: u32,
        /// What the entries are, for reasons ("daily log review").
        what: String,
    },
    /// Every failure is followed by a recovery within the time limit.
    FailuresResponded {
        /// Failure / recovery pairs.
        pairs: Vec<FailurePair>,
        /// Time allowed, in hours.
        within_hours: u32,
    },
    /// Retention is configured for at least these periods.
    Retention {
        /// Days that must be immediately available (hot, queryable).
        online_days: u32,
        /// Days that must be kept in total (hot plus archive).
        total_days: u32,
    },
    /// The clock is synchronised, within the offset, to an approved source.
    TimeSync {
        /// Largest acceptable offset from the reference, in milliseconds.
        max_offset_ms: u32,
        /// Approved NTP servers (host names or addresses); empty means any.
        #[serde(default)]
        approved_sources: Vec<String>,
    },
    /// Vulnerabilities were patched within the allowed days of the vendor's release.
    PatchSla {
        /// Days allowed per severity; severities not listed have no deadline here.
        max_days: BTreeMap<Severity, u32>,
    },
    /// Every boot in the period used approved (golden) measurements and no policy violation
    /// was recorded; the quote's appraisal agrees.
    BootIntegrity,
    /// A fresh TPM quote verifies and its event log replays.
    Attestation,
    /// All data locations are in the listed countries (ISO 3166-1 alpha-2).
    DataLocation {
        /// Allowed countries.
        countries: Vec<String>,
    },
    /// Every VM in the inventory carries these labels (e.g. `function`, `tenant`).
    InventoryLabels {
        /// Required label names.
        labels: Vec<String>,
    },
    /// The SIEM acknowledged the log up to recently: the lag behind the head is small.
    OffboxDelivery {
        /// Largest acceptable lag, in minutes.
        max_lag_minutes: u32,
    },
    /// Only a person can judge this; always needs review, saying what to look at.
    Manual {
        /// What the reviewer must check.
        reason: String,
    },
}

impl Rule {
    /// The evidence this rule reads.
    pub fn needs(&self) -> &'static [EvidenceKind] {
        use EvidenceKind as E;
        match self {
            Rule::EventsRecorded { .. }
            | Rule::RecordFields
            | Rule::ActionsAuthenticated { .. }
            | Rule::Periodic { .. }
            | Rule::FailuresResponded { .. } => &[E::AuditEntries],
            Rule::LogIntegrity { .. } => &[E::Checkpoints],
            Rule::Retention { .. } => &[E::Retention],
            Rule::TimeSync { .. } => &[E::TimeSync],
            Rule::PatchSla { .. } => &[E::PatchLedger],
            Rule::BootIntegrity => &[E::AuditEntries, E::Attestation],
            Rule::Attestation => &[E::Attestation],
            Rule::DataLocation { .. } => &[E::DataLocation],
            Rule::InventoryLabels { .. } => &[E::Inventory],
            Rule::OffboxDelivery { .. } => &[E::SiemDelivery],
            Rule::Manual { .. } => &[E::Manual],
        }
    }

    /// The rule kind's name, as written in catalogs.
    pub fn kind(&self) -> &'static str {
        match self {
            Rule::EventsRecorded { .. } => "events_recorded",
            Rule::RecordFields => "record_fields",
            Rule::ActionsAuthenticated { .. } => "actions_authenticated",
            Rule::LogIntegrity { .. } => "log_integrity",
            Rule::Periodic { .. } => "periodic",
            Rule::FailuresResponded { .. } => "failures_responded",
            Rule::Retention { .. } => "retention",
            Rule::TimeSync { .. } => "time_sync",
            Rule::PatchSla { .. } => "patch_sla",
            Rule::BootIntegrity => "boot_integrity",
            Rule::Attestation => "attestation",
            Rule::DataLocation { .. } => "data_location",
            Rule::InventoryLabels { .. } => "inventory_labels",
            Rule::OffboxDelivery { .. } => "offbox_delivery",
            Rule::Manual { .. } => "manual",
        }
    }

    /// Every entry matcher the rule uses.
    pub(crate) fn matchers(&self) -> Vec<&EntryMatch> {
        match self {
            Rule::EventsRecorded { matches }
            | Rule::ActionsAuthenticated { matches }
            | Rule::Periodic { matches, .. } => matches.iter().collect(),
            Rule::FailuresResponded { pairs, .. } => pairs
                .iter()
                .flat_map(|p| [&p.failure, &p.recovery])
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// A catalog that cannot be used. Nothing is loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file cannot be read.
    #[error("cannot read catalog {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CATALOG_BYTES`].
    #[error("catalog {name} is larger than {MAX_CATALOG_BYTES} bytes")]
    TooLarge {
        /// File name.
        name: String,
    },
    /// The TOML does not parse or does not have the catalog shape.
    #[error("catalog {name} is not a valid catalog document")]
    Parse {
        /// File name.
        name: String,
        /// The parser's error (with line and column).
        #[source]
        source: Box<toml::de::Error>,
    },
    /// The catalog parses but breaks a rule.
    #[error("catalog {name}: {problem}")]
    Invalid {
        /// File name.
        name: String,
        /// What is wrong.
        problem: CatalogProblem,
    },
    /// Two catalogs describe the same framework id.
    #[error("framework {id} is defined by more than one catalog")]
    DuplicateFramework {
        /// The id.
        id: String,
    },
}

/// What [`Catalog::validate`] found wrong (the first problem).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogProblem {
    /// The framework id is empty or has characters other than `[a-z0-9.-]`.
    #[error("framework id {0:?} must be lowercase letters, digits, '.' and '-'")]
    FrameworkId(String),
    /// A framework text field is empty.
    #[error("framework {field} is empty")]
    EmptyFrameworkField {
        /// Which.
        field: &'static str,
    },
    /// No controls.
    #[error("the catalog has no controls")]
    NoControls,
    /// A control id is empty or has whitespace or control characters.
    #[error("control id {0:?} is empty or contains whitespace")]
    ControlId(String),
    /// Two controls share an id.
    #[error("control {0} appears more than once")]
    DuplicateControl(String),
    /// A control text field is empty.
    #[error("control {control}: {field} is empty")]
    EmptyControlField {
        /// The control.
        control: String,
        /// Which field.
        field: &'static str,
    },
    /// A control has no rules.
    #[error("control {0} has no rule")]
    NoRules(String),
    /// A rule needs evidence the control does not list.
    #[error(
        "control {control}: rule {rule} uses {evidence} evidence, which the control does not list"
    )]
    UndeclaredEvidence {
        /// The control.
        control: String,
        /// The rule kind.
        rule: &'static str,
        /// The evidence.
        evidence: EvidenceKind,
    },
    /// A control lists evidence twice.
    #[error("control {control} lists {evidence} evidence twice")]
    DuplicateEvidence {
        /// The control.
        control: String,
        /// The evidence.
        evidence: EvidenceKind,
    },
    /// An action pattern names no audit action.
    #[error("control {control}: {pattern:?} names no audit action")]
    UnknownAction {
        /// The control.
        control: String,
        /// The pattern.
        pattern: String,
    },
    /// A rule has an empty list where it needs at least one item.
    #[error("control {control}: rule {rule} needs at least one {what}")]
    EmptyList {
        /// The control.
        control: String,
        /// The rule kind.
        rule: &'static str,
        /// What is missing.
        what: &'static str,
    },
    /// A numeric threshold is zero or beyond its sane range.
    #[error("control {control}: {field} = {value} is outside {min}..={max}")]
    Threshold {
        /// The control.
        control: String,
        /// Which parameter.
        field: &'static str,
        /// The value.
        value: u64,
        /// Lowest allowed.
        min: u64,
        /// Highest allowed.
        max: u64,
    },
    /// A country code is not two uppercase letters.
    #[error("control {control}: country {code:?} is not an ISO 3166-1 alpha-2 code")]
    Country {
        /// The control.
        control: String,
        /// The code.
        code: String,
    },
    /// A text parameter of a rule is empty.
    #[error("control {control}: rule {rule} has an empty {field}")]
    EmptyRuleText {
        /// The control.
        control: String,
        /// The rule kind.
        rule: &'static str,
        /// Which.
        field: &'static str,
    },
}

impl Catalog {
    /// Parse and validate a catalog from TOML text; `name` is used in errors.
    pub fn from_toml(name: &str, text: &str) -> Result<Self, CatalogError> {
        if text.len() > MAX_CATALOG_BYTES {
            return Err(CatalogError::TooLarge {
                name: name.to_owned(),
            });
        }
        let catalog: Catalog = toml::from_str(text).map_err(|source| CatalogError::Parse {
            name: name.to_owned(),
            source: Box::new(source),
        })?;
        catalog
            .validate()
            .map_err(|problem| CatalogError::Invalid {
                name: name.to_owned(),
                problem,
            })?;
        Ok(catalog)
    }

    /// Read, parse and validate a catalog file.
    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        let read_err = |source| CatalogError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        if meta.len() > MAX_CATALOG_BYTES as u64 {
            return Err(CatalogError::TooLarge { name });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        Self::from_toml(&name, &text)
    }

    /// The catalogs shipped with Sakshi ([`BUILTIN_CATALOGS`]).
    pub fn builtin() -> Result<Vec<Catalog>, CatalogError> {
        let mut out: Vec<Catalog> = Vec::new();
        for (name, text) in BUILTIN_CATALOGS {
            let c = Catalog::from_toml(name, text)?;
            if out.iter().any(|o| o.framework.id == c.framework.id) {
                return Err(CatalogError::DuplicateFramework { id: c.framework.id });
            }
            out.push(c);
        }
        Ok(out)
    }

    /// The control with this id.
    pub fn control(&self, id: &str) -> Option<&Control> {
        self.controls.iter().find(|c| c.id == id)
    }

    /// Check the catalog; returns the first problem.
    pub fn validate(&self) -> Result<(), CatalogProblem> {
        let f = &self.framework;
        if f.id.is_empty()
            || !f
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        {
            return Err(CatalogProblem::FrameworkId(f.id.clone()));
        }
        for (field, value) in [
            ("name", &f.name),
            ("version", &f.version),
            ("issuer", &f.issuer),
            ("reference", &f.reference),
            ("source_note", &f.source_note),
        ] {
            if value.trim().is_empty() {
                return Err(CatalogProblem::EmptyFrameworkField { field });
            }
        }
        if self.controls.is_empty() {
            return Err(CatalogProblem::NoControls);
        }
        let mut seen = BTreeSet::new();
        for c in &self.controls {
            if c.id.is_empty() || c.id.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
                return Err(CatalogProblem::ControlId(c.id.clone()));
            }
            if !seen.insert(c.id.as_str()) {
                return Err(CatalogProblem::DuplicateControl(c.id.clone()));
            }
            c.validate()?;
        }
        Ok(())
    }
}

impl Control {
    fn validate(&self) -> Result<(), CatalogProblem> {
        let id = || self.id.clone();
        for (field, value) in [("title", &self.title), ("summary", &self.summary)] {
            if value.trim().is_empty() {
                return Err(CatalogProblem::EmptyControlField {
                    control: id(),
                    field,
                });
            }
        }
        if self.note.as_ref().is_some_and(|n| n.trim().is_empty()) {
            return Err(CatalogProblem::EmptyControlField {
                control: id(),
                field: "note",
            });
        }
        if self.evidence.is_empty() {
            return Err(CatalogProblem::EmptyControlField {
                control: id(),
                field: "evidence",
            });
        }
        let mut ev = BTreeSet::new();
        for e in &self.evidence {
            if !ev.insert(*e) {
                return Err(CatalogProblem::DuplicateEvidence {
                    control: id(),
                    evidence: *e,
                });
            }
        }
        if self.rules.is_empty() {
            return Err(CatalogProblem::NoRules(id()));
        }
        for rule in &self.rules {
            for needed in rule.needs() {
                if !ev.contains(needed) {
                    return Err(CatalogProblem::UndeclaredEvidence {
                        control: id(),
                        rule: rule.kind(),
                        evidence: *needed,
                    });
                }
            }
            self.validate_rule(rule)?;
        }
        Ok(())
    }

    fn validate_rule(&self, rule: &Rule) -> Result<(), CatalogProblem> {
        let id = || self.id.clone();
        let kind = rule.kind();
        let threshold = |field: &'static str, value: u64, min: u64, max: u64| {
            if value < min || value > max {
                Err(CatalogProblem::Threshold {
                    control: id(),
                    field,
                    value,
                    min,
                    max,
                })
            } else {
                Ok(())
            }
        };
        let non_empty = |len: usize, what: &'static str| {
            if len == 0 {
                Err(CatalogProblem::EmptyList {
                    control: id(),
                    rule: kind,
                    what,
                })
            } else {
                Ok(())
            }
        };
        for m in rule.matchers() {
            if m.action.actions().is_empty() {
                return Err(CatalogProblem::UnknownAction {
                    control: id(),
                    pattern: m.action.0.clone(),
                });
            }
        }
        const DAY_HOURS: u64 = 24;
        match rule {
            Rule::EventsRecorded { matches } | Rule::ActionsAuthenticated { matches } => {
                non_empty(matches.len(), "match")?;
            }
            Rule::Periodic {
                matches,
                every_hours,
                what,
            } => {
                non_empty(matches.len(), "match")?;
                threshold("every_hours", u64::from(*every_hours), 1, 366 * DAY_HOURS)?;
                if what.trim().is_empty() {
                    return Err(CatalogProblem::EmptyRuleText {
                        control: id(),
                        rule: kind,
                        field: "what",
                    });
                }
            }
            Rule::FailuresResponded {
                pairs,
                within_hours,
            } => {
                non_empty(pairs.len(), "pair")?;
                threshold("within_hours", u64::from(*within_hours), 1, 366 * DAY_HOURS)?;
            }
            Rule::LogIntegrity {
                max_checkpoint_gap_minutes,
            } => {
                threshold(
                    "max_checkpoint_gap_minutes",
                    u64::from(*max_checkpoint_gap_minutes),
                    1,
                    7 * 24 * 60,
                )?;
            }
            Rule::Retention {
                online_days,
                total_days,
            } => {
                threshold("total_days", u64::from(*total_days), 1, 3660)?;
                threshold(
                    "online_days",
                    u64::from(*online_days),
                    0,
                    u64::from(*total_days),
                )?;
            }
            Rule::TimeSync {
                max_offset_ms,
                approved_sources,
            } => {
                threshold("max_offset_ms", u64::from(*max_offset_ms), 1, 60_000)?;
                if approved_sources.iter().any(|s| s.trim().is_empty()) {
                    return Err(CatalogProblem::EmptyRuleText {
                        control: id(),
                        rule: kind,
                        field: "approved_sources",
                    });
                }
            }
            Rule::PatchSla { max_days } => {
                non_empty(max_days.len(), "severity")?;
                for days in max_days.values() {
                    threshold("max_days", u64::from(*days), 1, 3660)?;
                }
            }
            Rule::DataLocation { countries } => {
                non_empty(countries.len(), "country")?;
                for code in countries {
                    if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
                        return Err(CatalogProblem::Country {
                            control: id(),
                            code: code.clone(),
                        });
                    }
                }
            }
            Rule::InventoryLabels { labels } => {
                non_empty(labels.len(), "label")?;
                if labels.iter().any(|l| l.trim().is_empty()) {
                    return Err(CatalogProblem::EmptyRuleText {
                        control: id(),
                        rule: kind,
                        field: "labels",
                    });
                }
            }
            Rule::OffboxDelivery { max_lag_minutes } => {
                threshold(
                    "max_lag_minutes",
                    u64::from(*max_lag_minutes),
                    1,
                    7 * 24 * 60,
                )?;
            }
            Rule::Manual { reason } => {
                if reason.trim().is_empty() {
                    return Err(CatalogProblem::EmptyRuleText {
                        control: id(),
                        rule: kind,
                        field: "reason",
                    });
                }
            }
            Rule::RecordFields | Rule::BootIntegrity | Rule::Attestation => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[framework]
id = "test-1.0"
name = "Test"
version = "1.0"
issuer = "Nobody"
reference = "Test framework"
source_note = "made up for tests"

[[control]]
id = "1.1"
title = "Log admin actions"
summary = "Administrative actions are logged."
wording_verified = false
evidence = ["audit-entries"]

[[control.rule]]
kind = "events_recorded"
match = [{ action = "vm.*" }, { action = "user.create", outcome = "success" }]
"#;

    #[test]
    fn builtin_catalogs_load_and_validate() {
        let cats = Catalog::builtin().expect("built-in catalogs are valid");
        assert_eq!(cats.len(), BUILTIN_CATALOGS.len());
        let ids: Vec<_> = cats.iter().map(|c| c.framework.id.as_str()).collect();
        for want in [
            "pci-dss-4.0.1",
            "rbi-itgrca-2023",
            "rbi-it-outsourcing-2023",
            "rbi-payment-data-2018",
            "cert-in-2022",
            "dpdp-2023",
        ] {
            assert!(ids.contains(&want), "missing {want} in {ids:?}");
        }
        let pci = cats
            .iter()
            .find(|c| c.framework.id == "pci-dss-4.0.1")
            .unwrap();
        // The clauses the issue lists are all present.
        for id in [
            "10.2.1.1", "10.2.1.2", "10.2.1.3", "10.2.1.4", "10.2.1.5", "10.2.1.6", "10.2.1.7",
            "10.2.2", "10.3.1", "10.3.2", "10.3.3", "10.3.4", "10.4.1", "10.4.1.1", "10.5.1",
            "10.6.1", "10.6.2", "10.6.3", "10.7.2", "10.7.3", "6.3.3", "11.5.2", "2.2.1", "2.2.3",
            "A1.1.1", "A1.1.2", "A1.1.3", "A1.1.4", "A1.2.1", "A1.2.2", "A1.2.3", "12.10.1",
            "12.10.5",
        ] {
            assert!(pci.control(id).is_some(), "PCI control {id} missing");
        }
        assert!(matches!(
            pci.control("6.3.3").unwrap().rules[0],
            Rule::PatchSla { .. }
        ));
    }

    #[test]
    fn minimal_catalog_parses() {
        let c = Catalog::from_toml("t.toml", MINIMAL).unwrap();
        assert_eq!(c.controls.len(), 1);
        let Rule::EventsRecorded { matches } = &c.controls[0].rules[0] else {
            panic!("wrong rule kind")
        };
        assert_eq!(
            matches[0].action.actions().len(),
            Action::ALL
                .iter()
                .filter(|a| a.as_str().starts_with("vm."))
                .count()
        );
        assert_eq!(matches[1].outcome, Some(OutcomeFilter::Success));
    }

    fn problem(text: &str) -> CatalogProblem {
        match Catalog::from_toml("t.toml", text) {
            Err(CatalogError::Invalid { problem, .. }) => problem,
            other => panic!("expected a validation problem, got {other:?}"),
        }
    }

    #[test]
    fn validation_names_the_problem() {
        assert_eq!(
            problem(&MINIMAL.replace("vm.*", "vmm.*")),
            CatalogProblem::UnknownAction {
                control: "1.1".into(),
                pattern: "vmm.*".into()
            }
        );
        assert_eq!(
            problem(&MINIMAL.replace("\"test-1.0\"", "\"Test 1\"")),
            CatalogProblem::FrameworkId("Test 1".into())
        );
        let twice = format!(
            "{MINIMAL}\n{}",
            &MINIMAL[MINIMAL.find("[[control]]").unwrap()..]
        );
        assert_eq!(
            problem(&twice),
            CatalogProblem::DuplicateControl("1.1".into())
        );
        assert!(matches!(
            problem(&MINIMAL.replace("evidence = [\"audit-entries\"]", "evidence = [\"manual\"]")),
            CatalogProblem::UndeclaredEvidence {
                evidence: EvidenceKind::AuditEntries,
                ..
            }
        ));
        assert!(matches!(
            problem(&MINIMAL.replace(
                "summary = \"Administrative actions are logged.\"",
                "summary = \"  \""
            )),
            CatalogProblem::EmptyControlField {
                field: "summary",
                ..
            }
        ));
        let gap = MINIMAL
            .replace("evidence = [\"audit-entries\"]", "evidence = [\"checkpoints\"]")
            .replace(
                "kind = \"events_recorded\"\nmatch = [{ action = \"vm.*\" }, { action = \"user.create\", outcome = \"success\" }]",
                "kind = \"log_integrity\"\nmax_checkpoint_gap_minutes = 0",
            );
        assert!(matches!(
            problem(&gap),
            CatalogProblem::Threshold {
                field: "max_checkpoint_gap_minutes",
                value: 0,
                ..
            }
        ));
    }

    #[test]
    fn unknown_fields_and_rule_kinds_are_parse_errors() {
        let extra = MINIMAL.replace(
            "wording_verified = false",
            "wording_verified = false\nowner = \"x\"",
        );
        assert!(matches!(
            Catalog::from_toml("t.toml", &extra),
            Err(CatalogError::Parse { .. })
        ));
        let kind = MINIMAL.replace("events_recorded", "events_everywhere");
        let err = Catalog::from_toml("t.toml", &kind).unwrap_err();
        assert!(matches!(err, CatalogError::Parse { .. }));
        assert!(err.to_string().contains("t.toml"));
    }

    #[test]
    fn entry_matching() {
        use sakshi_audit::{Actor, AuthMethod, NewEntry, Origin, Outcome};
        let e = Entry::from_new(
            NewEntry::new(
                Action::AuditVerify,
                Actor::service("review"),
                Origin::Internal,
            )
            .details(serde_json::json!({"review": "daily", "n": 3})),
            7,
            chrono::Utc::now(),
        );
        let m = |t: &str| -> EntryMatch { toml::from_str(t).unwrap() };
        assert!(m(r#"action = "audit.*""#).matches(&e));
        assert!(
            m(r#"action = "audit.verify"
details = { review = "daily" }"#)
            .matches(&e)
        );
        assert!(
            !m(r#"action = "audit.verify"
details = { review = "weekly" }"#)
            .matches(&e)
        );
        assert!(
            !m(r#"action = "audit.verify"
actor_kind = "user""#)
            .matches(&e)
        );
        assert!(
            !m(r#"action = "audit.verify"
outcome = "failure""#)
            .matches(&e)
        );
        let mut f = e.clone();
        f.outcome = Outcome::failure("x");
        f.actor = Actor::user("a", AuthMethod::Password);
        assert!(
            m(r#"action = "audit.verify"
outcome = "failure"
actor_kind = "user""#)
            .matches(&f)
        );
    }
}
