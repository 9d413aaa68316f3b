//! Configuration errors: one problem each, always naming the file, the object and the field.

use std::fmt;
use std::path::PathBuf;

/// One problem found in the manifests (also used for warnings kept on the snapshot).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {object}: {field}: {message}")]
pub struct ConfigError {
    /// Where the object was read.
    pub location: Location,
    /// The object, e.g. `HTTPRoute default/reviews`.
    pub object: String,
    /// The field path inside the object, e.g. `spec.rules[0].matches[1].path.value`.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// The kind of problem, as a controller reports it on the object's status.
    pub reason: Reason,
}

/// Where an object was read: a manifest file, or the Kubernetes API.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    /// A file; documents are counted from 1.
    File { path: PathBuf },
    /// An object of the Kubernetes API.
    Kube {
        uid: String,
        resource_version: String,
    },
}

impl Location {
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Location::File { path: path.into() }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File { path } => write!(f, "{}", path.display()),
            Location::Kube {
                uid,
                resource_version,
            } => write!(f, "kubernetes uid={uid} resourceVersion={resource_version}"),
        }
    }
}

/// Why an object, or part of it, is not accepted: what a controller writes into the object's
/// `status.conditions` (Gateway API's condition types and reasons where it has them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The object or a field cannot be read or is out of range.
    #[default]
    Invalid,
    /// A value is valid Kubernetes but not supported here (a filter type, a field).
    UnsupportedValue,
    /// A parentRef names nothing this mesh can attach to.
    NoMatchingParent,
    /// The parent does not admit routes from the route's namespace.
    NotAllowedByListeners,
    /// A reference names a kind that cannot be referenced there.
    InvalidKind,
    /// A backendRef names a Service that does not exist.
    BackendNotFound,
    /// Another route of a kind that takes precedence binds the same parent port.
    Conflicted,
    /// A field that has no effect here (a warning only: the object is still accepted).
    NoEffect,
}

impl Reason {
    /// The `(type, reason)` of the `status: "False"` condition this problem sets, if any.
    pub fn condition(self) -> Option<(&'static str, &'static str)> {
        Some(match self {
            Reason::Invalid => ("Accepted", "Invalid"),
            Reason::UnsupportedValue => ("Accepted", "UnsupportedValue"),
            Reason::NoMatchingParent => ("Accepted", "NoMatchingParent"),
            Reason::NotAllowedByListeners => ("Accepted", "NotAllowedByListeners"),
            Reason::Conflicted => ("Accepted", "Conflicted"),
            Reason::InvalidKind => ("ResolvedRefs", "InvalidKind"),
            Reason::BackendNotFound => ("ResolvedRefs", "BackendNotFound"),
            Reason::NoEffect => return None,
        })
    }
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

    /// The first `max` errors, one per line, and a last line counting the rest: what a log
    /// line may hold however broken the input (a huge invalid file has many thousands).
    pub fn summary(&self, max: usize) -> String {
        let mut lines: Vec<String> = self.0.iter().take(max).map(ToString::to_string).collect();
        if self.0.len() > max {
            lines.push(format!("… and {} more errors", self.0.len() - max));
        }
        lines.join("\n")
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
    pub location: Location,
    pub object: String,
}

impl Origin {
    pub fn new(location: Location, object: impl Into<String>) -> Self {
        Self {
            location,
            object: object.into(),
        }
    }

    pub fn err(&self, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        self.err_because(Reason::Invalid, field, message)
    }

    pub fn err_because(
        &self,
        reason: Reason,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            location: self.location.clone(),
            object: self.object.clone(),
            field: field.into(),
            message: one_line(&message.into()),
            reason,
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

    pub fn error_because(
        &mut self,
        reason: Reason,
        origin: &Origin,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.errors.push(origin.err_because(reason, field, message));
    }

    pub fn warn_because(
        &mut self,
        reason: Reason,
        origin: &Origin,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.warnings
            .push(origin.err_because(reason, field, message));
    }
}
