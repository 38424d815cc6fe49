//! **sandbox**: local stand-ins of the external services actions talk to, for tests, demos
//! and trying a configuration without an account. Not on the data path; nothing in
//! [`crate::action`] depends on it.
//!
//! - [`xdr`]: the Cisco XDR endpoints trapline uses (OAuth token, bundle import, entity
//!   search and delete), validating what it receives with the same CTIM rules as the action.

pub mod xdr;
