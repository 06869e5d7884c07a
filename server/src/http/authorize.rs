//! Authorization: what each route needs (`required`, by method and path, for the
//! server's routes and the clients' alike), and the middleware that checks the token a
//! request presents against it when ACLs are on: 403 with a JSON error naming the
//! missing capability, 403 for an unknown or expired token. Tokens are looked up
//! through a `TokenResolver`: the store on agents that run a server, the servers (with
//! a short cache) on client-only agents.

use std::sync::Arc;

use futures::future::BoxFuture;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orch_common::acl::{Capability, Grants};

use super::acl::secret_of;
use super::error::ApiError;
use crate::endpoints::acl as acl_endpoints;
use crate::endpoints::Endpoints;

/// What a route needs from the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: health, the leader, the one-time bootstrap, DNS-like public reads.
    Open,
    /// The node's own secret, checked by the route (client-facing routes).
    NodeSecret,
    /// Any valid token (`/v1/acl/token/self`).
    AnyToken,
    /// This capability.
    Capability(Capability),
    /// A management token, whatever policies grant: the state snapshot, which holds
    /// every job's environment and every token's hash and replaces them all on restore.
    Management,
}

/// What `method path` needs. Unknown routes need nothing here (they are 404s).
pub fn required(method: &Method, path: &str) -> Need {
    use Capability::*;
    let segments: Vec<&str> = path
        .trim_start_matches('/')
        .trim_end_matches('/')
        .split('/')
        .collect();
    let read = *method == Method::GET || *method == Method::HEAD;
    let cap = Need::Capability;
    match segments.as_slice() {
        ["v1", "agent", "health"] | ["v1", "status", "leader" | "peers"] => Need::Open,
        ["v1", "agent", "members"] => cap(NodeRead),
        ["v1", "acl", "bootstrap"] => Need::Open,
        ["v1", "acl", "token", "self"] => Need::AnyToken,
        ["v1", "acl", ..] => cap(AclWrite),
        ["v1", "agent", "self"] => cap(OperatorRead),
        ["v1", "jobs"] if read => cap(JobRead),
        ["v1", "jobs"] => cap(JobSubmit),
        ["v1", "job", _] if *method == Method::DELETE => cap(JobStop),
        ["v1", "job", _, "scale"] if !read => cap(JobScale),
        ["v1", "job", _, "plan" | "revert"] if !read => cap(JobSubmit),
        ["v1", "job", ..] if read => cap(JobRead),
        ["v1", "deployments"] => cap(JobRead),
        ["v1", "deployment", ..] if read => cap(JobRead),
        ["v1", "deployment", ..] => cap(DeploymentActions),
        ["v1", "allocations" | "evaluations" | "services"] => cap(JobRead),
        ["v1", "allocation", _, "stop"] if !read => cap(AllocLifecycle),
        ["v1", "allocation" | "evaluation" | "service", ..] if read => cap(JobRead),
        ["v1", "node", "register"] => Need::NodeSecret,
        ["v1", "node", _, "heartbeat" | "allocations"] => Need::NodeSecret,
        ["v1", "node", _, "allocations", "known"] => Need::NodeSecret,
        ["v1", "node", _, "acl", "resolve"] => Need::NodeSecret,
        ["v1", "nodes"] => cap(NodeRead),
        ["v1", "node", _] if read => cap(NodeRead),
        ["v1", "node", _, "eligibility" | "drain"] => cap(NodeWrite),
        ["v1", "operator", "snapshot"] => Need::Management,
        ["v1", "operator", ..] if read => cap(OperatorRead),
        ["v1", "operator", ..] | ["v1", "system", ..] => cap(OperatorWrite),
        ["v1", "client", "fs", "logs", _] => cap(AllocLogs),
        ["v1", "client", "allocation", _, "exec"] => cap(AllocExec),
        ["v1", "client", "allocation", _, "restart"] => cap(AllocLifecycle),
        ["v1", "client", "allocation", _, "stats" | "checks"] => cap(JobRead),
        // Anything else under /v1 that exists is covered above; be strict about the
        // rest: a route added without a rule needs a management token.
        ["v1", ..] => cap(AclWrite),
        _ => Need::Open,
    }
}

/// Where an agent learns what a token grants.
pub trait TokenResolver: Send + Sync + 'static {
    /// What `secret` grants (`None`: the anonymous policy); 403 for an unknown or
    /// expired token.
    fn grants(&self, secret: Option<String>) -> BoxFuture<'_, Result<Grants, ApiError>>;
}

impl TokenResolver for Endpoints {
    fn grants(&self, secret: Option<String>) -> BoxFuture<'_, Result<Grants, ApiError>> {
        Box::pin(async move {
            acl_endpoints::resolve(self, secret.as_deref())
                .await
                .map_err(ApiError::from)
        })
    }
}

/// The middleware: with ACLs on, a request reaches its route only with a token that
/// grants what the route needs.
pub async fn authorize(
    State(tokens): State<Arc<dyn TokenResolver>>,
    req: Request,
    next: Next,
) -> Response {
    let need = required(req.method(), req.uri().path());
    let capability = match need {
        Need::Open | Need::NodeSecret => return next.run(req).await,
        Need::AnyToken | Need::Management => None,
        Need::Capability(c) => Some(c),
    };
    let secret = match secret_of(req.headers()) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    if need == Need::AnyToken && secret.is_none() {
        return ApiError::Forbidden("no ACL token presented".into()).into_response();
    }
    let grants = match tokens.grants(secret).await {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    if let Some(cap) = capability {
        if let Err(why) = acl_endpoints::require(&grants, cap) {
            return ApiError::Forbidden(why).into_response();
        }
    }
    if need == Need::Management && grants != Grants::Management {
        return ApiError::Forbidden(
            "permission denied: this token lacks management (the route needs a management token)"
                .into(),
        )
        .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use Capability::*;

    fn need(method: Method, path: &str) -> Need {
        required(&method, path)
    }

    #[test]
    fn every_route_has_its_capability() {
        let cases = [
            (Method::GET, "/v1/jobs", Need::Capability(JobRead)),
            (Method::POST, "/v1/jobs", Need::Capability(JobSubmit)),
            (Method::GET, "/v1/job/web", Need::Capability(JobRead)),
            (Method::DELETE, "/v1/job/web", Need::Capability(JobStop)),
            (
                Method::POST,
                "/v1/job/web/scale",
                Need::Capability(JobScale),
            ),
            (
                Method::POST,
                "/v1/job/web/plan",
                Need::Capability(JobSubmit),
            ),
            (
                Method::POST,
                "/v1/job/web/revert",
                Need::Capability(JobSubmit),
            ),
            (
                Method::GET,
                "/v1/job/web/versions",
                Need::Capability(JobRead),
            ),
            (
                Method::POST,
                "/v1/deployment/d1/promote",
                Need::Capability(DeploymentActions),
            ),
            (Method::GET, "/v1/deployment/d1", Need::Capability(JobRead)),
            (
                Method::POST,
                "/v1/allocation/a1/stop",
                Need::Capability(AllocLifecycle),
            ),
            (Method::GET, "/v1/allocation/a1", Need::Capability(JobRead)),
            (Method::GET, "/v1/nodes", Need::Capability(NodeRead)),
            (
                Method::POST,
                "/v1/node/n1/drain",
                Need::Capability(NodeWrite),
            ),
            (
                Method::POST,
                "/v1/node/n1/eligibility",
                Need::Capability(NodeWrite),
            ),
            (Method::POST, "/v1/node/register", Need::NodeSecret),
            (Method::POST, "/v1/node/n1/heartbeat", Need::NodeSecret),
            (Method::GET, "/v1/node/n1/allocations", Need::NodeSecret),
            (
                Method::POST,
                "/v1/node/n1/allocations/known",
                Need::NodeSecret,
            ),
            (Method::POST, "/v1/node/n1/acl/resolve", Need::NodeSecret),
            (
                Method::PUT,
                "/v1/operator/scheduler/configuration",
                Need::Capability(OperatorWrite),
            ),
            (
                Method::GET,
                "/v1/operator/scheduler/configuration",
                Need::Capability(OperatorRead),
            ),
            (
                Method::PUT,
                "/v1/system/gc",
                Need::Capability(OperatorWrite),
            ),
            (
                Method::GET,
                "/v1/client/fs/logs/a1",
                Need::Capability(AllocLogs),
            ),
            (
                Method::GET,
                "/v1/client/allocation/a1/exec",
                Need::Capability(AllocExec),
            ),
            (
                Method::POST,
                "/v1/client/allocation/a1/restart",
                Need::Capability(AllocLifecycle),
            ),
            (
                Method::GET,
                "/v1/client/allocation/a1/stats",
                Need::Capability(JobRead),
            ),
            (Method::GET, "/v1/operator/snapshot", Need::Management),
            (Method::PUT, "/v1/operator/snapshot", Need::Management),
            (Method::POST, "/v1/acl/bootstrap", Need::Open),
            (Method::GET, "/v1/acl/token/self", Need::AnyToken),
            (Method::POST, "/v1/acl/token", Need::Capability(AclWrite)),
            (Method::GET, "/v1/acl/policies", Need::Capability(AclWrite)),
            (Method::GET, "/v1/agent/health", Need::Open),
            (Method::GET, "/v1/status/leader", Need::Open),
            (
                Method::GET,
                "/v1/agent/self",
                Need::Capability(OperatorRead),
            ),
            (Method::GET, "/v1/something/new", Need::Capability(AclWrite)),
        ];
        for (method, path, want) in cases {
            assert_eq!(need(method.clone(), path), want, "{method} {path}");
        }
    }
}
