//! HTTP handlers, one module per resource. Each is thin: extract, call the domain
//! (store, enrollment rules, session registry), render. None imports the route table
//! (`api.rs`) or another resource's internals beyond the shared agent rendering.

pub mod agent;
pub mod agents;
pub mod approvals;
pub mod audit;
pub mod enroll;
pub mod events;
pub mod hubs;
pub mod install;
pub mod integrations;
pub mod keys;
pub mod probes;
pub mod releases;
pub mod renewal;
pub mod sessions;
pub mod sso;
pub mod system;
pub mod tokens;
pub mod updates;
pub mod users;
