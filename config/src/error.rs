//! Configuration errors: one problem each, always naming the file, the object and the field.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found in the manifests (also used for warnings kept on the snapshot).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {object}: {field}: {message}", file.display())]
pub struct ConfigError {
    /// The manifest file the object came from.
    pub file: PathBuf,
    /// The object, e.g. `HTTPRoute default/reviews`.
    pub object: String,
    /// The field path inside the object, e.g. `spec.rules[0].matches[1].path.value`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Every error found in one load; returned when there is at least one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The individual errors.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    /// How many errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none (never the case for a returned `ConfigErrors`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Where an object came from: builds errors that name it.
#[derive(Clone, Debug)]
pub(crate) struct Origin {
    pub file: PathBuf,
    pub object: String,
}

impl Origin {
    pub fn new(file: &Path, object: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            object: object.into(),
        }
    }

    pub fn err(&self, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            object: self.object.clone(),
            field: field.into(),
            message: one_line(&message.into()),
        }
    }
}

/// Joins a multi-line message (e.g. a regex parse error) into one line, so `ConfigErrors`
/// prints exactly one line per error.
fn one_line(message: &str) -> String {
    if !message.contains('\n') {
        return message.to_string();
    }
    let parts: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    parts.join(" ")
}

/// Errors and warnings collected while compiling.
#[derive(Default, Debug)]
pub(crate) struct Diagnostics {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
}

impl Diagnostics {
    pub fn error(&mut self, origin: &Origin, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(origin.err(field, message));
    }

    pub fn warn(&mut self, origin: &Origin, field: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(origin.err(field, message));
    }
}
