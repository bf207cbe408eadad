//! Cursors that never name two different rows (issue 11), against real PostgreSQL and
//! MariaDB through the logtide binary:
//!
//! * seeded backfill scenarios — random table sizes and chunk sizes, kill -9 at a random
//!   line (inside a chunk, between chunks, in the hand-over), deletes and inserts in the
//!   key range the restart reads again, updates and key changes, a table dropped and one
//!   added between the runs, writes while the second run backfills. Over *all* output:
//!   every cursor names one (table, key) with identical content, and applying the events in
//!   cursor order, de-duplicated by cursor, rebuilds every table;
//! * query mode: ties at one timestamp across pages, rows committed late at a passed
//!   timestamp with smaller and larger keys, kill -9 mid-run.
//!
//! `LOGTIDE_CURSOR_SEEDS` sets the seeds per engine (default 20; `scripts/soak_cursors.sh`
//! runs many more), `LOGTIDE_CURSOR_SEED0` the first one.

use crate::common::mariadb::MariaServer;
use crate::common::pg::{PgServer, TestDb, PASSWORD, PASSWORD_ENV, USER};
use crate::common::port::free_port;
use crate::common::run::{
    apply_events, kill9, logs, mysql_text, run_killed_after, run_to_end, spawn_run, wait_marker,
    wait_until, Workdir,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// xorshift64*: a small deterministic generator for the scenarios.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.next() % one_in == 0
    }
}

fn seeds() -> std::ops::Range<u64> {
    let n = std::env::var("LOGTIDE_CURSOR_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let first = std::env::var("LOGTIDE_CURSOR_SEED0")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    first..first + n
}

fn cursor(e: &Value) -> &str {
    e["source"]["cursor"].as_str().expect("cursor")
}

/// One cursor, one (table, key) and identical content — over every event ever written.
fn assert_one_content_per_cursor(events: &[Value], ctx: &str) {
    let mut seen: BTreeMap<&str, Value> = BTreeMap::new();
    for e in events {
        let content = json!({
            "op": e["op"], "schema": e["source"]["schema"], "table": e["source"]["table"],
            "key": e["key"], "before": e["before"], "after": e["after"],
        });
        if let Some(prev) = seen.get(cursor(e)) {
            assert_eq!(
                prev,
                &content,
                "{ctx}: cursor {} names two different contents",
                cursor(e)
            );
        } else {
            seen.insert(cursor(e), content);
        }
    }
}

/// The events in cursor order, each cursor once: what a de-duplicating consumer applies.
fn by_cursor_deduplicated(events: &[Value]) -> Vec<Value> {
    let mut ev: Vec<Value> = events.to_vec();
    ev.sort_by(|a, b| cursor(a).cmp(cursor(b)));
    ev.dedup_by(|a, b| cursor(a) == cursor(b));
    ev
}

/// The consumer's rows of `table` (`schema.name`) as text tuples of `cols`.
fn consumer_rows(events: &[Value], table: &str, cols: &[&str]) -> BTreeSet<Vec<Option<String>>> {
    apply_events(events)
        .remove(table)
        .unwrap_or_default()
        .into_values()
        .map(|row| {
            cols.iter()
                .map(|c| mysql_text(row.get(*c).unwrap_or(&Value::Null)))
                .collect()
        })
        .collect()
}

/// A table of a scenario: name, columns (first the key's), and how its rows look.
struct Table {
    name: &'static str,
    cols: &'static [&'static str],
    keyed: bool,
}

const A: Table = Table {
    name: "a",
    cols: &["id", "v", "n"],
    keyed: true,
};
const B: Table = Table {
    name: "b",
    cols: &["k", "v"],
    keyed: true,
};
const C: Table = Table {
    name: "c",
    cols: &["x", "y"],
    keyed: false,
};
const D: Table = Table {
    name: "d",
    cols: &["g", "h", "v"],
    keyed: true,
};
const E: Table = Table {
    name: "e",
    cols: &["id", "v"],
    keyed: true,
};

/// Text keys whose byte order differs from a case-insensitive collation's order.
fn text_key(i: u64) -> String {
    let lead = ["a", "B", "Z", "_", "é", "b", "A", "~"][(i % 8) as usize];
    format!("{lead}{i:05}x")
}

/// The SQL of one scenario, for either engine (`pg`: PostgreSQL spelling).
struct Scenario {
    seed: u64,
    rng: Rng,
    na: u64,
    nb: u64,
    nc: u64,
    nd: u64,
    chunk: u64,
    drop_table: Option<&'static str>,
    add_table: bool,
    /// Numbers the rows `during_run` inserts.
    writes: u64,
    /// Whether table `a` is backfilled again on demand (with a kill) after the hand-over.
    ondemand: bool,
}

impl Scenario {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let drop_table = match rng.range(0, 2) {
            0 => Some("c"),
            1 => Some("d"),
            _ => None,
        };
        Scenario {
            seed,
            na: rng.range(40, 300),
            nb: rng.range(10, 120),
            nc: rng.range(0, 60),
            nd: rng.range(10, 150),
            chunk: rng.range(3, 70),
            drop_table,
            add_table: rng.chance(2),
            writes: 0,
            ondemand: rng.chance(3),
            rng,
        }
    }

    fn total(&self) -> u64 {
        self.na + self.nb + self.nc + self.nd
    }

    /// CREATE and fill the tables. Ids of `a` are spaced by 10, so rows can be inserted
    /// inside a range that was read.
    fn setup(&self, pg: bool) -> String {
        let text = if pg { "text" } else { "VARCHAR(40)" };
        let mut s = format!(
            "CREATE TABLE a (id INT PRIMARY KEY, v {text}, n INT);
             CREATE TABLE b (k {text} PRIMARY KEY, v INT);
             CREATE TABLE c (x INT, y {text});
             CREATE TABLE d (g INT, h {text}, v INT, PRIMARY KEY (g, h));
             CREATE TABLE mark (id INT PRIMARY KEY);\n"
        );
        let values = |rows: Vec<String>| rows.join(", ");
        if self.na > 0 {
            s += &format!(
                "INSERT INTO a VALUES {};\n",
                values(
                    (1..=self.na)
                        .map(|i| format!("({}, 'v{i}', 0)", i * 10))
                        .collect()
                )
            );
        }
        if self.nb > 0 {
            s += &format!(
                "INSERT INTO b VALUES {};\n",
                values(
                    (1..=self.nb)
                        .map(|i| format!("('{}', {i})", text_key(i)))
                        .collect()
                )
            );
        }
        if self.nc > 0 {
            s += &format!(
                "INSERT INTO c VALUES {};\n",
                values(
                    (1..=self.nc)
                        .map(|i| format!("({}, 'y{}')", i % 7, i % 3))
                        .collect()
                )
            );
        }
        if self.nd > 0 {
            s += &format!(
                "INSERT INTO d VALUES {};\n",
                values(
                    (1..=self.nd)
                        .map(|i| format!("({}, '{}', {i})", i % 5, text_key(i)))
                        .collect()
                )
            );
        }
        s
    }

    /// Writes between the runs: deletes and inserts around `last_a` (the last id of `a`
    /// the killed run delivered: the range a restart reads again), updates, a key change,
    /// changes of `b`, and the dropped and added table.
    fn between_runs(&mut self, last_a: Option<i64>) -> String {
        let r = &mut self.rng;
        let top = (self.na * 10) as i64;
        let at = last_a.unwrap_or_else(|| r.range(1, top.max(1) as u64) as i64);
        let span = r.range(2, 30) as i64 * 10;
        let (lo, hi) = (at - span, at + 10);
        let mut s = format!(
            "DELETE FROM a WHERE id BETWEEN {lo} AND {hi} AND id % 20 = {};\n",
            r.range(0, 1) * 10
        );
        let news: Vec<String> = (lo.max(0) / 10..=hi / 10)
            .filter(|_| r.chance(2))
            .map(|i| format!("({}, 'ins{}', 1)", i * 10 + 5, self.seed))
            .collect();
        if !news.is_empty() {
            s += &format!("INSERT INTO a VALUES {};\n", news.join(", "));
        }
        s += &format!(
            "UPDATE a SET n = n + 1, v = 'upd' WHERE id % 70 = {};\n",
            r.range(0, 6) * 10
        );
        s += &format!(
            "UPDATE a SET id = id + 100000 WHERE id = {};\n",
            r.range(1, self.na) * 10
        );
        s += &format!(
            "DELETE FROM b WHERE v % 9 = {};
             INSERT INTO b VALUES ('{}', -1), ('{}', -2);
             UPDATE d SET v = v + 1000 WHERE g = {};\n",
            r.range(0, 8),
            text_key(100_000 + self.seed),
            text_key(200_000 + self.seed),
            r.range(0, 4)
        );
        if let Some(t) = self.drop_table {
            s += &format!("DROP TABLE {t};\n");
        }
        if self.add_table {
            s += "CREATE TABLE e (id INT PRIMARY KEY, v INT);
                  INSERT INTO e VALUES (1, 1), (2, 2), (3, 3);\n";
        }
        s
    }

    /// Writes while the second run backfills.
    fn during_run(&mut self) -> String {
        self.writes += 1;
        let r = &mut self.rng;
        let mut s = format!(
            "INSERT INTO a VALUES ({}, 'late', 2);
             UPDATE a SET v = 'during', n = n + 10 WHERE id % 30 = {};
             DELETE FROM a WHERE id % 110 = {};
             UPDATE a SET id = id + 200000 WHERE id = {};\n",
            50_000 + self.writes,
            r.range(0, 2) * 10,
            r.range(0, 10) * 10,
            r.range(1, self.na) * 10
        );
        if self.add_table {
            s += &format!(
                "UPDATE e SET v = v + 1; DELETE FROM e WHERE id = 2; INSERT INTO e VALUES ({}, 4);\n",
                3 + self.writes
            );
        }
        s
    }

    fn tables(&self) -> Vec<&'static Table> {
        let mut t = vec![&A, &B, &C, &D];
        t.retain(|t| Some(t.name) != self.drop_table);
        if self.add_table {
            t.push(&E);
        }
        t
    }
}

/// `run_killed_after` that keeps the output written before (it starts the file anew).
fn killed_after(w: &Workdir, env: &[(&str, &str)], lines: usize) {
    let before = std::fs::read_to_string(w.out()).unwrap_or_default();
    let _ = std::fs::remove_file(w.path().join("fifo.jsonl"));
    let new = run_killed_after(w, env, lines);
    let mut text = before;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    for l in new {
        text.push_str(&l);
        text.push('\n');
    }
    std::fs::write(w.out(), text).expect("output");
}

/// `[admin]` on a port of its own: the backfill CLI must reach this test's service only.
fn admin_toml() -> String {
    format!("\n[admin]\nlisten = \"127.0.0.1:{}\"\n", free_port())
}

/// Requests an on-demand backfill of `table` (no service runs: the request is stored).
fn request_backfill(w: &Workdir, source: &str, table: &str, env: &[(&str, &str)]) {
    let config = w.config();
    let config = config.to_str().expect("utf8 path");
    let out = run_to_end(
        &[
            "backfill", "--config", config, "--source", source, "--table", table,
        ],
        env,
    );
    assert!(
        out.status.success(),
        "backfill request failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until an on-demand backfill finished.
fn wait_ondemand_done(w: &Workdir) {
    assert!(
        wait_until(WAIT, || logs(w).contains("on-demand backfill finished")),
        "the on-demand backfill never finished\n{}",
        logs(w)
    );
}

/// The largest id of `table` among `lines` (the killed run's output).
fn last_id(lines: &[String], table: &str) -> Option<i64> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["source"]["table"] == table && e["op"] == "r")
        .filter_map(|e| e["after"]["id"].as_i64())
        .max()
}

/// Checks one scenario's whole output against the database's final rows.
fn check(
    s: &Scenario,
    events: &[Value],
    schema: &str,
    mut db_rows: impl FnMut(&Table) -> BTreeSet<Vec<Option<String>>>,
    ctx: &str,
) {
    assert_one_content_per_cursor(events, ctx);
    let applied = by_cursor_deduplicated(events);
    for t in s.tables() {
        if !t.keyed {
            continue; // rows without a key are not upserted by key: nothing to rebuild
        }
        let want = db_rows(t);
        let got = consumer_rows(&applied, &format!("{schema}.{}", t.name), t.cols);
        if got != want {
            let missing: Vec<_> = want.difference(&got).take(5).collect();
            let extra: Vec<_> = got.difference(&want).take(5).collect();
            panic!(
                "{ctx}: table {} rebuilt in cursor order differs from the database ({} vs {} rows); missing {missing:?}, extra {extra:?}",
                t.name,
                got.len(),
                want.len()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_seeded_backfill_cursors_name_one_row() {
    let server = PgServer::get();
    for seed in seeds() {
        pg_scenario(server, seed).await;
    }
}

async fn pg_scenario(server: &PgServer, seed: u64) {
    let mut s = Scenario::new(seed);
    let db = server.fresh_db();
    db.exec(&s.setup(true)).await;
    let w = Workdir::new();
    let name = format!("cur{seed}_{}", std::process::id());
    w.write_config(&format!(
        "{}backfill_chunk_rows = {}\n{}",
        server.source_toml(db.name(), &name),
        s.chunk,
        admin_toml()
    ));
    let env = [(PASSWORD_ENV, PASSWORD)];
    let kill_at = s.rng.range(1, s.total().max(1)) as usize;
    let first = run_killed_after(&w, &env, kill_at);
    db.exec(&s.between_runs(last_id(&first, "a"))).await;
    // Half the seeds are killed a second time, in the rest of the backfill or the
    // hand-over (the rows left plus the marker table's creation).
    if s.rng.chance(2) {
        // Writes first, so the run has lines to deliver even when little is left to read.
        let more = s.rng.range(1, 5) as usize;
        db.exec(&format!("INSERT INTO mark VALUES (-1);{}", s.during_run()))
            .await;
        killed_after(&w, &env, more);
    }
    let mut child = spawn_run(&w, &[], &env);
    db.exec(&s.during_run()).await;
    db.exec("INSERT INTO mark VALUES (1)").await;
    let ev = wait_marker(&w, "mark", 1, WAIT);
    kill9(&mut child);
    let ctx = format!(
        "postgres seed {seed} (chunk {}, kill at {kill_at})",
        s.chunk
    );
    let want = pg_rows(&db, &s).await;
    check(&s, &ev, "public", |t| want[t.name].clone(), &ctx);
    if s.ondemand {
        // Table `a` again, on demand while streaming, killed in the middle: its rows are
        // named at the boundaries they are read at, never like another row.
        db.exec(&s.during_run()).await;
        request_backfill(&w, &name, "public.a", &env);
        let k = s.rng.range(1, (s.na / 2).max(1)) as usize;
        killed_after(&w, &env, k);
        let mut child = spawn_run(&w, &[], &env);
        db.exec(&s.during_run()).await;
        wait_ondemand_done(&w);
        db.exec("INSERT INTO mark VALUES (2)").await;
        let ev = wait_marker(&w, "mark", 2, WAIT);
        kill9(&mut child);
        let want = pg_rows(&db, &s).await;
        let ctx = format!("{ctx}, on demand killed at {k}");
        check(&s, &ev, "public", |t| want[t.name].clone(), &ctx);
    }
    eprintln!(
        "{ctx}: {} events ok (on demand: {})",
        w.events().len(),
        s.ondemand
    );
    drop_slot(server, &format!("logtide_{name}"));
}

/// The scenario's tables as the database holds them now.
async fn pg_rows(
    db: &TestDb<'_>,
    s: &Scenario,
) -> BTreeMap<&'static str, BTreeSet<Vec<Option<String>>>> {
    let mut want = BTreeMap::new();
    for t in s.tables() {
        let rows: BTreeSet<Vec<Option<String>>> = db
            .text_rows(&format!("SELECT {} FROM {}", t.cols.join(", "), t.name))
            .await
            .into_iter()
            .collect();
        want.insert(t.name, rows);
    }
    want
}

/// Drops a killed run's replication slot once its walsender is gone (the test server has
/// 50 slots; the seeds would use them up).
fn drop_slot(server: &PgServer, slot: &str) {
    let dropped = wait_until(WAIT, || {
        server.psql(
            "postgres",
            &format!(
                "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots WHERE slot_name = '{slot}' AND NOT active"
            ),
        );
        server.psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'"),
        ) == "0"
    });
    assert!(dropped, "slot {slot} stayed active");
}

#[test]
fn mysql_seeded_backfill_cursors_name_one_row() {
    let server = MariaServer::get();
    for seed in seeds() {
        mysql_scenario(server, seed);
    }
}

fn mysql_scenario(server: &MariaServer, seed: u64) {
    let mut s = Scenario::new(seed);
    let db = server.fresh_db();
    server.sql(&db, &s.setup(false));
    let w = Workdir::new();
    let name = format!("mcur{seed}_{}", std::process::id());
    w.write_config(&format!(
        "{}backfill_chunk_rows = {}\n{}",
        server.source_toml(&name, &db),
        s.chunk,
        admin_toml()
    ));
    let kill_at = s.rng.range(1, s.total().max(1)) as usize;
    let first = run_killed_after(&w, &[], kill_at);
    server.sql(&db, &s.between_runs(last_id(&first, "a")));
    if s.rng.chance(2) {
        let more = s.rng.range(1, 5) as usize;
        server.sql(
            &db,
            &format!("INSERT INTO mark VALUES (-1);{}", s.during_run()),
        );
        killed_after(&w, &[], more);
    }
    let mut child = spawn_run(&w, &[], &[]);
    server.sql(&db, &s.during_run());
    server.sql(&db, "INSERT INTO mark VALUES (1)");
    let ev = wait_marker(&w, "mark", 1, WAIT);
    kill9(&mut child);
    let ctx = format!("mariadb seed {seed} (chunk {}, kill at {kill_at})", s.chunk);
    let rows = |t: &Table| -> BTreeSet<Vec<Option<String>>> {
        server
            .select(
                &db,
                &format!("SELECT {} FROM {}", t.cols.join(", "), t.name),
            )
            .into_iter()
            .collect()
    };
    check(&s, &ev, &db, rows, &ctx);
    if s.ondemand {
        server.sql(&db, &s.during_run());
        request_backfill(&w, &name, &format!("{db}.a"), &[]);
        let k = s.rng.range(1, (s.na / 2).max(1)) as usize;
        killed_after(&w, &[], k);
        let mut child = spawn_run(&w, &[], &[]);
        server.sql(&db, &s.during_run());
        wait_ondemand_done(&w);
        server.sql(&db, "INSERT INTO mark VALUES (2)");
        let ev = wait_marker(&w, "mark", 2, WAIT);
        kill9(&mut child);
        let ctx = format!("{ctx}, on demand killed at {k}");
        check(&s, &ev, &db, rows, &ctx);
    }
    eprintln!(
        "{ctx}: {} events ok (on demand: {})",
        w.events().len(),
        s.ondemand
    );
}

// ---- query mode ----

fn ids_of(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .filter_map(|e| e["after"]["id"].as_i64())
        .collect()
}

/// Waits until the output holds a delivery of every id in `want`.
fn wait_ids(w: &Workdir, want: &[i64]) -> Vec<Value> {
    let mut ev = Vec::new();
    let ok = wait_until(WAIT, || {
        ev = w.events();
        let have: BTreeSet<i64> = ids_of(&ev).into_iter().collect();
        want.iter().all(|i| have.contains(i))
    });
    assert!(
        ok,
        "ids {want:?} never all arrived; have {:?}\n{}",
        ids_of(&ev),
        logs(w)
    );
    ev
}

/// The query-mode scenario shared by both protocols: `sql` runs SQL on the database, `ts`
/// spells a timestamp literal `2024-01-01 10:00:SS`.
fn query_ties(w: &Workdir, env: &[(&str, &str)], mut sql: impl FnMut(&str)) {
    let t0 = "'2024-01-01 10:00:00'";
    sql(&format!(
        "INSERT INTO ev VALUES (1, {t0}, 'a'), (2, {t0}, 'b'), (3, {t0}, 'c')"
    ));
    let mut child = spawn_run(w, &[], env);
    wait_ids(w, &[1, 2, 3]);
    // Committed after the poll, at the timestamp already passed: a smaller and a larger key.
    sql(&format!(
        "INSERT INTO ev VALUES (0, {t0}, 'late'), (4, {t0}, 'late')"
    ));
    wait_ids(w, &[0, 1, 2, 3, 4]);
    crate::common::run::wait_query_runs(w, 3);
    let ev = w.events();
    // The normal case: every row version once.
    assert_eq!(
        {
            let mut i = ids_of(&ev);
            i.sort();
            i
        },
        [0, 1, 2, 3, 4],
        "each row exactly once\n{}",
        logs(w)
    );
    let cursors: BTreeSet<&str> = ev.iter().map(cursor).collect();
    assert_eq!(cursors.len(), ev.len());
    kill9(&mut child);
    // Many rows with ties across pages, then kill -9 in the middle of reading them.
    let mut rows = Vec::new();
    for i in 10..210 {
        rows.push(format!(
            "({i}, '2024-01-01 10:00:{:02}', 'r{i}')",
            1 + i / 20
        ));
    }
    sql(&format!("INSERT INTO ev VALUES {}", rows.join(", ")));
    killed_after(w, env, 37);
    let mut child = spawn_run(w, &[], env);
    // Late rows below the highest cursor (within the look-back), an update in the window.
    sql("INSERT INTO ev VALUES (5, '2024-01-01 10:00:09', 'late2'), (1000, '2024-01-01 10:00:08', 'late3')");
    sql("UPDATE ev SET v = 'changed' WHERE id = 200");
    let mut want: Vec<i64> = (0..=5).collect();
    want.extend(10..210);
    want.push(1000);
    let _ = wait_ids(w, &want);
    assert!(
        wait_until(WAIT, || w
            .events()
            .iter()
            .any(|e| e["after"]["id"] == 200 && e["after"]["v"] == "changed")),
        "the update inside the window never arrived\n{}",
        logs(w)
    );
    crate::common::run::wait_query_runs(w, 2);
    kill9(&mut child);
    let ev = w.events();
    assert_one_content_per_cursor(&ev, "query mode");
    // Applied in delivery order, the consumer ends with the table.
    let state = apply_events(&ev);
    let rows = state.values().next().expect("one table");
    assert_eq!(rows.len(), want.len(), "{}", logs(w));
    let changed = rows.values().find(|r| r["id"] == 200).expect("row 200");
    assert_eq!(changed["v"], "changed");
}

#[test]
fn pg_query_mode_late_ties_are_delivered_once() {
    let db: TestDb<'_> = PgServer::get().fresh_db();
    // psql runs as postgres: act as the test user, who owns the database.
    let as_user = |q: &str| db.psql(&format!("SET ROLE {USER}; {q}"));
    as_user("CREATE TABLE ev (id int PRIMARY KEY, at timestamp(0) NOT NULL, v text)");
    let w = Workdir::new();
    let name = format!("qcur_{}", std::process::id());
    w.write_config(&format!(
        "[[sources]]\nkind = \"query\"\nname = \"{name}\"\nhost = \"{}\"\nport = {}\nuser = \"{USER}\"\n\
         password_env = \"{PASSWORD_ENV}\"\ndatabase = \"{}\"\nsslmode = \"disable\"\n\
         query = \"SELECT id, at, v FROM ev WHERE at >= {{{{cursor}}}}\"\n\
         cursor_column = \"at\"\nkey_columns = [\"id\"]\ntable = \"public.ev\"\n\
         batch_size = 4\ninterval = \"100ms\"\ninitial_cursor = \"1970-01-01\"\n",
        db.server.host(),
        db.server.port(),
        db.name()
    ));
    query_ties(&w, &[(PASSWORD_ENV, PASSWORD)], |q| {
        as_user(q);
    });
}

#[test]
fn mysql_query_mode_late_ties_are_delivered_once() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    server.sql(
        &db,
        "CREATE TABLE ev (id INT PRIMARY KEY, at DATETIME NOT NULL, v VARCHAR(20))",
    );
    let w = Workdir::new();
    let name = format!("mqcur_{}", std::process::id());
    w.write_config(&format!(
        "[[sources]]\nkind = \"query\"\nprotocol = \"mysql\"\nname = \"{name}\"\nhost = \"127.0.0.1\"\n\
         port = {}\nuser = \"{}\"\npassword_env = \"{}\"\ndatabase = \"{db}\"\nsslmode = \"disable\"\n\
         query = \"SELECT id, at, v FROM ev WHERE at >= {{{{cursor}}}}\"\n\
         cursor_column = \"at\"\nkey_columns = [\"id\"]\ntable = \"{db}.ev\"\n\
         batch_size = 4\ninterval = \"100ms\"\ninitial_cursor = \"1970-01-01\"\n",
        server.port(),
        crate::common::mariadb::USER,
        crate::common::mariadb::PASSWORD_ENV,
    ));
    let env = [(
        crate::common::mariadb::PASSWORD_ENV,
        crate::common::mariadb::PASSWORD,
    )];
    query_ties(&w, &env, |q| {
        server.sql(&db, q);
    });
}
