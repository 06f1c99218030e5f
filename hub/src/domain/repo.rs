//! A repository the hub guards, as the rules see it: where it is, what
//! its main branch is, the check every merge result must pass, and its
//! gate. Plain data, checked once at start; the git work lives in
//! `crate::git` and the repository actors, the gate's judgement in
//! [`crate::domain::gate`].

use crate::domain::gate::GateConfig;

/// One `[[repos]]` table.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RepoConfig {
    /// Tasks name it in `repo`.
    pub name: String,
    /// The remote agents push to and the hub merges into (a path or URL
    /// git understands).
    pub url: String,
    pub main_branch: String,
    /// Run in a checkout of every merge result before main moves (and of
    /// main when it moved outside the hub); empty: no check.
    pub check_command: Vec<String>,
    pub check_timeout_s: u64,
    /// How often the hub looks whether main moved outside it.
    pub poll_s: u64,
    pub gate: GateConfig,
}

/// A repository's name: what tasks and branches may carry (letters,
/// digits, `-`, `_`, `.`; 1 to 64; not starting with `.` or `-`).
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("app"));
        assert!(valid_name("web-app_2.x"));
        for bad in ["", ".hidden", "-x", "a/b", "a b", "../x", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
