//! Runnable examples for the gitops library; see the `[[example]]` entries in Cargo.toml.
