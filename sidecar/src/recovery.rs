//! Start-up recovery: from what the last run left in the state dir to an
//! [`AttemptMachine`] ready to connect.
//!
//! It owns carrying out the recovery plan ([`AttemptMachine::recover`]
//! decides it: a result in the outbox is delivered; an attempt without one
//! is reported as a retryable failure and its leftover runner group
//! killed; a report too large to send is replaced by the failure that
//! says so), strictly: any step that fails stops the sidecar from starting,
//! so it never runs on a state dir it could not put in order. It must never
//! decide the rules itself, and it runs before the connection exists.

use crate::attempt::{AttemptMachine, AttemptSettings, Effect};
use crate::runner;
use crate::store::StateDir;

/// Load the state dir's attempt and outbox, and put them in order.
pub(crate) fn recover(
    state: &mut StateDir,
    settings: AttemptSettings,
) -> Result<AttemptMachine, String> {
    let current = state.load_current()?;
    let outbox = state.outbox().into_iter().map(|e| e.msg).collect();
    let (machine, plan) = AttemptMachine::recover(settings, current, outbox);
    for step in plan {
        match step {
            Effect::KillLeftover { pgid, task_id } => kill_leftover(pgid, &task_id),
            Effect::PushOutbox(msg) => {
                state.push_outbox(msg)?;
            }
            Effect::ClearCurrent => state.clear_current()?,
            Effect::ReplaceInOutbox { old, new } => state.replace_in_outbox(&old, new)?,
            _ => return Err("recovery planned a step it cannot carry out (a bug)".into()),
        }
    }
    Ok(machine)
}

/// Kill what is left of the runner group `pgid` of `task_id`.
pub(crate) fn kill_leftover(pgid: i32, task_id: &str) {
    if runner::kill_leftover(pgid, task_id) {
        tracing::warn!(task_id, pgid, "killed a runner that outlived the last run");
    }
}
