//! The demo's last step: two `txmirror serve` nodes on a local PostgreSQL
//! (started here with `initdb` and `pg_ctl` on 127.0.0.1, stopped at the
//! end), one killed with SIGKILL under load, the other taking its work
//! over and finishing it.

use super::{new_tokens, serve, step};
use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use txmirror_pg::LocalPostgres;

/// The nodes' lease: short, so that the takeover shows soon.
const LEASE_MS: u64 = 2_000;
/// Deposits sent to the node that dies, from this many clients at once.
const CLIENTS: usize = 8;
const PER_CLIENT: usize = 8;

pub(super) fn scenario(root: &Path, demo: &Path, bank: &(PathBuf, PathBuf), txmirror: &Path) -> Result<()> {
    step("15. several nodes: a local PostgreSQL, and two nodes serving every tenant from it");
    let postgres = LocalPostgres::start();
    let url = postgres.fresh_database();
    println!("PostgreSQL on {url} (a temporary directory; stopped at the end)");
    let dir = demo.join("nodes");
    std::fs::create_dir_all(&dir)?;
    let (tokens_config, tokens) = new_tokens(txmirror, "demo")?;
    let mut nodes = Vec::new();
    for name in ["node-a", "node-b"] {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{name}\"\n{tokens_config}\n[store]\nurl = \"{url}\"\n\n[node]\nname = \"{name}\"\nlease_ms = {LEASE_MS}\n"
            ),
        )?;
        let (process, base) = serve(root, txmirror, &config, name)?;
        println!("{name} serving on {base}");
        nodes.push((process, base));
    }
    let result = drive(txmirror, &tokens, bank, &mut nodes);
    for (process, _) in &mut nodes {
        // The killed one has been waited for already.
        if matches!(process.try_wait(), Ok(None)) {
            let _ = Command::new("kill").args(["-TERM", &process.id().to_string()]).status();
            let _ = process.wait();
        }
    }
    drop(postgres);
    result
}

fn drive(
    txmirror: &Path,
    tokens: &std::collections::HashMap<&'static str, String>,
    (module, policy): &(PathBuf, PathBuf),
    nodes: &mut [(std::process::Child, String)],
) -> Result<()> {
    let (node_a, node_b) = (nodes[0].1.clone(), nodes[1].1.clone());
    let as_role = |base: &str, role: &str| {
        let mut command = Command::new(txmirror);
        command.args(["--server", base, "--token", tokens.get(role).map_or("", String::as_str)]);
        command
    };
    let out = as_role(&node_a, "developer").arg("upload").arg(module).output()?;
    let hash = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("module ").map(str::to_string))
        .with_context(|| format!("no module hash in the upload's answer: {}", String::from_utf8_lossy(&out.stderr)))?;
    crate::run(as_role(&node_a, "operator").args(["put-policy", &hash]).arg(policy))?;
    println!("bank-transfer uploaded through node-a; node-b loads it from the shared catalog");
    crate::run(as_role(&node_b, "operator").arg("nodes"))?;

    step("16. a burst of deposits to node-a, each with an idempotency key; node-a is killed with SIGKILL at once");
    let acknowledged: usize = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (hash, node_a) = (&hash, &node_a);
                scope.spawn(move || {
                    (0..PER_CLIENT)
                        .filter(|i| {
                            let key = format!("demo-{client}-{i}");
                            as_role(node_a, "client")
                                .args(["submit", hash, "--path", "deposit", "--async", "--idempotency-key", &key])
                                .args(["--input", r#"{"account":"pool","amount":1}"#])
                                .output()
                                .is_ok_and(|out| out.status.success())
                        })
                        .count()
                })
            })
            .collect();
        clients.into_iter().map(|client| client.join().unwrap_or(0)).sum()
    });
    let view = nodes_json(&as_role(&node_b, "operator"))?;
    let node_a_id = view["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["name"] == "node-a"))
        .and_then(|n| n["id"].as_str())
        .context("node-a is not in the nodes' list")?
        .to_string();
    nodes[0].0.kill()?;
    nodes[0].0.wait()?;
    let killed = Instant::now();
    let orphans = held_by(&nodes_json(&as_role(&node_b, "operator"))?, &node_a_id);
    println!(
        "node-a acknowledged {acknowledged} deposits and was killed; {orphans} of them were still in flight on it"
    );
    crate::run(as_role(&node_b, "operator").arg("nodes"))?;

    step("17. node-b takes node-a's lapsed leases over (epoch 2) and finishes the work");
    loop {
        let view = nodes_json(&as_role(&node_b, "operator"))?;
        let in_flight = view["leases"].as_array().map_or(0, Vec::len);
        if held_by(&view, &node_a_id) == 0 && in_flight == 0 {
            break;
        }
        if killed.elapsed() > Duration::from_secs(60) {
            bail!("node-a's work was not finished a minute after the kill: {view}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "every transaction node-a held was taken over and ended {:.1} s after the kill (lease {:.1} s)",
        killed.elapsed().as_secs_f64(),
        Duration::from_millis(LEASE_MS).as_secs_f64()
    );
    let out = as_role(&node_b, "client")
        .args(["submit", &hash, "--path", "balance", "--json", "--input", r#"{"account":"pool"}"#])
        .output()?;
    let report: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("the balance's report: {}", String::from_utf8_lossy(&out.stderr)))?;
    let bytes: Vec<u8> = report["outcome"]["output"]
        .as_array()
        .context("no output in the balance's report")?
        .iter()
        .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
        .collect();
    let balance = serde_json::from_slice::<Value>(&bytes)?["balance"].as_u64().context("no balance")?;
    println!("the balance through node-b: {balance}, for {acknowledged} acknowledged deposits of 1");
    if balance != u64::try_from(acknowledged)? {
        bail!("the balance {balance} is not the {acknowledged} acknowledged deposits: something was lost or doubled");
    }
    Ok(())
}

/// `txmirror nodes --json` through a node.
fn nodes_json(command: &Command) -> Result<Value> {
    let mut command = clone(command);
    let out = command.args(["nodes", "--json"]).output()?;
    if !out.status.success() {
        bail!("`txmirror nodes` failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn clone(command: &Command) -> Command {
    let mut copy = Command::new(command.get_program());
    copy.args(command.get_args());
    copy
}

/// How many transactions in flight `holder` holds in `view`.
fn held_by(view: &Value, holder: &str) -> usize {
    view["leases"].as_array().map_or(0, |leases| leases.iter().filter(|lease| lease["holder"] == holder).count())
}
