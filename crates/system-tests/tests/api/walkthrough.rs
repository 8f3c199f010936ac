//! The README's walk-through is `examples/walkthrough.sh`, and it runs as
//! written: against the real services, from a shell, with curl, jq and a
//! WebSocket client outside the browser.

use std::time::Duration;

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_walkthrough_runs_as_written_and_twice() {
    let app = spawn_app().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/walkthrough.sh");
    // Twice: the tenant comes from a variable, so a second run is no 409.
    for _ in 0..2 {
        let run = tokio::process::Command::new("bash")
            .arg(script)
            .env("SB_INGEST_URL", &app.ingest)
            .env(
                "SB_GATEWAY_URL",
                format!("http://127.0.0.1:{}", app.gateway_port),
            )
            .env("SB_ADMIN_TOKEN", &app.admin_token)
            .env_remove("TENANT")
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("the walk-through ends within a minute")
            .expect("bash runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
        let events: Vec<serde_json::Value> = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|f| f["type"] == "event")
            .collect();
        assert_eq!(events.len(), 4, "{stdout}");
        assert!(events.iter().any(|e| e["event"] == "presence.joined"));
        assert!(
            events
                .iter()
                .any(|e| e["event"] == "chat.message" && e["data"]["text"] == "hello")
        );
        assert!(
            events
                .iter()
                .any(|e| e["room"] == "user:42" && e["data"] == 2)
        );
    }
}
