//! Secrets: passwords and tokens from environment variables or files, kept out of logs and
//! `Debug` output.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

/// A password or token, read from an environment variable or a file.
///
/// `Debug` prints `***`. There is deliberately no `Display` (and no `Serialize`): a secret
/// cannot end up in a `format!("{}")`, a log field or a status document by accident; the one
/// way to the text is [`expose`](Self::expose), at the call that hands it to a client library.
///
/// ```compile_fail
/// let secret = binferry::config::Secret::default();
/// let _ = format!("{secret}"); // no Display
/// ```
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret read from the environment or a file.
    pub(crate) fn new(secret: String) -> Self {
        Secret(secret)
    }

    /// The secret itself; call only where it is handed to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Resolve a password from `password_file`, `password_env` or the default variable.
pub(crate) fn resolve_password(
    field: &str,
    env: &Option<String>,
    file: &Option<PathBuf>,
    default_env: &str,
) -> Result<Secret> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(ErrorKind::Config, format!("{field}.password_file: cannot read {}: {e}", path.display()))
        })?;
        warn_if_readable_by_others(&format!("{field}.password_file"), path);
        return Ok(Secret(text.lines().next().unwrap_or("").to_string()));
    }
    match env {
        Some(var) => std::env::var(var).map(Secret).map_err(|_| {
            Error::new(ErrorKind::Config, format!("{field}.password_env: environment variable {var} is not set"))
                .with_hint(format!("export {var}=... or remove password_env to use {default_env}"))
        }),
        None => Ok(Secret(std::env::var(default_env).unwrap_or_default())),
    }
}

/// A file holding a secret should be readable by its owner only: say so when it is not.
pub(crate) fn warn_if_readable_by_others(field: &str, path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                field,
                file = %path.display(),
                mode = format!("{mode:o}"),
                "a file holding a secret can be read by other users; fix: chmod 600 it"
            );
        }
    }
}
