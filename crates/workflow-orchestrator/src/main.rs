use switchboard_platform::{Shutdown, telemetry};
use workflow_orchestrator::{Application, settings_from_env};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("workflow-orchestrator");
    let settings = settings_from_env()?;
    let app = Application::build(settings).await?;
    tracing::info!(port = app.port(), "workflow-orchestrator listening");
    app.run_until_stopped(Shutdown::on_signals()).await;
    Ok(())
}
