//! The audit entry model and its canonical encoding.
//!
//! Every entry answers the questions PCI-DSS 10.2.2 asks: who (actor, with how they
//! authenticated), from where (origin), what (a typed action), on what (target), when (UTC
//! nanoseconds), with which result (outcome), plus free-form details, a trace id and, for VM
//! events, the per-VM sequence number from the supervisor.
//!
//! The canonical encoding is the RFC 8785 (JCS) serialisation of the entry as a JSON object
//! (see `docs/AUDIT.md`). Those exact bytes are stored, hashed into the Merkle tree and returned
//! by queries; nothing else about an entry is trusted.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The version number written into every canonical entry (`"v":1`).
pub const ENTRY_FORMAT_VERSION: u32 = 1;

/// The largest integer that JSON (an IEEE double) carries exactly: 2^53 - 1.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Longest accepted text field (actor id, target id, reason), in bytes.
pub const MAX_FIELD_BYTES: usize = 1024;

/// Longest accepted canonical `details` object, in bytes.
pub const MAX_DETAILS_BYTES: usize = 64 * 1024;

macro_rules! actions {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, )*) => {
        /// What happened. Serialised as its dotted name, e.g. `vm.create`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Action {
            $( $(#[$doc])* $variant, )*
        }

        impl Action {
            /// Every action, in declaration order.
            pub const ALL: &'static [Action] = &[ $( Action::$variant, )* ];

            /// The dotted name, e.g. `"vm.create"`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Action::$variant => $name, )*
                }
            }
        }

        impl FromStr for Action {
            type Err = UnknownAction;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $( $name => Ok(Action::$variant), )*
                    _ => Err(UnknownAction { name: s.chars().take(64).collect() }),
                }
            }
        }
    };
}

actions! {
    /// A micro-VM was created (config validated, measured).
    VmCreate => "vm.create",
    /// A micro-VM's VMM process was started.
    VmBoot => "vm.boot",
    /// The guest signalled boot complete.
    VmRunning => "vm.running",
    /// A micro-VM was paused.
    VmPause => "vm.pause",
    /// A micro-VM was resumed.
    VmResume => "vm.resume",
    /// A micro-VM stopped (guest power-off, reboot or requested stop).
    VmStop => "vm.stop",
    /// A micro-VM was destroyed and its resources released.
    VmDestroy => "vm.destroy",
    /// A micro-VM failed (triple fault, VMM crash, measurement mismatch, ...).
    VmFailed => "vm.failed",
    /// A forensic snapshot of a micro-VM was taken.
    VmSnapshot => "vm.snapshot",
    /// A micro-VM was restored from a snapshot.
    VmRestore => "vm.restore",
    /// Someone attached to a micro-VM's console.
    VmConsole => "vm.console",
    /// An image was built.
    ImageBuild => "image.build",
    /// An image was imported or registered in the image store.
    ImageRegister => "image.register",
    /// An image was approved for boot.
    ImageApprove => "image.approve",
    /// An image approval was revoked.
    ImageRevoke => "image.revoke",
    /// An image was deleted from the store.
    ImageDelete => "image.delete",
    /// A boot was refused or flagged by image policy.
    ImagePolicyViolation => "image.policy_violation",
    /// A patch was recorded in the patch ledger.
    PatchRecord => "patch.record",
    /// A patch was applied (a patched image went into service).
    PatchApply => "patch.apply",
    /// A successful login.
    AuthLoginSuccess => "auth.login.success",
    /// A failed login.
    AuthLoginFailure => "auth.login.failure",
    /// A logout or session end.
    AuthLogout => "auth.logout",
    /// A request was denied by access control.
    AuthDenied => "auth.denied",
    /// A user account was created.
    UserCreate => "user.create",
    /// A user account was changed.
    UserUpdate => "user.update",
    /// A user account was deleted.
    UserDelete => "user.delete",
    /// A user's roles changed.
    UserRoleChange => "user.role_change",
    /// A user's password or credential changed.
    UserCredentialChange => "user.credential_change",
    /// A user account was locked.
    UserLock => "user.lock",
    /// An API token was created.
    TokenCreate => "token.create",
    /// An API token was revoked.
    TokenRevoke => "token.revoke",
    /// Audit entries were read (query, tail, dashboard view).
    AuditRead => "audit.read",
    /// Audit entries were exported.
    AuditExport => "audit.export",
    /// A checkpoint was requested explicitly (periodic checkpoints are not entries).
    AuditCheckpoint => "audit.checkpoint",
    /// The log was verified.
    AuditVerify => "audit.verify",
    /// Entries were sealed into an archive segment.
    AuditArchive => "audit.archive",
    /// Archived entries passed their retention period and were deleted.
    AuditExpire => "audit.expire",
    /// The checkpoint witness (TPM) failed.
    AuditWitnessFailure => "audit.witness_failure",
    /// On open, entries written after the last checkpoint (an unclean stop) were adopted
    /// and signed by a recovery checkpoint.
    AuditRecover => "audit.recover",
    /// A configuration setting changed.
    ConfigChange => "config.change",
    /// The time source or its settings changed.
    TimeChange => "time.change",
    /// The appliance started.
    ApplianceStart => "appliance.start",
    /// The appliance stopped.
    ApplianceStop => "appliance.stop",
    /// A TPM quote was produced.
    AttestQuote => "attest.quote",
    /// An attestation check failed.
    AttestFailure => "attest.failure",
    /// An evidence bundle was exported.
    EvidenceExport => "evidence.export",
    /// Delivery to a SIEM failed or recovered.
    SiemDelivery => "siem.delivery",
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An action name that is not one of [`Action::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown audit action {name:?}")]
pub struct UnknownAction {
    /// The name that was given (first 64 characters).
    pub name: String,
}

/// Who the actor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A human user.
    User,
    /// An API token (machine client).
    ApiToken,
    /// A Sakshi service acting on its own (supervisor, retention, shipper).
    Service,
}

impl ActorKind {
    /// The name used in the canonical encoding.
    pub const fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::ApiToken => "api_token",
            ActorKind::Service => "service",
        }
    }
}

/// How the actor authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// Username and password.
    Password,
    /// Password plus a second factor.
    PasswordMfa,
    /// A session cookie established by an earlier login.
    Session,
    /// A bearer API token.
    BearerToken,
    /// Unix socket peer credentials (SO_PEERCRED).
    PeerCredentials,
    /// Mutual TLS client certificate.
    Mtls,
    /// An internal service; no external authentication.
    Internal,
    /// Not authenticated (e.g. a failed login attempt).
    None,
}

impl AuthMethod {
    /// Every method.
    pub const ALL: [AuthMethod; 8] = [
        AuthMethod::Password,
        AuthMethod::PasswordMfa,
        AuthMethod::Session,
        AuthMethod::BearerToken,
        AuthMethod::PeerCredentials,
        AuthMethod::Mtls,
        AuthMethod::Internal,
        AuthMethod::None,
    ];

    /// The name used in the canonical encoding.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Password => "password",
            AuthMethod::PasswordMfa => "password_mfa",
            AuthMethod::Session => "session",
            AuthMethod::BearerToken => "bearer_token",
            AuthMethod::PeerCredentials => "peer_credentials",
            AuthMethod::Mtls => "mtls",
            AuthMethod::Internal => "internal",
            AuthMethod::None => "none",
        }
    }
}

/// The subject of an entry: who did it and how they proved it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// User, API token or service.
    pub kind: ActorKind,
    /// User name, token id or service name.
    pub id: String,
    /// How the actor authenticated.
    pub auth: AuthMethod,
}

impl Actor {
    /// A human user.
    pub fn user(name: impl Into<String>, auth: AuthMethod) -> Self {
        Actor {
            kind: ActorKind::User,
            id: name.into(),
            auth,
        }
    }

    /// An API token, by its (non-secret) id.
    pub fn api_token(token_id: impl Into<String>) -> Self {
        Actor {
            kind: ActorKind::ApiToken,
            id: token_id.into(),
            auth: AuthMethod::BearerToken,
        }
    }

    /// A Sakshi service (e.g. `supervisor`, `retention`).
    pub fn service(name: impl Into<String>) -> Self {
        Actor {
            kind: ActorKind::Service,
            id: name.into(),
            auth: AuthMethod::Internal,
        }
    }
}

/// Where the request came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Origin {
    /// A network client.
    Ip {
        /// Client address.
        addr: IpAddr,
    },
    /// A client on a local Unix socket.
    LocalSocket {
        /// Socket path.
        path: String,
        /// Peer uid, when known.
        peer_uid: Option<u32>,
    },
    /// Inside the appliance (a service acting on its own).
    Internal,
}

/// The kind of object an entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// A micro-VM, by id.
    Vm,
    /// An image, by digest (`sha256:...`).
    Image,
    /// A patch ledger record.
    Patch,
    /// A user account.
    User,
    /// An API token.
    Token,
    /// A configuration key.
    Config,
    /// The audit log itself (a range, a segment, ...).
    AuditLog,
    /// The appliance as a whole.
    Appliance,
    /// An evidence bundle.
    Evidence,
    /// A TPM quote or attestation object.
    Attestation,
    /// A SIEM destination.
    Siem,
}

impl TargetKind {
    /// Every kind.
    pub const ALL: [TargetKind; 11] = [
        TargetKind::Vm,
        TargetKind::Image,
        TargetKind::Patch,
        TargetKind::User,
        TargetKind::Token,
        TargetKind::Config,
        TargetKind::AuditLog,
        TargetKind::Appliance,
        TargetKind::Evidence,
        TargetKind::Attestation,
        TargetKind::Siem,
    ];

    /// The name used in the canonical encoding.
    pub const fn as_str(self) -> &'static str {
        match self {
            TargetKind::Vm => "vm",
            TargetKind::Image => "image",
            TargetKind::Patch => "patch",
            TargetKind::User => "user",
            TargetKind::Token => "token",
            TargetKind::Config => "config",
            TargetKind::AuditLog => "audit_log",
            TargetKind::Appliance => "appliance",
            TargetKind::Evidence => "evidence",
            TargetKind::Attestation => "attestation",
            TargetKind::Siem => "siem",
        }
    }
}

/// What an entry is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Kind of object.
    pub kind: TargetKind,
    /// Its identifier (VM id, image digest, user name, ...).
    pub id: String,
}

impl Target {
    /// A target of the given kind.
    pub fn new(kind: TargetKind, id: impl Into<String>) -> Self {
        Target {
            kind,
            id: id.into(),
        }
    }
    /// A micro-VM.
    pub fn vm(id: impl Into<String>) -> Self {
        Self::new(TargetKind::Vm, id)
    }
    /// An image by digest.
    pub fn image(digest: impl Into<String>) -> Self {
        Self::new(TargetKind::Image, digest)
    }
    /// A user account.
    pub fn user(name: impl Into<String>) -> Self {
        Self::new(TargetKind::User, name)
    }
}

/// Success or failure, with the reason for a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    /// The action succeeded.
    Success,
    /// The action failed.
    Failure {
        /// Why.
        reason: String,
    },
}

impl Outcome {
    /// A failure with a reason.
    pub fn failure(reason: impl Into<String>) -> Self {
        Outcome::Failure {
            reason: reason.into(),
        }
    }

    /// True for [`Outcome::Success`].
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success)
    }
}

/// A W3C trace id: 16 bytes, written as 32 lowercase hex digits, not all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

impl TraceId {
    /// Wrap raw bytes; `None` for the invalid all-zero id.
    pub fn from_bytes(bytes: [u8; 16]) -> Option<Self> {
        (bytes != [0; 16]).then_some(TraceId(bytes))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

/// A trace id that is not 32 lowercase hex digits, or is all zeros.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trace id must be 32 lowercase hex digits, not all zero")]
pub struct TraceIdError;

impl FromStr for TraceId {
    type Err = TraceIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(TraceIdError);
        }
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out).map_err(|_| TraceIdError)?;
        TraceId::from_bytes(out).ok_or(TraceIdError)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl Serialize for TraceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TraceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An entry as a caller submits it. The log assigns the sequence number and the time.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    /// What happened.
    pub action: Action,
    /// Who did it.
    pub actor: Actor,
    /// From where.
    pub origin: Origin,
    /// On what, if anything.
    pub target: Option<Target>,
    /// The result.
    pub outcome: Outcome,
    /// Free-form details: a JSON object, or `null` for none.
    pub details: serde_json::Value,
    /// The request's trace id, if any.
    pub trace_id: Option<TraceId>,
    /// For VM events: the supervisor's per-VM sequence number.
    pub vm_seq: Option<u64>,
}

impl NewEntry {
    /// A successful action with no target, details, trace id or VM sequence number.
    pub fn new(action: Action, actor: Actor, origin: Origin) -> Self {
        NewEntry {
            action,
            actor,
            origin,
            target: None,
            outcome: Outcome::Success,
            details: serde_json::Value::Null,
            trace_id: None,
            vm_seq: None,
        }
    }

    /// Set the target.
    pub fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    /// Set the outcome.
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// Set the details (a JSON object).
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// Set the trace id.
    pub fn trace_id(mut self, trace_id: TraceId) -> Self {
        self.trace_id = Some(trace_id);
        self
    }

    /// Set the per-VM sequence number.
    pub fn vm_seq(mut self, vm_seq: u64) -> Self {
        self.vm_seq = Some(vm_seq);
        self
    }

    /// Check the limits an entry must respect before it is encoded.
    pub fn validate(&self) -> Result<(), InvalidEntry> {
        crate::canonical::checked_details(self).map(|_| ())
    }

    pub(crate) fn check_fields(&self) -> Result<(), InvalidEntry> {
        let text_fields = [
            ("actor.id", self.actor.id.as_str()),
            (
                "target.id",
                self.target.as_ref().map_or("", |t| t.id.as_str()),
            ),
            (
                "outcome.reason",
                match &self.outcome {
                    Outcome::Failure { reason } => reason.as_str(),
                    Outcome::Success => "",
                },
            ),
            (
                "origin.path",
                match &self.origin {
                    Origin::LocalSocket { path, .. } => path.as_str(),
                    _ => "",
                },
            ),
        ];
        for (field, value) in text_fields {
            if value.len() > MAX_FIELD_BYTES {
                return Err(InvalidEntry::FieldTooLong {
                    field,
                    len: value.len(),
                });
            }
        }
        if self.actor.id.is_empty() {
            return Err(InvalidEntry::EmptyActor);
        }
        if !matches!(
            self.details,
            serde_json::Value::Object(_) | serde_json::Value::Null
        ) {
            return Err(InvalidEntry::DetailsNotObject);
        }
        if let Some(v) = self.vm_seq
            && v > MAX_SAFE_INTEGER
        {
            return Err(InvalidEntry::VmSeqTooLarge { vm_seq: v });
        }
        Ok(())
    }
}

/// Why an entry cannot be appended. Nothing is written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvalidEntry {
    /// A text field is longer than [`MAX_FIELD_BYTES`].
    #[error("field {field} is {len} bytes; the limit is {MAX_FIELD_BYTES}")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// The actor id is empty.
    #[error("actor id is empty")]
    EmptyActor,
    /// `details` is neither a JSON object nor null.
    #[error("details must be a JSON object or null")]
    DetailsNotObject,
    /// The canonical details exceed [`MAX_DETAILS_BYTES`].
    #[error("details are {len} bytes canonicalised; the limit is {MAX_DETAILS_BYTES}")]
    DetailsTooLarge {
        /// Canonical length.
        len: usize,
    },
    /// `vm_seq` cannot be represented exactly in JSON.
    #[error("vm_seq {vm_seq} exceeds 2^53-1")]
    VmSeqTooLarge {
        /// The value given.
        vm_seq: u64,
    },
    /// The details could not be canonicalised (e.g. a non-finite number).
    #[error("details cannot be canonicalised")]
    Canonicalize(#[source] std::sync::Arc<serde_json::Error>),
}

/// A recorded entry: a [`NewEntry`] plus the sequence number (its leaf index in the Merkle
/// tree, from 0) and the UTC time at which the log accepted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// What happened.
    pub action: Action,
    /// Who did it.
    pub actor: Actor,
    /// Free-form details (object or null).
    pub details: serde_json::Value,
    /// From where.
    pub origin: Origin,
    /// The result.
    pub outcome: Outcome,
    /// Sequence number = leaf index, from 0.
    pub seq: u64,
    /// On what.
    pub target: Option<Target>,
    /// UTC time of the append, nanosecond precision.
    #[serde(with = "rfc3339_ns")]
    pub time: DateTime<Utc>,
    /// Trace id.
    pub trace_id: Option<TraceId>,
    /// Format version, [`ENTRY_FORMAT_VERSION`].
    pub v: u32,
    /// Supervisor's per-VM sequence number.
    pub vm_seq: Option<u64>,
}

impl Entry {
    /// Build the entry that `new` becomes at position `seq` and time `time`.
    pub fn from_new(new: NewEntry, seq: u64, time: DateTime<Utc>) -> Self {
        Entry {
            action: new.action,
            actor: new.actor,
            details: new.details,
            origin: new.origin,
            outcome: new.outcome,
            seq,
            target: new.target,
            time,
            trace_id: new.trace_id,
            v: ENTRY_FORMAT_VERSION,
            vm_seq: new.vm_seq,
        }
    }

    /// The canonical encoding (RFC 8785 JSON) of this entry: the bytes that are stored and
    /// hashed into the leaf. (Size limits are checked by [`NewEntry::validate`].)
    pub fn canonical(&self) -> Result<String, InvalidEntry> {
        let details = crate::canonical::canonical_details(&self.details)?;
        let new = NewEntry {
            action: self.action,
            actor: self.actor.clone(),
            origin: self.origin.clone(),
            target: self.target.clone(),
            outcome: self.outcome.clone(),
            details: serde_json::Value::Null,
            trace_id: self.trace_id,
            vm_seq: self.vm_seq,
        };
        Ok(crate::canonical::encode(
            &new, &details, self.seq, &self.time,
        ))
    }

    /// Decode canonical bytes back into an entry (used by queries and exports).
    pub fn decode(canonical: &[u8]) -> Result<Self, DecodeEntryError> {
        let entry: Entry = serde_json::from_slice(canonical).map_err(DecodeEntryError::Json)?;
        if entry.v != ENTRY_FORMAT_VERSION {
            return Err(DecodeEntryError::Version { found: entry.v });
        }
        Ok(entry)
    }
}

/// Stored bytes that are not a valid entry.
#[derive(Debug, thiserror::Error)]
pub enum DecodeEntryError {
    /// Not JSON of the entry shape.
    #[error("entry is not valid entry JSON")]
    Json(#[source] serde_json::Error),
    /// An unknown format version.
    #[error("entry format version {found} is not supported")]
    Version {
        /// The version found.
        found: u32,
    },
}

/// Format a time the way entries and checkpoints carry it: RFC 3339, UTC, 9 fraction digits.
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

pub(crate) mod rfc3339_ns {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_time(t))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sample() -> Entry {
        let new = NewEntry::new(
            Action::VmCreate,
            Actor::user("alice", AuthMethod::Password),
            Origin::Ip {
                addr: "192.0.2.7".parse().unwrap(),
            },
        )
        .target(Target::vm("vm-1"))
        .details(serde_json::json!({"z": 1, "a": "x\u{2028}y", "m": {"b": 2.50, "a": null}}))
        .trace_id("4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap())
        .vm_seq(3);
        let t =
            Utc.with_ymd_and_hms(2026, 11, 27, 1, 2, 3).unwrap() + chrono::Duration::nanoseconds(5);
        Entry::from_new(new, 42, t)
    }

    #[test]
    fn action_names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for a in Action::ALL {
            assert!(seen.insert(a.as_str()), "duplicate {a}");
            assert_eq!(a.as_str().parse::<Action>().unwrap(), *a);
            assert!(a.as_str().contains('.'));
        }
        assert!("vm.explode".parse::<Action>().is_err());
    }

    #[test]
    fn canonical_form_is_sorted_compact_and_stable() {
        let e = sample();
        let c = e.canonical().unwrap();
        assert_eq!(
            c,
            concat!(
                r#"{"action":"vm.create","actor":{"auth":"password","id":"alice","kind":"user"},"#,
                r#""details":{"a":"x\u2028y","m":{"a":null,"b":2.5},"z":1},"#,
                r#""origin":{"addr":"192.0.2.7","kind":"ip"},"outcome":{"result":"success"},"#,
                r#""seq":42,"target":{"id":"vm-1","kind":"vm"},"#,
                r#""time":"2026-11-27T01:02:03.000000005Z","#,
                r#""trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","v":1,"vm_seq":3}"#
            )
            .replace("\\u2028", "\u{2028}")
        );
        let back = Entry::decode(c.as_bytes()).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.canonical().unwrap(), c);
    }

    fn generic_jcs(e: &Entry) -> String {
        serde_json_canonicalizer::to_string(e).unwrap()
    }

    #[test]
    fn hand_written_encoding_equals_generic_rfc8785() {
        let mut cases = vec![sample()];
        let t = sample().time;
        let weird = "q\"b\\s/\u{1}\u{1f}\u{7f}\n\t\r\u{8}\u{c}é😀\u{2028}";
        let origins = [
            Origin::Internal,
            Origin::LocalSocket {
                path: "/run/sakshi.sock".into(),
                peer_uid: Some(1000),
            },
            Origin::LocalSocket {
                path: weird.into(),
                peer_uid: None,
            },
            Origin::Ip {
                addr: "2001:db8::1".parse().unwrap(),
            },
        ];
        for (i, origin) in origins.into_iter().enumerate() {
            let mut e = NewEntry::new(Action::ALL[i * 7], Actor::user(weird, AuthMethod::ALL[i]), origin)
                .outcome(Outcome::failure(weird))
                .details(serde_json::json!({ "k": [1, 2.5e-7, "x", null, true], "\u{e9}": { "b": 1, "a": weird } }));
            if i % 2 == 0 {
                e = e
                    .target(Target::new(TargetKind::ALL[i], weird))
                    .vm_seq(MAX_SAFE_INTEGER);
            }
            cases.push(Entry::from_new(e, i as u64 * 1_000_003, t));
        }
        for kind in [ActorKind::User, ActorKind::ApiToken, ActorKind::Service] {
            let mut e = sample();
            e.actor.kind = kind;
            cases.push(e);
        }
        for e in &cases {
            let c = e.canonical().unwrap();
            assert_eq!(c, generic_jcs(e));
            assert_eq!(Entry::decode(c.as_bytes()).unwrap(), *e);
            assert_eq!(crate::canonical::claimed_seq(c.as_bytes()), Some(e.seq));
        }
    }

    #[test]
    fn enum_names_match_their_serde_names() {
        for a in AuthMethod::ALL {
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
        for k in [ActorKind::User, ActorKind::ApiToken, ActorKind::Service] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        for k in TargetKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }

    #[test]
    fn claimed_seq_ignores_seq_keys_inside_details() {
        let e = sample().clone();
        let mut e2 = e.clone();
        e2.details = serde_json::json!({ "seq": 999, "x": ",\"seq\":5" });
        let c = e2.canonical().unwrap();
        assert_eq!(crate::canonical::claimed_seq(c.as_bytes()), Some(42));
        assert_eq!(crate::canonical::claimed_seq(b"{}"), None);
    }

    #[test]
    fn validation_rejects_bad_entries() {
        let base = NewEntry::new(Action::AuditRead, Actor::service("x"), Origin::Internal);
        assert!(base.validate().is_ok());
        let bad = base.clone().details(serde_json::json!([1, 2]));
        assert!(matches!(
            bad.validate(),
            Err(InvalidEntry::DetailsNotObject)
        ));
        let bad = base.clone().vm_seq(1 << 60);
        assert!(matches!(
            bad.validate(),
            Err(InvalidEntry::VmSeqTooLarge { .. })
        ));
        let mut bad = base.clone();
        bad.actor.id = "a".repeat(MAX_FIELD_BYTES + 1);
        assert!(matches!(
            bad.validate(),
            Err(InvalidEntry::FieldTooLong {
                field: "actor.id",
                ..
            })
        ));
        let mut bad = base;
        bad.actor.id.clear();
        assert!(matches!(bad.validate(), Err(InvalidEntry::EmptyActor)));
    }

    #[test]
    fn trace_id_parsing() {
        assert!(
            "00000000000000000000000000000000"
                .parse::<TraceId>()
                .is_err()
        );
        assert!(
            "4BF92F3577B34DA6A3CE929D0E0E4736"
                .parse::<TraceId>()
                .is_err()
        );
        assert!("4bf92f".parse::<TraceId>().is_err());
        let t: TraceId = "4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap();
        assert_eq!(t.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn decode_rejects_unknown_fields_and_versions() {
        let c = sample().canonical().unwrap();
        let extra = c.replacen('{', r#"{"aaa":1,"#, 1);
        assert!(matches!(
            Entry::decode(extra.as_bytes()),
            Err(DecodeEntryError::Json(_))
        ));
        let v2 = c.replace(r#""v":1"#, r#""v":2"#);
        assert!(matches!(
            Entry::decode(v2.as_bytes()),
            Err(DecodeEntryError::Version { found: 2 })
        ));
    }
}
