//! `pollcast --healthcheck [URL]`, the container HEALTHCHECK: exit 0 when the
//! running pollcast's health endpoint answers 2xx, 1 otherwise.

mod common;

use std::process::Output;

use common::*;

async fn healthcheck(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pollcast"))
            .arg("--healthcheck")
            .args(args)
            .env_remove("POLLCAST_SERVER_LISTEN")
            .env_remove("POLLCAST_ADMIN_LISTEN")
            .output()
            .expect("run pollcast")
    })
    .await
    .expect("join")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn healthcheck_passes_against_a_running_pollcast_and_fails_otherwise() {
    let up = TestUpstream::start().await;
    let pc = pollcast::start(config(&up)).await.expect("start");
    let port = pc.addr.port();

    // Explicit URL.
    let o = healthcheck(vec![format!("http://{}/_pollcast/healthz", pc.addr)]).await;
    assert!(o.status.success(), "{}", text(&o));

    // URL from the config: a wildcard listen address is reached via loopback.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("pollcast.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"0.0.0.0:{port}\"\n\n[admin]\nlisten = \"\"\n\n[upstream]\nurl = \"http://{}\"\n",
            up.addr
        ),
    )
    .expect("write");
    let with_config = vec!["--config".to_owned(), cfg.display().to_string()];
    let o = healthcheck(with_config.clone()).await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(&format!("http://127.0.0.1:{port}/_pollcast/healthz")));

    // Not 2xx: failure, naming the status.
    let o = healthcheck(vec![format!("http://{}/_pollcast/nope", pc.addr)]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("404"), "{}", text(&o));

    // Nothing listening: failure, naming the address.
    pc.stop().await;
    let o = healthcheck(with_config).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("127.0.0.1:{port}")),
        "{}",
        text(&o)
    );

    // Not a usable URL.
    let o = healthcheck(vec!["https://127.0.0.1:1/healthz".to_owned()]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}
