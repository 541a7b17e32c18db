//! Packaging: the Dockerfile's defaults and the Kubernetes ConfigMaps are
//! configs pollcast accepts, as the container would run them; the image is
//! built as CI builds, from pinned bases, with OCI labels; the PodMonitor
//! selects the pods and port the Kustomize layouts define. (hadolint,
//! `kubectl kustomize` and kubernetes-validate check the files themselves in
//! `.ci/run`.)

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

fn read(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn the_image_builds_as_ci_does_from_pinned_bases_with_oci_labels() {
    let dockerfile = read("Dockerfile");
    let joined = dockerfile.replace("\\\n", " ");
    // The build stage's cargo command is the one .ci/run's release build runs.
    let build = joined
        .lines()
        .filter(|l| l.starts_with("RUN "))
        .find_map(|l| Some(l[l.find("cargo build")?..].split("&&").next()?.trim()))
        .expect("a RUN with cargo build");
    let ci = read(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == build),
        ".ci/run has no line `{build}` (the Dockerfile's build command)"
    );
    // Every base image: an exact version tag and a digest.
    let froms: Vec<&str> = joined
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    for image in froms {
        let (name, digest) = image.split_once("@sha256:").expect("pinned by digest");
        assert_eq!(digest.len(), 64, "{image}");
        assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()), "{image}");
        let tag = name.rsplit_once(':').expect("a tag beside the digest").1;
        assert!(!tag.is_empty() && tag != "latest", "{image}");
    }
    // The rust image's version is an exact x.y.z, at or above rust-version.
    assert!(
        joined.contains("FROM rust:1.") && !joined.contains("FROM rust:1-"),
        "rust image by exact version"
    );
    // OCI labels, the changing ones from build arguments.
    for label in [
        "org.opencontainers.image.title=\"pollcast\"",
        "org.opencontainers.image.licenses=\"MIT OR Apache-2.0\"",
        "org.opencontainers.image.source=\"${SOURCE}\"",
        "org.opencontainers.image.version=\"${VERSION}\"",
        "org.opencontainers.image.revision=\"${REVISION}\"",
    ] {
        assert!(joined.contains(label), "Dockerfile lacks LABEL {label}");
    }
    for arg in ["SOURCE", "REVISION"] {
        assert!(
            joined.lines().any(|l| l.starts_with(&format!("ARG {arg}"))),
            "Dockerfile lacks ARG {arg}"
        );
    }
    assert!(
        joined.contains(&format!("ARG VERSION={}", env!("CARGO_PKG_VERSION"))),
        "ARG VERSION defaults to Cargo.toml's version"
    );
}

/// A YAML file of the repository as a JSON value.
fn yaml(rel: &str) -> serde_json::Value {
    serde_norway::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

const SIDECAR: &str = "deploy/kustomize/components/pollcast-sidecar";
const STANDALONE: &str = "deploy/kustomize/overlays/standalone";

#[test]
fn the_kustomize_configs_are_valid_and_open_the_admin_listener_to_the_cluster() {
    for dir in [SIDECAR, STANDALONE] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(dir)
            .join("config.toml");
        let c = pollcast::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        // In-cluster scrapes and probes reach the admin listener on the pod IP.
        assert_eq!(c.admin.listen, Some("0.0.0.0:9090".parse().expect("addr")));
        assert_eq!(c.admin.prefix, "/_pollcast");
        assert_eq!(c.server.listen, "0.0.0.0:8080".parse().expect("addr"));
        assert!(!c.feeds.is_empty(), "{dir}");
    }
}

/// The pollcast container and pod-template labels of a Deployment (or patch).
fn pollcast_pod(rel: &str) -> (serde_json::Value, serde_json::Value) {
    let d = yaml(rel);
    let template = &d["spec"]["template"];
    let c = template["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == "pollcast")
        .cloned()
        .unwrap_or_else(|| panic!("{rel}: no pollcast container"));
    (template["metadata"]["labels"].clone(), c)
}

#[test]
fn the_pod_monitor_scrapes_the_admin_port_of_every_layout() {
    // A CRD: kubernetes-validate has no schema for it, so its fields are
    // checked here against the pods it must select.
    let m = yaml("deploy/prometheus/podmonitor.yaml");
    assert_eq!(m["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(m["kind"], "PodMonitor");
    let select = m["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    let endpoints = m["spec"]["podMetricsEndpoints"]
        .as_array()
        .expect("podMetricsEndpoints");
    assert_eq!(endpoints.len(), 1);
    let ep = &endpoints[0];
    assert_eq!(ep["path"], "/_pollcast/metrics");
    for rel in [
        "deploy/kubernetes/deployment.yaml".to_owned(),
        format!("{SIDECAR}/deployment-patch.yaml"),
        format!("{STANDALONE}/deployment.yaml"),
    ] {
        let (labels, c) = pollcast_pod(&rel);
        for (k, v) in select {
            assert_eq!(&labels[k], v, "{rel}: pod label {k}");
        }
        let port = c["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| p["name"] == ep["port"])
            .unwrap_or_else(|| panic!("{rel}: no port {}", ep["port"]));
        assert_eq!(port["containerPort"], 9090, "{rel}");
        // Probes on the admin port; the restricted security context.
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            assert_eq!(c[probe]["httpGet"]["port"], ep["port"], "{rel} {probe}");
        }
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/_pollcast/readyz");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/_pollcast/healthz");
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{rel}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{rel}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{rel}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{rel}"
        );
        assert!(c["resources"]["limits"]["memory"].is_string(), "{rel}");
    }
}

#[test]
fn the_sidecar_is_an_ordinary_container_and_the_manifests_say_why() {
    let rel = format!("{SIDECAR}/deployment-patch.yaml");
    let patch = yaml(&rel);
    let spec = &patch["spec"]["template"]["spec"];
    assert!(spec["initContainers"].is_null(), "{rel}: no native sidecar");
    assert!(pollcast_pod(&rel).1.is_object());
    // The reason stays beside the choice.
    let text = read(&rel);
    for needle in ["native", "restartPolicy: Always", "SIGTERM"] {
        assert!(text.contains(needle), "{rel} lacks the note ({needle})");
    }
    // The Service switch: the API's first port now goes to pollcast.
    let k = read(&format!("{SIDECAR}/kustomization.yaml"));
    assert!(
        k.contains("path: /spec/ports/0/targetPort") && k.contains("value: pollcast"),
        "the component switches the Service's targetPort"
    );
    assert_eq!(
        yaml("deploy/kubernetes/service.yaml")["spec"]["ports"][0]["targetPort"],
        "pollcast"
    );
}

const CLUSTER: &str = "deploy/kustomize/overlays/cluster";

/// The `env` entry `name` of the pollcast container in the cluster overlay.
fn cluster_env(name: &str) -> serde_json::Value {
    let (_, c) = pollcast_pod(&format!("{CLUSTER}/deployment-patch.yaml"));
    c["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{CLUSTER}: no env {name}"))
}

#[test]
fn the_cluster_example_runs_three_replicas_on_one_redis_with_the_secrets_from_a_secret() {
    let patch = yaml(&format!("{CLUSTER}/deployment-patch.yaml"));
    assert_eq!(patch["spec"]["replicas"], 3);
    // Both secrets come from the Secret, never from the ConfigMap.
    let secret = yaml(&format!("{CLUSTER}/secret.yaml"));
    assert_eq!(secret["kind"], "Secret");
    let name = secret["metadata"]["name"].clone();
    for (var, key) in [
        ("POLLCAST_CLUSTER_SECRET", "secret"),
        ("REDIS_PASSWORD", "redis-password"),
    ] {
        let r = &cluster_env(var)["valueFrom"]["secretKeyRef"];
        assert_eq!((&r["name"], &r["key"]), (&name, &key.into()), "{var}");
        assert!(
            secret["stringData"][key].is_string(),
            "the Secret holds {key}"
        );
    }
    let url = cluster_env("POLLCAST_CLUSTER__REDIS")["value"]
        .as_str()
        .expect("value")
        .to_owned();
    assert!(
        url.contains("$(REDIS_PASSWORD)@pollcast-redis:6379"),
        "{url}"
    );
    // The Redis Service the URL names exists, with the ACL user of the URL.
    let redis = read(&format!("{CLUSTER}/redis.yaml"));
    assert!(redis.contains("name: pollcast-redis") && redis.contains("- pollcast\n"));
    let config = read(&format!("{CLUSTER}/config.toml"));
    assert!(
        !config.contains("REDIS_PASSWORD") && !config.contains('@'),
        "no password in the ConfigMap"
    );

    // The config, with the environment the pods get, passes --check: the
    // env overrides the file's redis URL, and the password is not printed.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_pollcast"))
        .arg("--config")
        .arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("{CLUSTER}/config.toml")),
        )
        .arg("--check")
        .env(
            "POLLCAST_CLUSTER_SECRET",
            "a-key-of-32-bytes-from-a-secret!",
        )
        .env(
            "POLLCAST_CLUSTER__REDIS",
            url.replace("$(REDIS_PASSWORD)", "s3cret-password"),
        )
        .output()
        .expect("run --check");
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("env POLLCAST_CLUSTER__REDIS"), "{out}");
    assert!(
        !out.contains("s3cret-password"),
        "--check prints the password"
    );
    // Without the hashing key pollcast refuses to start, naming the variable.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_pollcast"))
        .arg("--config")
        .arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("{CLUSTER}/config.toml")),
        )
        .arg("--check")
        .env_remove("POLLCAST_CLUSTER_SECRET")
        .output()
        .expect("run --check");
    assert!(!o.status.success());
    assert!(text(&o).contains("POLLCAST_CLUSTER_SECRET"), "{}", text(&o));
}
