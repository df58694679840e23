//! Passwords the agent needs (replication, admin). They are read from a file or the
//! environment, because a command line is visible to every local user in `ps`, and they are
//! wrapped so that no `Debug` or `Display` of a config, status or error can print them.

use std::fmt;
use std::path::{Path, PathBuf};

/// A password. Its `Debug` and `Display` print `<redacted>`; only [`Secret::expose`] reveals it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// Why a secret could not be loaded. Never carries the secret itself.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("reading the secret file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the secret file {0} is empty")]
    EmptyFile(PathBuf),
    #[error("the environment variable {0} is not set or not UTF-8")]
    MissingEnv(String),
    #[error("the environment variable {0} is empty")]
    EmptyEnv(String),
}

impl Secret {
    /// Wraps a password held in memory (e.g. one just generated).
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The first line of `path`, without its line ending; as UCARP's password file works, so
    /// that an editor's trailing newline never becomes part of the password.
    pub fn from_file(path: &Path) -> Result<Secret, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
        if line.is_empty() {
            return Err(SecretError::EmptyFile(path.to_path_buf()));
        }
        Ok(Secret(line.to_string()))
    }

    /// The value of the environment variable `var`.
    pub fn from_env(var: &str) -> Result<Secret, SecretError> {
        let v = std::env::var(var).map_err(|_| SecretError::MissingEnv(var.to_string()))?;
        if v.is_empty() {
            return Err(SecretError::EmptyEnv(var.to_string()));
        }
        Ok(Secret(v))
    }

    /// The password itself; call sites are few and easy to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_password() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn file_secret_is_the_first_line() {
        let dir = std::env::temp_dir().join(format!("secret-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("pw");
        std::fs::write(&p, "abc def\r\nsecond line\n").unwrap();
        assert_eq!(Secret::from_file(&p).unwrap().expose(), "abc def");
        std::fs::write(&p, "\n").unwrap();
        assert!(matches!(
            Secret::from_file(&p),
            Err(SecretError::EmptyFile(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
