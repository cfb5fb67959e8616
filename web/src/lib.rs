//! Sakshi's appliance daemon: the REST API (`/api/v1`), the server-rendered dashboard, local
//! users with argon2id passwords, sessions with CSRF protection, API tokens, role-based access
//! control enforced on every route, and the audit of every state change, login, denial and
//! audit read.
//!
//! The web layer never touches KVM objects: it talks to the micro-VM host through
//! [`VmBackend`] and to the audit log through [`AuditStore`]. [`build_router`] assembles
//! everything around an [`AppState`].
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod actions;
mod api;
mod auth;
mod backend;
mod config;
mod ctx;
mod daemon;
mod error;
mod extract;
mod golden;
mod images;
mod listen;
mod openapi;
mod ops;
pub mod otlp;
mod rbac;
mod routes;
mod state;
mod ui;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

pub use actions::AuditAction;
pub use api::types;
pub use auth::{
    ApiToken, NewToken, PasswordError, Session, SessionStore, Throttle, TokenRecord, UserError,
    UserStore, UserView, generate_password, hash_password, validate_username,
};
pub use backend::{
    AuditAppendError, AuditCursor, AuditEntryView, AuditFilter, AuditPage, AuditQueryError,
    AuditRecord, AuditStore, CheckpointView, ConsistencyProofView, HostInfo, ImageRef,
    InclusionProofView, Measurement, Outcome, StateChange, VerifyReport, VmBackend, VmDetail,
    VmError, VmSpec, VmState, VmSummary,
};
pub use config::{
    AuditLogConfig, AuthConfig, Config, ConfigError, DataConfig, DemoConfig, OnShutdown,
    PolicyMode, ServerConfig, TlsConfig, TpmConfig, VmConfig,
};
pub use daemon::{ServeError, binary_sha256, serve};
pub use error::{ApiError, FieldError, PROBLEM_JSON, Problem};
pub use images::{ImageError, ImageInfo, ImageKind, ImageStore};
pub use openapi::document as openapi_document;
pub use rbac::{Permission, Role};
pub use routes::build_router;
pub use state::{AppState, Settings};
