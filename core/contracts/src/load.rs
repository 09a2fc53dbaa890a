//! Loading RON data files (town, scenario, rules) with errors that name the file, the place and what was expected.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// An error in a data file: which file, where in it, and what was expected there.
///
/// `line`/`col` are set for syntax and type errors found while parsing; `field` is the path of the
/// offending value (`estates[3].buildings[2].floors`) when it is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub col: Option<usize>,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let (Some(line), Some(col)) = (self.line, self.col) {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": at `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for DataError {}

impl DataError {
    /// A semantic (validation) error at a field path, found after parsing.
    pub fn at(file: &Path, field: impl Into<String>, message: impl Into<String>) -> Self {
        DataError { file: file.to_path_buf(), line: None, col: None, field: Some(field.into()), message: message.into() }
    }

    /// An error about the file as a whole (unreadable, empty).
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        DataError { file: file.to_path_buf(), line: None, col: None, field: None, message: message.into() }
    }
}

/// Reads and parses a RON file into `T`, mapping every failure to a [`DataError`].
pub fn read_ron<T: DeserializeOwned>(file: &Path) -> Result<T, DataError> {
    let text = std::fs::read_to_string(file).map_err(|e| DataError::file(file, format!("cannot read file: {e}")))?;
    parse_ron(file, &text)
}

/// Parses RON text (attributed to `file` in errors) into `T`.
pub fn parse_ron<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, DataError> {
    let mut de = ron::Deserializer::from_str(text).map_err(|e| spanned(file, None, e))?;
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let spanned_err = de.span_error(inner);
        spanned(file, Some(path), spanned_err)
    })?;
    de.end().map_err(|e| spanned(file, None, de.span_error(e)))?;
    Ok(value)
}

fn spanned(file: &Path, path: Option<String>, e: ron::error::SpannedError) -> DataError {
    let field = path.filter(|p| !p.is_empty() && p != ".");
    DataError { file: file.to_path_buf(), line: Some(e.span.start.line), col: Some(e.span.start.col), field, message: e.code.to_string() }
}

/// Collects validation errors so that a file reports all of its problems at once, not one per run.
#[derive(Debug, Default)]
pub struct Problems {
    file: PathBuf,
    list: Vec<DataError>,
}

impl Problems {
    pub fn new(file: &Path) -> Self {
        Problems { file: file.to_path_buf(), list: Vec::new() }
    }

    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.list.push(DataError::at(&self.file, field, message));
    }

    /// Checks `cond`, recording `message` at `field` when it is false.
    pub fn check(&mut self, cond: bool, field: impl FnOnce() -> String, message: impl FnOnce() -> String) {
        if !cond {
            self.push(field(), message());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Ok when nothing was recorded; else all problems joined into one error (the first one's place, all messages).
    pub fn finish(self) -> Result<(), DataErrors> {
        if self.list.is_empty() { Ok(()) } else { Err(DataErrors(self.list)) }
    }
}

/// One or more data errors from one file.
#[derive(Debug, Clone)]
pub struct DataErrors(pub Vec<DataError>);

impl fmt::Display for DataErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 20;
        for (i, e) in self.0.iter().take(SHOWN).enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        if self.0.len() > SHOWN {
            write!(f, "\n... and {} more problems", self.0.len() - SHOWN)?;
        }
        Ok(())
    }
}

impl std::error::Error for DataErrors {}

impl From<DataError> for DataErrors {
    fn from(e: DataError) -> Self {
        DataErrors(vec![e])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Vec<Inner>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        floors: u8,
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let e = parse_ron::<Outer>(Path::new("x.ron"), "(name: \"a\",\n inner: [(floors: 3),, ])").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.to_string().starts_with("x.ron:2:"), "{e}");
    }

    #[test]
    fn type_error_names_field_path() {
        let e = parse_ron::<Outer>(Path::new("x.ron"), "(name: \"a\", inner: [(floors: 3), (floors: 900)])").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("inner[1].floors"), "{e}");
    }

    #[test]
    fn unknown_field_is_refused() {
        let e = parse_ron::<Outer>(Path::new("x.ron"), "(name: \"a\", inner: [], colour: 3)").unwrap_err();
        assert!(e.message.contains("colour"), "{e}");
    }
}
