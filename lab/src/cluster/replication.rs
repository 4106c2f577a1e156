//! Writes and reads of the replicated state: a write is proposed by the leader and
//! committed once a majority of voters has it (a follower behind gets the whole state, as
//! Raft's InstallSnapshot); reads may be forwarded to the leader.

use super::*;

impl Cluster {
    /// Sends a follower's read to the leader, as Consul's default consistency mode does,
    /// so a write through one server shows at once through every other one.
    /// None when no leader answers.
    pub async fn forward_read(
        &self,
        path_and_query: &str,
        headers: &axum::http::HeaderMap,
    ) -> Option<reqwest::Response> {
        let leader = self.leader()?;
        let mut request = self.client.get(format!("{}{path_and_query}", leader.http));
        for name in ["x-consul-token", "authorization"] {
            if let Some(value) = headers.get(name) {
                request = request.header(name, value.as_bytes());
            }
        }
        request.send().await.ok()
    }

    /// The replicated value at a JSON pointer (`/nodes/worker1`). A client holds no
    /// replicated state and asks the leader; Null when no leader answers.
    pub async fn read_at(&self, pointer: &str) -> Value {
        if self.opts.server {
            return self.read(|d| d.pointer(pointer).cloned().unwrap_or(Value::Null));
        }
        let Some(leader) = self.leader() else {
            return Value::Null;
        };
        let reply = self
            .client
            .post(format!("{}/_twin/read", leader.http))
            .json(&json!({"pointer": pointer}))
            .send()
            .await;
        match reply {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// Applies an entry at `index` to a node's state and configuration.
    pub(super) fn apply_entry(
        &self,
        data: &mut Value,
        config: &mut Vec<Server>,
        entry: &Entry,
        index: u64,
    ) -> Result<Value, WriteError> {
        match entry {
            Entry::Configuration(servers) => {
                *config = servers.clone();
                Ok(Value::Null)
            }
            Entry::Operation(op) => (self.apply)(data, op, index),
        }
    }

    /// Commits an operation through the leader and returns what it produced.
    pub async fn write(&self, op: impl Operation) -> Result<Value, WriteError> {
        let op = serde_json::to_value(op).expect("an operation serializes");
        self.write_json(op).await
    }

    pub(super) async fn write_json(&self, op: Value) -> Result<Value, WriteError> {
        if !(self.active)() {
            return Err(WriteError::NotActive);
        }
        if self.is_leader() {
            return self.propose(Entry::Operation(op)).await;
        }
        let leader = self.leader().ok_or(WriteError::NoLeader)?;
        let reply = self
            .client
            .post(format!("{}/_twin/write", leader.http))
            .json(&op)
            .send()
            .await
            .map_err(|_| WriteError::NoLeader)?;
        let body: Value = reply
            .json()
            .await
            .map_err(|e| WriteError::Garbled(e.to_string()))?;
        match body.get("ok") {
            Some(v) => Ok(v.clone()),
            None => Err(serde_json::from_value(body["error"].clone())
                .unwrap_or_else(|_| WriteError::Garbled(format!("the leader answered {body}")))),
        }
    }

    pub(super) async fn propose(&self, entry: Entry) -> Result<Value, WriteError> {
        let _serial = self.writes.lock().await;
        let (term, index, last_term, mut data, servers) = {
            let inner = lock(&self.inner);
            if inner.role != Role::Leader {
                return Err(WriteError::NoLeader);
            }
            (
                inner.p.term,
                inner.p.index,
                inner.p.last_term,
                inner.p.data.clone(),
                inner.p.config.clone(),
            )
        };
        let mut config = servers.clone();
        let result = self.apply_entry(&mut data, &mut config, &entry, index + 1)?;
        let message = Append {
            term,
            leader: self.opts.id.clone(),
            index,
            last_term,
            entry: Some(entry),
        };
        let acks = self.broadcast_append(&servers, &message).await;
        let voters: Vec<&Server> = servers.iter().filter(|s| s.voter).collect();
        let granted = voters
            .iter()
            .filter(|s| s.id == self.opts.id || acks.contains(&s.id))
            .count();
        if granted * 2 <= voters.len() {
            return Err(WriteError::NoLeader);
        }
        let mut inner = lock(&self.inner);
        if inner.role != Role::Leader || inner.p.term != term {
            return Err(WriteError::LeadershipLost);
        }
        inner.p.data = data;
        inner.p.config = config;
        inner.p.index = index + 1;
        inner.p.last_term = term;
        let p = inner.p.clone();
        drop(inner);
        self.persist(&p);
        Ok(result)
    }

    /// Sends an append to every other server; returns the ids that accepted it. Servers
    /// that refused (behind or diverged) get the whole state.
    pub(super) async fn broadcast_append(
        &self,
        servers: &[Server],
        message: &Append,
    ) -> Vec<String> {
        let body = serde_json::to_value(message).expect("append serializes");
        let calls = servers.iter().filter(|s| s.id != self.opts.id).map(|s| {
            let url = format!("{}/_twin/append", s.http);
            let body = body.clone();
            let id = s.id.clone();
            let client = self.client.clone();
            async move {
                let reply = client.post(url).json(&body).send().await.ok()?;
                let reply: AppendReply = reply.json().await.ok()?;
                Some((id, reply))
            }
        });
        let replies = futures::future::join_all(calls).await;
        let mut ok = Vec::new();
        let mut behind = Vec::new();
        for (id, reply) in replies.into_iter().flatten() {
            if reply.term > message.term {
                self.step_down(reply.term);
                return Vec::new();
            }
            lock(&self.inner).acked.insert(id.clone(), Instant::now());
            if reply.ok {
                ok.push(id);
            } else {
                behind.push(id);
            }
        }
        for id in behind {
            if let Some(server) = servers.iter().find(|s| s.id == id) {
                if self.send_snapshot(server).await && message.entry.is_none() {
                    ok.push(id);
                }
            }
        }
        ok
    }

    pub(super) async fn send_snapshot(&self, server: &Server) -> bool {
        let snapshot = {
            let inner = lock(&self.inner);
            Snapshot {
                term: inner.p.term,
                leader: self.opts.id.clone(),
                index: inner.p.index,
                last_term: inner.p.last_term,
                config: inner.p.config.clone(),
                data: inner.p.data.clone(),
            }
        };
        let reply = self
            .client
            .post(format!("{}/_twin/snapshot", server.http))
            .json(&snapshot)
            .send()
            .await;
        match reply {
            Ok(r) => r.json::<AppendReply>().await.map(|a| a.ok).unwrap_or(false),
            Err(_) => false,
        }
    }
}
