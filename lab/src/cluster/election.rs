//! Who leads: bootstrap (bootstrap_expect, or one server alone), elections by a majority
//! of voters that have every committed write, the leader's heartbeats and autopilot's
//! promotions, stepping down, and leadership transfer.

use super::*;

impl Cluster {
    /// Sets up a single-server configuration with `data` as the state (Vault init and
    /// `operator migrate`, or an explicit bootstrap).
    pub fn bootstrap_alone(&self, data: Value) {
        let mut inner = lock(&self.inner);
        inner.p.config = vec![self.me_server(true)];
        inner.p.bootstrapped = true;
        inner.p.data = data;
        inner.p.index = inner.p.index.max(1);
        let p = inner.p.clone();
        drop(inner);
        self.persist(&p);
    }

    /// Hands leadership to another voter, as raft's LeadershipTransfer does (Vault's
    /// `RaftLock.Unlock` on a step-down): this node becomes a follower and stays out of
    /// elections for `keep_out`, so a follower that stops hearing heartbeats takes over;
    /// with no other voter able to, this node leads again after it. False when this node
    /// does not lead or is the only voter.
    pub fn transfer_leadership(&self, keep_out: Duration) -> bool {
        let mut inner = lock(&self.inner);
        let voters = inner.p.config.iter().filter(|s| s.voter).count();
        if inner.role != Role::Leader || voters < 2 {
            return false;
        }
        inner.role = Role::Follower;
        inner.leader = None;
        inner.last_contact = Instant::now();
        inner.no_candidacy_until = Some(Instant::now() + keep_out);
        tracing::info!(
            "leadership transfer: stepping down from term {}",
            inner.p.term
        );
        true
    }

    pub(super) fn step_down(&self, term: u64) {
        let mut inner = lock(&self.inner);
        if term > inner.p.term {
            inner.p.term = term;
            inner.p.voted_for = None;
            let p = inner.p.clone();
            inner.role = Role::Follower;
            inner.leader = None;
            drop(inner);
            self.persist(&p);
        }
    }

    // ----- the loops -----

    pub(super) async fn consensus_round(&self) {
        if !self.opts.server || lock(&self.inner).left {
            return;
        }
        if !(self.active)() {
            let mut inner = lock(&self.inner);
            inner.role = Role::Follower;
            return;
        }
        if !self.bootstrapped() {
            self.try_bootstrap().await;
            return;
        }
        let role = lock(&self.inner).role;
        match role {
            Role::Leader => self.lead().await,
            Role::Follower | Role::Candidate => self.maybe_elect().await,
        }
    }

    /// bootstrap_expect: wait until that many servers are alive, then all of them start
    /// with the same configuration. A server that finds a cluster asks to join it instead.
    pub(super) async fn try_bootstrap(&self) {
        let alive_servers: Vec<Member> = {
            let inner = lock(&self.inner);
            inner
                .members
                .values()
                .filter(|(m, _)| m.server && m.status == MemberStatus::Alive)
                .map(|(m, _)| m.clone())
                .collect()
        };
        // Is there a cluster already? Ask the others.
        for m in alive_servers.iter().filter(|m| m.name != self.opts.id) {
            let url = format!("{}/_twin/join", m.http);
            let reply = self
                .client
                .post(url)
                .json(&self.me_server(false))
                .send()
                .await;
            if let Ok(r) = reply {
                if r.status().is_success() {
                    // The leader will send us the state; until then we wait.
                    return;
                }
            }
        }
        let expect = self.opts.bootstrap_expect;
        if expect == 0 || alive_servers.len() < expect {
            return;
        }
        // As Consul does: a server that reports raft peers of its own disables bootstrap
        // mode, even if it could not take our join just now (say, mid-election).
        for m in alive_servers.iter().filter(|m| m.name != self.opts.id) {
            let hello = Hello {
                member: lock(&self.inner).members[&self.opts.id].0.clone(),
            };
            let reply = self
                .client
                .post(format!("{}/_twin/hello", m.http))
                .json(&hello)
                .send()
                .await;
            let bootstrapped = match reply {
                Ok(r) => r.json::<HelloReply>().await.map(|h| h.bootstrapped),
                Err(e) => Err(e),
            };
            if bootstrapped.unwrap_or(true) {
                return;
            }
        }
        let mut config: Vec<Server> = alive_servers
            .iter()
            .map(|m| Server {
                id: m.name.clone(),
                address: format!(
                    "{}:{}",
                    m.addr,
                    self.opts.address.rsplit(':').next().unwrap_or("8300")
                ),
                http: m.http.clone(),
                voter: true,
            })
            .collect();
        config.sort_by(|a, b| a.id.cmp(&b.id));
        let mut inner = lock(&self.inner);
        inner.p.config = config;
        inner.p.bootstrapped = true;
        inner.last_contact = Instant::now();
        let p = inner.p.clone();
        drop(inner);
        tracing::info!("bootstrapped with {} servers", p.config.len());
        self.persist(&p);
    }

    pub(super) async fn maybe_elect(&self) {
        let (request, voters) = {
            let inner = lock(&self.inner);
            if inner.no_candidacy_until.is_some_and(|t| Instant::now() < t) {
                return;
            }
            let voters: Vec<Server> = inner.p.config.iter().filter(|s| s.voter).cloned().collect();
            let Some(rank) = voters.iter().position(|s| s.id == self.opts.id) else {
                return;
            };
            // The only voter needs nobody's vote: it leads at once (a one-server start).
            let timeout = if voters.len() == 1 {
                Duration::ZERO
            } else {
                Duration::from_millis(900 + 350 * rank as u64)
            };
            if inner.last_contact.elapsed() < timeout {
                return;
            }
            (
                VoteRequest {
                    term: inner.p.term + 1,
                    candidate: self.opts.id.clone(),
                    index: inner.p.index,
                    last_term: inner.p.last_term,
                },
                voters,
            )
        };
        {
            let mut inner = lock(&self.inner);
            inner.p.term = request.term;
            inner.p.voted_for = Some(self.opts.id.clone());
            inner.role = Role::Candidate;
            inner.leader = None;
            inner.last_contact = Instant::now();
            let p = inner.p.clone();
            drop(inner);
            self.persist(&p);
        }
        let body = serde_json::to_value(&request).expect("vote serializes");
        let calls = voters.iter().filter(|s| s.id != self.opts.id).map(|s| {
            let client = self.client.clone();
            let url = format!("{}/_twin/vote", s.http);
            let body = body.clone();
            async move {
                let r = client.post(url).json(&body).send().await.ok()?;
                r.json::<VoteReply>().await.ok()
            }
        });
        let replies = futures::future::join_all(calls).await;
        let mut granted = 1;
        for reply in replies.into_iter().flatten() {
            if reply.term > request.term {
                self.step_down(reply.term);
                return;
            }
            if reply.granted {
                granted += 1;
            }
        }
        let elected = {
            let mut inner = lock(&self.inner);
            let won = inner.role == Role::Candidate
                && inner.p.term == request.term
                && granted * 2 > voters.len();
            if won {
                tracing::info!("elected leader for term {}", request.term);
                inner.role = Role::Leader;
                inner.leader = Some(self.opts.id.clone());
                inner.acked.clear();
            }
            won
        };
        if elected {
            self.lead().await;
        }
    }

    /// Heartbeats, catching followers up, promoting new servers, and stepping down when
    /// a majority is out of reach.
    pub(super) async fn lead(&self) {
        // Heartbeats and writes take turns, so a heartbeat never overtakes an entry.
        let serial = self.writes.lock().await;
        let (term, index, last_term, servers) = {
            let inner = lock(&self.inner);
            (
                inner.p.term,
                inner.p.index,
                inner.p.last_term,
                inner.p.config.clone(),
            )
        };
        let message = Append {
            term,
            leader: self.opts.id.clone(),
            index,
            last_term,
            entry: None,
        };
        let ok = self.broadcast_append(&servers, &message).await;
        drop(serial);
        let voters: Vec<&Server> = servers.iter().filter(|s| s.voter).collect();
        let reachable = voters
            .iter()
            .filter(|s| s.id == self.opts.id || ok.contains(&s.id))
            .count();
        let now = Instant::now();
        {
            let mut inner = lock(&self.inner);
            if inner.role != Role::Leader {
                return;
            }
            if reachable * 2 > voters.len() {
                inner.last_contact = now;
            } else if inner.last_contact.elapsed() > Duration::from_secs(2) {
                tracing::warn!("lost the majority of voters; stepping down");
                inner.role = Role::Follower;
                inner.leader = None;
                return;
            }
            for s in &servers {
                if s.id == self.opts.id || ok.contains(&s.id) {
                    inner.healthy_since.entry(s.id.clone()).or_insert(now);
                } else {
                    inner.healthy_since.remove(&s.id);
                }
            }
        }
        // Autopilot: a non-voter that has been healthy long enough becomes a voter.
        let promote: Vec<String> = {
            let inner = lock(&self.inner);
            servers
                .iter()
                .filter(|s| !s.voter)
                .filter(|s| {
                    inner
                        .healthy_since
                        .get(&s.id)
                        .is_some_and(|t| t.elapsed() >= self.opts.promote_after)
                })
                .map(|s| s.id.clone())
                .collect()
        };
        for id in promote {
            let mut config = servers.clone();
            for s in config.iter_mut().filter(|s| s.id == id) {
                s.voter = true;
            }
            let _ = self.propose(Entry::Configuration(config)).await;
            tracing::info!("promoted {id} to voter");
        }
    }
}
