//! Endpoint tests over a real temp-dir store and log (no scheduler): concurrent job
//! writes lose no update without any lock, a user's stale `enforce_index` is refused
//! with its 409 text and writes nothing, and a deployment action racing another one
//! that ends the deployment is answered as an action on an inactive deployment.

use std::sync::Arc;
use std::time::Duration;

use orch_common::ids::DeploymentId;
use orch_common::mock::{DeploymentBuilder, JobBuilder, NodeBuilder};
use orch_common::model::{DeploymentStatus, Job};

use super::deployments::{self, DeploymentError};
use super::jobs::{self, JobError, RegisterRequest, ScaleRequest};
use super::Endpoints;
use crate::config::GcConfig;
use crate::deployment::actions::ActionError;
use crate::deployment::testing::plan;
use crate::gc::Collector;
use crate::heartbeat::Heartbeats;
use crate::state::{Command, CommandLog, StateStore};

struct Fixture {
    _dir: tempfile::TempDir,
    ctx: Arc<Endpoints>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = StateStore::open(dir.path().join("state.db")).expect("store");
    let log = CommandLog::start(store.clone(), vec![]).expect("log");
    let heartbeats = Heartbeats::new(Duration::from_secs(10), Duration::from_secs(10));
    let gc = Arc::new(Collector::new(
        store.clone(),
        log.clone(),
        GcConfig::default(),
    ));
    Fixture {
        _dir: dir,
        ctx: Arc::new(Endpoints::new(store, log, heartbeats, gc)),
    }
}

/// "web" with two groups, "web" and "api", alike (2 instances each).
fn two_groups() -> Job {
    JobBuilder::new("web").count(2).copy_group("api").build()
}

fn counts(ctx: &Endpoints) -> (u32, u32) {
    let job = ctx.store.job("web").expect("read").expect("job");
    let count = |name: &str| {
        job.groups
            .iter()
            .find(|g| g.name == name)
            .expect("group")
            .count
    };
    (count("web"), count("api"))
}

fn scale(group: &str, count: u32, enforce_index: Option<u64>) -> ScaleRequest {
    ScaleRequest {
        job_id: "web".into(),
        group: group.into(),
        count,
        enforce_index,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_scales_of_two_groups_both_take_effect() {
    let f = fixture();
    let req = RegisterRequest {
        job: two_groups(),
        enforce_index: None,
    };
    jobs::register(&f.ctx, req).await.expect("register");
    // Counts that change every round (two_groups has 2): each scale is a new version.
    for round in 3..23 {
        // Each reads the job, changes its own group and writes the whole job back:
        // without the check-and-set, the later write would undo the earlier one.
        let web = tokio::spawn({
            let ctx = f.ctx.clone();
            async move { jobs::scale(&ctx, scale("web", round, None)).await }
        });
        let api = tokio::spawn({
            let ctx = f.ctx.clone();
            async move { jobs::scale(&ctx, scale("api", round + 100, None)).await }
        });
        let web = web.await.expect("task").expect("scale web");
        let api = api.await.expect("task").expect("scale api");
        assert_ne!(web.job_modify_index, api.job_modify_index);
        assert_eq!(counts(&f.ctx), (round, round + 100), "round {round}");
        let job = f.ctx.store.job("web").expect("read").expect("job");
        assert_eq!(
            job.job_modify_index,
            web.job_modify_index.max(api.job_modify_index),
            "each answer names its own write"
        );
    }
}

#[tokio::test]
async fn a_stale_user_enforce_index_is_a_conflict_and_writes_nothing() {
    let f = fixture();
    let first = jobs::register(
        &f.ctx,
        RegisterRequest {
            job: two_groups(),
            enforce_index: Some(0),
        },
    )
    .await
    .expect("register");
    let second = jobs::scale(&f.ctx, scale("web", 3, Some(first.job_modify_index)))
        .await
        .expect("scale at the current index");
    let last = f.ctx.store.last_index();

    let stale = jobs::scale(&f.ctx, scale("api", 5, Some(first.job_modify_index)))
        .await
        .expect_err("stale");
    assert!(matches!(stale, JobError::IndexMismatch { .. }), "{stale:?}");
    assert_eq!(
        stale.to_string(),
        format!(
            "enforce_index {} does not match job \"web\"'s job_modify_index {}",
            first.job_modify_index, second.job_modify_index
        )
    );
    let exists = jobs::register(
        &f.ctx,
        RegisterRequest {
            job: two_groups(),
            enforce_index: Some(0),
        },
    )
    .await
    .expect_err("exists");
    assert_eq!(
        exists.to_string(),
        format!(
            "enforce_index 0: job \"web\" already exists (job_modify_index {})",
            second.job_modify_index
        )
    );
    assert_eq!(f.ctx.store.last_index(), last, "nothing written");
    assert_eq!(counts(&f.ctx), (3, two_groups().groups[1].count));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_racing_a_failure_of_its_deployment_is_refused_as_inactive() {
    let f = fixture();
    let submit = |cmd: Command| {
        let log = f.ctx.log.clone();
        async move { log.submit(cmd).await.expect("submit") }
    };
    submit(Command::UpsertNode {
        node: NodeBuilder::new().id("n1").build(),
    })
    .await;
    jobs::register(
        &f.ctx,
        RegisterRequest {
            job: JobBuilder::new("web").build(),
            enforce_index: None,
        },
    )
    .await
    .expect("register");
    let job = f.ctx.store.job("web").expect("read").expect("job");
    for round in 0..10 {
        let id = DeploymentId::from(format!("d{round}"));
        let d = DeploymentBuilder::new(&job).id(&id).build();
        submit(plan(Some(d), vec![])).await;
        let pause = tokio::spawn({
            let (ctx, id) = (f.ctx.clone(), id.clone());
            async move { deployments::set_paused(&ctx, &id, true).await }
        });
        let fail = tokio::spawn({
            let (ctx, id) = (f.ctx.clone(), id.clone());
            async move { deployments::fail(&ctx, &id).await }
        });
        let fail = fail.await.expect("task");
        match pause.await.expect("task") {
            // Paused first: the failure comes after, on a paused deployment.
            Ok(_) => assert!(fail.is_ok(), "{fail:?}"),
            // Failed first, whether the pause read it failed or the store refused it.
            Err(DeploymentError::Action(ActionError::NotActive { id: d, status })) => {
                assert_eq!((d.as_str(), status), (id.as_str(), "failed"));
                assert!(fail.is_ok(), "{fail:?}");
            }
            Err(other) => panic!("round {round}: {other:?}"),
        }
        let d = f.ctx.store.deployment(&id).expect("read").expect("dep");
        assert_eq!(d.status, DeploymentStatus::Failed);
    }
}

// ------------------------------------------------------------------------------- ACL

mod acl_endpoints {
    use std::time::Duration;

    use orch_common::acl::{Capability, Grants};

    use super::fixture;
    use crate::endpoints::acl::{self, AclError, TokenRequest, ANONYMOUS_POLICY};

    #[tokio::test]
    async fn the_bootstrap_makes_one_management_token_once() {
        let f = fixture();
        let root = acl::bootstrap(&f.ctx).await.expect("bootstrap");
        assert_eq!(root.secret.len(), 64);
        assert!(
            root.token.secret_hash.is_empty(),
            "the hash is never answered"
        );
        assert_eq!(
            acl::resolve(&f.ctx, Some(&root.secret)).await.unwrap(),
            Grants::Management
        );
        let again = acl::bootstrap(&f.ctx).await.unwrap_err();
        assert!(
            matches!(again, AclError::AlreadyBootstrapped { .. }),
            "{again}"
        );
    }

    #[tokio::test]
    async fn a_token_grants_its_policies_and_nothing_else() {
        let f = fixture();
        acl::apply_policy(&f.ctx, "readonly", None, "job = [\"read\"]".into())
            .await
            .unwrap();
        let reader = acl::create_token(
            &f.ctx,
            TokenRequest {
                name: "ci".into(),
                policies: vec!["readonly".into()],
                ttl: Some(Duration::from_secs(3600)),
            },
        )
        .await
        .unwrap();
        assert!(reader.token.expiration_time.is_some());
        let grants = acl::resolve(&f.ctx, Some(&reader.secret)).await.unwrap();
        assert_eq!(grants.require(Capability::JobRead), Ok(()));
        assert_eq!(
            grants.require(Capability::JobSubmit),
            Err(Capability::JobSubmit)
        );
        // Answered again from the cache; a changed policy is seen at once.
        assert_eq!(
            acl::resolve(&f.ctx, Some(&reader.secret)).await.unwrap(),
            grants
        );
        acl::apply_policy(
            &f.ctx,
            "readonly",
            None,
            "job = [\"read\", \"submit\"]".into(),
        )
        .await
        .unwrap();
        let widened = acl::resolve(&f.ctx, Some(&reader.secret)).await.unwrap();
        assert_eq!(widened.require(Capability::JobSubmit), Ok(()));

        // Unknown secrets are refused; anonymous gets the anonymous policy, empty first.
        assert!(matches!(
            acl::resolve(&f.ctx, Some("nope")).await,
            Err(AclError::InvalidToken)
        ));
        let anonymous = acl::resolve(&f.ctx, None).await.unwrap();
        assert_eq!(anonymous, Grants::Rules(Default::default()));
        acl::apply_policy(&f.ctx, ANONYMOUS_POLICY, None, "job = [\"read\"]".into())
            .await
            .unwrap();
        let anonymous = acl::resolve(&f.ctx, None).await.unwrap();
        assert_eq!(anonymous.require(Capability::JobRead), Ok(()));

        // A deleted token grants nothing any more.
        acl::delete_token(&f.ctx, &reader.token.accessor_id)
            .await
            .unwrap();
        assert!(matches!(
            acl::resolve(&f.ctx, Some(&reader.secret)).await,
            Err(AclError::InvalidToken)
        ));
    }

    #[tokio::test]
    async fn bad_policies_names_and_tokens_are_refused_and_store_nothing() {
        let f = fixture();
        let bad = acl::apply_policy(&f.ctx, "p", None, "job = [\"rm\"]".into())
            .await
            .unwrap_err();
        assert!(bad.to_string().contains("line 1, column 8"), "{bad}");
        assert!(matches!(
            acl::apply_policy(&f.ctx, "a b", None, String::new()).await,
            Err(AclError::InvalidName { .. })
        ));
        let token = |policies: Vec<String>, ttl| TokenRequest {
            name: "t".into(),
            policies,
            ttl,
        };
        assert!(matches!(
            acl::create_token(&f.ctx, token(vec!["missing".into()], None)).await,
            Err(AclError::PolicyNotFound(_))
        ));
        assert!(matches!(
            acl::create_token(&f.ctx, token(vec![], None)).await,
            Err(AclError::PolicyCount)
        ));
        acl::apply_policy(&f.ctx, "p", None, String::new())
            .await
            .unwrap();
        assert!(matches!(
            acl::create_token(&f.ctx, token(vec!["p".into()], Some(Duration::ZERO))).await,
            Err(AclError::InvalidTtl)
        ));
        assert_eq!(f.ctx.store.acl_tokens().unwrap().len(), 0);
        assert_eq!(f.ctx.store.acl_policies().unwrap().len(), 1);
    }
}
