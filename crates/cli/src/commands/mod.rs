//! One module per command (as in cargo's `src/bin/cargo/commands/`): each holds
//! its clap arguments and the `exec` that runs them. `main` dispatches.

pub mod agent;
pub mod agents;
pub mod approvals;
pub mod audit;
pub mod bench;
pub mod completions;
pub mod enroll;
pub mod hub;
pub mod hubs;
pub mod install;
pub mod integrations;
pub mod keys;
pub mod login;
pub mod man;
pub mod probe;
pub mod release;
pub mod rollout;
pub mod sso;
pub mod status;
pub mod tokens;
pub mod trust;
pub mod unenroll;
pub mod update;
pub mod users;
