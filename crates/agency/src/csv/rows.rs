//! Reading `agency csv`'s input: rows of `task_id,task_type`, each a task or why it cannot be one.

use super::CsvError;
use std::path::Path;

/// One input row as read: a task to run, or why it cannot be one.
#[derive(Debug, Clone)]
pub(super) enum Row {
    Task { id: u64, kind: String },
    Malformed { id: String, reason: String },
}

/// Reads one record; `line` is its line number in the file.
fn parse(record: &csv::ByteRecord, line: u64) -> Row {
    let id_text = String::from_utf8_lossy(record.get(0).unwrap_or_default())
        .trim()
        .to_string();
    let bad = |reason: String| Row::Malformed {
        id: id_text.clone(),
        reason: format!("line {line}: {reason}"),
    };
    if record.len() != 2 {
        return bad(format!(
            "expected 2 columns (task_id,task_type), found {}",
            record.len()
        ));
    }
    let (Ok(id), Ok(kind)) = (
        std::str::from_utf8(&record[0]),
        std::str::from_utf8(&record[1]),
    ) else {
        return bad("not valid UTF-8".into());
    };
    match id.trim().parse::<u64>() {
        Ok(id) => Row::Task {
            id,
            kind: kind.trim().to_string(),
        },
        Err(_) => bad(format!("task_id `{}` is not a u64", id.trim())),
    }
}

/// A reader of the input's records with their line numbers, the header checked.
pub(super) struct Rows {
    reader: csv::Reader<std::fs::File>,
    record: csv::ByteRecord,
}

impl Rows {
    pub(super) fn open(path: &Path) -> Result<Self, CsvError> {
        let file = std::fs::File::open(path).map_err(|source| CsvError::Io {
            doing: "read",
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |problem: String| CsvError::Invalid {
            path: path.to_path_buf(),
            problem,
        };
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(true)
            .from_reader(file);
        let header = reader
            .byte_headers()
            .map_err(|error| invalid(format!("cannot read the header: {error}")))?;
        let names: Vec<String> = header
            .iter()
            .map(|h| String::from_utf8_lossy(h).trim().to_string())
            .collect();
        if names != ["task_id", "task_type"] {
            return Err(invalid(format!(
                "line 1: the header is `{}`, expected `task_id,task_type`",
                names.join(",")
            )));
        }
        Ok(Self {
            reader,
            record: csv::ByteRecord::new(),
        })
    }

    /// The next row and its line, `None` at the end; a record the CSV reader cannot take at all
    /// (an unclosed quote) is a malformed row too.
    pub(super) fn next(&mut self) -> Option<(u64, Row)> {
        match self.reader.read_byte_record(&mut self.record) {
            Ok(false) => None,
            Ok(true) => {
                let line = self.record.position().map_or(0, |p| p.line());
                Some((line, parse(&self.record, line)))
            }
            Err(error) => {
                let line = error.position().map_or(0, |p| p.line());
                let reason = format!("line {line}: {error}");
                // The reader cannot go on past an I/O error; past a bad record it can.
                if matches!(error.kind(), csv::ErrorKind::Io(_)) {
                    return None;
                }
                Some((
                    line,
                    Row::Malformed {
                        id: String::new(),
                        reason,
                    },
                ))
            }
        }
    }
}
