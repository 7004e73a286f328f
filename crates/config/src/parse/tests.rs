use std::path::Path;

use super::*;

const FILE: &str = "/etc/pgtenant/pgtenant.yaml";

fn parsed(text: &str) -> Loaded {
    parse(Path::new(FILE), Path::new("/etc/pgtenant"), text)
}

fn config(text: &str) -> Config {
    let loaded = parsed(text);
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    loaded.config.expect("a config")
}

/// Every diagnostic as its report line(s).
fn problems(text: &str) -> Vec<String> {
    parsed(text)
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn only_problem(text: &str) -> String {
    let problems = problems(text);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    problems.into_iter().next().unwrap()
}

const FULL: &str = "\
repo: /srv/apps-repo
clusters:
  - name: main
    adminUrl: env:PGTENANT_ADMIN_URL
    endpoint: db.internal:5432
    caFile: /etc/ssl/rds.pem
    labels: {tier: production}
  - name: second
    adminUrl: file:secrets/admin-url
store:
  type: file
  keyFile: keys/store.key
environment: production
retention: {production: 35d, staging: 30d, test: 7d, dev: 1d}
backups: {full: \"0 2 * * 0\", diff: \"0 2 * * 1-6\", incr: \"0 */4 * * *\"}
serve: {listen: 127.0.0.1:8432, driftInterval: 10min, pollInterval: 10s}
superuserExtensions: [postgis]
";

#[test]
fn reads_every_key() {
    let config = config(FULL);
    assert_eq!(config.repo, Some(PathBuf::from("/srv/apps-repo")));
    assert_eq!(config.cluster_names(), ["main", "second"]);
    let main = config.cluster("main").unwrap();
    assert_eq!(
        main.admin_url,
        AdminUrlSource::Env("PGTENANT_ADMIN_URL".into())
    );
    assert_eq!(main.admin_url_location.to_string(), format!("{FILE}:4:15"));
    assert_eq!(main.location.to_string(), format!("{FILE}:3:11"));
    assert_eq!(main.endpoint, HostPort::parse("db.internal:5432"));
    assert_eq!(main.ca_file, Some(PathBuf::from("/etc/ssl/rds.pem")));
    assert_eq!(
        main.labels.get("tier").map(String::as_str),
        Some("production")
    );
    let second = config.cluster("second").unwrap();
    assert_eq!(
        second.admin_url,
        AdminUrlSource::File("/etc/pgtenant/secrets/admin-url".into())
    );
    assert_eq!(second.endpoint, None);
    assert_eq!(config.store.kind, StoreKind::File);
    assert_eq!(
        config.store.key_file,
        Some(PathBuf::from("/etc/pgtenant/keys/store.key"))
    );
    assert_eq!(config.environment, Some(Environment::Production));
    assert_eq!(config.retention_days(Environment::Staging), 30);
    assert_eq!(config.retention_days(Environment::Dev), 1);
    assert_eq!(config.backups.full.as_deref(), Some("0 2 * * 0"));
    assert_eq!(config.backups.diff.as_deref(), Some("0 2 * * 1-6"));
    assert_eq!(config.backups.incr.as_deref(), Some("0 */4 * * *"));
    assert_eq!(config.serve.listen, HostPort::parse("127.0.0.1:8432"));
    assert_eq!(config.serve.drift_interval, Some(Duration::from_secs(600)));
    assert_eq!(config.serve.poll_interval, Some(Duration::from_secs(10)));
    assert_eq!(config.superuser_extensions, ["postgis"]);
}

#[test]
fn an_empty_file_is_the_defaults() {
    for text in ["", "# nothing yet\n", "~\n"] {
        assert_eq!(config(text), Config::default(), "{text:?}");
    }
    let config = config("repo: ../apps\n");
    assert_eq!(config.repo, Some(PathBuf::from("/etc/pgtenant/../apps")));
    assert!(config.clusters.is_empty());
}

#[test]
fn unknown_keys_are_located_errors_with_did_you_mean() {
    assert_eq!(
        only_problem("repo: /a\nclustres: []\n"),
        format!(
            "error: {FILE}:2:1: clustres: unknown key `clustres`\n  help: did you mean `clusters`?"
        )
    );
    assert_eq!(
        only_problem("clusters:\n  - name: a\n    adminURL: env:X\n    adminUrl: env:Y\n"),
        format!(
            "error: {FILE}:3:5: clusters[0].adminURL: unknown key `adminURL`\n  help: did you mean `adminUrl`?"
        )
    );
    assert_eq!(
        only_problem("serve: {listen: 127.0.0.1:1, pollIntervall: 10s}\n"),
        format!(
            "error: {FILE}:1:30: serve.pollIntervall: unknown key `pollIntervall`\n  help: did you mean `pollInterval`?"
        )
    );
    let unrelated = only_problem("tenants: 3\n");
    assert!(unrelated.contains("unknown key `tenants`"), "{unrelated}");
    assert!(
        unrelated.contains("the keys here are `repo`, `clusters`"),
        "{unrelated}"
    );
}

#[test]
fn several_errors_are_reported_in_one_run_in_file_order() {
    let text = "\
repo: 5
clusters:
  - name: Main
    adminUrl: env:A
  - name: b
    adminUrl: env:B
    endpoint: nowhere
store: {type: vault}
environment: prod
";
    let lines: Vec<(usize, String)> = parsed(text)
        .diagnostics
        .iter()
        .map(|d| (d.location.line, d.field.clone()))
        .collect();
    assert_eq!(
        lines,
        [
            (1, "repo".to_owned()),
            (3, "clusters[0].name".to_owned()),
            (7, "clusters[1].endpoint".to_owned()),
            (8, "store.type".to_owned()),
            (9, "environment".to_owned()),
        ]
    );
    assert!(parsed(text).config.is_none());
}

#[test]
fn wrong_types_and_values_are_located_with_a_hint() {
    let cases = [
        ("repo: 5\n", "1:7: repo: expected the apps repo's directory, found the number `5`", "quote it"),
        ("repo: https://git.example/apps.git\n", "1:7: repo: `https://git.example/apps.git` is a git remote; `repo` takes a local directory for now", "git remotes come with `pgtenant serve`"),
        ("repo: git@github.com:org/apps.git\n", "is a git remote", "clone the repo"),
        ("clusters: {name: a}\n", "1:11: clusters: expected a list of clusters, found a mapping", "- name: main"),
        ("clusters: [main]\n", "1:12: clusters[0]: expected `clusters[0]` to be a mapping of keys, found the string `main`", "its keys are `name`, `adminUrl`"),
        ("clusters:\n  - adminUrl: env:A\n", "2:5: clusters[0]: a cluster needs `name`", "add `name: main`"),
        ("clusters:\n  - name: a\n", "2:5: clusters[0]: a cluster needs `adminUrl`", "add `adminUrl: env:PGTENANT_ADMIN_URL`"),
        ("clusters:\n  - {name: my_db, adminUrl: env:A}\n", "2:12: clusters[0].name: `my_db` is not a valid cluster name", "DNS-1123"),
        ("clusters:\n  - {name: a, adminUrl: env:1X}\n", "clusters[0].adminUrl: `1X` is not an environment variable name", "env:PGTENANT_ADMIN_URL"),
        ("clusters:\n  - {name: a, adminUrl: 'file:'}\n", "clusters[0].adminUrl: `file:` names no file", "mode 0600"),
        ("clusters:\n  - {name: a, adminUrl: envv:X}\n", "clusters[0].adminUrl: expected `env:VARIABLE`, `file:/path` or a postgres:// URL", "did you mean `env:`?"),
        ("clusters:\n  - {name: a, adminUrl: db.internal}\n", "expected `env:VARIABLE`", "write `env:VARIABLE`"),
        ("clusters:\n  - {name: a, adminUrl: env:A, endpoint: db}\n", "clusters[0].endpoint: `db` is not HOST:PORT", "db.internal:5432"),
        ("clusters:\n  - {name: a, adminUrl: env:A, labels: {tier: 1}}\n", "clusters[0].labels.tier: expected the label's value as a string, found the number `1`", "quote it"),
        ("clusters:\n  - {name: a, adminUrl: env:A, labels: {-x: a}}\n", "clusters[0].labels.-x: `-x` is not a label name", "tier"),
        ("clusters:\n  - {name: a, adminUrl: env:A, caFile: 3}\n", "clusters[0].caFile: expected a path, found the number `3`", "quote it"),
        ("store: {type: vault}\n", "1:15: store.type: unknown store type `vault`: pgtenant supports `file`", "use `type: file`"),
        ("store: {type: fiel}\n", "store.type: unknown store type `fiel`", "did you mean `file`?"),
        ("store: file\n", "1:8: store: expected `store` to be a mapping of keys, found the string `file`", "its keys are `type`, `keyFile`, `region`, `prefix`, `endpointUrl` and `kmsKeyId`"),
        ("store: {type: aws-secrets-manager, keyFile: k}\n", "store.keyFile: `keyFile` is a setting of the `file` store, and this store's type is `aws-secrets-manager`", "remove it, or set `type: file`"),
        ("store: {region: eu-west-1}\n", "store.region: `region` is a setting of the `aws-secrets-manager` store", "set `type: aws-secrets-manager`"),
        ("store: {type: aws-secrets-manager, region: EU}\n", "store.region: `EU` is not an AWS region name", "eu-west-1"),
        ("store: {type: aws-secrets-manager, prefix: customer}\n", "store.prefix: `customer` is not a secret name prefix", "ending with `/`"),
        ("store: {type: aws-secrets-manager, endpointUrl: 127.0.0.1:5000}\n", "store.endpointUrl: `127.0.0.1:5000` is not an http(s):// URL", "http://127.0.0.1:5000"),
        ("environment: prod\n", "1:14: environment: unknown tier `prod`: the tiers are `production`, `staging`, `test` and `dev`", "did you mean `production`?"),
        ("retention: {prod: 35d}\n", "1:13: retention.prod: unknown key `prod`", "the keys here are `production`"),
        ("retention: {test: 36h}\n", "retention.test: retention is kept in whole days, at least one", "e.g. `test: 1d`"),
        ("retention: {test: 0d}\n", "retention is kept in whole days", "e.g. `test: 1d`"),
        ("retention: {test: 7}\n", "1:19: retention.test: `7` has no unit", "e.g. `35d`"),
        ("retention: {test: 7 days}\n", "retention.test: unknown unit `days` in `7 days`", "did you mean `7d`?"),
        ("retention: {test: -7d}\n", "retention.test: `-7d` is negative", "e.g. `35d`"),
        ("retention: {test: 99999d}\n", "retention.test: `99999d` is more than ten years", "e.g. `35d`"),
        ("backups: {full: 0 2 * *}\n", "1:17: backups.full: `0 2 * *` is not a schedule: a schedule has 5 fields", "\"0 2 * * 0\""),
        ("backups: {diff: \"0 25 * * *\"}\n", "backups.diff: `0 25 * * *` is not a schedule: hour field `25`", "five fields"),
        ("backups: {weekly: \"0 2 * * 0\"}\n", "backups.weekly: unknown key `weekly`", "the keys here are `full`, `diff` and `incr`"),
        ("serve: {listen: 8432}\n", "1:17: serve.listen: expected HOST:PORT, found the number `8432`", "quote it"),
        ("serve: {listen: localhost}\n", "serve.listen: `localhost` is not HOST:PORT", "127.0.0.1:8432"),
        ("serve: {driftInterval: 10m}\n", "serve.driftInterval: unknown unit `m` in `10m`", "did you mean `10min`?"),
        ("serve: {pollInterval: 10ms}\n", "serve.pollInterval: an interval is at least one second", "e.g. `10s`"),
        ("serve: {pollInterval: 1.5s}\n", "serve.pollInterval: `1.5s` is not a whole number of its unit", "write `1500ms`"),
        ("serve: {pollInterval: soon}\n", "expected a duration such as `10s`, found the string `soon`", "a unit"),
        ("superuserExtensions: postgis\n", "1:22: superuserExtensions: expected a list of extension names, found the string `postgis`", "[postgis]"),
        ("superuserExtensions: [PostGIS]\n", "superuserExtensions[0]: `PostGIS` is not an extension name", "lowercase"),
        ("superuserExtensions: [postgis, postgis]\n", "superuserExtensions[1]: `postgis` is listed twice", "remove one"),
        ("[1, 2]\n", "1:1: expected the config file to be a mapping of keys, found a list", "its keys are `repo`"),
        ("repo: [a\n", "invalid YAML", "fix the YAML syntax"),
        ("repo: /a\nrepo: /b\n", "duplicate key in a mapping", "remove or rename"),
        ("repo: /a\n---\nrepo: /b\n", "holds one YAML document", "remove the `---`"),
        ("<<: {repo: /a}\n", "unknown key `<<`", "merge keys are not supported"),
    ];
    for (text, message, hint) in cases {
        let problem = only_problem(text);
        let (first, help) = problem.split_once("\n  help: ").unwrap_or((&problem, ""));
        assert!(
            first.starts_with(&format!("error: {FILE}:")),
            "{text:?}: {problem}"
        );
        assert!(
            first.contains(message),
            "{text:?}:\n{problem}\nwanted: {message}"
        );
        assert!(
            help.contains(hint),
            "{text:?}:\n{problem}\nwanted hint: {hint}"
        );
        assert!(parsed(text).config.is_none(), "{text:?}");
    }
}

#[test]
fn duplicate_cluster_names_are_an_error_naming_the_first() {
    let text = "\
clusters:
  - name: main
    adminUrl: env:A
  - name: other
    adminUrl: env:B
  - name: main
    adminUrl: env:C
";
    assert_eq!(
        only_problem(text),
        format!(
            "error: {FILE}:6:11: clusters[2].name: the cluster name `main` is used twice\n  help: cluster names are unique; the first `main` is at line 2"
        )
    );
}

#[test]
fn admin_url_forms() {
    let url = |value: &str| {
        let config = config(&format!(
            "clusters:\n  - name: a\n    adminUrl: '{value}'\n"
        ));
        config.clusters[0].admin_url.clone()
    };
    assert_eq!(
        url("env:PGTENANT_ADMIN_URL"),
        AdminUrlSource::Env("PGTENANT_ADMIN_URL".into())
    );
    assert_eq!(url("env: _X1"), AdminUrlSource::Env("_X1".into()));
    assert_eq!(
        url("file:/run/secrets/url"),
        AdminUrlSource::File("/run/secrets/url".into())
    );
    assert_eq!(
        url("file:url"),
        AdminUrlSource::File("/etc/pgtenant/url".into())
    );
    assert_eq!(
        url("postgres://admin@db.internal/postgres?sslmode=verify-full"),
        AdminUrlSource::Inline("postgres://admin@db.internal/postgres?sslmode=verify-full".into())
    );
    assert_eq!(
        url("host=db user=admin"),
        AdminUrlSource::Inline("host=db user=admin".into())
    );
}

#[test]
fn an_inline_password_is_a_warning_that_never_quotes_it() {
    let text = "clusters:\n  - name: a\n    adminUrl: postgres://admin:hunter2@db/postgres\n";
    let loaded = parsed(text);
    assert!(loaded.config.is_some(), "a warning keeps the config usable");
    let problem = only_problem(text);
    assert!(
        problem.starts_with(&format!(
            "warning: {FILE}:3:15: clusters[0].adminUrl: the admin URL holds a password"
        )),
        "{problem}"
    );
    assert!(
        problem.contains("file:/etc/pgtenant/admin-url"),
        "{problem}"
    );
    assert!(!problem.contains("hunter2"), "{problem}");
}

#[test]
fn hostile_text_cannot_break_report_lines() {
    let problem = only_problem("\"a\\nerror: fake\": 1\n");
    assert!(!problem.contains("\nerror"), "{problem}");
}

#[test]
fn load_reads_files_like_values_files() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgtenant.yaml");
    std::fs::write(&path, "repo: apps\n").unwrap();
    let loaded = load(&path);
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    assert_eq!(loaded.config.unwrap().repo, Some(dir.path().join("apps")));

    // Through a symlink from another folder: relative paths are from the link's folder.
    let other = tempfile::tempdir().unwrap();
    let link = other.path().join("pgtenant.yaml");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let loaded = load(&link);
    assert_eq!(loaded.config.unwrap().repo, Some(other.path().join("apps")));

    let missing = load(&dir.path().join("nope.yaml"));
    let problem = missing.diagnostics[0].to_string();
    assert!(
        problem.contains("nope.yaml:1:1: cannot read the config file"),
        "{problem}"
    );

    let directory = load(dir.path());
    assert!(directory.config.is_none());
    assert!(
        directory.diagnostics[0]
            .to_string()
            .contains("not a regular file"),
        "{:?}",
        directory.diagnostics
    );

    let big = dir.path().join("big.yaml");
    std::fs::write(&big, "#".repeat(5 * 1024 * 1024)).unwrap();
    std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).unwrap();
    let problem = load(&big).diagnostics[0].to_string();
    assert!(problem.contains("over the limit"), "{problem}");
    assert!(problem.contains("big.yaml:1:1"), "{problem}");
}

#[test]
fn reads_the_aws_secrets_manager_store() {
    let config = config(
        "store:\n  type: aws-secrets-manager\n  region: eu-west-1\n  prefix: prod/customer/\n  \
         endpointUrl: http://127.0.0.1:5000\n  kmsKeyId: alias/pgtenant\n",
    );
    assert_eq!(config.store.kind, StoreKind::AwsSecretsManager);
    assert_eq!(config.store.region.as_deref(), Some("eu-west-1"));
    assert_eq!(config.store.prefix.as_deref(), Some("prod/customer/"));
    assert_eq!(
        config.store.endpoint_url.as_deref(),
        Some("http://127.0.0.1:5000")
    );
    assert_eq!(config.store.kms_key_id.as_deref(), Some("alias/pgtenant"));
    assert_eq!(config.store.key_file, None);
}

#[test]
fn the_service_keys_git_secrets_tls_and_rotation() {
    let config = config(
        "serve:\n  git: {remote: 'file:///srv/apps.git', branch: live}\n  tokenFile: token\n  \
         webhookSecretFile: /etc/pgtenant/hook\n  tls: {certFile: tls.crt, keyFile: tls.key}\n  \
         rotateEvery: 90d\n",
    );
    let serve = &config.serve;
    assert_eq!(serve.git_remote.as_deref(), Some("file:///srv/apps.git"));
    assert_eq!(serve.git_branch.as_deref(), Some("live"));
    assert_eq!(serve.token_file, Some(PathBuf::from("/etc/pgtenant/token")));
    assert_eq!(
        serve.webhook_secret_file,
        Some(PathBuf::from("/etc/pgtenant/hook"))
    );
    let tls = serve.tls.as_ref().unwrap();
    assert_eq!(tls.cert_file, PathBuf::from("/etc/pgtenant/tls.crt"));
    assert_eq!(serve.rotate_every, Some(Duration::from_secs(90 * 86_400)));
    for (text, expected) in [
        (
            "serve: {git: {branch: main}}\n",
            "`branch` without `remote`",
        ),
        (
            "serve: {tls: {certFile: a}}\n",
            "`tls` needs both `certFile` and `keyFile`",
        ),
        ("serve: {rotateEvery: 12h}\n", "a whole number of days"),
        (
            "serve: {git: {remote: x, brunch: y}}\n",
            "did you mean `branch`?",
        ),
    ] {
        let problem = only_problem(text);
        assert!(problem.contains(expected), "{text}: {problem}");
    }
}

#[test]
fn pooling_defaults_and_a_clusters_pooler() {
    let config = config(
        "pooling: {mode: session, size: 25}\nclusters:\n  - name: main\n    adminUrl: env:A\n    pooler:\n      run: files\n      listen: 0.0.0.0:6432\n      endpoint: pooler.internal:6432\n      configDir: pooler\n      auth: query\n      tls: {certFile: tls/pooler.crt, keyFile: tls/pooler.key}\n  - name: plain\n    adminUrl: env:B\n  - name: small\n    adminUrl: env:C\n    pooler: {listen: 127.0.0.1:6433}\n",
    );
    assert_eq!(
        config.pooling,
        PoolingDefaults {
            mode: PoolMode::Session,
            size: 25,
            server_socket: true,
        }
    );
    assert_eq!(
        config.cluster("main").unwrap().pooler,
        Some(PoolerConfig {
            run: PoolerRun::Files,
            listen: HostPort::parse("0.0.0.0:6432").unwrap(),
            endpoint: HostPort::parse("pooler.internal:6432"),
            config_dir: Some(PathBuf::from("/etc/pgtenant/pooler")),
            auth: PoolerAuth::Query,
            tls: Some(TlsConfig {
                cert_file: PathBuf::from("/etc/pgtenant/tls/pooler.crt"),
                key_file: PathBuf::from("/etc/pgtenant/tls/pooler.key"),
            }),
        })
    );
    let main = config.cluster("main").unwrap().pooler.as_ref().unwrap();
    assert_eq!(main.app_endpoint().to_string(), "pooler.internal:6432");
    assert_eq!(config.cluster("plain").unwrap().pooler, None);
    let small = config.cluster("small").unwrap().pooler.clone().unwrap();
    assert_eq!(
        (small.run, small.auth, small.app_endpoint().to_string()),
        (
            PoolerRun::Local,
            PoolerAuth::File,
            "127.0.0.1:6433".to_owned()
        )
    );
    assert_eq!(
        Config::default().pooling,
        PoolingDefaults {
            mode: PoolMode::Transaction,
            size: 10,
            server_socket: true,
        }
    );
    assert!(
        !self::config("pooling: {serverSocket: false}\n")
            .pooling
            .server_socket
    );
}

#[test]
fn pooling_and_pooler_problems_are_located() {
    let cluster = |pooler: &str| {
        format!("clusters:\n  - name: main\n    adminUrl: env:A\n    pooler: {pooler}\n")
    };
    for (text, expected) in [
        (
            "pooling: {mode: transation}\n".to_owned(),
            "error: /etc/pgtenant/pgtenant.yaml:1:17: pooling.mode: unknown pool mode `transation`: expected `transaction` or `session`\n  help: did you mean `transaction`?",
        ),
        (
            "pooling: {size: 0}\n".to_owned(),
            "error: /etc/pgtenant/pgtenant.yaml:1:17: pooling.size: expected a pool size from 1 to 10000, found the number `0`\n  help: e.g. `size: 10` (server connections per tenant database)",
        ),
        (
            "pooling: {serverSocket: yes}\n".to_owned(),
            "error: /etc/pgtenant/pgtenant.yaml:1:25: pooling.serverSocket: expected true or false, found the string `yes`\n  help: `serverSocket: false` makes the pooler reach the embedded cluster over TCP + TLS",
        ),
        (
            "pooling: {serverSocket: true}\nclusters:\n  - name: main\n    adminUrl: env:A\n".to_owned(),
            "error: /etc/pgtenant/pgtenant.yaml:1:25: pooling.serverSocket: only the embedded cluster has a Unix socket for its pooler; the clusters listed here are reached over TCP + TLS\n  help: remove `serverSocket` (or `clusters:`, to use the embedded cluster)",
        ),
        (
            "pooling: {sizes: 3}\n".to_owned(),
            "error: /etc/pgtenant/pgtenant.yaml:1:11: pooling.sizes: unknown key `sizes`\n  help: did you mean `size`?",
        ),
        (
            cluster("{listen: 127.0.0.1:6432, run: systemd}"),
            "error: /etc/pgtenant/pgtenant.yaml:4:43: clusters[0].pooler.run: unknown way to run the pooler `systemd`: expected `local` or `files`\n  help: use `local` or `files`",
        ),
        (
            cluster("{listen: 127.0.0.1:6432, auth: querry}"),
            "error: /etc/pgtenant/pgtenant.yaml:4:44: clusters[0].pooler.auth: unknown pooler authentication `querry`: expected `file` or `query`\n  help: did you mean `query`?",
        ),
        (
            cluster("{listen: 6432}"),
            "error: /etc/pgtenant/pgtenant.yaml:4:22: clusters[0].pooler.listen: expected HOST:PORT, found the number `6432`\n  help: quote it so YAML reads it as text",
        ),
        (
            cluster("{run: files}"),
            "error: /etc/pgtenant/pgtenant.yaml:4:13: clusters[0].pooler: a pooler needs `listen`\n  help: add `listen: 127.0.0.1:6432`, where pgbouncer listens",
        ),
        (
            cluster("{listen: 127.0.0.1:6432, lisen: x}"),
            "error: /etc/pgtenant/pgtenant.yaml:4:38: clusters[0].pooler.lisen: unknown key `lisen`\n  help: did you mean `listen`?",
        ),
        (
            cluster("{listen: 127.0.0.1:6432, tls: {certFile: a.crt}}"),
            "error: /etc/pgtenant/pgtenant.yaml:4:43: clusters[0].pooler.tls: `tls` needs both `certFile` and `keyFile`\n  help: give the PEM certificate (chain) and its private key",
        ),
    ] {
        assert_eq!(only_problem(&text), expected, "{text}");
    }
}

#[test]
fn an_ha_clusters_patroni_members_and_failover_timeout() {
    let ha = config(
        "clusters:\n  - name: main\n    adminUrl: env:A\n    patroni: [http://10.0.0.1:8008, \"http://10.0.0.2:8008/\"]\n    failoverTimeout: 90s\n",
    );
    let main = ha.cluster("main").unwrap();
    assert_eq!(
        main.patroni,
        ["http://10.0.0.1:8008", "http://10.0.0.2:8008"]
    );
    assert_eq!(main.failover_timeout, Some(Duration::from_secs(90)));
    let plain = config("clusters:\n  - name: main\n    adminUrl: env:A\n");
    assert!(plain.clusters[0].patroni.is_empty());
    assert_eq!(plain.clusters[0].failover_timeout, None);
}

#[test]
fn patroni_and_failover_timeout_problems_are_located() {
    let cluster =
        |line: &str| format!("clusters:\n  - name: main\n    adminUrl: env:A\n    {line}\n");
    for (line, expected) in [
        (
            "patroni: http://10.0.0.1:8008",
            "error: /etc/pgtenant/pgtenant.yaml:4:14: clusters[0].patroni: expected a list of Patroni REST API URLs, found the string `http://10.0.0.1:8008`",
        ),
        (
            "patroni: []",
            "error: /etc/pgtenant/pgtenant.yaml:4:14: clusters[0].patroni: `patroni` lists no member",
        ),
        (
            "patroni: [https://10.0.0.1:8008]",
            "error: /etc/pgtenant/pgtenant.yaml:4:15: clusters[0].patroni[0]: `https://10.0.0.1:8008` is not a Patroni REST API URL\n  help: pgtenant reaches Patroni's REST API over plain http (on a private network); write `http://HOST:PORT`",
        ),
        (
            "patroni: [10.0.0.1]",
            "error: /etc/pgtenant/pgtenant.yaml:4:15: clusters[0].patroni[0]: `10.0.0.1` is not a Patroni REST API URL",
        ),
        (
            "failoverTimeout: 60",
            "error: /etc/pgtenant/pgtenant.yaml:4:22: clusters[0].failoverTimeout: `60` has no unit",
        ),
    ] {
        let problem = only_problem(&cluster(line));
        assert!(problem.starts_with(expected), "{line}:\n{problem}");
    }
}

#[test]
fn a_clusters_capacity_limits_tenants_and_size() {
    let both = config(
        "clusters:\n  - name: main\n    adminUrl: env:A\n    capacity: {maxTenants: 500, maxSize: 50GB}\n",
    );
    let capacity = both.clusters[0].capacity;
    assert_eq!(capacity.max_tenants, Some(500));
    assert_eq!(capacity.max_size_bytes, Some(50 << 30));
    let one =
        config("clusters:\n  - name: main\n    adminUrl: env:A\n    capacity: {maxSize: 512MB}\n");
    assert_eq!(one.clusters[0].capacity.max_tenants, None);
    assert_eq!(one.clusters[0].capacity.max_size_bytes, Some(512 << 20));
    let none = config("clusters:\n  - name: main\n    adminUrl: env:A\n");
    assert_eq!(none.clusters[0].capacity, Capacity::default());
    assert_eq!(parse_size("1TB"), Some(1 << 40));
    assert_eq!(parse_size("10 kB"), Some(10 << 10));
    for bad in ["50", "GB", "5.5GB", "5PB", "-1GB", "99999999999999TB"] {
        assert_eq!(parse_size(bad), None, "{bad}");
    }
}

#[test]
fn capacity_problems_are_located() {
    let cluster =
        |line: &str| format!("clusters:\n  - name: main\n    adminUrl: env:A\n    {line}\n");
    for (line, expected) in [
        (
            "capacity: {maxTenants: -1}",
            "error: /etc/pgtenant/pgtenant.yaml:4:28: clusters[0].capacity.maxTenants: expected a number of tenant databases, found the number `-1`",
        ),
        (
            "capacity: {maxSize: 50}",
            "error: /etc/pgtenant/pgtenant.yaml:4:25: clusters[0].capacity.maxSize: expected a size such as `50GB`, found the number `50`\n  help: give a unit: `maxSize: 50GB`",
        ),
        (
            "capacity: {maxSize: 50XB}",
            "error: /etc/pgtenant/pgtenant.yaml:4:25: clusters[0].capacity.maxSize: expected a size such as `50GB`, found the string `50XB`",
        ),
        (
            "capacity: {maxTenant: 5}",
            "error: /etc/pgtenant/pgtenant.yaml:4:16: clusters[0].capacity.maxTenant: unknown key `maxTenant`",
        ),
        (
            "capacity: 5",
            "error: /etc/pgtenant/pgtenant.yaml:4:15: clusters[0].capacity:",
        ),
    ] {
        let problem = only_problem(&cluster(line));
        assert!(problem.starts_with(expected), "{line}:\n{problem}");
    }
}

#[test]
fn passwords_scram_iterations_and_its_problems() {
    assert_eq!(Config::default().passwords.scram_iterations, 4096);
    assert_eq!(
        config("passwords: {scramIterations: 256}\n")
            .passwords
            .scram_iterations,
        256
    );
    assert_eq!(
        config("passwords: {scramIterations: 1}\n")
            .passwords
            .scram_iterations,
        1
    );
    for (text, expected) in [
        (
            "passwords: {scramIterations: 0}\n",
            "error: /etc/pgtenant/pgtenant.yaml:1:30: passwords.scramIterations: expected a SCRAM iteration count from 1 to 1000000, found the number `0`\n  help: e.g. `scramIterations: 4096` (PostgreSQL's default; docs/config.md says when fewer are safe)",
        ),
        (
            "passwords: {scramIterations: many}\n",
            "error: /etc/pgtenant/pgtenant.yaml:1:30: passwords.scramIterations: expected a SCRAM iteration count from 1 to 1000000, found the string `many`\n  help: e.g. `scramIterations: 4096` (PostgreSQL's default; docs/config.md says when fewer are safe)",
        ),
        (
            "passwords: {scramIteration: 16}\n",
            "error: /etc/pgtenant/pgtenant.yaml:1:13: passwords.scramIteration: unknown key `scramIteration`\n  help: did you mean `scramIterations`?",
        ),
    ] {
        assert_eq!(only_problem(text), expected, "{text}");
    }
}
