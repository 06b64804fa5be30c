//! The fault-injection suite: real services, real worker processes, faults injected while jobs flow.
//!
//! Every scenario restarts services or kills processes, so the suite runs on its own and serially:
//! `bash scripts/chaos.sh` (or `make chaos`), which CI runs after the main test suite. Here each test is
//! `#[ignore]`d so `cargo test --workspace` leaves it out.
//!
//! Each scenario prints one `CHAOS` line with its figures, in the terms of shared/RELIABILITY.md: confirmed
//! (job ids the broker confirmed to the producer), succeeded, dead-lettered, still queued, lost
//! (confirmed minus all of those) and duplicated (documents whose stored chunks are not exactly their job's).

mod ledger;
mod scenarios;
mod support;
