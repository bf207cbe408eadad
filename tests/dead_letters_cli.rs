//! `logtide dead-letters list|resend` against a local HTTP receiver: an event the receiver
//! rejects with 400 is the only dead letter; `list` shows it; `resend` keeps it while it is
//! still rejected (exit 1) and, once the receiver accepts it, delivers it and removes it from
//! the file (exit 0). Bad arguments exit 2.

use crate::common::receiver::{Receiver, Reply, Request, Script};
use crate::sink_util::{cursors, events, json_cursors};
use logtide::config::{Config, SinkConfig};
use logtide::sink::dead_letter::read_dead_letters;
use logtide::sink::http::HttpSink;
use logtide::sink::Sink;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Runs the logtide binary with `args` (off the runtime: the receiver must keep answering).
async fn logtide(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_logtide"))
            .args(&args)
            .output()
            .expect("run logtide")
    })
    .await
    .expect("join")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write_config(dir: &Path, url: &str, dl: &Path) -> PathBuf {
    let path = dir.join("logtide.toml");
    let text = format!(
        "[state]\npath = {state:?}\n\n[[sources]]\nkind = \"postgres\"\nname = \"app\"\nuser = \"u\"\ndatabase = \"d\"\n\n[[sinks]]\nkind = \"http\"\nname = \"hook\"\nurl = \"{url}\"\nbatch = {{ max_events = 4 }}\nretry = {{ max_retries = 3, initial_backoff = \"20ms\", max_backoff = \"100ms\" }}\ndead_letter_path = {dl:?}\n\n[[sinks]]\nkind = \"stdout\"\nname = \"console\"\n",
        state = dir.join("state"),
    );
    std::fs::write(&path, text).expect("write config");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_event_is_listed_then_resent_and_removed() {
    // Rejects any request holding the event with id 7 until `accept` is set.
    let accept = Arc::new(AtomicBool::new(false));
    let a = accept.clone();
    // Answers 503 to everything while set (the receiver down).
    let down = Arc::new(AtomicBool::new(false));
    let d = down.clone();
    let script: Script = Arc::new(move |r: &Request, _| {
        if d.load(Ordering::SeqCst) {
            return Reply::Status(503, vec![], "{\"error\":\"maintenance\"}".into());
        }
        let bad = r
            .items()
            .iter()
            .any(|j| j["after"]["id"].as_i64() == Some(7));
        if bad && !a.load(Ordering::SeqCst) {
            Reply::Status(400, vec![], "{\"error\":\"bad email\"}".into())
        } else {
            Reply::ok()
        }
    });
    let rx = Receiver::start(script).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let dl = dir.path().join("hook.dead.jsonl");
    let config = write_config(dir.path(), &rx.url("/"), &dl);
    let config_arg = config.to_str().expect("utf-8 path");

    // The service's http sink, built from the same config, delivers ten events.
    let cfg = Config::load(&config).expect("config loads");
    let Some(SinkConfig::Http(hcfg)) = cfg.sinks.first() else {
        panic!("first sink is the http sink");
    };
    let mut sink = HttpSink::build(hcfg).await.expect("build");
    let evs = events(1, 10);
    sink.deliver(&evs)
        .await
        .expect("accepted despite one bad event");
    let bad = evs[6].position.cursor();
    let others: Vec<String> = cursors(&evs).into_iter().filter(|c| *c != bad).collect();
    assert_eq!(json_cursors(&rx.accepted_items()), others);

    // The dead-letter file holds exactly the rejected event.
    let letters = read_dead_letters(&dl).expect("dead letters");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].cursor, bad);
    assert_eq!(letters[0].sink, "hook");
    assert!(letters[0].error.contains("400"), "{}", letters[0].error);
    assert_eq!(letters[0].event["after"]["id"].as_i64(), Some(7));

    // `list` shows it: time, sink, cursor, error, summary.
    let out = logtide(&["dead-letters", "list", "--config", config_arg]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let cols: Vec<&str> = lines[0].split('\t').collect();
    assert_eq!(cols.len(), 5, "{}", lines[0]);
    assert_eq!(cols[0], letters[0].time);
    assert_eq!(cols[1], "hook");
    assert_eq!(cols[2], bad);
    assert!(
        cols[3].contains("400") && cols[3].contains("bad email"),
        "{}",
        cols[3]
    );
    assert_eq!(cols[4], "c public.users key={\"id\":7}");
    assert!(text(&out.stderr).contains("sink hook: 1 dead letter in"));

    // Bad arguments: an unknown sink, a sink without dead letters.
    for sink in ["nope", "console"] {
        let out = logtide(&[
            "dead-letters",
            "list",
            "--config",
            config_arg,
            "--sink",
            sink,
        ])
        .await;
        assert_eq!(out.status.code(), Some(2), "{sink}: {}", text(&out.stderr));
        let out = logtide(&[
            "dead-letters",
            "resend",
            "--config",
            config_arg,
            "--sink",
            sink,
            "--yes",
        ])
        .await;
        assert_eq!(out.status.code(), Some(2), "{sink}: {}", text(&out.stderr));
    }

    // Re-sent while the receiver still rejects it: it stays, exit 1.
    let before = rx.requests().len();
    let resend = [
        "dead-letters",
        "resend",
        "--config",
        config_arg,
        "--sink",
        "hook",
        "--yes",
    ];
    let out = logtide(&resend).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 rejected again"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        rx.requests().len(),
        before + 1,
        "one request with the dead letter"
    );
    let still = read_dead_letters(&dl).expect("dead letters");
    assert_eq!(
        still.iter().map(|l| l.cursor.clone()).collect::<Vec<_>>(),
        vec![bad.clone()]
    );

    // The receiver down: `resend` gives up after its retries, says the file is left as it
    // was (no talk of checkpoints or of retrying), exit 1, the file unchanged.
    down.store(true, Ordering::SeqCst);
    let kept = std::fs::read(&dl).expect("dead-letter file");
    let out = logtide(&resend).await;
    down.store(false, Ordering::SeqCst);
    let all = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{all}");
    // The final message (the retries before it are logged as such).
    let err = all
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line: {all}"))
        .to_owned();
    assert!(
        err.contains("gave up after 3 retries")
            && err.contains("503")
            && err.contains("left as it was"),
        "{err}"
    );
    assert!(
        !err.contains("will retry") && !err.contains("checkpoint"),
        "{err}"
    );
    assert_eq!(std::fs::read(&dl).expect("dead-letter file"), kept);

    // Once the receiver accepts it, `resend` delivers it and the file no longer lists it.
    accept.store(true, Ordering::SeqCst);
    let out = logtide(&resend).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 re-sent, 0 rejected again; 0 left"),
        "{}",
        text(&out.stdout)
    );
    let mut want = others;
    want.push(bad.clone());
    assert_eq!(
        json_cursors(&rx.accepted_items()),
        want,
        "the dead letter delivered once, after the others"
    );
    let resent = rx.accepted().last().cloned().expect("a request");
    assert_eq!(
        resent.items()[0],
        letters[0].event,
        "the stored event, unchanged"
    );
    // In the envelope's own key order (`op` first), not re-sorted.
    let keys = |v: &serde_json::Value| {
        v.as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(keys(&resent.items()[0]), keys(&letters[0].event));
    assert_eq!(
        keys(&resent.items()[0]).first().map(String::as_str),
        Some("op")
    );
    assert!(!dl.exists() || read_dead_letters(&dl).expect("read").is_empty());
    let out = logtide(&[
        "dead-letters",
        "list",
        "--config",
        config_arg,
        "--sink",
        "hook",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).is_empty(), "{}", text(&out.stdout));

    // Nothing left to re-send is not a failure.
    let out = logtide(&resend).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
