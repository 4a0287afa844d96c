//! The `PlacementAuth` gRPC service: `fekv ctl user|role|auth`. Every call but `AuthStatus` needs the
//! root role once auth is enabled (a user may also change their own password). Passwords are hashed
//! on the blocking pool before the state's lock is taken; each change is durable before the reply,
//! and reaches the nodes with their next heartbeat reply.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::durable;
use super::guard::Need;
use super::serving::{Leader, Serving};
use crate::auth::{Access, AuthAdminError, AuthState, KeyRange, PasswordCost, PasswordHash, Principal, ROOT};
use crate::proto::placement_auth_server::PlacementAuth;
use crate::proto::*;

pub struct AuthService {
    pub(super) serving: Arc<Serving>,
}

type Reply<T> = Result<Response<T>, Status>;

impl AuthService {
    /// Applies `operation`, installs the new state in the guard, and answers its status.
    async fn change(
        &self,
        leader: &Leader,
        operation: impl FnOnce(&mut AuthState) -> Result<(), AuthAdminError> + Send + 'static,
    ) -> Reply<AuthReply> {
        let state = durable(&self.serving, &leader.placement, move |p| p.change_auth(operation)).await?;
        leader.guard.update(&state);
        let status = state.status();
        Ok(Response::new(AuthReply { enabled: status.enabled, revision: status.revision }))
    }

    async fn hash(&self, password: String) -> Result<PasswordHash, Status> {
        let cost: PasswordCost = self.serving.password_cost();
        tokio::task::spawn_blocking(move || PasswordHash::new(&password, cost))
            .await
            .map_err(|err| Status::internal(format!("hashing failed: {err}")))?
            .map_err(|err| Status::invalid_argument(err.to_string()))
    }
}

fn grant_of(request: &RoleGrantRequest) -> Result<(KeyRange, Access), Status> {
    let grant = request.grant.as_ref().ok_or_else(|| Status::invalid_argument("a grant needs a key range"))?;
    let range =
        KeyRange::from_wire(&grant.start, &grant.end).map_err(|err| Status::invalid_argument(err.to_string()))?;
    let access = match AuthAccess::try_from(grant.access) {
        Ok(AuthAccess::ReadWrite) => Access::ReadWrite,
        _ => Access::Read,
    };
    Ok((range, access))
}

#[tonic::async_trait]
impl PlacementAuth for AuthService {
    async fn user_add(&self, req: Request<UserAddRequest>) -> Reply<AuthReply> {
        let leader = self.serving.leader()?;
        leader.guard.check(&req, Need::Admin).await?;
        let UserAddRequest { name, password } = req.into_inner();
        let hash = self.hash(password).await?;
        self.change(&leader, move |auth| auth.user_add(&name, hash)).await
    }

    async fn user_delete(&self, req: Request<UserRequest>) -> Reply<AuthReply> {
        let leader = self.serving.leader()?;
        leader.guard.check(&req, Need::Admin).await?;
        let name = req.into_inner().name;
        self.change(&leader, move |auth| auth.user_delete(&name)).await
    }

    async fn user_list(&self, req: Request<AuthListRequest>) -> Reply<UserListReply> {
        let leader = self.serving.leader()?;
        leader.guard.check(&req, Need::Admin).await?;
        let state = leader.placement.auth_state();
        let users = state
            .users()
            .iter()
            .map(|(name, user)| UserInfo { name: name.clone(), roles: user.roles.iter().cloned().collect() })
            .collect();
        Ok(Response::new(UserListReply { users }))
    }

    async fn user_change_password(&self, req: Request<UserChangePasswordRequest>) -> Reply<AuthReply> {
        let leader = self.serving.leader()?;
        // One's own password needs only one's own credentials.
        if let Err(admin) = leader.guard.check(&req, Need::Admin).await {
            let principal: Principal = leader.guard.check(&req, Need::Member).await?;
            if principal.user() != Some(req.get_ref().name.as_str()) {
                return Err(admin);
            }
        }
        let UserChangePasswordRequest { name, password } = req.into_inner();
        let hash = self.hash(password).await?;
        self.change(&leader, move |auth| auth.user_change_password(&name, hash)).await
    }

    async fn user_grant_role(&self, req: Request<UserRoleRequest>) -> Reply<AuthReply> {
        let leader = self.serving.leader()?;
        leader.guard.check(&req, Need::Admin).await?;
        let UserRoleRequest { user, role } = req.into_inner();
        self.change(&leader, move |auth| auth.user_grant_role(&user, &role)).await
    }

    async fn user_revoke_role(&self, req: Request<UserRoleRequest>) -> Reply<AuthReply> {
        let leader = self.serving.leader()?;
        leader.guard.check(&req, Need::Admin).await?;
        let UserRoleRequest { user, role } = req.into_inner();
        self.change(&leader, move |auth| auth.user_revoke_role(&user, &role)).await
    }

    async fn role_add(&self, req: Request<RoleRequest>) -> Reply<AuthReply> {
        let leader = self.serving.leader()?;
        leader.guard.check(&req, Need::Admin).await?;
        let name = req.into_inner().name;
        self.change(&leader, move |auth| auth.role_add(&name)).await
    }

    async fn role_delete(&self, req: Request<RoleRequest>) -> Reply<AuthReply> {
        let leader = self.serving.leader()?;
        leader.guard.check(&req, Need::Admin).await?;
        let name = req.into_inner().name;
        self.change(&leader, move |auth| auth.role_delete(&name)).await
    }

    async fn role_grant(&self, req: Request<RoleGrantRequest>) -> Reply<AuthReply> {
        let leader = self.serving.leader()?;
        leader.guard.check(&req, Need::Admin).await?;
        let (range, access) = grant_of(req.get_ref())?;
        let role = req.into_inner().role;
        self.change(&leader, move |auth| auth.role_grant(&role, range, access)).await
    }

    async fn role_revoke(&self, req: Request<RoleGrantRequest>) -> Reply<AuthReply> {
        let leader = self.serving.leader()?;
        leader.guard.check(&req, Need::Admin).await?;
        let (range, _) = grant_of(req.get_ref())?;
        let role = req.into_inner().role;
        self.change(&leader, move |auth| auth.role_revoke(&role, &range)).await
    }

    async fn role_list(&self, req: Request<AuthListRequest>) -> Reply<RoleListReply> {
        let leader = self.serving.leader()?;
        leader.guard.check(&req, Need::Admin).await?;
        let wire = leader.placement.auth_state().to_proto();
        let root = AuthRole { name: ROOT.to_string(), grants: Vec::new() };
        Ok(Response::new(RoleListReply { roles: std::iter::once(root).chain(wire.roles).collect() }))
    }

    async fn auth_enable(&self, req: Request<AuthListRequest>) -> Reply<AuthReply> {
        let leader = self.serving.leader()?;
        leader.guard.check(&req, Need::Admin).await?;
        self.change(&leader, |auth| auth.enable()).await
    }

    async fn auth_disable(&self, req: Request<AuthListRequest>) -> Reply<AuthReply> {
        let leader = self.serving.leader()?;
        leader.guard.check(&req, Need::Admin).await?;
        self.change(&leader, |auth| {
            auth.disable();
            Ok(())
        })
        .await
    }

    async fn auth_status(&self, _: Request<AuthListRequest>) -> Reply<AuthReply> {
        let leader = self.serving.leader()?;
        let status = leader.placement.auth_state().status();
        Ok(Response::new(AuthReply { enabled: status.enabled, revision: status.revision }))
    }
}

/// How an auth operation's refusal reads over gRPC.
pub(super) fn admin_status(err: &AuthAdminError) -> Status {
    use AuthAdminError as E;
    let message = err.to_string();
    match err {
        E::InvalidName { .. } => Status::invalid_argument(message),
        E::UserExists(_) | E::RoleExists(_) => Status::already_exists(message),
        E::UnknownUser(_) | E::UnknownRole(_) | E::RoleNotGranted { .. } | E::GrantNotFound { .. } => {
            Status::not_found(message)
        }
        E::RootRoleBuiltIn | E::RootMissing | E::WouldLockOutRoot => Status::failed_precondition(message),
        E::Corrupt(_) => Status::internal(message),
    }
}
