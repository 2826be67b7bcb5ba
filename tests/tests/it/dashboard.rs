//! The Grafana dashboard (`contrib/grafana/lattice.json`) and the Prometheus alerts
//! (`contrib/prometheus/lattice-alerts.yml`) against what the bridge exports: after a message each way through the
//! shipped `lattice-irc run`, and an IRC line said while the homeserver was stopped, every metric their PromQL
//! selects (the panels' queries, the variables' `label_values(…)` and the rules' `expr`, parsed with
//! `promql-parser` once Grafana's `$variables` are filled in) must be a sample name in the bridge's `/metrics`, or
//! one Prometheus makes itself for each scrape (`up`). The series the dashboard's connection, traffic and queue-age
//! panels draw must also carry what that run must have given them: the bot and a puppet connected, IRC lines read
//! and written (counted on the edge, reported over its link), and an age for the remote queue's oldest event while
//! the homeserver is away that falls back to 0 once it is back; on the shipped `lattice-xmpp run`, its component
//! link connected and stanzas received and sent after a message each way through a MUC portal.

use std::{collections::BTreeSet, time::Duration};

use anyhow::{Context as _, bail, ensure};
use lattice_e2e::{prosody::Prosody, workspace_root};
use promql_parser::{
    parser::{Expr, VectorSelector},
    util::{ExprVisitor, walk_expr},
};
use regex::Regex;
use serde_json::Value;

use crate::{
    irc_crash::OnePortal,
    xmpp_crash::{self, COMPONENT},
};

const CHANNEL: &str = "#dashboard";
/// Series Prometheus records for every scrape target itself, not read from `/metrics`.
const SCRAPE_SERIES: &[&str] = &["up"];

/// Collects the metric names of an expression's selectors: `name{…}` and `{__name__="name"}`.
struct MetricNames(BTreeSet<String>);

impl ExprVisitor for MetricNames {
    type Error = anyhow::Error;

    fn pre_visit(&mut self, expr: &Expr) -> anyhow::Result<bool> {
        let selector: Option<&VectorSelector> = match expr {
            Expr::VectorSelector(selector) => Some(selector),
            Expr::MatrixSelector(matrix) => Some(&matrix.vs),
            _ => None,
        };
        if let Some(selector) = selector {
            let by_label = selector.matchers.find_matchers("__name__").first().map(|matcher| matcher.value.clone());
            match selector.name.clone().or(by_label) {
                Some(name) => self.0.insert(name),
                None => bail!("a selector without a metric name: {selector}"),
            };
        }
        Ok(true)
    }
}

/// The metric names a Grafana query selects. Grafana's variables are filled in first: `$__rate_interval` and the
/// other built-in intervals with a duration, user variables (`$instance`, `${instance}`) with a word; a variable's
/// `label_values(metric, label)` contributes its metric.
fn metric_names(query: &str) -> anyhow::Result<BTreeSet<String>> {
    let variable = Regex::new(r"\$\{?(\w+)\}?")?;
    let filled =
        variable.replace_all(
            query,
            |captures: &regex::Captures<'_>| {
                if captures[1].starts_with("__") { "5m".to_owned() } else { "x".to_owned() }
            },
        );
    let label_values = Regex::new(r"^\s*label_values\(\s*(?:(.+),)?\s*\w+\s*\)\s*$")?;
    let expression = match label_values.captures(&filled) {
        Some(captures) => match captures.get(1) {
            Some(metric) => metric.as_str().to_owned(),
            None => return Ok(BTreeSet::new()),
        },
        None => filled.into_owned(),
    };
    let parsed = promql_parser::parser::parse(&expression)
        .map_err(|error| anyhow::anyhow!("`{query}` is not PromQL: {error}"))?;
    let mut names = MetricNames(BTreeSet::new());
    walk_expr(&mut names, &parsed)?;
    Ok(names.0)
}

/// Every query of a dashboard: its panels' targets (rows' nested panels too) and its query variables.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    fn panels(list: &Value, out: &mut Vec<String>) {
        for panel in list.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.extend(target["expr"].as_str().map(str::to_owned));
            }
            panels(&panel["panels"], out);
        }
    }
    let mut queries = Vec::new();
    panels(&dashboard["panels"], &mut queries);
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if variable["type"] == "query" {
            let query = variable["query"]["query"].as_str().or(variable["query"].as_str());
            queries.extend(query.map(str::to_owned));
        }
    }
    queries
}

/// Every alerting rule's expression in a Prometheus rules file.
fn rule_queries(rules: &serde_yaml::Value) -> Vec<String> {
    let groups = rules["groups"].as_sequence().into_iter().flatten();
    let rules = groups.flat_map(|group| group["rules"].as_sequence().into_iter().flatten());
    rules.filter_map(|rule| rule["expr"].as_str().map(str::to_owned)).collect()
}

/// The sum of the samples of `name` whose labels include every `label="value"` of `labels`, and how many there are.
fn sum_of(text: &str, name: &str, labels: &[&str]) -> (f64, usize) {
    let samples = text.lines().filter_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (labels_part, value) = match rest.strip_prefix('{') {
            Some(rest) => rest.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        let wanted = labels.iter().all(|label| labels_part.split(',').any(|pair| pair == *label));
        wanted.then(|| value.trim().parse::<f64>().ok()).flatten()
    });
    samples.fold((0.0, 0), |(sum, count), value| (sum + value, count + 1))
}

/// Scrapes `/metrics` until `done` says the text is what it waits for.
async fn scrape_until(url: &str, what: &str, timeout: Duration, done: impl Fn(&str) -> bool) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let text = reqwest::get(format!("{url}/metrics")).await?.error_for_status()?.text().await?;
        if done(&text) {
            return Ok(text);
        }
        ensure!(tokio::time::Instant::now() < deadline, "{what}: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The sample names in a Prometheus text exposition (`name{labels} value` and `name value` lines).
fn exported_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn metric_names_come_from_every_selector_of_a_query() -> anyhow::Result<()> {
    let cases: &[(&str, &[&str])] = &[
        ("sum by (queue) (lattice_queue_depth{instance=~\"$instance\"})", &["lattice_queue_depth"]),
        (
            "sum(rate(a_sum{job=\"x\"}[$__rate_interval])) / sum(rate(a_count[${__interval}])) > on() group_left b",
            &["a_count", "a_sum", "b"],
        ),
        ("histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m])))", &["h_bucket"]),
        ("{__name__=\"by_label\", instance=\"$instance\"}", &["by_label"]),
        ("label_values(lattice_events_total{queue=\"matrix\"}, instance)", &["lattice_events_total"]),
        ("label_values(instance)", &[]),
    ];
    for (query, expected) in cases {
        let names = metric_names(query)?;
        ensure!(names.iter().map(String::as_str).eq(expected.iter().copied()), "{query}: {names:?}");
    }
    ensure!(metric_names("sum(rate(x[5m])").is_err(), "a query that is not PromQL is an error");
    let text = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\nb 3\n";
    ensure!(exported_names(text).into_iter().eq(["a_total".to_owned(), "b".to_owned()]), "{text}");
    let text = "a{x=\"1\",y=\"2\"} 2\na{x=\"1\",y=\"3\"} 5\na{x=\"2\"} 7\nab{x=\"1\"} 11\nb 3\n";
    ensure!(sum_of(text, "a", &["x=\"1\""]) == (7.0, 2), "{text}");
    ensure!(sum_of(text, "a", &["x=\"1\"", "y=\"3\""]) == (5.0, 1), "{text}");
    ensure!(sum_of(text, "a", &[]) == (14.0, 3) && sum_of(text, "b", &[]) == (3.0, 1), "{text}");
    ensure!(sum_of(text, "c", &[]) == (0.0, 0), "{text}");
    Ok(())
}

#[tokio::test]
async fn every_metric_the_grafana_dashboard_queries_is_exported_by_the_bridge() -> anyhow::Result<()> {
    let dashboard_path = workspace_root().join("contrib/grafana/lattice.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&dashboard_path)?)
        .with_context(|| format!("{} is not JSON", dashboard_path.display()))?;
    let rules_path = workspace_root().join("contrib/prometheus/lattice-alerts.yml");
    let rules: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&rules_path)?)
        .with_context(|| format!("{} is not YAML", rules_path.display()))?;
    let mut queried = BTreeSet::new();
    for (path, queries) in [(&dashboard_path, dashboard_queries(&dashboard)), (&rules_path, rule_queries(&rules))] {
        ensure!(queries.len() >= 5, "{} holds only {} queries", path.display(), queries.len());
        for query in queries {
            queried.extend(metric_names(&query).with_context(|| format!("in {}", path.display()))?);
        }
    }
    ensure!(queried.len() >= 10, "the queries name only {queried:?}");

    // A short end-to-end run, so the counters and histograms that appear on first use are there.
    let OnePortal { _ircd, mut synapse, bridge, talker, alice, room_id } = OnePortal::start(CHANNEL).await?;
    alice.send_text(&room_id, "hello from matrix").await?;
    talker.wait_for(Duration::from_secs(60), |line| line.ends_with(" :hello from matrix")).await?;
    talker.send(&format!("PRIVMSG {CHANNEL} :hello from irc")).await?;
    alice.wait_for_message(&room_id, Duration::from_secs(60), "hello from irc").await?;

    // The homeserver away for a moment: the bridge's requests fail (`lattice_homeserver_errors_total` appears on
    // the first failure) and the IRC line said meanwhile arrives once it is back.
    synapse.stop();
    talker.send(&format!("PRIVMSG {CHANNEL} :said while the homeserver was away")).await?;
    let url = bridge.url();
    let text = scrape_until(&url, "no failed homeserver request counted", Duration::from_secs(60), |text| {
        text.contains("lattice_homeserver_errors_total{")
    })
    .await?;
    // The IRC line waits in the remote queue while the homeserver is away: its age shows.
    let remote_age = |text: &str| sum_of(text, "lattice_queue_oldest_age_seconds", &["queue=\"remote\""]);
    let waiting =
        scrape_until(&url, "no age for the waiting IRC line", Duration::from_secs(60), |text| remote_age(text).0 > 0.0)
            .await?;
    synapse.start_again().await?;
    alice.wait_for_message(&room_id, Duration::from_secs(120), "said while the homeserver was away").await?;
    let after = scrape_until(&url, "the remote queue's age stays above 0", Duration::from_secs(60), |text| {
        remote_age(text) == (0.0, 1)
    })
    .await?;
    println!("the waiting IRC line's age: {} s; after it was delivered: 0", remote_age(&waiting).0);
    check_remote_series(&after)?;
    let mut exported = exported_names(&text);
    exported.extend(exported_names(&waiting));
    exported.extend(exported_names(&after));
    exported.extend(SCRAPE_SERIES.iter().map(|name| (*name).to_owned()));
    let missing: Vec<&String> = queried.difference(&exported).collect();
    ensure!(
        missing.is_empty(),
        "the dashboard or the alerts query metrics the bridge does not export: {missing:?}\nexported: {exported:?}"
    );
    println!("the {} metrics the dashboard and the alerts query are all exported: {queried:?}", queried.len());
    Ok(())
}

/// The connection and traffic series after a message each way: the bot's listener and Alice's puppet connected,
/// lines read and written (the bridge's IRC connections live on the edge, which reports its counts over the link),
/// and a reconnect counter (at 0 or more) for the network.
fn check_remote_series(text: &str) -> anyhow::Result<()> {
    let connected = |role: &str| {
        let role = format!("role=\"{role}\"");
        sum_of(text, "lattice_remote_connections", &[role.as_str(), "state=\"connected\""]).0
    };
    ensure!(connected("bot") == 1.0, "the bot's connection is not counted as connected: {text}");
    ensure!(connected("puppet") >= 1.0, "Alice's puppet is not counted as connected: {text}");
    let lines = |direction: &str| {
        let direction = format!("direction=\"{direction}\"");
        sum_of(text, "lattice_remote_protocol_messages_total", &[direction.as_str()]).0
    };
    // At least: the bot's and the puppet's registration (NICK, USER) and JOINs, the puppet's PRIVMSG.
    ensure!(lines("sent") >= 5.0, "too few IRC lines written: {text}");
    // At least: each connection's welcome burst, the talker's two lines.
    ensure!(lines("received") >= 5.0, "too few IRC lines read: {text}");
    ensure!(sum_of(text, "lattice_remote_reconnects_total", &[]).1 >= 1, "no reconnect counter: {text}");
    println!(
        "connected: bot {}, puppets {}; IRC lines written {}, read {}",
        connected("bot"),
        connected("puppet"),
        lines("sent"),
        lines("received")
    );
    Ok(())
}

/// The XMPP bridge's side of the same series, after a message each way through a MUC portal of the shipped
/// `lattice-xmpp run`: its component link connected, stanzas received and sent.
#[tokio::test]
async fn the_xmpp_bridge_reports_its_component_link_and_stanzas() -> anyhow::Result<()> {
    let prosody = Prosody::start(COMPONENT).await?;
    let (synapse, bridge) = xmpp_crash::Bridge::start(&prosody).await?;
    let muc = format!("dashboard@{}", prosody.muc_domain());
    let observer = xmpp_crash::xmpp_user(&prosody, "observer").await?;
    observer.join_muc(&muc, "observer").await?;
    let mark = observer.received().len();
    let alice = synapse.register_user("alice", false).await?;
    let room_id = alice.join(&format!("#_xmpp_{muc}:localhost")).await?;
    observer.wait_for_occupant(mark, &muc, "alice").await?;
    alice.send_text(&room_id, "hello from matrix").await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !observer.groupchat(&muc).iter().any(|(_, body)| body == "hello from matrix") {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the message did not reach the MUC: {:?}",
            observer.groupchat(&muc)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    observer.send_raw(&format!("<message to='{muc}' type='groupchat'><body>hello from xmpp</body></message>")).await?;
    alice.wait_for_message(&room_id, Duration::from_secs(60), "hello from xmpp").await?;

    let domain = format!("network=\"{COMPONENT}\"");
    let series = |text: &str, name: &str, label: &str| sum_of(text, name, &[domain.as_str(), label]).0;
    // Stanzas at least: the portal's join presence and the message sent; the join's presences and the two
    // messages' reflections received.
    let text = scrape_until(&bridge.url(), "the component's series lack values", Duration::from_secs(30), |text| {
        series(text, "lattice_remote_connections", "state=\"connected\"") == 1.0
            && series(text, "lattice_remote_protocol_messages_total", "direction=\"sent\"") >= 2.0
            && series(text, "lattice_remote_protocol_messages_total", "direction=\"received\"") >= 3.0
    })
    .await?;
    ensure!(sum_of(&text, "lattice_remote_reconnects_total", &[domain.as_str()]).1 == 1, "{text}");
    println!(
        "XMPP component connected; stanzas sent {}, received {}",
        series(&text, "lattice_remote_protocol_messages_total", "direction=\"sent\""),
        series(&text, "lattice_remote_protocol_messages_total", "direction=\"received\"")
    );
    Ok(())
}
