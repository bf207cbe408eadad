//! `dead-letters list|resend`: what a sink gave up on, and sending it again.

use crate::{fail, DeadLettersAction, Out};
use logtide::config::Config;
use std::process::ExitCode;

pub async fn dead_letters(action: DeadLettersAction) -> ExitCode {
    use logtide::ops::dead_letters as dl;
    let fail_cmd = |e: dl::DeadLetterCmdError| fail(if e.is_usage() { 2 } else { 1 }, &e);
    let config = match &action {
        DeadLettersAction::List { config, .. } | DeadLettersAction::Resend { config, .. } => config,
    };
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => return fail(2, &e),
    };
    match action {
        DeadLettersAction::List { sink, .. } => {
            match dl::list(
                &cfg,
                sink.as_deref(),
                &mut Out(std::io::stdout()),
                &mut std::io::stderr(),
            ) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => fail_cmd(e),
            }
        }
        DeadLettersAction::Resend { sink, yes, .. } => {
            if !yes {
                let n = match dl::sink_file(&cfg, &sink)
                    .and_then(|(_, p)| dl::load(&p).map_err(Into::into))
                {
                    Ok(l) => l.len(),
                    Err(e) => return fail_cmd(e),
                };
                eprint!("re-send {n} dead letters through sink {sink:?}? [y/N] ");
                let mut line = String::new();
                if std::io::stdin().read_line(&mut line).is_err()
                    || !line.trim().eq_ignore_ascii_case("y")
                {
                    eprintln!("not re-sent");
                    return ExitCode::from(1);
                }
            }
            match dl::resend_sink(&cfg, &sink).await {
                Ok(o) => {
                    outln!(
                        "sink {sink}: {} dead letters read, {} re-sent, {} rejected again; {} left in {}",
                        o.read,
                        o.sent,
                        o.failed,
                        o.left,
                        o.path.display()
                    );
                    if o.failed > 0 {
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => fail_cmd(e),
            }
        }
    }
}
