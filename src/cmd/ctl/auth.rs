//! `fekv ctl user|role|auth`, and the credentials every `ctl` call carries: `--user NAME --password P`
//! or `--user NAME:P` (etcdctl's forms), sent to placement as `authorization` metadata and to the
//! nodes as the HTTP header. A password is never prompted for: `user add` and `user passwd` read the
//! new password from `--new-password` or, without it, from the first line of stdin (`--password` is
//! the caller's own).

use serde_json::{json, Value};

use super::client::PlacementConn;
use super::render::{pretty, Table};
use super::shared::{parse_key, print, CtlError, Output};
use crate::cluster_link::Retry;
use crate::proto::{
    AuthAccess, AuthGrant, AuthListRequest, AuthReply, AuthRole, RoleGrantRequest, RoleRequest, UserAddRequest,
    UserChangePasswordRequest, UserInfo, UserRequest, UserRoleRequest,
};
use crate::security::auth::{Credentials, KeyRange};

/// `--user` and `--password`, global to every `ctl` command.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CredentialArgs {
    /// User to authenticate as, once auth is enabled: NAME, or NAME:PASSWORD
    #[arg(long, env = "FEKV_USER", global = true)]
    pub user: Option<String>,
    /// Password of --user (or give it as --user NAME:PASSWORD)
    #[arg(long = "password", env = "FEKV_PASSWORD", global = true, hide_env_values = true)]
    pub password: Option<String>,
}

impl CredentialArgs {
    /// The `Authorization` value to send, if a user was given.
    pub fn authorization(&self) -> Result<Option<String>, CtlError> {
        let Some(user) = &self.user else { return Ok(None) };
        let (name, password) = match (user.split_once(':'), &self.password) {
            (Some((name, password)), None) => (name.to_string(), password.to_string()),
            (None, Some(password)) => (user.clone(), password.clone()),
            (Some(_), Some(_)) => {
                return Err(CtlError::Credentials("give the password in --user NAME:P or --password, not both".into()))
            }
            (None, None) => {
                return Err(CtlError::Credentials(format!(
                    "--user {user} needs a password: --password P or --user {user}:P"
                )))
            }
        };
        Ok(Some(Credentials::Password { user: name, password }.to_authorization()))
    }
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum UserCommand {
    /// Add a user (its password from --new-password, else the first line of stdin)
    Add {
        name: String,
        /// The new user's password [default: read from stdin]
        #[arg(long = "new-password")]
        new_password: Option<String>,
    },
    /// Delete a user (its tokens stop working)
    Delete { name: String },
    /// Every user and the roles it holds
    List,
    /// Set a user's password (from --new-password, else stdin); its older tokens stop working
    Passwd {
        name: String,
        #[arg(long = "new-password")]
        new_password: Option<String>,
    },
    /// Give a user a role (`root` makes it an administrator)
    GrantRole {
        // Not `user`: that is the global --user's id.
        #[arg(value_name = "USER")]
        username: String,
        role: String,
    },
    /// Take a role from a user
    RevokeRole {
        #[arg(value_name = "USER")]
        username: String,
        role: String,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum RoleCommand {
    /// Add a role (with no grants yet)
    Add { name: String },
    /// Delete a role and take it from every user
    Delete { name: String },
    /// Let a role read (or read and write) every key under a prefix
    Grant {
        name: String,
        /// The key prefix, percent-encoded like keys in the REST API's URLs ("" is every key)
        #[arg(long)]
        prefix: String,
        #[arg(long, conflicts_with = "readwrite", required_unless_present = "readwrite")]
        read: bool,
        #[arg(long)]
        readwrite: bool,
    },
    /// Take back a role's grant on a prefix
    Revoke {
        name: String,
        #[arg(long)]
        prefix: String,
    },
    /// Every role and its grants
    List,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum AuthCommand {
    /// Require credentials on every request (refused without a root user holding the root role)
    Enable,
    /// Stop requiring credentials
    Disable,
    /// Whether auth is enabled
    Status,
}

/// The password given on the command line, or the first line of stdin.
fn password_from(given: Option<String>) -> Result<String, CtlError> {
    if let Some(password) = given {
        return Ok(password);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        return Err(CtlError::Credentials("no password: give --new-password P, or one line on stdin".into()));
    }
    Ok(password)
}

fn prefix_range(prefix: &str) -> Result<KeyRange, CtlError> {
    let bytes = match prefix {
        "" => Vec::new(),
        raw => parse_key(raw)?,
    };
    Ok(KeyRange::prefix(&bytes))
}

fn grant(role: String, range: &KeyRange, access: AuthAccess) -> RoleGrantRequest {
    let grant = AuthGrant { start: range.start.clone(), end: range.end_bytes().to_vec(), access: access as i32 };
    RoleGrantRequest { role, grant: Some(grant) }
}

pub(super) async fn user(placement: &PlacementConn, command: UserCommand, output: Output) -> Result<(), CtlError> {
    let reply = match command {
        UserCommand::List => {
            let users = placement
                .auth(Retry::Idempotent, AuthListRequest {}, |mut c, r| async move { c.user_list(r).await })
                .await?
                .users;
            return print(&render_users(&users, output));
        }
        UserCommand::Add { name, new_password } => {
            let password = password_from(new_password)?;
            placement
                .auth(Retry::Once, UserAddRequest { name, password }, |mut c, r| async move { c.user_add(r).await })
                .await?
        }
        UserCommand::Passwd { name, new_password } => {
            let password = password_from(new_password)?;
            placement
                .auth(Retry::Once, UserChangePasswordRequest { name, password }, |mut c, r| async move {
                    c.user_change_password(r).await
                })
                .await?
        }
        UserCommand::Delete { name } => {
            placement.auth(Retry::Once, UserRequest { name }, |mut c, r| async move { c.user_delete(r).await }).await?
        }
        UserCommand::GrantRole { username: user, role } => {
            placement
                .auth(Retry::Once, UserRoleRequest { user, role }, |mut c, r| async move { c.user_grant_role(r).await })
                .await?
        }
        UserCommand::RevokeRole { username: user, role } => {
            placement
                .auth(
                    Retry::Once,
                    UserRoleRequest { user, role },
                    |mut c, r| async move { c.user_revoke_role(r).await },
                )
                .await?
        }
    };
    print(&render_status(&reply, output))
}

pub(super) async fn role(placement: &PlacementConn, command: RoleCommand, output: Output) -> Result<(), CtlError> {
    let reply = match command {
        RoleCommand::List => {
            let roles = placement
                .auth(Retry::Idempotent, AuthListRequest {}, |mut c, r| async move { c.role_list(r).await })
                .await?
                .roles;
            return print(&render_roles(&roles, output));
        }
        RoleCommand::Add { name } => {
            placement.auth(Retry::Once, RoleRequest { name }, |mut c, r| async move { c.role_add(r).await }).await?
        }
        RoleCommand::Delete { name } => {
            placement.auth(Retry::Once, RoleRequest { name }, |mut c, r| async move { c.role_delete(r).await }).await?
        }
        RoleCommand::Grant { name, prefix, readwrite, .. } => {
            let access = if readwrite { AuthAccess::ReadWrite } else { AuthAccess::Read };
            placement
                .auth(Retry::Once, grant(name, &prefix_range(&prefix)?, access), |mut c, r| async move {
                    c.role_grant(r).await
                })
                .await?
        }
        RoleCommand::Revoke { name, prefix } => {
            placement
                .auth(Retry::Once, grant(name, &prefix_range(&prefix)?, AuthAccess::Read), |mut c, r| async move {
                    c.role_revoke(r).await
                })
                .await?
        }
    };
    print(&render_status(&reply, output))
}

pub(super) async fn auth(placement: &PlacementConn, command: AuthCommand, output: Output) -> Result<(), CtlError> {
    let reply = match command {
        AuthCommand::Enable => {
            placement.auth(Retry::Once, AuthListRequest {}, |mut c, r| async move { c.auth_enable(r).await }).await?
        }
        AuthCommand::Disable => {
            placement.auth(Retry::Once, AuthListRequest {}, |mut c, r| async move { c.auth_disable(r).await }).await?
        }
        AuthCommand::Status => {
            placement
                .auth(Retry::Idempotent, AuthListRequest {}, |mut c, r| async move { c.auth_status(r).await })
                .await?
        }
    };
    print(&render_status(&reply, output))
}

fn render_status(reply: &AuthReply, output: Output) -> String {
    if output == Output::Json {
        return pretty(&json!({ "enabled": reply.enabled, "revision": reply.revision }));
    }
    format!("auth {} (revision {})\n", if reply.enabled { "enabled" } else { "disabled" }, reply.revision)
}

fn render_users(users: &[UserInfo], output: Output) -> String {
    if output == Output::Json {
        return pretty(&Value::Array(users.iter().map(|u| json!({ "name": u.name, "roles": u.roles })).collect()));
    }
    let mut table = Table::new(vec!["USER", "ROLES"]);
    for user in users {
        table.row(vec![user.name.clone(), user.roles.join(",")]);
    }
    table.render()
}

fn render_roles(roles: &[AuthRole], output: Output) -> String {
    let grants = |role: &AuthRole| -> Vec<(String, &'static str)> {
        role.grants
            .iter()
            .map(|g| {
                let range = KeyRange::from_wire(&g.start, &g.end).map_or_else(|e| e.to_string(), |r| r.to_string());
                let access = if g.access == AuthAccess::ReadWrite as i32 { "readwrite" } else { "read" };
                (range, access)
            })
            .collect()
    };
    if output == Output::Json {
        let roles = roles.iter().map(|role| {
            let grants: Vec<Value> =
                grants(role).into_iter().map(|(range, access)| json!({ "range": range, "access": access })).collect();
            json!({ "name": role.name, "grants": grants })
        });
        return pretty(&Value::Array(roles.collect()));
    }
    let mut table = Table::new(vec!["ROLE", "GRANTS"]);
    for role in roles {
        let text = match role.name.as_str() {
            crate::security::auth::ROOT => "everything (built in)".to_string(),
            _ => grants(role)
                .into_iter()
                .map(|(range, access)| format!("{access} {range}"))
                .collect::<Vec<_>>()
                .join(", "),
        };
        table.row(vec![role.name.clone(), text]);
    }
    table.render()
}
