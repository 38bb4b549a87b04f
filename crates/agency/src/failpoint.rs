//! Failpoints for the fault suite: with `AGENCY_FAILPOINT=<name>` in its environment, a process
//! exits the moment it reaches the point of that name, as a `kill -9` there would end it (no
//! cleanup, no release of its leases). Timing alone cannot land a crash between two steps a
//! millisecond apart; these can. Unset, a point costs one comparison.

use std::sync::OnceLock;

/// The coordinator has published a session's first ranges.
pub(crate) const DISPATCHED: &str = "coordinator.dispatched";
/// The coordinator has written a task's combined results to the context.
pub(crate) const CONTEXT_WRITTEN: &str = "coordinator.context_written";
/// The coordinator has stored and announced a result, and not yet deleted the working state.
pub(crate) const RESULT_STORED: &str = "coordinator.result_stored";
/// The coordinator has deleted a finished session's working state, and not yet committed its
/// action.
pub(crate) const CLEANED_UP: &str = "coordinator.cleaned_up";

/// Exits the process, with status 137 (as killed by SIGKILL), if `name` is the armed point.
pub(crate) fn hit(name: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var("AGENCY_FAILPOINT").ok());
    if armed.as_deref() == Some(name) {
        eprintln!("failpoint {name} reached: exiting");
        std::process::exit(137);
    }
}
