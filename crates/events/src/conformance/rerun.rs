//! [`Outcomes::keep_successes`](crate::Outcomes::keep_successes): what a session started again
//! keeps of its earlier run.

use super::outcome;
use crate::messages::{Outcome, Status, TaskRef};
use crate::store::{Fence, Store};

/// What a rerun keeps ([`Outcomes::keep_successes`](crate::Outcomes::keep_successes)): the successes, and nothing else of the
/// outcomes, so a new run's first attempts are taken for the rest and a success stays final.
pub async fn rerun_suite(store: &dyn Store, session: &str) {
    let task = TaskRef { group: 0, task: 0 };
    only_successes_are_kept(store, session, task).await;
    let again = the_rest_starts_over(store, session, task).await;
    late_work_is_refused(store, session, task, &again).await;
}

/// A first run's outcomes of two tasks, cancelled and paused: of the first task only the
/// successes are kept, of the second (an exit handler, say) nothing.
async fn only_successes_are_kept(store: &dyn Store, session: &str, task: TaskRef) {
    store
        .start_run(session, "first", Fence::Open)
        .await
        .expect("start the run");
    let mut permanent = outcome(2, 1, false);
    permanent.status = Status::Failed(taskgroup::Failure::permanent("no"));
    let outcomes = [
        outcome(0, 1, true),
        outcome(1, 2, false),
        permanent,
        outcome(3, 1, true),
    ];
    store
        .record_outcomes(session, task, "first", &outcomes, None)
        .await
        .expect("record");
    store.request_cancel(session).await.expect("cancel");
    // Paused: a rerun forgets the pause mark with the run.
    store.request_pause(session, true).await.expect("pause");
    // A second task (an exit handler, say) is forgotten whole, successes included.
    let handler = TaskRef { group: 1, task: 0 };
    store
        .record_outcomes(session, handler, "first", &[outcome(0, 1, true)], None)
        .await
        .expect("record the handler's");
    assert_eq!(
        store
            .keep_successes(session, &[handler], Fence::Open)
            .await
            .expect("keep successes"),
        2
    );
    assert_eq!(
        store
            .outcomes(session, handler, 0..1)
            .await
            .expect("outcomes"),
        [None]
    );
    let kept = store.outcomes(session, task, 0..4).await.expect("outcomes");
    assert_eq!(
        store.outcome_count(session, task).await.expect("count"),
        2,
        "the successes kept"
    );
    assert_eq!(
        kept,
        [
            Some(outcomes[0].clone()),
            None,
            None,
            Some(outcomes[3].clone())
        ]
    );
}

/// The rerun forgets the first run's marks; the failed instances start over at attempt 1, a
/// kept success stays final. Returns what it recorded.
async fn the_rest_starts_over(store: &dyn Store, session: &str, task: TaskRef) -> [Outcome; 3] {
    store
        .start_run(session, "second", Fence::Open)
        .await
        .expect("start the rerun");
    assert!(!store
        .cancel_requested(session, "first")
        .await
        .expect("cancel mark"));
    assert!(!store
        .pause_requested(session, "first")
        .await
        .expect("pause mark"));
    let again = [
        outcome(1, 1, true),
        outcome(2, 1, true),
        outcome(0, 1, false),
    ];
    assert_eq!(
        store
            .record_outcomes(session, task, "second", &again, None)
            .await
            .expect("record again"),
        [true, true, false],
        "the failed instances start over at attempt 1; a kept success stays final"
    );
    again
}

/// Ended while its state is kept: late work of it is refused, and what is kept stays.
async fn late_work_is_refused(store: &dyn Store, session: &str, task: TaskRef, again: &[Outcome]) {
    store
        .end_run(session, "other", Fence::Open)
        .await
        .expect("end another run");
    assert_eq!(
        store.current_run(session).await.expect("run"),
        Some("second".to_string()),
        "ending a run that is not current changes nothing"
    );
    store.request_pause(session, true).await.expect("pause");
    store
        .end_run(session, "second", Fence::Open)
        .await
        .expect("end the run");
    assert_eq!(store.current_run(session).await.expect("run"), None);
    assert!(!store
        .pause_requested(session, "second")
        .await
        .expect("paused"));
    let late = [outcome(3, 2, false)];
    assert_eq!(
        store
            .record_outcomes(session, task, "second", &late, None)
            .await
            .expect("record late"),
        [false]
    );
    assert_eq!(
        store.outcomes(session, task, 0..4).await.expect("outcomes")[1],
        Some(again[0].clone()),
        "the kept outcomes stay"
    );
    store.cleanup(session, Fence::Open).await.expect("cleanup");
}
