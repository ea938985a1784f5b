//! Property tests (proptest) of flamenco-core's rules, run with the normal test suite:
//! frame-range parsing (`frames`), variable substitution (`variables`) and the local task
//! status machine, both its pure rules and the real SQLite store driven through the
//! Manager SDK (`status_machine`). Fuzzing of the same parsers is in `fuzz/`
//! (docs/fuzzing.md).

mod frames;
mod status_machine;
mod variables;
