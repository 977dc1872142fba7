//! A value that must never reach a log line.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// Wraps secrets (connection strings with passwords, keys) so `Debug` and `Display` hide them.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn debug_hides_the_value() {
        let s = Secret::new("postgres://u:hunter2@h/db".to_owned());
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.expose(), "postgres://u:hunter2@h/db");
    }
}
