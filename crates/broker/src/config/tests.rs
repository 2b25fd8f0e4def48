use super::*;

fn run(args: &[&str]) -> Result<BrokerConfig, String> {
    let argv = std::iter::once("keel").chain(args.iter().copied());
    match parse_from(argv) {
        Ok(Invocation::Run(config)) => Ok(*config),
        Ok(Invocation::Print { text, .. }) => Err(format!("printed: {text}")),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn defaults_match_the_documented_contract() {
    let config = run(&[]).unwrap();
    assert_eq!(config.node_id, 1);
    assert_eq!(config.listen.to_string(), "127.0.0.1:9092");
    assert_eq!(
        (config.advertised_host.as_str(), config.advertised_port),
        ("127.0.0.1", 9092)
    );
    assert_eq!(config.data_dir, PathBuf::from("./data"));
    assert_eq!(config.cluster_listen.to_string(), "127.0.0.1:9093");
    assert_eq!(config.voters, vec![(1, "127.0.0.1:9093".to_string())]);
    assert!(config.auto_create_topics);
    assert_eq!(
        config.groups.migration_policy,
        crate::group::MigrationPolicy::Bidirectional
    );
    assert_eq!(config.worker_threads, None);
    assert_eq!(config.replica_fetch_max_bytes, 1024 * 1024);
    assert_eq!(config.replica_fetch_response_max_bytes, 10 * 1024 * 1024);
    assert!(config.explicit.is_empty());
}

#[test]
fn flags_are_parsed_and_recorded_as_explicit() {
    let config = run(&[
        "--node-id",
        "7",
        "--listen",
        "127.0.0.1:19092",
        "--advertise",
        "broker7.example:9092",
        "--log-retention-bytes",
        "-1",
        "--auto-create-topics",
        "false",
        "--worker-threads",
        "1",
        "--replica-fetch-max-bytes",
        "8388608",
    ])
    .unwrap();
    assert_eq!(config.node_id, 7);
    assert_eq!(config.worker_threads, Some(1));
    assert_eq!(config.replica_fetch_max_bytes, 8 * 1024 * 1024);
    assert_eq!(config.advertised_host, "broker7.example");
    assert!(!config.auto_create_topics);
    assert!(config.explicit.contains("node-id"));
    assert!(config.topic_defaults.explicit.contains("retention.bytes"));
}

#[test]
fn bad_input_yields_one_line_naming_the_key() {
    for (args, key) in [
        (vec!["--node-id", "abc"], "--node-id"),
        (vec!["--bogus"], "--bogus"),
        (vec!["--num-partitions", "0"], "--num-partitions"),
        (vec!["--listen", "nonsense"], "--listen"),
        (vec!["--log-level", "loud=???"], "--log-level"),
        (vec!["--listen", "0.0.0.0:9092"], "--advertise"),
        (vec!["--node-id=-1"], "--node-id"),
        (vec!["--voters", "1@a"], "--voters"),
        (vec!["--voters", "1@a:1,1@b:2"], "--voters"),
        (vec!["--raft-election-ticks", "2"], "--raft-election-ticks"),
        (vec!["--worker-threads", "0"], "--worker-threads"),
        (
            vec!["--replica-fetch-max-bytes", "100"],
            "--replica-fetch-max-bytes",
        ),
        (
            vec!["--replica-fetch-response-max-bytes=-1"],
            "--replica-fetch-response-max-bytes",
        ),
        (
            vec!["--group-consumer-migration-policy", "sideways"],
            "--group-consumer-migration-policy",
        ),
    ] {
        let error = run(&args).unwrap_err();
        assert!(!error.contains('\n'), "multi-line error: {error}");
        assert!(error.contains(key), "{error} does not name {key}");
    }
}

#[test]
fn the_config_file_is_read_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keel.toml");
    std::fs::write(
        &path,
        "node-id = 3\nnum_partitions = 4\nlisten = \"127.0.0.1:29092\"\n",
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let config = run(&["--config", file, "--node-id", "5"]).unwrap();
    assert_eq!(config.node_id, 5);
    assert_eq!(config.num_partitions, 4);
    assert_eq!(config.listen.port(), 29092);
    assert!(config.explicit.contains("num-partitions"));
}

#[test]
fn config_file_problems_name_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keel.toml");
    let file = path.to_str().unwrap().to_string();
    let error = run(&["--config", &file]).unwrap_err();
    assert!(error.contains("cannot read config file"), "{error}");

    std::fs::write(&path, "nodeid = 3\n").unwrap();
    let error = run(&["--config", &file]).unwrap_err();
    assert!(error.contains("unknown key 'nodeid'"), "{error}");

    std::fs::write(&path, "node-id = \"x\"\n").unwrap();
    let error = run(&["--config", &file]).unwrap_err();
    assert!(
        error.contains("--node-id") && error.contains("config file"),
        "{error}"
    );

    std::fs::write(&path, "node-id = = 3\n").unwrap();
    let error = run(&["--config", &file]).unwrap_err();
    assert!(
        error.contains("not valid TOML") && !error.contains('\n'),
        "{error}"
    );
}

#[test]
fn help_is_printed_not_an_error() {
    assert!(run(&["--help"]).unwrap_err().starts_with("printed:"));
}
