//! The `Registry` actor: the set of known agents.
//!
//! It owns the agent records (create with a token shown once, revoke), the
//! [`AgentDirectory`] that resolves an agent token to its agent for the
//! WebSocket upgrade, and the map from agent id to its AgentFsm address.
//! It starts one supervised FSM per agent, seeding each with the attempt
//! the durable task state says it holds (so a hub restart keeps owners and
//! generations), and replaces an FSM whose mailbox has died (a panic in a
//! handler), rebuilding it from the same durable facts.
//!
//! It never touches tasks: it forwards an operator's cancel to the right
//! FSM and nothing more.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::prelude::*;
use agentcom_protocol::{AgentInfo, AttemptRef, TaskStatus, Timestamp};

use crate::actors::agent::{AgentDeps, AgentFsm, CancelAttempt, Revoke, Shutdown};
use crate::auth::{generate_token, hash_token};
use crate::domain::fsm::{AgentMachine, FsmSettings};
use crate::store::{AgentRecord, Store};
use crate::views::TaskView;

/// Agent token hash → agent id, readable without the actor.
#[derive(Default)]
pub struct AgentDirectory {
    by_hash: RwLock<HashMap<String, String>>,
}

impl AgentDirectory {
    /// The agent a token belongs to.
    pub fn agent_for(&self, token: &str) -> Option<String> {
        self.by_hash
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash_token(token))
            .cloned()
    }

    fn insert(&self, hash: String, id: String) {
        self.by_hash
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hash, id);
    }

    fn remove_agent(&self, id: &str) {
        self.by_hash
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, v| v != id);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("agent {0} already exists")]
    Exists(String),
    #[error("no agent {0}")]
    NotFound(String),
    #[error("the store failed: {0}")]
    Store(String),
}

// ----- messages ------------------------------------------------------------------

/// Create an agent; answers its info and its token (shown once).
#[derive(Message)]
#[rtype(result = "Result<(AgentInfo, String), RegistryError>")]
pub struct AddAgent {
    pub id: String,
    pub capabilities: Vec<String>,
}

#[derive(Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct RevokeAgent {
    pub id: String,
}

#[derive(Message)]
#[rtype(result = "Option<Addr<AgentFsm>>")]
pub struct Lookup {
    pub id: String,
}

/// An attempt was cancelled: tell its agent.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopAttempt {
    pub agent: String,
    pub task: AttemptRef,
    pub reason: String,
}

/// The hub is stopping: close every session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseAll;

/// Ask the registry to start FSMs, once the deps exist.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Start {
    pub deps: Arc<AgentDeps>,
}

// ----- the actor -------------------------------------------------------------------

pub struct Registry {
    store: Store,
    tasks: Arc<TaskView>,
    directory: Arc<AgentDirectory>,
    fsm_settings: FsmSettings,
    deps: Option<Arc<AgentDeps>>,
    agents: HashMap<String, (AgentRecord, Addr<AgentFsm>)>,
    records: Vec<AgentRecord>,
}

impl Registry {
    pub fn new(
        store: Store,
        records: Vec<AgentRecord>,
        tasks: Arc<TaskView>,
        directory: Arc<AgentDirectory>,
        fsm_settings: FsmSettings,
    ) -> Self {
        for r in &records {
            directory.insert(r.token_sha256.clone(), r.id.clone());
        }
        Registry {
            store,
            tasks,
            directory,
            fsm_settings,
            deps: None,
            agents: HashMap::new(),
            records,
        }
    }

    /// Start a supervised FSM for `record`, seeded from durable task state.
    fn spawn_fsm(&self, record: &AgentRecord) -> Addr<AgentFsm> {
        let deps = self.deps.clone().expect("started");
        let now = Timestamp::now();
        let mut machine = AgentMachine::new(
            &record.id,
            record.capabilities.clone(),
            record.created_at,
            self.fsm_settings.clone(),
            now,
        );
        let mut held = self.tasks.active_for(&record.id);
        held.sort_by_key(|t| std::cmp::Reverse(t.updated_at));
        if let Some(t) = held.first() {
            tracing::info!(agent = %record.id, task = %t.id, generation = t.generation, status = %t.status, "agent still holds an attempt; waiting for its sidecar");
            machine.seed_holding(
                AttemptRef::new(t.id.clone(), t.generation),
                t.status == TaskStatus::Working,
                t.timeout_s,
                t.updated_at,
                now,
            );
        }
        Supervisor::start(move |_| AgentFsm::new(machine, deps))
    }

    fn check_alive(&mut self) {
        let dead: Vec<AgentRecord> = self
            .agents
            .values()
            .filter(|(_, addr)| !addr.connected())
            .map(|(r, _)| r.clone())
            .collect();
        for record in dead {
            tracing::error!(agent = %record.id, "agent FSM died; restarting it from the durable state");
            let addr = self.spawn_fsm(&record);
            self.agents.insert(record.id.clone(), (record, addr));
        }
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(65_536);
        ctx.run_interval(Duration::from_secs(1), |act, _| act.check_alive());
    }
}

impl Handler<Start> for Registry {
    type Result = ();
    fn handle(&mut self, msg: Start, _: &mut Context<Self>) {
        self.deps = Some(msg.deps);
        for record in std::mem::take(&mut self.records) {
            let addr = self.spawn_fsm(&record);
            self.agents.insert(record.id.clone(), (record, addr));
        }
        tracing::info!(agents = self.agents.len(), "agent FSMs started");
    }
}

impl Handler<AddAgent> for Registry {
    type Result = Result<(AgentInfo, String), RegistryError>;
    fn handle(&mut self, msg: AddAgent, _: &mut Context<Self>) -> Self::Result {
        if self.agents.contains_key(&msg.id) {
            return Err(RegistryError::Exists(msg.id));
        }
        let token = generate_token("agent");
        let now = Timestamp::now();
        let mut capabilities = msg.capabilities;
        capabilities.sort();
        capabilities.dedup();
        let record = AgentRecord {
            id: msg.id.clone(),
            capabilities,
            token_sha256: hash_token(&token),
            created_at: now,
        };
        self.store
            .put_agent(&record)
            .map_err(|e| RegistryError::Store(e.to_string()))?;
        self.directory
            .insert(record.token_sha256.clone(), record.id.clone());
        let addr = self.spawn_fsm(&record);
        let info = AgentMachine::new(
            &record.id,
            record.capabilities.clone(),
            now,
            self.fsm_settings.clone(),
            now,
        )
        .info();
        tracing::info!(agent = %record.id, capabilities = ?record.capabilities, "agent added");
        self.agents.insert(record.id.clone(), (record, addr));
        Ok((info, token))
    }
}

impl Handler<RevokeAgent> for Registry {
    type Result = Result<(), RegistryError>;
    fn handle(&mut self, msg: RevokeAgent, _: &mut Context<Self>) -> Self::Result {
        if !self.agents.contains_key(&msg.id) {
            return Err(RegistryError::NotFound(msg.id));
        }
        self.store
            .delete_agent(&msg.id)
            .map_err(|e| RegistryError::Store(e.to_string()))?;
        self.directory.remove_agent(&msg.id);
        if let Some((_, addr)) = self.agents.remove(&msg.id) {
            addr.do_send(Revoke);
        }
        tracing::info!(agent = %msg.id, "agent revoked");
        Ok(())
    }
}

impl Handler<Lookup> for Registry {
    type Result = Option<Addr<AgentFsm>>;
    fn handle(&mut self, msg: Lookup, _: &mut Context<Self>) -> Self::Result {
        self.agents.get(&msg.id).map(|(_, a)| a.clone())
    }
}

impl Handler<StopAttempt> for Registry {
    type Result = ();
    fn handle(&mut self, msg: StopAttempt, _: &mut Context<Self>) {
        if let Some((_, addr)) = self.agents.get(&msg.agent) {
            addr.do_send(CancelAttempt {
                task: msg.task,
                reason: msg.reason,
            });
        }
    }
}

impl Handler<CloseAll> for Registry {
    type Result = ();
    fn handle(&mut self, _: CloseAll, _: &mut Context<Self>) {
        for (_, addr) in self.agents.values() {
            addr.do_send(Shutdown);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::actors::agent::{Crash, Holds};
    use crate::actors::registry::{AddAgent, Lookup};
    use crate::config::{Overrides, Settings};

    #[actix_rt::test]
    async fn a_dead_agent_fsm_is_restarted_from_durable_state() {
        let dir = std::env::temp_dir().join(format!("agentcom-registry-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let settings = Settings::load_with_env(
            None,
            &Overrides {
                listen: None,
                data_dir: Some(dir.clone()),
            },
            Some(vec![]),
        )
        .unwrap();
        let hub = crate::app::start(settings).unwrap();
        hub.registry
            .send(AddAgent {
                id: "a1".into(),
                capabilities: vec!["x".into()],
            })
            .await
            .unwrap()
            .unwrap();
        let first = hub
            .registry
            .send(Lookup { id: "a1".into() })
            .await
            .unwrap()
            .unwrap();
        assert!(first.connected());
        first.do_send(Crash);
        let mut replaced = None;
        for _ in 0..40 {
            actix_rt::time::sleep(Duration::from_millis(100)).await;
            let now = hub
                .registry
                .send(Lookup { id: "a1".into() })
                .await
                .unwrap()
                .unwrap();
            if !first.connected() && now.connected() {
                replaced = Some(now);
                break;
            }
        }
        let replaced = replaced.expect("the registry restarted the dead FSM");
        let holds = replaced
            .send(Holds {
                task: agentcom_protocol::AttemptRef::new("t", 1),
            })
            .await;
        assert_eq!(holds.ok(), Some(false), "the new FSM answers");
        let info = hub
            .state
            .agents
            .get("a1")
            .expect("the new FSM published the agent");
        assert_eq!(info.capabilities, vec!["x".to_string()]);
        std::fs::remove_dir_all(dir).ok();
    }
}
