//! Secrets: read from the environment variable the file names, never printed.

use super::ConfigError;
use std::fmt;
use std::path::PathBuf;

/// A password or token. `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

pub(super) fn read_secret(var: Option<&str>, source: &str) -> Result<Option<Secret>, ConfigError> {
    let Some(var) = var else { return Ok(None) };
    match std::env::var(var) {
        Ok(v) => Ok(Some(Secret(v))),
        Err(_) => Err(ConfigError::Invalid {
            path: PathBuf::from("<environment>"),
            key: format!("sources.{source}.password_env"),
            problem: format!("names environment variable {var}, which is not set: export it before starting logtide"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s:?} {s}"), "*** ***");
    }
}
