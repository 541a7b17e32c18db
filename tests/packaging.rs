//! Packaging: the Dockerfile's defaults and the Kubernetes ConfigMap are
//! configs pollcast accepts, as the container would run them. (hadolint and
//! kubernetes-validate check the files themselves in `.ci/run`.)

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The image's `ENV` lines, read from the Dockerfile.
fn dockerfile_env() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile"))
        .expect("Dockerfile");
    let joined = text.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|l| l.strip_prefix("ENV "))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn the_image_defaults_are_a_valid_config_and_a_healthcheck_target() {
    let env = dockerfile_env();
    let get = |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("Dockerfile sets {k}"))
    };
    assert_eq!(get("POLLCAST_CONFIG"), "/etc/pollcast/config.toml");
    // The shipped config.toml with the image's overrides, as the container runs it.
    let run = |arg: &str| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pollcast"));
        for (k, v) in &env {
            cmd.env(k, v);
        }
        cmd.env(
            "POLLCAST_CONFIG",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
        )
        .arg(arg)
        .output()
        .expect("run")
    };
    let o = run("--check");
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains(&format!("listen = \"{}\"", get("POLLCAST_SERVER_LISTEN"))),
        "{out}"
    );
    assert!(
        out.contains(&format!("listen = \"{}\"", get("POLLCAST_ADMIN_LISTEN"))),
        "{out}"
    );
    // HEALTHCHECK runs `pollcast --healthcheck` with the same environment: it
    // targets the admin listener through loopback (whether or not something
    // happens to listen on 9090 on this machine).
    let o = run("--healthcheck");
    assert!(
        text(&o).contains("http://127.0.0.1:9090/_pollcast/healthz"),
        "{}",
        text(&o)
    );
}

/// The `config.toml` embedded in deploy/kubernetes/configmap.yaml.
fn configmap_config() -> String {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes/configmap.yaml"
    ))
    .expect("configmap.yaml");
    let (_, block) = yaml
        .split_once("  config.toml: |\n")
        .expect("a config.toml block");
    block
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_kubernetes_configmap_holds_a_valid_config() {
    let text = configmap_config();
    let path = std::path::Path::new("configmap.yaml#config.toml");
    let c = pollcast::Config::from_toml(&text, path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.admin.listen, Some("0.0.0.0:9090".parse().expect("addr")));
    assert_eq!(c.admin.prefix, "/_pollcast");
    assert_eq!(c.server.listen.port(), 8080);
    assert!(!c.feeds.is_empty());
    // The probes and ports in deployment.yaml match this config.
    let deployment = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes/deployment.yaml"
    ))
    .expect("deployment.yaml");
    for needle in [
        "path: /_pollcast/healthz",
        "path: /_pollcast/readyz",
        "containerPort: 8080",
        "containerPort: 9090",
        "value: \"0.0.0.0:9090\"",
    ] {
        assert!(
            deployment.contains(needle),
            "deployment.yaml lacks {needle}"
        );
    }
}
