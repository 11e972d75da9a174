//! nodewatch collector library.

pub mod store;
