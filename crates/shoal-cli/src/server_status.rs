//! `shoal server status`: which server leads, since when, whether the store is healthy
//! and which servers there are, from `GET /shoal/v1/server/status` on `--endpoint`.
//! `-o json` prints the answer as it is; `-o table` one line per server.

use serde_json::Value;

use crate::client::Client;
use crate::output::{OutputFormat, Printer};
use crate::ClientOptions;

/// Prints the status of the servers the endpoint belongs to.
pub async fn run(opts: &ClientOptions) -> anyhow::Result<()> {
    let client = Client::new(opts)?.reachable().await;
    let status = client.get_json("/shoal/v1/server/status").await?;
    let printer = Printer::stdout(opts.output);
    match printer.format() {
        OutputFormat::Table => printer.write_raw(table(&status).as_bytes())?,
        _ => printer.print(crate::output::Table::Generic, &status)?,
    }
    Ok(())
}

/// The table form: the store, then one line per server with a `*` on the leader.
fn table(status: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let endpoints: Vec<String> = status["store"]["endpoints"]
        .as_array()
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default();
    let healthy = status["store"]["healthy"].as_bool().unwrap_or(false);
    let mut out = format!(
        "Store: {} ({})\nLeader since: {}\n\n{:<2}{:<20}{}\n",
        endpoints.join(","),
        if healthy { "healthy" } else { "UNHEALTHY" },
        text(&status["leader"]["since"]),
        "",
        "Name",
        "Url"
    );
    for m in status["members"].as_array().into_iter().flatten() {
        let mark = if m["isLeader"].as_bool().unwrap_or(false) {
            "*"
        } else {
            ""
        };
        out.push_str(&format!(
            "{:<2}{:<20}{}\n",
            mark,
            text(&m["name"]),
            text(&m["url"])
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_marks_the_leader() {
        let status = serde_json::json!({
            "leader": {"name": "s2", "url": "http://b", "since": "2026-01-01T00:00:00Z"},
            "self": {"name": "s1", "url": "http://a", "isLeader": false},
            "store": {"endpoints": ["10.0.0.1:2379"], "healthy": true},
            "members": [
                {"name": "s1", "url": "http://a", "isLeader": false},
                {"name": "s2", "url": "http://b", "isLeader": true}
            ]
        });
        let t = table(&status);
        assert!(t.contains("10.0.0.1:2379 (healthy)"), "{t}");
        assert!(t.contains("* s2"), "{t}");
        assert!(t.contains("  s1"), "{t}");
    }
}
