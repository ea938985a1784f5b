//! Worker secrets and registration tokens.
