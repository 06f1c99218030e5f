//! The `RegistryActor`: the set of known agents.
//!
//! It owns the agent records (create with a token shown once, revoke), the
//! [`AgentDirectory`] that resolves an agent token to its agent for the
//! WebSocket upgrade, and the map from agent id to its running actor. It
//! starts one supervised [`AgentActor`] per agent, seeding each with the
//! attempt the queue says it holds (so a hub restart keeps owners and
//! generations), and replaces an actor whose mailbox has died (a panic in a
//! handler), seeding the new one from the queue again.
//!
//! Its store writes (an agent added or revoked, each made durable; failure
//! records, operator pauses and an enrolled agent's verification task,
//! batched, answered once durable) run on a
//! blocking thread, never on the thread the hub's actors share. It never
//! touches tasks: it forwards an operator's cancel to the right agent and
//! nothing more.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use actix::prelude::*;
use agentcom_protocol::{AgentInfo, Timestamp};
use tokio::sync::oneshot;

use crate::actors::agent::{AgentActor, AgentLinks};
use crate::actors::messages::{
    Absolve, AbsolveFailures, AddAgent, AgentHandle, CancelAttempt, CloseAll, Lookup,
    OutstandingAttempts, PauseAgent, RegistryError, Revoke, RevokeAgent, SaveBreaker, SetPaused,
    SetVerification, Shutdown, StopAttempt, VerificationOf,
};
use crate::auth::{generate_token, hash_token};
use crate::domain::fsm::{AgentMachine, FsmSettings};
use crate::domain::queue::Outstanding;
use crate::domain::rate::MessageLimit;
use crate::store::{AgentRecord, Store};

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

struct Running {
    record: AgentRecord,
    addr: Addr<AgentActor>,
    /// The agent's message limit, shared by its connections (kept when
    /// its actor is replaced).
    limit: Arc<Mutex<MessageLimit>>,
}

pub struct RegistryActor {
    store: Store,
    directory: Arc<AgentDirectory>,
    fsm_settings: FsmSettings,
    links: Arc<AgentLinks>,
    outstanding: Recipient<OutstandingAttempts>,
    agents: HashMap<String, Running>,
    /// Agents being added or revoked, while their store write runs.
    changing: HashSet<String>,
    /// Agents whose actor died, waiting for the queue's word on what they hold.
    reseeding: HashSet<String>,
    /// What the agents held at start, by agent (taken as their actors start).
    held_at_start: HashMap<String, Outstanding>,
    records_at_start: Vec<AgentRecord>,
    /// Agents whose record (failure record, paused) changed since it was
    /// last written.
    breakers_due: HashSet<String>,
    /// Told when the next batch of failure records is durable.
    breaker_waiters: Vec<oneshot::Sender<Result<(), String>>>,
    flushing_breakers: bool,
}

impl RegistryActor {
    /// `held` is what the queue says each agent holds at start.
    pub fn new(
        store: Store,
        records: Vec<AgentRecord>,
        held: Vec<Outstanding>,
        directory: Arc<AgentDirectory>,
        fsm_settings: FsmSettings,
        links: Arc<AgentLinks>,
        outstanding: Recipient<OutstandingAttempts>,
    ) -> Self {
        for r in &records {
            directory.insert(r.token_sha256.clone(), r.id.clone());
        }
        RegistryActor {
            store,
            directory,
            fsm_settings,
            links,
            outstanding,
            agents: HashMap::new(),
            changing: HashSet::new(),
            reseeding: HashSet::new(),
            held_at_start: latest_by_agent(held),
            records_at_start: records,
            breakers_due: HashSet::new(),
            breaker_waiters: Vec::new(),
            flushing_breakers: false,
        }
    }

    fn machine(&self, record: &AgentRecord, now: Timestamp) -> AgentMachine {
        let mut m = AgentMachine::new(
            &record.id,
            record.capabilities.clone(),
            record.created_at,
            self.fsm_settings.clone(),
            now,
        );
        m.restore_breaker(record.breaker.clone(), now);
        m.set_paused(record.paused);
        m
    }

    /// Write the failure records that changed, one batch at a time (so an
    /// older record never lands after a newer one).
    fn flush_breakers(&mut self, ctx: &mut Context<Self>) {
        if self.flushing_breakers || self.breakers_due.is_empty() {
            return;
        }
        self.flushing_breakers = true;
        let batch: Vec<AgentRecord> = std::mem::take(&mut self.breakers_due)
            .into_iter()
            .filter_map(|id| self.agents.get(&id).map(|r| r.record.clone()))
            .collect();
        let waiters = std::mem::take(&mut self.breaker_waiters);
        let store = self.store.clone();
        let write = actix_rt::task::spawn_blocking(move || store.put_agents(&batch));
        ctx.spawn(write.into_actor(self).map(|res, act, ctx| {
            act.flushing_breakers = false;
            let res = match res {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = &res {
                tracing::error!(error = %e, "agents' failure records not kept");
            }
            for w in waiters {
                let _ = w.send(res.clone());
            }
            act.flush_breakers(ctx);
        }));
    }

    /// Start a supervised actor for `record`, seeded with the attempt it
    /// holds; its connections draw on `limit` (a fresh one if none).
    fn spawn_agent(
        &mut self,
        record: AgentRecord,
        held: Option<&Outstanding>,
        limit: Option<Arc<Mutex<MessageLimit>>>,
    ) {
        let now = Timestamp::now();
        let mut machine = self.machine(&record, now);
        if let Some(h) = held {
            tracing::info!(agent = %record.id, attempt = %h.attempt, status = %h.status, "agent still holds an attempt; waiting for its sidecar");
            machine.seed_holding(h, now);
        }
        let limit = limit.unwrap_or_else(|| {
            Arc::new(Mutex::new(MessageLimit::new(
                self.links.messages_per_s,
                self.links.messages_burst,
                now,
            )))
        });
        let links = self.links.clone();
        let addr = Supervisor::start(move |_| AgentActor::new(machine, links));
        self.agents.insert(
            record.id.clone(),
            Running {
                record,
                addr,
                limit,
            },
        );
    }

    /// Replace agent actors whose mailbox died, seeded from the queue.
    fn check_alive(&mut self, ctx: &mut Context<Self>) {
        let dead: Vec<String> = self
            .agents
            .iter()
            .filter(|(id, r)| !r.addr.connected() && !self.reseeding.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in dead {
            tracing::error!(agent = %id, "agent actor died; restarting it from the queue's state");
            self.reseeding.insert(id.clone());
            let ask = self.outstanding.send(OutstandingAttempts {
                agent: Some(id.clone()),
            });
            ctx.spawn(ask.into_actor(self).map(move |held, act, _| {
                act.reseeding.remove(&id);
                let Ok(held) = held else { return };
                // Revoked meanwhile: nothing to restart.
                let Some(Running { record, limit, .. }) = act.agents.remove(&id) else {
                    return;
                };
                let held = latest_by_agent(held).remove(&id);
                act.spawn_agent(record, held.as_ref(), Some(limit));
            }));
        }
    }
}

/// The most recent attempt each agent holds (one, in a healthy hub).
fn latest_by_agent(held: Vec<Outstanding>) -> HashMap<String, Outstanding> {
    let mut out: HashMap<String, Outstanding> = HashMap::new();
    for h in held {
        match out.get(&h.agent) {
            Some(o) if o.since >= h.since => {}
            _ => {
                out.insert(h.agent.clone(), h);
            }
        }
    }
    out
}

impl Actor for RegistryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(65_536);
        let held = std::mem::take(&mut self.held_at_start);
        for record in std::mem::take(&mut self.records_at_start) {
            let h = held.get(&record.id);
            self.spawn_agent(record, h, None);
        }
        tracing::info!(agents = self.agents.len(), "agent actors started");
        ctx.run_interval(Duration::from_secs(1), |act, ctx| act.check_alive(ctx));
    }
}

impl Handler<AddAgent> for RegistryActor {
    type Result = ResponseActFuture<Self, Result<(AgentInfo, String), RegistryError>>;
    fn handle(&mut self, msg: AddAgent, _: &mut Context<Self>) -> Self::Result {
        if self.agents.contains_key(&msg.id) || !self.changing.insert(msg.id.clone()) {
            return Box::pin(actix::fut::ready(Err(RegistryError::Exists(msg.id))));
        }
        let token = generate_token("agent");
        let mut capabilities = msg.capabilities;
        capabilities.sort();
        capabilities.dedup();
        let record = AgentRecord {
            id: msg.id,
            capabilities,
            token_sha256: hash_token(&token),
            created_at: Timestamp::now(),
            breaker: Default::default(),
            paused: false,
            verification_task: None,
        };
        let store = self.store.clone();
        let to_write = record.clone();
        let write = actix_rt::task::spawn_blocking(move || store.put_agent(&to_write));
        Box::pin(write.into_actor(self).map(move |res, act, _| {
            act.changing.remove(&record.id);
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(RegistryError::Store(e.to_string())),
                Err(e) => return Err(RegistryError::Store(e.to_string())),
            }
            act.directory
                .insert(record.token_sha256.clone(), record.id.clone());
            let info = act.machine(&record, record.created_at).info();
            tracing::info!(agent = %record.id, capabilities = %record.capabilities.join(", "), "agent added");
            act.spawn_agent(record, None, None);
            Ok((info, token))
        }))
    }
}

impl Handler<RevokeAgent> for RegistryActor {
    type Result = ResponseActFuture<Self, Result<(), RegistryError>>;
    fn handle(&mut self, msg: RevokeAgent, _: &mut Context<Self>) -> Self::Result {
        if !self.agents.contains_key(&msg.id) || !self.changing.insert(msg.id.clone()) {
            return Box::pin(actix::fut::ready(Err(RegistryError::NotFound(msg.id))));
        }
        let store = self.store.clone();
        let id = msg.id;
        let to_delete = id.clone();
        let write = actix_rt::task::spawn_blocking(move || store.delete_agent(&to_delete));
        Box::pin(write.into_actor(self).map(move |res, act, _| {
            act.changing.remove(&id);
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(RegistryError::Store(e.to_string())),
                Err(e) => return Err(RegistryError::Store(e.to_string())),
            }
            act.directory.remove_agent(&id);
            if let Some(r) = act.agents.remove(&id) {
                r.addr.do_send(Revoke);
            }
            tracing::info!(agent = %id, "agent revoked");
            Ok(())
        }))
    }
}

impl Handler<Lookup> for RegistryActor {
    type Result = Option<AgentHandle>;
    fn handle(&mut self, msg: Lookup, _: &mut Context<Self>) -> Self::Result {
        self.agents
            .get(&msg.id)
            .map(|r| AgentActor::handle_of(&r.addr, r.limit.clone()))
    }
}

impl Handler<StopAttempt> for RegistryActor {
    type Result = ();
    fn handle(&mut self, msg: StopAttempt, _: &mut Context<Self>) {
        if let Some(r) = self.agents.get(&msg.agent) {
            r.addr.do_send(CancelAttempt {
                attempt: msg.attempt,
                reason: msg.reason,
            });
        }
    }
}

impl Handler<AbsolveFailures> for RegistryActor {
    type Result = ();
    fn handle(&mut self, msg: AbsolveFailures, _: &mut Context<Self>) {
        for agent in msg.agents {
            if let Some(r) = self.agents.get(&agent) {
                r.addr.do_send(Absolve {
                    task_id: msg.task_id.clone(),
                });
            }
        }
    }
}

impl Handler<SaveBreaker> for RegistryActor {
    type Result = ResponseFuture<Result<(), String>>;
    fn handle(&mut self, msg: SaveBreaker, ctx: &mut Context<Self>) -> Self::Result {
        // A revoked agent's record is gone; nothing to keep.
        let Some(r) = self.agents.get_mut(&msg.agent) else {
            return Box::pin(async { Ok(()) });
        };
        r.record.breaker = msg.breaker;
        self.breakers_due.insert(msg.agent);
        let (tx, rx) = oneshot::channel();
        self.breaker_waiters.push(tx);
        self.flush_breakers(ctx);
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err("the registry stopped".into()))
        })
    }
}

impl Handler<PauseAgent> for RegistryActor {
    type Result = ResponseActFuture<Self, Result<(), RegistryError>>;
    fn handle(&mut self, msg: PauseAgent, ctx: &mut Context<Self>) -> Self::Result {
        let Some(r) = self.agents.get_mut(&msg.id) else {
            return Box::pin(actix::fut::ready(Err(RegistryError::NotFound(msg.id))));
        };
        // Written in the same batches as the failure records, so a batch
        // never lands an older record over a newer one.
        r.record.paused = msg.paused;
        self.breakers_due.insert(msg.id.clone());
        let (tx, rx) = oneshot::channel();
        self.breaker_waiters.push(tx);
        self.flush_breakers(ctx);
        let PauseAgent { id, paused } = msg;
        Box::pin(rx.into_actor(self).map(move |res, act, _| {
            let res = res.unwrap_or_else(|_| Err("the registry stopped".into()));
            res.map_err(RegistryError::Store)?;
            // Durable: now the agent's actor may act on it (revoked
            // meanwhile: nothing to tell).
            if let Some(r) = act.agents.get(&id) {
                r.addr.do_send(SetPaused { paused });
            }
            tracing::info!(agent = %id, paused, "agent pause kept");
            Ok(())
        }))
    }
}

impl Handler<SetVerification> for RegistryActor {
    type Result = ResponseActFuture<Self, Result<(), RegistryError>>;
    fn handle(&mut self, msg: SetVerification, ctx: &mut Context<Self>) -> Self::Result {
        let Some(r) = self.agents.get_mut(&msg.id) else {
            return Box::pin(actix::fut::ready(Err(RegistryError::NotFound(msg.id))));
        };
        // In the same batches as the failure records and pauses.
        r.record.verification_task = Some(msg.task_id.clone());
        self.breakers_due.insert(msg.id.clone());
        let (tx, rx) = oneshot::channel();
        self.breaker_waiters.push(tx);
        self.flush_breakers(ctx);
        let SetVerification { id, task_id } = msg;
        Box::pin(rx.into_actor(self).map(move |res, _, _| {
            let res = res.unwrap_or_else(|_| Err("the registry stopped".into()));
            res.map_err(RegistryError::Store)?;
            tracing::info!(agent = %id, task = %task_id, "verification task kept with the agent");
            Ok(())
        }))
    }
}

impl Handler<VerificationOf> for RegistryActor {
    type Result = Result<Option<String>, RegistryError>;
    fn handle(&mut self, msg: VerificationOf, _: &mut Context<Self>) -> Self::Result {
        self.agents
            .get(&msg.id)
            .map(|r| r.record.verification_task.clone())
            .ok_or(RegistryError::NotFound(msg.id))
    }
}

impl Handler<CloseAll> for RegistryActor {
    type Result = ();
    fn handle(&mut self, _: CloseAll, _: &mut Context<Self>) {
        for r in self.agents.values() {
            r.addr.do_send(Shutdown);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix::Addr;
    use agentcom_protocol::AttemptRef;

    use super::RegistryActor;
    use crate::actors::agent::Crash;
    use crate::actors::messages::{AddAgent, AgentHandle, Holds, Lookup};
    use crate::config::{Overrides, Settings};

    async fn lookup(registry: &Addr<RegistryActor>, id: &str) -> AgentHandle {
        registry
            .send(Lookup { id: id.into() })
            .await
            .unwrap()
            .expect("the agent exists")
    }

    #[actix_rt::test]
    async fn a_dead_agent_actor_is_restarted_from_durable_state() {
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
        let store = crate::app::open_store(&settings).unwrap();
        let hub = crate::app::start(settings, store, None).unwrap();
        hub.registry
            .send(AddAgent {
                id: "a1".into(),
                capabilities: vec!["x".into()],
            })
            .await
            .unwrap()
            .unwrap();
        let first = lookup(&hub.registry, "a1").await;
        assert!(first.holds.connected());
        hub.registry.send(CrashAgent("a1".into())).await.unwrap();
        let mut replaced = None;
        for _ in 0..40 {
            actix_rt::time::sleep(Duration::from_millis(100)).await;
            let now = lookup(&hub.registry, "a1").await;
            if !first.holds.connected() && now.holds.connected() {
                replaced = Some(now);
                break;
            }
        }
        let replaced = replaced.expect("the registry restarted the dead actor");
        let holds = replaced
            .holds
            .send(Holds {
                attempt: AttemptRef::new("t", 1),
            })
            .await;
        assert_eq!(holds.ok(), Some(false), "the new actor answers");
        let info = hub
            .state
            .agents
            .get("a1")
            .expect("the new actor published the agent");
        assert_eq!(info.capabilities, vec!["x".to_string()]);
        std::fs::remove_dir_all(dir).ok();
    }

    /// Make an agent's actor panic (supervision tests only).
    struct CrashAgent(String);

    impl actix::Message for CrashAgent {
        type Result = ();
    }

    impl actix::Handler<CrashAgent> for RegistryActor {
        type Result = ();
        fn handle(&mut self, msg: CrashAgent, _: &mut actix::Context<Self>) {
            if let Some(r) = self.agents.get(&msg.0) {
                r.addr.do_send(Crash);
            }
        }
    }
}
