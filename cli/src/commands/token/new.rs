//! `txmirror token new`: a token for the service.

use crate::commands::{Target, print};
use crate::exit::Failed;
use txmirror_service::Role;

/// Makes a token: prints it once on standard error, and on standard output
/// the `[[tokens]]` entry (with only its SHA-256) to append to the
/// service's configuration.
#[derive(clap::Args, Debug)]
pub(crate) struct TokenNewCommand {
    /// The tenant the token acts for.
    #[arg(long)]
    tenant: String,
    /// developer, operator or client.
    #[arg(long)]
    role: RoleArg,
    /// A name for logs; TENANT-ROLE if omitted.
    #[arg(long)]
    name: Option<String>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
enum RoleArg {
    Developer,
    Operator,
    Client,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Developer => Self::Developer,
            RoleArg::Operator => Self::Operator,
            RoleArg::Client => Self::Client,
        }
    }
}

impl TokenNewCommand {
    pub(crate) async fn execute(self, _target: Target) -> Result<u8, Failed> {
        print(&new_token(&self.tenant, self.role.into(), self.name.as_deref()));
        Ok(0)
    }
}

/// Prints a new token on standard error (shown once) and its configuration
/// entry, which holds only the token's hash, on standard output.
fn new_token(tenant: &str, role: Role, name: Option<&str>) -> String {
    let token = txmirror_service::auth::new_token();
    let name = name.map_or_else(|| format!("{tenant}-{role}"), str::to_string);
    eprintln!("token for {name} (shown once, keep it secret): {token}");
    format!(
        "\n[[tokens]]\nname = \"{name}\"\ntenant = \"{tenant}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n",
        txmirror_service::auth::hash_token(&token)
    )
}
