//! Operations shared by the JSON API and the dashboard: each validates, calls the backend and
//! appends the audit entry, so both faces behave (and audit) identically.

use crate::actions::AuditAction;
use crate::api::types::{
    AuditQueryParams, CreateTokenRequest, CreateUserRequest, CreateVmRequest, Overview, VmCounts,
};
use crate::auth::{self, NewToken, UserView};
use crate::backend::{AuditCursor, AuditFilter, AuditPage, Outcome, VmDetail, VmSpec, VmState};
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::images::{ImageError, ImageKind, is_sha256_hex};
use crate::rbac::{Permission, Role};
use crate::state::AppState;
use serde_json::json;
use std::time::Instant;

/// A lifecycle command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmAction {
    /// Boot.
    Start,
    /// Pause vCPUs.
    Pause,
    /// Resume vCPUs.
    Resume,
    /// Stop.
    Stop,
    /// Remove.
    Destroy,
}

impl VmAction {
    fn audit_action(self) -> AuditAction {
        match self {
            VmAction::Start => AuditAction::VmStart,
            VmAction::Pause => AuditAction::VmPause,
            VmAction::Resume => AuditAction::VmResume,
            VmAction::Stop => AuditAction::VmStop,
            VmAction::Destroy => AuditAction::VmDestroy,
        }
    }
}

pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Runs a lifecycle command and audits it (success or failure).
pub async fn vm_action(
    app: &AppState,
    ctx: &Ctx,
    id: String,
    action: VmAction,
) -> Result<Option<VmDetail>, ApiError> {
    let vm_id = id.clone();
    let result = app
        .blocking(move |i| match action {
            VmAction::Start => i.vms.start(&vm_id).map(Some),
            VmAction::Pause => i.vms.pause(&vm_id).map(Some),
            VmAction::Resume => i.vms.resume(&vm_id).map(Some),
            VmAction::Stop => i.vms.stop(&vm_id).map(Some),
            VmAction::Destroy => i.vms.destroy(&vm_id).map(|()| None),
        })
        .await?;
    let (outcome, details) = match &result {
        Ok(Some(d)) if action == VmAction::Start => (
            Outcome::Success,
            json!({
                "state": d.summary.state,
                "kernel_sha256": d.summary.kernel_sha256,
                "initrd_sha256": d.initrd_sha256,
                "measurements": d.measurements,
                "image_policy": crate::backend::policy_verdict(&d.measurements),
            }),
        ),
        Ok(Some(d)) => (Outcome::Success, json!({ "state": d.summary.state })),
        Ok(None) => (Outcome::Success, json!({})),
        Err(e) => (Outcome::Failure, json!({ "error": error_chain(e) })),
    };
    app.audit(
        ctx,
        action.audit_action(),
        format!("vm:{id}"),
        outcome,
        details,
    )
    .await?;
    Ok(result?)
}

/// Longest command line accepted (the host appends ` trace=<32 hex>` within its 2047 bytes).
pub const MAX_CMDLINE: usize = 2000;

/// Checks a kernel command line: at most [`MAX_CMDLINE`] bytes of printable ASCII.
pub fn validate_cmdline(cmdline: &str) -> Result<(), String> {
    if cmdline.len() > MAX_CMDLINE {
        return Err(format!("must be at most {MAX_CMDLINE} bytes"));
    }
    if let Some(c) = cmdline.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(format!(
            "contains a character that is not printable ASCII: {c:?}"
        ));
    }
    Ok(())
}

/// Checks a VM name: 1-63 characters, lowercase letters, digits and `-`, starting with a letter.
pub fn validate_vm_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 63 {
        return Err("must be 1 to 63 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("must start with a lowercase letter");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err("may only contain a-z, 0-9 and '-'");
    }
    Ok(())
}

fn image_error(field: &'static str, e: ImageError) -> ApiError {
    match e {
        ImageError::NotFound(_) | ImageError::WrongKind { .. } => {
            ApiError::invalid(field, e.to_string())
        }
        other => ApiError::internal(other),
    }
}

/// Validates, resolves images, creates (and optionally starts) a VM; audited.
pub async fn create_vm(
    app: &AppState,
    ctx: &Ctx,
    req: CreateVmRequest,
) -> Result<VmDetail, ApiError> {
    let s = &app.inner.settings;
    validate_vm_name(&req.name).map_err(|r| ApiError::invalid("name", r))?;
    if !is_sha256_hex(&req.kernel_sha256) {
        return Err(ApiError::invalid(
            "kernel_sha256",
            "must be 64 lowercase hex digits",
        ));
    }
    if let Some(d) = &req.initrd_sha256
        && !is_sha256_hex(d)
    {
        return Err(ApiError::invalid(
            "initrd_sha256",
            "must be 64 lowercase hex digits",
        ));
    }
    validate_cmdline(&req.cmdline).map_err(|r| ApiError::invalid("cmdline", r))?;
    if req.vcpus == 0 || req.vcpus > s.max_vcpus {
        return Err(ApiError::invalid(
            "vcpus",
            format!("must be between 1 and {}", s.max_vcpus),
        ));
    }
    if req.memory_mib < 16 || req.memory_mib > s.max_memory_mib {
        return Err(ApiError::invalid(
            "memory_mib",
            format!("must be between 16 and {}", s.max_memory_mib),
        ));
    }
    let max_vms = s.max_vms as usize;
    let start = req.start;
    let trace_id = ctx.trace_id.clone();
    let req2 = req.clone();
    let created = app
        .blocking(
            move |i| -> Result<Result<VmDetail, crate::backend::VmError>, ApiError> {
                let kernel = i
                    .images
                    .resolve(&req2.kernel_sha256, ImageKind::Kernel)
                    .map_err(|e| image_error("kernel_sha256", e))?;
                let initrd = req2
                    .initrd_sha256
                    .as_deref()
                    .map(|d| i.images.resolve(d, ImageKind::Initrd))
                    .transpose()
                    .map_err(|e| image_error("initrd_sha256", e))?;
                let existing = i.vms.list()?;
                if existing.len() >= max_vms {
                    return Err(ApiError::Conflict(format!(
                        "limit reached: at most {max_vms} VMs (destroy one first)"
                    )));
                }
                if existing.iter().any(|v| v.name == req2.name) {
                    return Err(ApiError::Conflict(format!(
                        "a VM named {:?} exists already",
                        req2.name
                    )));
                }
                Ok(i.vms.create(VmSpec {
                    name: req2.name,
                    kernel,
                    initrd,
                    cmdline: req2.cmdline,
                    vcpus: req2.vcpus,
                    memory_mib: req2.memory_mib,
                    trace_id,
                }))
            },
        )
        .await??;
    let details = match &created {
        Ok(d) => json!({
            "name": req.name,
            "kernel_sha256": req.kernel_sha256,
            "initrd_sha256": req.initrd_sha256,
            "cmdline": req.cmdline,
            "vcpus": req.vcpus,
            "memory_mib": req.memory_mib,
            "measurements": d.measurements,
        }),
        Err(e) => json!({
            "name": req.name,
            "kernel_sha256": req.kernel_sha256,
            "initrd_sha256": req.initrd_sha256,
            "error": error_chain(e),
        }),
    };
    let target = match &created {
        Ok(d) => format!("vm:{}", d.summary.id),
        Err(_) => format!("vm:{}", req.name),
    };
    let outcome = if created.is_ok() {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    app.audit(ctx, AuditAction::VmCreate, target, outcome, details)
        .await?;
    let detail = created?;
    if start
        && let Some(d) = vm_action(app, ctx, detail.summary.id.clone(), VmAction::Start).await?
    {
        return Ok(d);
    }
    Ok(detail)
}

/// Appliance overview.
pub async fn overview(app: &AppState, ctx: &Ctx) -> Result<Overview, ApiError> {
    let (host, vms, head, checkpoint) = app
        .blocking(|i| -> Result<_, ApiError> {
            let host = i.vms.host_info();
            let vms = i.vms.list()?;
            let head = i.audit.head()?;
            let cp = i.audit.checkpoints(1)?.into_iter().next();
            Ok((host, vms, head, cp))
        })
        .await??;
    let mut counts = VmCounts::default();
    for v in &vms {
        counts.total += 1;
        match v.state {
            VmState::Created => counts.created += 1,
            VmState::Booting => counts.booting += 1,
            VmState::Running => counts.running += 1,
            VmState::Paused => counts.paused += 1,
            VmState::Stopped => counts.stopped += 1,
            VmState::Failed => counts.failed += 1,
        }
    }
    Ok(Overview {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        binary_sha256: app.inner.settings.binary_sha256.clone(),
        uptime_s: app.inner.started.elapsed().as_secs(),
        host,
        vms: counts,
        audit_size: head.0,
        audit_root: head.1,
        last_checkpoint: checkpoint,
        user: ctx.actor(),
        role: ctx.role(),
        siem: app.delivery_health(),
    })
}

/// Parses audit query parameters into a filter and cursor.
pub fn audit_filter(q: &AuditQueryParams) -> Result<(AuditFilter, AuditCursor, u32), ApiError> {
    let outcome = q
        .outcome
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            Outcome::parse(s)
                .ok_or_else(|| ApiError::invalid("outcome", "must be success, failure or denied"))
        })
        .transpose()?;
    for (field, v) in [("since", &q.since), ("until", &q.until)] {
        if let Some(v) = v.as_deref().filter(|s| !s.is_empty())
            && chrono::DateTime::parse_from_rfc3339(v).is_err()
        {
            return Err(ApiError::invalid(
                field,
                "must be an RFC 3339 time, e.g. 2025-01-31T12:00:00Z",
            ));
        }
    }
    let cursor = match (q.before, q.after) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "after",
                "give either before or after, not both",
            ));
        }
        (Some(b), None) => AuditCursor::Before(b),
        (None, Some(a)) => AuditCursor::After(a),
        (None, None) => AuditCursor::Newest,
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 500"));
    }
    let nonempty = |o: &Option<String>| o.clone().filter(|s| !s.is_empty());
    Ok((
        AuditFilter {
            actor: nonempty(&q.actor),
            action: nonempty(&q.action),
            target: nonempty(&q.target),
            outcome,
            since: nonempty(&q.since),
            until: nonempty(&q.until),
        },
        cursor,
        limit,
    ))
}

/// Which form of the entries a page read returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryForm {
    /// Everything, details included (the API).
    Full,
    /// Without the details, which the dashboard's table does not show (copying them was most
    /// of a page's cost).
    Summary,
}

/// Reads one page of the audit log; the read itself is audited.
pub async fn audit_page(
    app: &AppState,
    ctx: &Ctx,
    q: &AuditQueryParams,
    form: EntryForm,
) -> Result<AuditPage, ApiError> {
    let (filter, cursor, limit) = audit_filter(q)?;
    let f2 = filter.clone();
    let page = app
        .blocking(move |i| match form {
            EntryForm::Full => i.audit.query(&f2, cursor, limit),
            EntryForm::Summary => i.audit.query_summaries(&f2, cursor, limit),
        })
        .await??;
    let cursor_desc = match cursor {
        AuditCursor::Newest => json!(null),
        AuditCursor::Before(b) => json!({ "before": b }),
        AuditCursor::After(a) => json!({ "after": a }),
    };
    app.audit(
        ctx,
        AuditAction::AuditRead,
        "audit_log:entries",
        Outcome::Success,
        json!({
            "kind": "entries",
            "filter": {
                "actor": filter.actor, "action": filter.action, "target": filter.target,
                "outcome": filter.outcome, "since": filter.since, "until": filter.until,
            },
            "cursor": cursor_desc,
            "returned": page.entries.len(),
        }),
    )
    .await?;
    Ok(page)
}

/// Logs a user in: lockout check, argon2id verification, throttle update; audited either way.
pub async fn login(
    app: &AppState,
    ctx: &Ctx,
    username: &str,
    password: &str,
    channel: &'static str,
) -> Result<Role, ApiError> {
    let now = Instant::now();
    let user_key = if auth::validate_username(username).is_ok() {
        format!("user:{username}")
    } else {
        "user:<invalid>".to_owned()
    };
    let addr_key = format!("addr:{}", ctx.origin);
    let keys = [user_key.as_str(), addr_key.as_str()];
    let target = format!("user:{}", username.chars().take(64).collect::<String>());
    if let Some(wait) = app.inner.throttle.locked(&keys, now) {
        let retry_after_s = wait.as_secs().max(1);
        app.audit(
            ctx,
            AuditAction::LoginFailed,
            target,
            Outcome::Failure,
            json!({ "reason": "locked out", "retry_after_s": retry_after_s, "channel": channel }),
        )
        .await?;
        return Err(ApiError::TooManyAttempts { retry_after_s });
    }
    let (u, p) = (username.to_owned(), password.to_owned());
    let checked = app
        .blocking(move |i| -> Result<Option<Role>, ApiError> {
            let creds = i.users.credentials(&u)?;
            let ok = auth::verify_password(&p, creds.as_ref().map(|(_, phc)| phc.as_str()));
            Ok(creds.filter(|_| ok).map(|(role, _)| role))
        })
        .await??;
    match checked {
        Some(role) => {
            app.inner.throttle.success(&keys);
            let as_user = Ctx {
                principal: Some(crate::ctx::Principal {
                    user: username.to_owned(),
                    role,
                    via: crate::ctx::Via::Password,
                }),
                ..ctx.clone()
            };
            app.audit(
                &as_user,
                AuditAction::LoginSucceeded,
                target,
                Outcome::Success,
                json!({ "channel": channel }),
            )
            .await?;
            Ok(role)
        }
        None => {
            let locked = app.inner.throttle.failure(&keys, now);
            app.audit(
                ctx,
                AuditAction::LoginFailed,
                target,
                Outcome::Failure,
                json!({
                    "reason": "bad user name or password",
                    "channel": channel,
                    "locked_for_s": locked.map(|d| d.as_secs()),
                }),
            )
            .await?;
            Err(ApiError::Unauthenticated)
        }
    }
}

/// Creates a user (admin); audited.
pub async fn create_user(
    app: &AppState,
    ctx: &Ctx,
    req: CreateUserRequest,
) -> Result<UserView, ApiError> {
    auth::validate_username(&req.name).map_err(|r| ApiError::invalid("name", r))?;
    auth::validate_password(&req.password).map_err(|r| ApiError::invalid("password", r))?;
    let (name, role, password) = (req.name.clone(), req.role, req.password);
    let result = app
        .blocking(move |i| -> Result<UserView, ApiError> {
            let phc = auth::hash_password(&password).map_err(ApiError::internal)?;
            Ok(i.users.create_user(&name, role, &phc)?)
        })
        .await?;
    let (outcome, details) = match &result {
        Ok(_) => (Outcome::Success, json!({ "role": req.role })),
        Err(e) => (
            Outcome::Failure,
            json!({ "role": req.role, "error": e.to_string() }),
        ),
    };
    app.audit(
        ctx,
        AuditAction::UserCreate,
        format!("user:{}", req.name),
        outcome,
        details,
    )
    .await?;
    result
}

/// Deletes a user, their tokens and sessions (admin); audited.
pub async fn delete_user(app: &AppState, ctx: &Ctx, name: String) -> Result<(), ApiError> {
    let n = name.clone();
    let result = app.blocking(move |i| i.users.delete_user(&n)).await?;
    if result.is_ok() {
        app.inner.sessions.remove_user(&name);
    }
    let (outcome, details) = match &result {
        Ok(()) => (Outcome::Success, json!({})),
        Err(e) => (Outcome::Failure, json!({ "error": e.to_string() })),
    };
    app.audit(
        ctx,
        AuditAction::UserDelete,
        format!("user:{name}"),
        outcome,
        details,
    )
    .await?;
    Ok(result?)
}

/// Sets a user's password; when `current` is given it must match first. Ends the user's
/// sessions. Audited.
pub async fn set_password(
    app: &AppState,
    ctx: &Ctx,
    name: String,
    current: Option<String>,
    new: String,
) -> Result<(), ApiError> {
    let field = if current.is_some() {
        "new_password"
    } else {
        "password"
    };
    auth::validate_password(&new).map_err(|r| ApiError::invalid(field, r))?;
    let n = name.clone();
    let result = app
        .blocking(move |i| -> Result<(), ApiError> {
            if let Some(cur) = current {
                let creds = i.users.credentials(&n)?;
                let phc = creds.as_ref().map(|(_, p)| p.as_str());
                if !auth::verify_password(&cur, phc) {
                    return Err(ApiError::invalid("current_password", "does not match"));
                }
            }
            let phc = auth::hash_password(&new).map_err(ApiError::internal)?;
            Ok(i.users.set_password(&n, &phc)?)
        })
        .await?;
    let (outcome, details) = match &result {
        Ok(()) => (Outcome::Success, json!({})),
        Err(e) => (Outcome::Failure, json!({ "error": e.to_string() })),
    };
    if result.is_ok() {
        app.inner.sessions.remove_user(&name);
    }
    app.audit(
        ctx,
        AuditAction::UserPassword,
        format!("user:{name}"),
        outcome,
        details,
    )
    .await?;
    result
}

/// Audits a refusal made inside a handler (beyond the route guard) and returns the 403.
pub async fn deny(
    app: &AppState,
    ctx: &Ctx,
    target: String,
    reason: &str,
    perm: Permission,
) -> ApiError {
    let details = json!({ "reason": reason, "permission": perm.as_str() });
    if let Err(e) = app
        .audit(
            ctx,
            AuditAction::AccessDenied,
            target,
            Outcome::Denied,
            details,
        )
        .await
    {
        return e;
    }
    ApiError::Forbidden(reason.to_owned())
}

/// Issues an API token for `owner`; a non-admin may only issue tokens with their own role.
pub async fn create_token(
    app: &AppState,
    ctx: &Ctx,
    owner: String,
    owner_role: Role,
    req: CreateTokenRequest,
) -> Result<NewToken, ApiError> {
    let name = req.name.trim().to_owned();
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "must be 1 to 64 printable characters",
        ));
    }
    let role = req.role.unwrap_or(owner_role);
    if role != owner_role && owner_role != Role::Admin {
        return Err(deny(
            app,
            ctx,
            format!("user:{owner}"),
            "only admins may issue tokens for another role",
            Permission::UserAdmin,
        )
        .await);
    }
    let max = app.inner.settings.token_max_days;
    let days = req.expires_in_days.unwrap_or(max.min(90));
    if days == 0 || days > max {
        return Err(ApiError::invalid(
            "expires_in_days",
            format!("must be between 1 and {max}"),
        ));
    }
    let expires = chrono::Utc::now() + chrono::Duration::days(i64::from(days));
    let o = owner.clone();
    let n = name.clone();
    let result = app
        .blocking(move |i| i.users.create_token(&o, &n, role, expires))
        .await?;
    let (outcome, target, details) = match &result {
        Ok(t) => (
            Outcome::Success,
            format!("token:{}", t.token.id),
            json!({ "owner": owner, "name": name, "role": role, "expires_at": t.token.expires_at }),
        ),
        Err(e) => (
            Outcome::Failure,
            format!("user:{owner}"),
            json!({ "name": name, "error": e.to_string() }),
        ),
    };
    app.audit(ctx, AuditAction::TokenCreate, target, outcome, details)
        .await?;
    Ok(result?)
}

/// Revokes a token: the owner's own, or any for admins.
pub async fn revoke_token(app: &AppState, ctx: &Ctx, id: String) -> Result<(), ApiError> {
    let Some(p) = &ctx.principal else {
        return Err(ApiError::Unauthenticated);
    };
    let i2 = id.clone();
    let rec = app.blocking(move |i| i.users.token(&i2)).await??;
    let Some(rec) = rec else {
        return Err(ApiError::NotFound(format!("no token {id:?}")));
    };
    if rec.token.owner != p.user && !p.role.allows(Permission::UserAdmin) {
        return Err(deny(
            app,
            ctx,
            format!("token:{id}"),
            "token belongs to another user",
            Permission::UserAdmin,
        )
        .await);
    }
    let i2 = id.clone();
    let result = app.blocking(move |i| i.users.revoke_token(&i2)).await?;
    let (outcome, details) = match &result {
        Ok(t) => (Outcome::Success, json!({ "owner": t.owner })),
        Err(e) => (Outcome::Failure, json!({ "error": e.to_string() })),
    };
    app.audit(
        ctx,
        AuditAction::TokenRevoke,
        format!("token:{id}"),
        outcome,
        details,
    )
    .await?;
    result.map(|_| ()).map_err(ApiError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_cmdlines() {
        assert!(validate_vm_name("web-1").is_ok());
        for bad in ["", "Web", "1web", "web_1", &"a".repeat(64)] {
            assert!(validate_vm_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_cmdline("console=ttyS0 marker=x").is_ok());
        assert!(validate_cmdline("a\nb").is_err());
        assert!(validate_cmdline("caf\u{e9}").is_err());
        assert!(validate_cmdline(&"a".repeat(2000)).is_ok());
        assert!(validate_cmdline(&"a".repeat(2001)).is_err());
    }

    #[test]
    fn audit_filters_are_validated() {
        let q = AuditQueryParams {
            outcome: Some("denied".into()),
            since: Some("2025-01-01T00:00:00Z".into()),
            before: Some(10),
            limit: Some(20),
            ..Default::default()
        };
        let (f, c, l) = audit_filter(&q).unwrap();
        assert_eq!(f.outcome, Some(Outcome::Denied));
        assert_eq!(c, AuditCursor::Before(10));
        assert_eq!(l, 20);
        let bad = |q: AuditQueryParams| match audit_filter(&q) {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            bad(AuditQueryParams {
                outcome: Some("meh".into()),
                ..Default::default()
            }),
            "outcome"
        );
        assert_eq!(
            bad(AuditQueryParams {
                until: Some("yesterday".into()),
                ..Default::default()
            }),
            "until"
        );
        assert_eq!(
            bad(AuditQueryParams {
                limit: Some(0),
                ..Default::default()
            }),
            "limit"
        );
        assert_eq!(
            bad(AuditQueryParams {
                before: Some(1),
                after: Some(2),
                ..Default::default()
            }),
            "after"
        );
    }
}
