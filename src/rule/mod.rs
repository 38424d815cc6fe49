//! **rule**: the rule language as users write it.
//!
//! - [`model`]: the serde + schemars types of a rule file (what the JSON Schema describes).
//! - [`load`]: reading a rule directory, all-or-nothing, with file:line:col errors.
//! - [`locate`]: finding where a value sits in a YAML file, for errors found after parsing.
//!
//! The compiled form (matchers, prefilter, window state) lives in [`crate::engine`].

pub mod load;
pub mod locate;
pub mod model;

pub use load::{ErrorKind, ExceptionKind, Loaded, LoadedException, LoadedRule, RuleError, RuleErrors};
pub use model::*;
