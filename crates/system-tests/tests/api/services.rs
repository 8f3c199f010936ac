use std::collections::HashMap;

use switchboard_platform::shutdown;
use switchboard_test_support::{TestDatabase, nats_url};

#[tokio::test(flavor = "multi_thread")]
async fn analytics_and_orchestrator_are_ready_against_real_nats_and_postgres() {
    let db = TestDatabase::create().await;
    let vars: HashMap<String, String> = [
        ("SB_LISTEN", "127.0.0.1:0".to_string()),
        ("SB_NATS_URL", nats_url()),
        ("SB_DATABASE_URL", db.url.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let analytics = analytics::Application::build(analytics::Settings::from_source(&vars).unwrap())
        .await
        .unwrap();
    let orchestrator = workflow_orchestrator::Application::build(
        switchboard_platform::service::BasicSettings::from_source(
            &vars,
            workflow_orchestrator::DEFAULT_LISTEN,
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let ports = [analytics.port(), orchestrator.port()];
    let (stop, s) = shutdown::channel();
    let a = tokio::spawn(analytics.run_until_stopped(s.clone()));
    let o = tokio::spawn(orchestrator.run_until_stopped(s));
    let http = reqwest::Client::new();
    for port in ports {
        for path in ["/healthz", "/readyz", "/metrics"] {
            let res = http
                .get(format!("http://127.0.0.1:{port}{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{port}{path}");
        }
        let res = http
            .get(format!("http://127.0.0.1:{port}/nope"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
    stop.fire();
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        a.await.unwrap().unwrap();
        o.await.unwrap();
    })
    .await
    .expect("services stop when told");
}
