//! Running the `logtide` binary from tests: config files, child processes, reading the
//! JSONL output, waiting on conditions with timeouts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A scratch directory with a config, a state dir and an output file.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Self {
        Workdir {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn out(&self) -> PathBuf {
        self.path().join("out.jsonl")
    }
    pub fn state(&self) -> PathBuf {
        self.path().join("state")
    }
    pub fn config(&self) -> PathBuf {
        self.path().join("logtide.toml")
    }
    /// Writes a config: `[state]` + `sources` text + a file sink into `out()`. Unless
    /// `sources` has an `[admin]` table of its own, the admin endpoint gets a free port: every
    /// test runs in one process, and the default 127.0.0.1:9187 would be taken by whichever
    /// concurrent logtide came first (an ERROR in the others' logs, and a CLI that reads the
    /// config would reach another test's service).
    pub fn write_config(&self, sources: &str) -> PathBuf {
        let admin = if sources.contains("[admin]") {
            String::new()
        } else {
            format!(
                "\n[admin]\nlisten = \"127.0.0.1:{}\"\n",
                super::port::free_port()
            )
        };
        let text = format!(
            "[state]\npath = {:?}\n\n{sources}\n{admin}\n[[sinks]]\nkind = \"file\"\nname = \"out\"\npath = {:?}\n",
            self.state(),
            self.out()
        );
        std::fs::write(self.config(), text).expect("write config");
        self.config()
    }
    /// Every JSON line written so far (a trailing partial line is ignored).
    pub fn events(&self) -> Vec<serde_json::Value> {
        read_jsonl(&self.out())
    }
    /// Waits until at least `n` events are in the output.
    pub fn wait_events(&self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let mut last = Vec::new();
        let ok = wait_until(timeout, || {
            last = self.events();
            last.len() >= n
        });
        assert!(
            ok,
            "timed out waiting for {n} events, have {}: {:?}",
            last.len(),
            last.last()
        );
        last
    }
}

pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Waits (up to 60 s) until `n` more query-mode runs started than now, per the log.
pub fn wait_query_runs(w: &Workdir, n: usize) {
    let base = logs(w).matches("query run starting").count();
    assert!(
        wait_until(Duration::from_secs(60), || logs(w)
            .matches("query run starting")
            .count()
            >= base + n),
        "no {n} more query runs\n{}",
        logs(w)
    );
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_logtide"))
}

/// Starts `logtide run --config <cfg> [args]` in the background; logs go to `<dir>/log-N.txt`.
pub fn spawn_run(w: &Workdir, args: &[&str], env: &[(&str, &str)]) -> Child {
    let n = std::fs::read_dir(w.path()).map(|d| d.count()).unwrap_or(0);
    let log = std::fs::File::create(w.path().join(format!("log-{n}.txt"))).expect("log file");
    let mut c = bin();
    c.arg("run").arg("--config").arg(w.config()).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.env("RUST_LOG", "logtide=debug,info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn logtide")
}

/// Runs `logtide <args>` to completion.
pub fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = bin();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run logtide")
}

/// Waits for a child to exit within `timeout`; kills it and panics otherwise.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            panic!("logtide did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL.
pub fn kill9(child: &mut Child) {
    child.kill().expect("kill -9");
    let _ = child.wait();
}

/// SIGTERM.
pub fn sigterm(child: &Child) {
    let st = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill -TERM");
    assert!(st.success());
}

/// All log text of this workdir's runs, for assertions and failure messages.
pub fn logs(w: &Workdir) -> String {
    let mut s = String::new();
    if let Ok(rd) = std::fs::read_dir(w.path()) {
        let mut files: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            if f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("log-"))
            {
                s.push_str(&std::fs::read_to_string(&f).unwrap_or_default());
            }
        }
    }
    s
}

/// A consumer that applies events in order (upsert by key for c/u/r, delete by key for d,
/// clear for t), keeping absent (`unchanged`) columns at their current value. Returns
/// `table -> key JSON -> row`. Duplicated deliveries are harmless by construction.
pub fn apply_events(
    events: &[serde_json::Value],
) -> std::collections::BTreeMap<
    String,
    std::collections::BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
> {
    let mut tables: std::collections::BTreeMap<
        String,
        std::collections::BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    > = Default::default();
    for e in events {
        let table = format!(
            "{}.{}",
            e["source"]["schema"].as_str().unwrap_or(""),
            e["source"]["table"].as_str().unwrap_or("")
        );
        let rows = tables.entry(table).or_default();
        let op = e["op"].as_str().unwrap_or("");
        let key = e["key"].to_string();
        match op {
            "c" | "u" | "r" => {
                // A key change: the old row goes away.
                if op == "u" {
                    if let Some(before) = e["before"].as_object() {
                        let old_key: serde_json::Map<String, serde_json::Value> = e["key"]
                            .as_object()
                            .map(|k| {
                                k.keys()
                                    .filter_map(|c| before.get(c).map(|v| (c.clone(), v.clone())))
                                    .collect()
                            })
                            .unwrap_or_default();
                        let old_key = serde_json::Value::Object(old_key).to_string();
                        if old_key != key && rows.contains_key(&old_key) {
                            rows.remove(&old_key);
                        }
                    }
                }
                let after = e["after"].as_object().cloned().unwrap_or_default();
                let row = rows.entry(key).or_default();
                for (k, v) in after {
                    row.insert(k, v);
                }
            }
            "d" => {
                rows.remove(&key);
            }
            "t" => rows.clear(),
            other => panic!("unknown op {other:?} in {e}"),
        }
    }
    tables
}

/// Waits until a `c` event with `after.id == id` in `table` arrived (everything before it
/// did too); returns every event so far.
pub fn wait_marker(w: &Workdir, table: &str, id: i64, timeout: Duration) -> Vec<serde_json::Value> {
    let mut ev = Vec::new();
    let ok = wait_until(timeout, || {
        ev = w.events();
        ev.iter()
            .any(|e| e["op"] == "c" && e["source"]["table"] == table && e["after"]["id"] == id)
    });
    assert!(ok, "marker {id} never arrived\n{}", logs(w));
    ev
}

/// A JSON scalar as the `mariadb` client prints it.
pub fn mysql_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The consumer's rows of `table` as the `mariadb` client prints `cols`: first column ->
/// the others (compare with `MariaServer::rows_by_key`).
pub fn consumer_text_rows(
    events: &[serde_json::Value],
    table: &str,
    cols: &[&str],
) -> std::collections::BTreeMap<String, Vec<Option<String>>> {
    apply_events(events)
        .remove(table)
        .unwrap_or_default()
        .into_values()
        .map(|row| {
            let mut v: Vec<Option<String>> = cols.iter().map(|c| mysql_text(&row[*c])).collect();
            let k = v.remove(0).expect("key column");
            (k, v)
        })
        .collect()
}

/// What a consumer applying `events` in order ends with for `table`: key JSON -> row JSON.
pub fn consumer_state(
    events: &[serde_json::Value],
    table: &str,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    apply_events(events)
        .remove(table)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::Object(v)))
        .collect()
}

/// Asserts cursors are strictly increasing (per source) over `events`.
pub fn assert_cursors_increase(events: &[serde_json::Value]) {
    for w in events.windows(2) {
        let a = w[0]["source"]["cursor"].as_str().expect("cursor");
        let b = w[1]["source"]["cursor"].as_str().expect("cursor");
        assert!(
            a < b,
            "cursor order broken: {a} then {b}\n{}\n{}",
            w[0],
            w[1]
        );
    }
}

/// Runs `logtide run` with the file sink writing into a FIFO that the test reads: after
/// `lines` lines the test stops reading, so logtide blocks mid-run however fast it is, and
/// is killed there (SIGKILL). The pipe is then drained; the complete lines the run
/// delivered are written to `w.out()` (a torn last line is dropped, as the file sink does on
/// restart) and the config is restored, so the next `spawn_run` continues the same output.
pub fn run_killed_after(w: &Workdir, env: &[(&str, &str)], lines: usize) -> Vec<String> {
    use std::io::BufRead;
    let fifo = w.path().join("fifo.jsonl");
    let st = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(st.success());
    let cfg = std::fs::read_to_string(w.config()).expect("config");
    let piped = cfg.replace(
        &format!("path = {:?}", w.out()),
        &format!("path = {fifo:?}\nfsync = false"),
    );
    assert_ne!(
        piped,
        cfg,
        "the config has no file sink writing to {:?}",
        w.out()
    );
    std::fs::write(w.config(), piped).expect("config");
    let mut child = spawn_run(w, &[], env);
    let (got_tx, got_rx) = std::sync::mpsc::channel::<()>();
    let (drain_tx, drain_rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let f = std::fs::File::open(&fifo).expect("open fifo");
        let mut it = std::io::BufReader::new(f).lines();
        let mut out = Vec::new();
        while out.len() < lines {
            match it.next() {
                Some(Ok(l)) => out.push(l),
                _ => break,
            }
        }
        let _ = got_tx.send(());
        // Hold the pipe (logtide blocks on it) until the writer is dead, then drain it.
        let _ = drain_rx.recv();
        out.extend(it.map_while(Result::ok));
        out
    });
    let reached = got_rx.recv_timeout(Duration::from_secs(120)).is_ok();
    kill9(&mut child);
    let _ = drain_tx.send(());
    let mut out = reader.join().expect("fifo reader");
    assert!(reached, "logtide never wrote {lines} lines:\n{}", logs(w));
    if out
        .last()
        .is_some_and(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
    {
        out.pop();
    }
    std::fs::write(w.out(), out.join("\n") + "\n").expect("seed output");
    std::fs::write(w.config(), cfg).expect("restore config");
    out
}
