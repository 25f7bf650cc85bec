//! The embedded data plane behind the AWS IoT Data Plane REST API.

/// Flags of `shadowsync dataplane serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: String,
}

/// Runs the server until SIGINT/SIGTERM.
pub async fn run(_args: ServeArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    Err("not built yet".into())
}
