//! vitfree's verification core.
pub mod error;

#[cfg(feature = "python")]
mod python;
