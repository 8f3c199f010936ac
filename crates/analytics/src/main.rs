use analytics::{Application, Settings};
use switchboard_platform::{Shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("analytics");
    let settings = Settings::from_env()?;
    let app = Application::build(settings).await?;
    tracing::info!(port = app.port(), "analytics listening");
    app.run_until_stopped(Shutdown::on_signals()).await
}
