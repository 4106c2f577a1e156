//! The handlers of the internal routes (`/_twin/...`) the servers of a twin call on each
//! other: hello (membership), vote, append, snapshot, forwarded reads and writes, joins and
//! removals.

use super::*;

pub(super) async fn hello(State(c): State<Arc<Cluster>>, Json(h): Json<Hello>) -> Json<HelloReply> {
    let now = Instant::now();
    let mut inner = lock(&c.inner);
    let incoming = h.member;
    if incoming.name != c.opts.id {
        // A pruned node that calls in itself has joined again.
        inner.pruned.remove(&incoming.name);
        match inner.members.get_mut(&incoming.name) {
            Some((m, seen)) => {
                *seen = now;
                m.http = incoming.http.clone();
                m.addr = incoming.addr.clone();
                m.tags = incoming.tags.clone();
                m.status = incoming.status;
            }
            None => {
                inner.members.insert(incoming.name.clone(), (incoming, now));
            }
        }
    }
    let leader_server = inner
        .leader
        .as_ref()
        .and_then(|id| inner.p.config.iter().find(|s| &s.id == id))
        .cloned();
    Json(HelloReply {
        members: inner.members.values().map(|(m, _)| m.clone()).collect(),
        leader: inner.leader.clone(),
        bootstrapped: inner.p.bootstrapped,
        leader_server,
        pruned: inner.pruned.iter().cloned().collect(),
    })
}

pub(super) async fn vote(
    State(c): State<Arc<Cluster>>,
    Json(v): Json<VoteRequest>,
) -> Json<VoteReply> {
    let mut inner = lock(&c.inner);
    // A node that hears from a live leader, or that may not take part, votes for no one.
    let leader_alive =
        inner.leader.is_some() && inner.last_contact.elapsed() < Duration::from_millis(800);
    if v.term > inner.p.term && !leader_alive {
        inner.p.term = v.term;
        inner.p.voted_for = None;
        inner.role = Role::Follower;
        inner.leader = None;
    }
    let up_to_date = (v.last_term, v.index) >= (inner.p.last_term, inner.p.index);
    let free = inner.p.voted_for.is_none() || inner.p.voted_for.as_deref() == Some(&v.candidate);
    let granted = v.term == inner.p.term && free && up_to_date && !leader_alive && (c.active)();
    if granted {
        inner.p.voted_for = Some(v.candidate.clone());
        inner.last_contact = Instant::now();
    }
    let reply = VoteReply {
        term: inner.p.term,
        granted,
    };
    let p = inner.p.clone();
    drop(inner);
    c.persist(&p);
    Json(reply)
}

pub(super) async fn append(
    State(c): State<Arc<Cluster>>,
    Json(a): Json<Append>,
) -> Json<AppendReply> {
    if !(c.active)() {
        return Json(AppendReply { term: 0, ok: false });
    }
    let mut inner = lock(&c.inner);
    if a.term < inner.p.term {
        return Json(AppendReply {
            term: inner.p.term,
            ok: false,
        });
    }
    if a.term > inner.p.term {
        inner.p.term = a.term;
        inner.p.voted_for = None;
    }
    inner.role = if a.leader == c.opts.id {
        Role::Leader
    } else {
        Role::Follower
    };
    inner.leader = Some(a.leader.clone());
    inner.last_contact = Instant::now();
    let in_step =
        inner.p.index == a.index && inner.p.last_term == a.last_term && inner.p.bootstrapped;
    let ok = match (&a.entry, in_step) {
        (None, true) => true,
        (Some(entry), true) => {
            let (mut data, mut config) = (inner.p.data.clone(), inner.p.config.clone());
            match c.apply_entry(&mut data, &mut config, entry, a.index + 1) {
                Ok(_) => {
                    inner.p.data = data;
                    inner.p.config = config;
                    inner.p.index = a.index + 1;
                    inner.p.last_term = a.term;
                    true
                }
                Err(_) => false,
            }
        }
        (_, false) => false,
    };
    let reply = AppendReply {
        term: inner.p.term,
        ok,
    };
    let p = inner.p.clone();
    drop(inner);
    if ok && a.entry.is_some() {
        c.persist(&p);
    }
    Json(reply)
}

pub(super) async fn snapshot(
    State(c): State<Arc<Cluster>>,
    Json(s): Json<Snapshot>,
) -> Json<AppendReply> {
    if !(c.active)() {
        return Json(AppendReply { term: 0, ok: false });
    }
    let mut inner = lock(&c.inner);
    if s.term < inner.p.term {
        return Json(AppendReply {
            term: inner.p.term,
            ok: false,
        });
    }
    inner.p.term = s.term;
    inner.p.index = s.index;
    inner.p.last_term = s.last_term;
    inner.p.config = s.config;
    inner.p.data = s.data;
    inner.p.bootstrapped = true;
    inner.role = Role::Follower;
    inner.leader = Some(s.leader);
    inner.last_contact = Instant::now();
    let p = inner.p.clone();
    drop(inner);
    tracing::info!("installed a snapshot at index {}", p.index);
    c.persist(&p);
    Json(AppendReply {
        term: p.term,
        ok: true,
    })
}

pub(super) async fn shared_read(
    State(c): State<Arc<Cluster>>,
    Json(q): Json<Value>,
) -> Json<Value> {
    let pointer = q["pointer"].as_str().unwrap_or_default();
    Json(c.read(|d| d.pointer(pointer).cloned().unwrap_or(Value::Null)))
}

pub(super) async fn forwarded_write(
    State(c): State<Arc<Cluster>>,
    Json(op): Json<Value>,
) -> Json<Value> {
    if !c.is_leader() {
        return Json(json!({"error": WriteError::NoLeader}));
    }
    match c.propose(Entry::Operation(op)).await {
        Ok(v) => Json(json!({"ok": v})),
        Err(e) => Json(json!({"error": e})),
    }
}

pub(super) async fn join_request(
    State(c): State<Arc<Cluster>>,
    Json(server): Json<Server>,
) -> (axum::http::StatusCode, String) {
    if !c.bootstrapped() {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "not bootstrapped".into(),
        );
    }
    match c.add_server(server).await {
        Ok(()) => (axum::http::StatusCode::OK, String::new()),
        Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

pub(super) async fn remove_request(
    State(c): State<Arc<Cluster>>,
    Json(body): Json<Value>,
) -> (axum::http::StatusCode, String) {
    let id = body["id"].as_str().unwrap_or_default().to_string();
    match c.remove_server(&id).await {
        Ok(()) => (axum::http::StatusCode::OK, String::new()),
        Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}
