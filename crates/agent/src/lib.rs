//! muster-agent
pub mod configdir;
pub mod facts;
