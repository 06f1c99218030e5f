//! The merge gate: whether a change may merge without a person, decided
//! mechanically from what the hub measured of it (its paths and line
//! counts, never the agent's word) and the repository's `[repos.gate]`,
//! with every reason written down.
//!
//! Pure: paths and numbers in, a [`Gate`] out. It never reads git or the
//! clock.

use agentcom_protocol::{Gate, GateDecision};
use globset::{Glob, GlobSet, GlobSetBuilder};

/// Who reviews a change the gate lets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReviewMode {
    /// Nobody: it merges.
    None,
    /// An agent with capability `review`, not the author.
    Agent,
}

/// A repository's gate, with its globs compiled.
#[derive(Clone, Debug)]
pub(crate) struct GateConfig {
    /// False: every change waits for a person.
    pub auto_merge: bool,
    pub max_files: u64,
    /// Lines added plus removed.
    pub max_lines: u64,
    /// When non-empty, every changed path must match one of these.
    pub allow_paths: Vec<String>,
    /// A change touching any of these is escalated.
    pub deny_paths: Vec<String>,
    pub review: ReviewMode,
    allow: GlobSet,
    deny: GlobSet,
}

impl PartialEq for GateConfig {
    fn eq(&self, other: &Self) -> bool {
        (
            self.auto_merge,
            self.max_files,
            self.max_lines,
            &self.allow_paths,
            &self.deny_paths,
            self.review,
        ) == (
            other.auto_merge,
            other.max_files,
            other.max_lines,
            &other.allow_paths,
            &other.deny_paths,
            other.review,
        )
    }
}

fn glob_set(field: &str, patterns: &[String]) -> Result<GlobSet, String> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let g = Glob::new(p).map_err(|e| format!("{field}: {p:?} is not a glob: {e}"))?;
        b.add(g);
    }
    b.build().map_err(|e| format!("{field}: {e}"))
}

impl GateConfig {
    /// A gate from its settings; an invalid glob is an error naming it.
    pub(crate) fn new(
        auto_merge: bool,
        max_files: u64,
        max_lines: u64,
        allow_paths: Vec<String>,
        deny_paths: Vec<String>,
        review: ReviewMode,
    ) -> Result<GateConfig, String> {
        Ok(GateConfig {
            allow: glob_set("allow_paths", &allow_paths)?,
            deny: glob_set("deny_paths", &deny_paths)?,
            auto_merge,
            max_files,
            max_lines,
            allow_paths,
            deny_paths,
            review,
        })
    }

    /// The gate's decision on a change of these paths and line counts.
    pub(crate) fn judge(&self, files: &[String], files_changed: u64, lines: u64) -> Gate {
        let mut reasons = Vec::new();
        for f in files {
            let denied: Vec<&str> = self
                .deny
                .matches(f)
                .into_iter()
                .map(|i| self.deny_paths[i].as_str())
                .collect();
            if !denied.is_empty() {
                reasons.push(format!("{f} matches deny_paths {}", denied.join(", ")));
            }
            if !self.allow_paths.is_empty() && !self.allow.is_match(f) {
                reasons.push(format!("{f} is outside allow_paths"));
            }
        }
        if files_changed > self.max_files {
            reasons.push(format!(
                "{files_changed} files changed, more than max_files ({})",
                self.max_files
            ));
        }
        if lines > self.max_lines {
            reasons.push(format!(
                "{lines} lines changed, more than max_lines ({})",
                self.max_lines
            ));
        }
        if !self.auto_merge {
            reasons.push("auto_merge is off: every change waits for a person".into());
        }
        if !reasons.is_empty() {
            return Gate {
                decision: GateDecision::Escalate,
                reasons,
            };
        }
        match self.review {
            ReviewMode::Agent => Gate {
                decision: GateDecision::Review,
                reasons: vec!["within the gate; review = \"agent\": an agent reviews it first".into()],
            },
            ReviewMode::None => Gate {
                decision: GateDecision::AutoMerge,
                reasons: vec![format!(
                    "within the gate: {files_changed} of at most {} files, {lines} of at most {} lines",
                    self.max_files, self.max_lines
                )],
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(allow: &[&str], deny: &[&str]) -> GateConfig {
        GateConfig::new(
            true,
            3,
            100,
            allow.iter().map(|s| s.to_string()).collect(),
            deny.iter().map(|s| s.to_string()).collect(),
            ReviewMode::None,
        )
        .unwrap()
    }

    fn files(f: &[&str]) -> Vec<String> {
        f.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn within_the_gate_merges_and_says_why() {
        let g = gate(&[], &[".ci/**", "deploy/**"]);
        let d = g.judge(&files(&["src/lib.rs"]), 1, 10);
        assert_eq!(d.decision, GateDecision::AutoMerge);
        assert!(d.reasons[0].contains("within the gate"));
    }

    #[test]
    fn every_reason_to_escalate_is_recorded() {
        let g = gate(&["src/**"], &[".ci/**"]);
        let d = g.judge(
            &files(&[".ci/run", "README.md", "src/a.rs", "src/b.rs"]),
            4,
            150,
        );
        assert_eq!(d.decision, GateDecision::Escalate);
        let all = d.reasons.join("\n");
        assert!(all.contains(".ci/run matches deny_paths .ci/**"), "{all}");
        assert!(all.contains("README.md is outside allow_paths"), "{all}");
        assert!(all.contains(".ci/run is outside allow_paths"), "{all}");
        assert!(
            all.contains("4 files changed, more than max_files (3)"),
            "{all}"
        );
        assert!(
            all.contains("150 lines changed, more than max_lines (100)"),
            "{all}"
        );
    }

    #[test]
    fn auto_merge_off_and_agent_review() {
        let mut g = gate(&[], &[]);
        g.auto_merge = false;
        assert_eq!(
            g.judge(&files(&["a"]), 1, 1).decision,
            GateDecision::Escalate
        );
        let mut g = gate(&[], &[]);
        g.review = ReviewMode::Agent;
        assert_eq!(g.judge(&files(&["a"]), 1, 1).decision, GateDecision::Review);
        // A reason to escalate wins over review.
        assert_eq!(
            g.judge(&files(&["a"]), 9, 1).decision,
            GateDecision::Escalate
        );
    }

    #[test]
    fn a_bad_glob_is_named() {
        let e =
            GateConfig::new(true, 1, 1, vec![], vec!["a/{b".into()], ReviewMode::None).unwrap_err();
        assert!(e.contains("deny_paths") && e.contains("a/{b"), "{e}");
    }
}
