//! Who is in the cluster: membership by polling (gossip's stand-in), servers added and
//! removed from the raft configuration, joins, leaves, force-leave, and outage recovery's
//! new configuration (peers.json).

use super::*;

impl Cluster {
    /// A state written offline (by `operator migrate`) names this node without knowing
    /// where it answers: fill in our own addresses before anyone is told of them.
    /// Outage recovery (raft's peers.json): the raft configuration becomes `servers`, kept
    /// as this node's own bootstrapped state. Call before [`Cluster::spawn`].
    pub fn recover(&self, servers: Vec<Server>) {
        let p = {
            let mut inner = lock(&self.inner);
            inner.p.config = servers;
            inner.p.bootstrapped = true;
            inner.p.clone()
        };
        self.persist(&p);
    }

    pub fn claim_own_address(&self) {
        let mut inner = lock(&self.inner);
        let (http, address) = (self.opts.http.clone(), self.opts.address.clone());
        let mut changed = false;
        for s in inner.p.config.iter_mut().filter(|s| s.id == self.opts.id) {
            if s.http != http || s.address != address {
                s.http = http.clone();
                s.address = address.clone();
                changed = true;
            }
        }
        if changed {
            let p = inner.p.clone();
            drop(inner);
            self.persist(&p);
        }
    }

    /// Says hello to every known member and every join address: a member that answers is
    /// alive (and tells us whom it knows); one silent for a while is failed.
    pub(super) async fn membership_round(&self) {
        let (me, targets) = {
            let inner = lock(&self.inner);
            if inner.left {
                return;
            }
            let Some((me, _)) = inner.members.get(&self.opts.id) else {
                return;
            };
            let mut targets: Vec<(Option<String>, String)> = inner
                .members
                .values()
                .filter(|(m, _)| m.name != self.opts.id && m.status != MemberStatus::Left)
                .filter(|(m, _)| m.server || self.opts.call_clients)
                .map(|(m, _)| (Some(m.name.clone()), m.http.clone()))
                .collect();
            for url in &self.opts.join {
                if *url != self.opts.http && !targets.iter().any(|(_, t)| t == url) {
                    targets.push((None, url.clone()));
                }
            }
            (me.clone(), targets)
        };
        let calls = targets.into_iter().map(|(name, url)| {
            let client = self.client.clone();
            let body = Hello { member: me.clone() };
            async move {
                let reply = async {
                    let r = client
                        .post(format!("{url}/_twin/hello"))
                        .json(&body)
                        .send()
                        .await
                        .ok()?;
                    r.json::<HelloReply>().await.ok()
                }
                .await;
                (name, url, reply)
            }
        });
        let results = futures::future::join_all(calls).await;
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        if !self.opts.call_clients {
            // Clients that stopped calling in have failed.
            for (m, seen) in inner.members.values_mut() {
                if !m.server && m.status == MemberStatus::Alive && seen.elapsed() > FAILED_AFTER {
                    m.status = MemberStatus::Failed;
                }
            }
        }
        if !self.opts.server {
            inner.client_leader = results
                .iter()
                .filter_map(|(_, _, r)| r.as_ref()?.leader_server.clone())
                .next();
        }
        for (name, url, reply) in results {
            match reply {
                Some(reply) => self.take_reply(&mut inner, &url, reply, now),
                None => {
                    if let Some((m, seen)) = name.and_then(|n| inner.members.get_mut(&n)) {
                        if m.status == MemberStatus::Alive && seen.elapsed() > FAILED_AFTER {
                            m.status = MemberStatus::Failed;
                        }
                    }
                }
            }
        }
    }

    /// What a member answered: the members it prunes, and the members it knows (only one
    /// that answered itself counts as seen now).
    fn take_reply(&self, inner: &mut Inner, url: &str, reply: HelloReply, now: Instant) {
        for gone in reply.pruned {
            if gone != self.opts.id && !inner.pruned.contains(&gone) {
                inner.members.remove(&gone);
                inner.pruned.insert(gone);
            }
        }
        for m in reply.members {
            if m.name == self.opts.id {
                continue;
            }
            let answered = m.http == url;
            // A pruned member comes back only when it answers itself.
            if inner.pruned.contains(&m.name) {
                if !answered || m.status != MemberStatus::Alive {
                    continue;
                }
                inner.pruned.remove(&m.name);
            }
            match inner.members.get_mut(&m.name) {
                Some((known, seen)) => {
                    if answered {
                        *seen = now;
                        known.status = m.status;
                        known.tags = m.tags.clone();
                    } else if m.status == MemberStatus::Left {
                        known.status = MemberStatus::Left;
                    }
                }
                None => {
                    let seen = if answered { now } else { now - FAILED_AFTER };
                    inner.members.insert(m.name.clone(), (m, seen));
                }
            }
        }
    }

    /// Adds a server as a non-voter (leader only).
    pub async fn add_server(&self, server: Server) -> Result<(), String> {
        if !self.is_leader() {
            let leader = self.leader().ok_or("No cluster leader")?;
            let r = self
                .client
                .post(format!("{}/_twin/join", leader.http))
                .json(&server)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            return if r.status().is_success() {
                Ok(())
            } else {
                Err(r.text().await.unwrap_or_default())
            };
        }
        let mut config = self.config();
        if let Some(existing) = config.iter_mut().find(|s| s.id == server.id) {
            if existing.http == server.http {
                return Ok(());
            }
            existing.http = server.http;
            existing.address = server.address;
        } else {
            config.push(Server {
                voter: false,
                ..server
            });
        }
        self.propose(Entry::Configuration(config))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Removes a server from the configuration (leader only, forwarded otherwise).
    pub async fn remove_server(&self, id: &str) -> Result<(), String> {
        if !self.is_leader() {
            let leader = self.leader().ok_or("No cluster leader")?;
            let r = self
                .client
                .post(format!("{}/_twin/remove", leader.http))
                .json(&json!({"id": id}))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            return if r.status().is_success() {
                Ok(())
            } else {
                Err(r.text().await.unwrap_or_default())
            };
        }
        let mut config = self.config();
        let before = config.len();
        config.retain(|s| s.id != id);
        if config.len() == before {
            return Err(format!(
                "id \"{id}\" was not found in the Raft configuration"
            ));
        }
        self.propose(Entry::Configuration(config))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Joins the cluster of the agent at `http` (Consul's agent join): learn its members.
    pub async fn join_member(&self, http: &str) -> Result<(), String> {
        let me = {
            lock(&self.inner)
                .members
                .get(&self.opts.id)
                .map(|(m, _)| m.clone())
        };
        let me = me.ok_or("no local member")?;
        let reply = self
            .client
            .post(format!("{http}/_twin/hello"))
            .json(&Hello { member: me })
            .send()
            .await
            .map_err(|e| format!("1 error occurred:\n\t* Failed to join {http}: {e}\n\n"))?;
        let reply: HelloReply = reply.json().await.map_err(|e| e.to_string())?;
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        for m in reply.members {
            if m.name != self.opts.id {
                inner.members.entry(m.name.clone()).or_insert((m, now));
            }
        }
        Ok(())
    }

    /// Graceful leave: out of the raft configuration, marked left for everyone.
    pub async fn leave(&self) {
        if self.opts.server && self.bootstrapped() {
            let _ = self.remove_server(&self.opts.id.clone()).await;
        }
        let (me, others) = {
            let mut inner = lock(&self.inner);
            inner.left = true;
            if let Some((m, _)) = inner.members.get_mut(&self.opts.id) {
                m.status = MemberStatus::Left;
            }
            let me = inner.members.get(&self.opts.id).map(|(m, _)| m.clone());
            let others: Vec<String> = inner
                .members
                .values()
                .filter(|(m, _)| m.name != self.opts.id)
                .map(|(m, _)| m.http.clone())
                .collect();
            (me, others)
        };
        if let Some(me) = me {
            for url in others {
                let _ = self
                    .client
                    .post(format!("{url}/_twin/hello"))
                    .json(&Hello { member: me.clone() })
                    .send()
                    .await;
            }
        }
    }

    /// Marks a failed member as left (force-leave); `prune` forgets it entirely.
    pub async fn force_leave(&self, name: &str, prune: bool) -> Result<(), String> {
        let server = {
            let mut inner = lock(&self.inner);
            let Some((m, _)) = inner.members.get_mut(name) else {
                return Err(format!("agent: No node found with name '{name}'"));
            };
            m.status = MemberStatus::Left;
            let server = m.server;
            if prune {
                inner.members.remove(name);
                inner.pruned.insert(name.to_string());
            }
            server
        };
        if server && self.config().iter().any(|s| s.id == name) {
            let _ = self.remove_server(name).await;
        }
        Ok(())
    }
}
