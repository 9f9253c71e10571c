//! Transcript tests in the style of etcd-io/raft's `testdata/*.txt`: each
//! file is a scenario of commands with the expected output under each, so a
//! whole feature reads as a specification. `REWRITE=1 cargo test -p
//! concord-raft --test transcripts` regenerates the expected output; commit
//! only diffs you can explain.
//!
//! File format (a tiny subset of cockroachdb/datadriven): a command line,
//! optional input lines, a `----` line, then the expected output up to the
//! next blank line. Lines starting with `#` between cases are comments.
//!
//! Commands:
//! - `log-level none|debug|info|warn|error`
//! - `add-nodes N [voters=(1,2,3)] [learners=(4)] [index=1] [prevote=true] [checkquorum=true]
//!   [election-tick=10] [heartbeat-tick=1] [max-inflight=256] [max-size=N] [max-uncommitted=N] [max-committed=N] [read-only=safe|lease]`
//!   adds N nodes; with voters, each starts from a snapshot at `index` holding that config;
//!   without, with an empty log and no configuration (to be added later).
//! - `campaign ID`, `propose ID DATA`, `propose-conf-change ID [transition=auto|implicit|explicit]`
//!   (input: `v1 l2 r3`), `read-index ID CTX`, `transfer-leadership from=ID to=ID`
//! - `tick-heartbeat ID [n]`, `tick-election ID` (ticks until past the election timeout)
//! - `process-ready ID...`, `deliver-msgs [drop=ID] ID...`, `stabilize [ID...]`
//! - `raft-log ID`, `raft-state`, `status ID`
//! - `compact ID` (snapshot the applied state, discard the log up to the applied index)
//! - `report-snapshot FROM TO [ok=false]`, `report-unreachable FROM TO`, `crash ID` (drop what is not persisted), `restart ID`

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use concord_raft::confchange::parse_changes;
use concord_raft::message::{
    describe_conf_state, describe_entry, describe_message, describe_snapshot,
};
use concord_raft::{
    ConfChange, ConfChangeTransition, ConfState, Config, EntryKind, Level, Logger, MemStorage,
    Message, RawNode, ReadOnlyOption, Ready, Role, Snapshot, SnapshotMeta,
};

// ---- a tiny datadriven runner ---------------------------------------------------------

struct Case {
    /// The command line and input lines, verbatim.
    text: Vec<String>,
    expected: Vec<String>,
    line: usize,
}

enum Chunk {
    Comment(Vec<String>),
    Case(Case),
}

fn parse_file(content: &str) -> Vec<Chunk> {
    let lines: Vec<&str> = content.lines().collect();
    let mut chunks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if l.trim().is_empty() || l.starts_with('#') {
            let mut comment = Vec::new();
            while i < lines.len() && (lines[i].trim().is_empty() || lines[i].starts_with('#')) {
                comment.push(lines[i].to_string());
                i += 1;
            }
            chunks.push(Chunk::Comment(comment));
            continue;
        }
        let start = i;
        let mut text = Vec::new();
        while i < lines.len() && lines[i] != "----" {
            text.push(lines[i].to_string());
            i += 1;
        }
        assert!(i < lines.len(), "line {}: command without ----", start + 1);
        i += 1;
        let mut expected = Vec::new();
        while i < lines.len() && !lines[i].trim().is_empty() {
            expected.push(lines[i].to_string());
            i += 1;
        }
        chunks.push(Chunk::Case(Case {
            text,
            expected,
            line: start + 1,
        }));
    }
    chunks
}

struct Cmd {
    name: String,
    args: Vec<(String, String)>,
    input: Vec<String>,
}

impl Cmd {
    fn parse(text: &[String]) -> Cmd {
        let mut words = text[0].split_whitespace();
        let name = words.next().unwrap_or_default().to_string();
        let args = words
            .map(|w| match w.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (w.to_string(), String::new()),
            })
            .collect();
        Cmd {
            name,
            args,
            input: text[1..].to_vec(),
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Positional arguments (those without `=`).
    fn positional(&self) -> Vec<&str> {
        self.args
            .iter()
            .filter(|(_, v)| v.is_empty())
            .map(|(k, _)| k.as_str())
            .collect()
    }

    fn ids(&self) -> Vec<u64> {
        self.positional().iter().map(|s| parse_u64(s)).collect()
    }

    fn u64_or(&self, key: &str, default: u64) -> u64 {
        self.get(key).map_or(default, parse_u64)
    }

    fn bool_or(&self, key: &str, default: bool) -> bool {
        self.get(key).map_or(default, |v| v == "true")
    }

    fn id_list(&self, key: &str) -> Vec<u64> {
        self.get(key).map_or_else(Vec::new, |v| {
            v.trim_matches(|c| c == '(' || c == ')')
                .split(',')
                .filter(|s| !s.is_empty())
                .map(parse_u64)
                .collect()
        })
    }
}

fn parse_u64(s: &str) -> u64 {
    s.parse()
        .unwrap_or_else(|e| panic!("not a number {s:?}: {e}"))
}

// ---- the interaction environment ------------------------------------------------

#[derive(Clone)]
struct SharedLog(Arc<Mutex<(Level, bool, String)>>);

impl Logger for SharedLog {
    fn enabled(&self, level: Level) -> bool {
        let g = self.0.lock().expect("log lock");
        g.1 && level >= g.0
    }
    fn log(&self, level: Level, line: &str) {
        let mut g = self.0.lock().expect("log lock");
        let _ = writeln!(g.2, "{level} {line}");
    }
}

struct Node {
    raw: Option<RawNode<MemStorage>>,
    disk: MemStorage,
    config: Config,
    applied: u64,
    conf_state: ConfState,
}

struct Env {
    nodes: BTreeMap<u64, Node>,
    messages: Vec<Message>,
    log: SharedLog,
}

impl Env {
    fn new() -> Env {
        Env {
            nodes: BTreeMap::new(),
            messages: Vec::new(),
            log: SharedLog(Arc::new(Mutex::new((Level::Debug, true, String::new())))),
        }
    }

    fn take_log(&self) -> String {
        std::mem::take(&mut self.log.0.lock().expect("log lock").2)
    }

    fn raw(&mut self, id: u64) -> &mut RawNode<MemStorage> {
        self.nodes
            .get_mut(&id)
            .and_then(|n| n.raw.as_mut())
            .unwrap_or_else(|| panic!("node {id} is not running"))
    }

    fn handle(&mut self, cmd: &Cmd) -> String {
        let mut out = String::new();
        match cmd.name.as_str() {
            "log-level" => {
                let level = cmd.positional()[0];
                let mut g = self.log.0.lock().expect("log lock");
                g.1 = level != "none";
                g.0 = match level {
                    "debug" => Level::Debug,
                    "info" => Level::Info,
                    "warn" => Level::Warn,
                    "error" => Level::Error,
                    _ => Level::Error,
                };
            }
            "add-nodes" => self.add_nodes(cmd),
            "campaign" => {
                for id in cmd.ids() {
                    self.raw(id).campaign();
                }
            }
            "propose" => {
                let pos = cmd.positional();
                let id = parse_u64(pos[0]);
                if let Err(e) = self.raw(id).propose(pos[1].as_bytes().to_vec()) {
                    let _ = writeln!(out, "{e}");
                }
            }
            "propose-conf-change" => {
                let id = cmd.ids()[0];
                let transition = match cmd.get("transition").unwrap_or("auto") {
                    "implicit" => ConfChangeTransition::Implicit,
                    "explicit" => ConfChangeTransition::Explicit,
                    _ => ConfChangeTransition::Auto,
                };
                let changes = parse_changes(&cmd.input.join(" ")).expect("conf change input");
                let cc = ConfChange {
                    transition,
                    changes,
                    context: Vec::new(),
                };
                if let Err(e) = self.raw(id).propose_conf_change(&cc) {
                    let _ = writeln!(out, "{e}");
                }
            }
            "read-index" => {
                let pos = cmd.positional();
                let id = parse_u64(pos[0]);
                self.raw(id).read_index(pos[1].as_bytes().to_vec());
            }
            "transfer-leadership" => {
                let (from, to) = (cmd.u64_or("from", 0), cmd.u64_or("to", 0));
                self.raw(from).transfer_leader(to);
            }
            "tick-heartbeat" => {
                let pos = cmd.positional();
                let id = parse_u64(pos[0]);
                let n = pos.get(1).map_or(1, |s| parse_u64(s));
                for _ in 0..n {
                    self.raw(id).tick();
                }
            }
            "tick-election" => {
                for id in cmd.ids() {
                    let ticks = self.nodes[&id].config.max_election_tick();
                    for _ in 0..ticks {
                        self.raw(id).tick();
                    }
                }
            }
            "process-ready" => {
                for id in cmd.ids() {
                    self.process_ready(id, &mut out, "");
                }
            }
            "deliver-msgs" => {
                let drop = cmd.get("drop").map(parse_u64);
                for id in cmd.ids() {
                    self.deliver(id, drop == Some(id), &mut out, "");
                }
            }
            "stabilize" => {
                let ids = cmd.ids();
                self.stabilize(&ids, &mut out);
            }
            "raft-log" => {
                let id = cmd.ids()[0];
                let raw = self.raw(id);
                let ents = raw.log_entries();
                if ents.is_empty() {
                    let (first, last) = raw.log_bounds();
                    let _ = writeln!(out, "log is empty: first index={first}, last index={last}");
                }
                for e in ents {
                    let _ = writeln!(out, "{}", describe_entry(&e));
                }
            }
            "raft-state" => {
                let ids: Vec<u64> = self.nodes.keys().copied().collect();
                for id in ids {
                    let line = match &self.nodes[&id].raw {
                        Some(raw) => {
                            let s = raw.status();
                            let voter = if s.conf_state.voters.contains(&id)
                                || s.conf_state.voters_outgoing.contains(&id)
                            {
                                "(Voter)"
                            } else {
                                "(Non-Voter)"
                            };
                            format!(
                                "{id}: {} {voter} Term:{} Lead:{}",
                                role(s.role),
                                s.term,
                                s.leader_id
                            )
                        }
                        None => format!("{id}: down"),
                    };
                    let _ = writeln!(out, "{line}");
                }
            }
            "status" => {
                let id = cmd.ids()[0];
                let s = self.raw(id).status();
                let _ = writeln!(
                    out,
                    "{id}: {} Term:{} Vote:{} Commit:{} Applied:{} Lead:{} Config:{}",
                    role(s.role),
                    s.term,
                    s.vote,
                    s.commit,
                    s.applied,
                    s.leader_id,
                    describe_conf_state(&s.conf_state)
                );
                for (pid, p) in s.progress.unwrap_or_default() {
                    let _ = writeln!(
                        out,
                        "{pid}: {:?} match={} next={}{}{}",
                        p.state,
                        p.matched,
                        p.next_idx,
                        if p.is_learner { " learner" } else { "" },
                        if p.inflight > 0 {
                            format!(" inflight={}", p.inflight)
                        } else {
                            String::new()
                        }
                    );
                }
            }
            "compact" => {
                let id = cmd.ids()[0];
                let node = self.nodes.get_mut(&id).expect("node");
                // The snapshot is of the applied state, with the config at that index.
                let (index, cs) = (node.applied, node.conf_state.clone());
                let store = node.raw.as_mut().expect("running").storage_mut();
                let data = format!("snap@{index}").into_bytes();
                match store
                    .create_snapshot(index, cs, data)
                    .and_then(|_| store.compact(index))
                {
                    Ok(()) => {}
                    Err(e) => {
                        let _ = writeln!(out, "{e}");
                    }
                }
                let ents = self.raw(id).log_entries();
                for e in ents {
                    let _ = writeln!(out, "{}", describe_entry(&e));
                }
            }
            "report-snapshot" => {
                let ids = cmd.ids();
                let status = if cmd.bool_or("ok", true) {
                    concord_raft::SnapshotStatus::Finish
                } else {
                    concord_raft::SnapshotStatus::Failure
                };
                self.raw(ids[0]).report_snapshot(ids[1], status);
            }
            "report-unreachable" => {
                let ids = cmd.ids();
                self.raw(ids[0]).report_unreachable(ids[1]);
            }
            "crash" => {
                for id in cmd.ids() {
                    let node = self.nodes.get_mut(&id).expect("node");
                    if let Some(raw) = node.raw.take() {
                        node.disk = raw.storage().clone();
                    }
                }
            }
            "restart" => {
                for id in cmd.ids() {
                    let logger = self.log.clone();
                    let node = self.nodes.get_mut(&id).expect("node");
                    let mut cfg = node.config.clone();
                    cfg.applied = node.applied;
                    let disk = std::mem::take(&mut node.disk);
                    let raw = RawNode::with_logger(&cfg, disk, Some(Box::new(logger)))
                        .unwrap_or_else(|e| panic!("restart {id}: {e}"));
                    node.raw = Some(raw);
                }
            }
            other => panic!("unknown command {other:?}"),
        }
        out.push_str(&self.take_log());
        out
    }

    fn add_nodes(&mut self, cmd: &Cmd) {
        let n = cmd.positional().first().map_or(1, |s| parse_u64(s));
        let voters = cmd.id_list("voters");
        let learners = cmd.id_list("learners");
        let index = cmd.u64_or("index", 1);
        for _ in 0..n {
            let id = self.nodes.keys().next_back().copied().unwrap_or(0) + 1;
            let mut cfg = Config::new(id);
            cfg.pre_vote = cmd.bool_or("prevote", true);
            cfg.election_tick = cmd.u64_or("election-tick", cfg.election_tick);
            cfg.heartbeat_tick = cmd.u64_or("heartbeat-tick", cfg.heartbeat_tick);
            cfg.check_quorum = cmd.bool_or("checkquorum", true);
            cfg.max_inflight_msgs = cmd.u64_or("max-inflight", 256) as usize;
            cfg.max_size_per_msg = cmd.u64_or("max-size", u64::MAX);
            cfg.max_uncommitted_entries_size = cmd.u64_or("max-uncommitted", u64::MAX);
            cfg.max_committed_size_per_ready = cmd.u64_or("max-committed", u64::MAX);
            if cmd.get("read-only") == Some("lease") {
                cfg.read_only_option = ReadOnlyOption::LeaseBased;
            }
            // Deterministic, but the same for every node: tests drive elections explicitly.
            cfg.min_election_tick = cfg.election_tick;
            cfg.max_election_tick = cfg.election_tick + 1;
            let mut disk = MemStorage::new();
            let mut conf_state = ConfState::default();
            let mut applied = 0;
            if !voters.is_empty() {
                conf_state = ConfState {
                    voters: voters.clone(),
                    learners: learners.clone(),
                    ..ConfState::default()
                };
                let snap = Snapshot {
                    meta: SnapshotMeta {
                        index,
                        term: 1,
                        conf_state: conf_state.clone(),
                    },
                    data: Vec::new(),
                };
                disk.apply_snapshot(snap).expect("bootstrap snapshot");
                applied = index;
            }
            let raw = RawNode::with_logger(&cfg, disk, Some(Box::new(self.log.clone())))
                .unwrap_or_else(|e| panic!("add node {id}: {e}"));
            self.nodes.insert(
                id,
                Node {
                    raw: Some(raw),
                    disk: MemStorage::new(),
                    config: cfg,
                    applied,
                    conf_state,
                },
            );
        }
    }

    fn process_ready(&mut self, id: u64, out: &mut String, indent: &str) {
        let raw = self.raw(id);
        if !raw.has_ready() {
            let _ = writeln!(out, "{indent}<empty Ready>");
            return;
        }
        let rd = raw.ready();
        let _ = write!(out, "{}", indent_lines(&describe_ready(&rd), indent));
        // 1. persist
        let node = self.nodes.get_mut(&id).expect("node");
        let raw = node.raw.as_mut().expect("running");
        if let Some(s) = &rd.snapshot {
            raw.storage_mut()
                .apply_snapshot(s.clone())
                .expect("apply snapshot");
            node.applied = s.meta.index;
            node.conf_state = s.meta.conf_state.clone();
        }
        raw.storage_mut().append(&rd.entries).expect("append");
        if let Some(hs) = rd.hard_state {
            raw.storage_mut().set_hard_state(hs);
        }
        // 2. send
        self.messages.extend(rd.messages.iter().cloned());
        // 3. apply
        for e in &rd.committed_entries {
            let node = self.nodes.get_mut(&id).expect("node");
            node.applied = e.index;
            if e.kind == EntryKind::ConfChange {
                let cc = ConfChange::decode(&e.data).expect("decodable conf change");
                let raw = node.raw.as_mut().expect("running");
                match raw.apply_conf_change(&cc) {
                    Ok(cs) => {
                        node.conf_state = cs.clone();
                        raw.storage_mut().set_conf_state(cs);
                    }
                    Err(err) => {
                        let _ = writeln!(out, "{indent}apply conf change {cc}: {err}");
                    }
                }
            }
        }
        // 4. advance
        self.raw(id).advance(rd.number);
        let log = self.take_log();
        let _ = write!(out, "{}", indent_lines(&log, indent));
    }

    fn deliver(&mut self, id: u64, drop: bool, out: &mut String, indent: &str) -> bool {
        let (mine, rest): (Vec<Message>, Vec<Message>) = std::mem::take(&mut self.messages)
            .into_iter()
            .partition(|m| m.to == id);
        self.messages = rest;
        for m in &mine {
            if drop {
                let _ = writeln!(out, "{indent}dropped: {}", describe_message(m));
                continue;
            }
            let _ = writeln!(out, "{indent}{}", describe_message(m));
            let running = self.nodes.get(&id).is_some_and(|n| n.raw.is_some());
            if running {
                if let Err(e) = self.raw(id).step(m.clone()) {
                    let _ = writeln!(out, "{indent}{e}");
                }
            }
            let log = self.take_log();
            let _ = write!(out, "{}", indent_lines(&log, indent));
        }
        !mine.is_empty()
    }

    fn stabilize(&mut self, ids: &[u64], out: &mut String) {
        let ids: Vec<u64> = if ids.is_empty() {
            self.nodes.keys().copied().collect()
        } else {
            ids.to_vec()
        };
        for _ in 0..1000 {
            let mut done = true;
            for &id in &ids {
                let has = self.nodes[&id].raw.as_ref().is_some_and(|r| r.has_ready());
                if has {
                    done = false;
                    let _ = writeln!(out, "> {id} handling Ready");
                    self.process_ready(id, out, "  ");
                }
            }
            for &id in &ids {
                if self.messages.iter().any(|m| m.to == id) {
                    done = false;
                    let _ = writeln!(out, "> {id} receiving messages");
                    self.deliver(id, false, out, "  ");
                }
            }
            if done {
                return;
            }
        }
        panic!("stabilize did not converge");
    }
}

fn role(r: Role) -> &'static str {
    match r {
        Role::Follower => "StateFollower",
        Role::PreCandidate => "StatePreCandidate",
        Role::Candidate => "StateCandidate",
        Role::Leader => "StateLeader",
    }
}

fn indent_lines(s: &str, indent: &str) -> String {
    s.lines().map(|l| format!("{indent}{l}\n")).collect()
}

/// etcd's `DescribeReady`.
fn describe_ready(rd: &Ready) -> String {
    let mut b = String::new();
    if let Some(ss) = rd.soft_state {
        let _ = writeln!(b, "Lead:{} State:{}", ss.leader_id, role(ss.role));
    }
    if let Some(hs) = rd.hard_state {
        let _ = writeln!(
            b,
            "HardState Term:{} Vote:{} Commit:{}",
            hs.term, hs.vote, hs.commit
        );
    }
    if !rd.read_states.is_empty() {
        let rs: Vec<String> = rd
            .read_states
            .iter()
            .map(|r| format!("{}:{:?}", r.index, String::from_utf8_lossy(&r.context)))
            .collect();
        let _ = writeln!(b, "ReadStates [{}]", rs.join(" "));
    }
    if !rd.entries.is_empty() {
        b.push_str("Entries:\n");
        for e in &rd.entries {
            let _ = writeln!(b, "{}", describe_entry(e));
        }
    }
    if let Some(s) = &rd.snapshot {
        let _ = writeln!(b, "Snapshot {}", describe_snapshot(s));
    }
    if !rd.committed_entries.is_empty() {
        b.push_str("CommittedEntries:\n");
        for e in &rd.committed_entries {
            let _ = writeln!(b, "{}", describe_entry(e));
        }
    }
    if !rd.messages.is_empty() {
        b.push_str("Messages:\n");
        for m in &rd.messages {
            let _ = writeln!(b, "{}", describe_message(m));
        }
    }
    if b.is_empty() {
        return "<empty Ready>\n".into();
    }
    format!("Ready MustSync={}:\n{b}", rd.must_sync)
}

fn run_file(path: &Path) {
    let content =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let rewrite = std::env::var("REWRITE").is_ok_and(|v| v == "1");
    let mut env = Env::new();
    let mut rewritten = String::new();
    let mut failures = Vec::new();
    for chunk in parse_file(&content) {
        match chunk {
            Chunk::Comment(lines) => {
                for l in lines {
                    rewritten.push_str(&l);
                    rewritten.push('\n');
                }
            }
            Chunk::Case(case) => {
                let cmd = Cmd::parse(&case.text);
                let mut got = env.handle(&cmd);
                if got.trim().is_empty() {
                    got = "ok\n".into();
                }
                let got_lines: Vec<String> =
                    got.lines().map(|l| l.trim_end().to_string()).collect();
                for l in &case.text {
                    rewritten.push_str(l);
                    rewritten.push('\n');
                }
                rewritten.push_str("----\n");
                for l in &got_lines {
                    rewritten.push_str(l);
                    rewritten.push('\n');
                }
                if got_lines != case.expected {
                    failures.push(format!(
                        "{}:{}: {}\n--- want\n{}\n--- got\n{}",
                        path.display(),
                        case.line,
                        case.text[0],
                        case.expected.join("\n"),
                        got_lines.join("\n")
                    ));
                }
            }
        }
    }
    if rewrite {
        std::fs::write(path, rewritten).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    if let Some(first) = failures.first() {
        panic!(
            "{} case(s) differ; first:\n{first}\n(REWRITE=1 regenerates; commit only diffs you can explain)",
            failures.len()
        );
    }
}

#[test]
fn transcripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no transcripts in {}", dir.display());
    let filter = std::env::var("TRANSCRIPT").ok();
    for f in files {
        if filter
            .as_ref()
            .is_some_and(|name| !f.to_string_lossy().contains(name.as_str()))
        {
            continue;
        }
        run_file(&f);
    }
}
