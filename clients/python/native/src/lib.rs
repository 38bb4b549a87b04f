//! `agency_client._native`: the engine's own validation of a session document
//! (`taskgroup::Session::from_json`), so the Python client refuses what `agency submit`
//! refuses, with the same messages, before anything is produced.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// Checks the session document `text` (JSON) as `agency submit` does: every problem at once,
/// each with its field path. `executors` are the names tasks may use (`None`: any). Raises
/// `ValueError` with the engine's message.
#[pyfunction]
#[pyo3(signature = (text, executors=None))]
fn validate(text: &str, executors: Option<Vec<String>>) -> PyResult<()> {
    let rules = taskgroup::Rules {
        executors,
        ..taskgroup::Rules::default()
    };
    taskgroup::Session::from_json(text, &rules)
        .map(|_| ())
        .map_err(|error| PyValueError::new_err(error.to_string()))
}

#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(validate, module)?)
}
