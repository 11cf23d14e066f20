//! The life of a staged file as the manifest records it, as a state machine:
//! which step may follow which state, and what a restarted host does with a
//! file in each state. Pure, with a test of every transition.
//!
//! ```text
//!            claim               start              succeed
//!  (staged) ──────► claimed ─────────────► ingesting ──────► done
//!      │              │  │ vanish            │  ▲ │ fail
//!      │ duplicate    │  └──► retried        │  └─┘ start (resumed after a stop)
//!      ▼              │ fail                 ▼
//!   duplicate         └─────────────────► failed ──return──► retried
//! ```

use super::manifest::{Entry, FileState};

/// What happens to a file, as the manager records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// A scan took it from staging.
    Claim,
    /// A scan found its checksum already done by the pipeline.
    Duplicate,
    /// A worker starts (or, after a stop, starts again) its ingestion.
    Start,
    Succeed,
    /// The ingestion failed, or could not start.
    Fail,
    /// It left staging before it could be moved to `work/`, or is gone from
    /// `work/` after a stop: whatever is in staging is claimed anew.
    Vanish,
    /// `mysimbdp batch retry` sent it back to staging.
    Return,
}

impl Step {
    /// The state this step leads to, wherever it is taken from.
    fn target(self) -> FileState {
        match self {
            Step::Claim => FileState::Claimed,
            Step::Duplicate => FileState::Duplicate,
            Step::Start => FileState::Ingesting,
            Step::Succeed => FileState::Done,
            Step::Fail => FileState::Failed,
            Step::Vanish | Step::Return => FileState::Retried,
        }
    }
}

impl Entry {
    /// The manifest entry that records `step` of this file now, with `reason`
    /// (or none). A step the state machine does not allow here is a bug of
    /// the host: it is logged, and recorded all the same, since a missing
    /// record would lose track of the file.
    pub(crate) fn after(&self, step: Step, reason: Option<String>) -> Entry {
        let state = after(Some(self.state), step).unwrap_or_else(|| {
            tracing::error!(file = %self.file, id = %self.id, from = ?self.state, ?step, "A manifest step the state machine does not allow.");
            step.target()
        });
        Entry { state, ts: chrono::Utc::now(), reason, ..self.clone() }
    }
}

/// The state after `step` from `from` (`None`: a file not in the manifest
/// yet), or `None` when that step cannot happen there.
pub(crate) fn after(from: Option<FileState>, step: Step) -> Option<FileState> {
    use FileState::*;
    Some(match (from, step) {
        (None, Step::Claim) => Claimed,
        (None, Step::Duplicate) => Duplicate,
        (Some(Claimed | Ingesting), Step::Start) => Ingesting,
        (Some(Ingesting), Step::Succeed) => Done,
        (Some(Claimed | Ingesting), Step::Fail) => Failed,
        (Some(Claimed | Ingesting), Step::Vanish) => Retried,
        (Some(Failed), Step::Return) => Retried,
        _ => return None,
    })
}

/// What a host starting again does with a file the manifest left in a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// Ingest it again (document ids are deterministic: a re-run overwrites).
    Resume,
    /// The claim was recorded but the file never reached `work/`: it is still
    /// in staging, where the next scan claims it anew.
    Forget,
    /// Its outcome was recorded before it was moved: move it where that says.
    FinishDone,
    FinishFailed,
    /// Nothing left to do.
    Nothing,
}

/// The recovery of a file in `state`, whose copy is (`in_work`) or is not in `work/`.
pub(crate) fn recovery(state: FileState, in_work: bool) -> Recovery {
    use FileState::*;
    match (state, in_work) {
        (Claimed | Ingesting, true) => Recovery::Resume,
        (Claimed | Ingesting, false) => Recovery::Forget,
        (Done, true) => Recovery::FinishDone,
        (Failed, true) => Recovery::FinishFailed,
        (Done | Failed | Duplicate | Retried, _) => Recovery::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FileState::*;

    const STATES: [Option<FileState>; 7] = [None, Some(Claimed), Some(Ingesting), Some(Done), Some(Failed), Some(Duplicate), Some(Retried)];
    const STEPS: [Step; 7] = [Step::Claim, Step::Duplicate, Step::Start, Step::Succeed, Step::Fail, Step::Vanish, Step::Return];

    #[test]
    fn every_transition_is_allowed_or_refused_as_drawn() {
        let allowed = [
            (None, Step::Claim, Claimed),
            (None, Step::Duplicate, Duplicate),
            (Some(Claimed), Step::Start, Ingesting),
            (Some(Claimed), Step::Fail, Failed),
            (Some(Claimed), Step::Vanish, Retried),
            (Some(Ingesting), Step::Start, Ingesting),
            (Some(Ingesting), Step::Succeed, Done),
            (Some(Ingesting), Step::Fail, Failed),
            (Some(Ingesting), Step::Vanish, Retried),
            (Some(Failed), Step::Return, Retried),
        ];
        // Every (state, step) pair: the allowed ones give their state, all others none.
        for from in STATES {
            for step in STEPS {
                let expected = allowed.iter().find(|(f, s, _)| *f == from && *s == step).map(|(_, _, to)| *to);
                assert_eq!(after(from, step), expected, "{step:?} from {from:?}");
            }
        }
    }

    #[test]
    fn done_duplicate_and_retried_are_final() {
        for state in [Done, Duplicate, Retried] {
            for step in STEPS {
                assert_eq!(after(Some(state), step), None, "{step:?} after {state:?}");
            }
        }
    }

    #[test]
    fn a_restarted_host_recovers_each_state() {
        let cases = [
            (Claimed, true, Recovery::Resume),
            (Claimed, false, Recovery::Forget),
            (Ingesting, true, Recovery::Resume),
            (Ingesting, false, Recovery::Forget),
            (Done, true, Recovery::FinishDone),
            (Done, false, Recovery::Nothing),
            (Failed, true, Recovery::FinishFailed),
            (Failed, false, Recovery::Nothing),
            (Duplicate, true, Recovery::Nothing),
            (Duplicate, false, Recovery::Nothing),
            (Retried, true, Recovery::Nothing),
            (Retried, false, Recovery::Nothing),
        ];
        for (state, in_work, expected) in cases {
            assert_eq!(recovery(state, in_work), expected, "{state:?}, in work/: {in_work}");
        }
    }

    #[test]
    fn every_file_can_end_and_a_failed_one_can_come_back() {
        // The paths the manager takes, step by step.
        let paths: [&[Step]; 5] = [
            &[Step::Claim, Step::Start, Step::Succeed],
            &[Step::Claim, Step::Start, Step::Fail, Step::Return],
            &[Step::Claim, Step::Start, Step::Start, Step::Succeed],
            &[Step::Claim, Step::Vanish],
            &[Step::Duplicate],
        ];
        for path in paths {
            let end = path.iter().try_fold(None, |state, step| after(state, *step).map(Some));
            assert!(matches!(end, Some(Some(Done | Retried | Duplicate))), "{path:?} ends in {end:?}");
        }
    }
}
