//! The JSON API under `/api/v1`.

pub mod attest;
pub mod audit;
pub mod evidence;
pub mod golden;
pub mod images;
pub mod misc;
pub mod patches;
pub mod tokens;
pub mod types;
pub mod users;
pub mod vms;
