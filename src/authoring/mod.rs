//! **authoring**: tools for the people who write rules, built on the compiled engine but kept
//! out of the per-line path.
//!
//! - [`explain`]: which condition of a rule fails on a line and what it looked at; the parts
//!   of a rule its examples exercise (coverage).
//! - [`examples`]: running the rules' inline examples through the engine.
//! - [`analysis`]: proofs that a condition (or part of one) can never be true, for lint.
//! - [`sigma`]: Sigma rules for web servers converted into rules (`trapline import sigma`).

pub mod analysis;
pub mod examples;
pub mod explain;
pub mod sigma;

pub use explain::CoveragePoint;
