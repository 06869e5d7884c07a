//! ACL policies and tokens in the store: written, replaced (keeping their create
//! index), found by accessor id and by secret hash, deleted, kept across a reopen; and
//! a bootstrap that happens once.

use orch_common::model::{AclPolicy, AclToken, TokenKind};

use crate::state::command::Rejection;
use crate::state::{ApplyOutcome, Command, StateStore};

fn apply_next(store: &StateStore, cmd: &Command) -> ApplyOutcome {
    store.apply(store.last_index() + 1, cmd).expect("apply")
}

fn policy(name: &str, rules: &str) -> AclPolicy {
    AclPolicy {
        name: name.to_string(),
        description: String::new(),
        rules: rules.to_string(),
        create_index: 0,
        modify_index: 0,
    }
}

fn token(accessor: &str, hash: &str, kind: TokenKind) -> AclToken {
    AclToken {
        accessor_id: accessor.to_string(),
        secret_hash: hash.to_string(),
        name: format!("token {accessor}"),
        kind,
        policies: vec!["readonly".to_string()],
        create_time: 1,
        expiration_time: None,
        create_index: 0,
        modify_index: 0,
    }
}

#[test]
fn policies_and_tokens_are_stored_replaced_found_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = StateStore::open(&path).unwrap();

    let first = apply_next(
        &store,
        &Command::UpsertAclPolicy {
            policy: policy("readonly", "job = [\"read\"]"),
        },
    );
    let second = apply_next(
        &store,
        &Command::UpsertAclPolicy {
            policy: policy("readonly", "job = [\"read\"]\nalloc = [\"logs\"]"),
        },
    );
    let p = store.acl_policy("readonly").unwrap().unwrap();
    assert_eq!(
        (p.create_index, p.modify_index),
        (first.index, second.index)
    );
    assert!(p.rules.contains("logs"));

    apply_next(
        &store,
        &Command::UpsertAclToken {
            token: token("acc-1", "hash-1", TokenKind::Client),
        },
    );
    let by_hash = store.acl_token_by_secret_hash("hash-1").unwrap().unwrap();
    assert_eq!(by_hash.accessor_id, "acc-1");
    assert!(store.acl_token_by_secret_hash("hash-2").unwrap().is_none());
    assert_eq!(store.acl_tokens().unwrap().len(), 1);

    drop(store);
    let store = StateStore::open(&path).unwrap();
    assert_eq!(store.acl_policies().unwrap().len(), 1);
    assert_eq!(
        store.acl_token("acc-1").unwrap().unwrap().policies,
        vec!["readonly".to_string()]
    );

    apply_next(
        &store,
        &Command::DeleteAclTokens {
            accessor_ids: vec!["acc-1".into(), "absent".into()],
        },
    );
    apply_next(
        &store,
        &Command::DeleteAclPolicies {
            names: vec!["readonly".into()],
        },
    );
    assert!(store.acl_tokens().unwrap().is_empty());
    assert!(store.acl_policies().unwrap().is_empty());
}

#[test]
fn acls_are_bootstrapped_once_and_a_second_bootstrap_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path().join("state.db")).unwrap();
    assert_eq!(store.acl_bootstrap_index().unwrap(), None);

    let first = apply_next(
        &store,
        &Command::BootstrapAcl {
            token: token("root", "hash-root", TokenKind::Management),
        },
    );
    assert_eq!(first.rejected, None);
    assert_eq!(store.acl_bootstrap_index().unwrap(), Some(first.index));

    let again = apply_next(
        &store,
        &Command::BootstrapAcl {
            token: token("root-2", "hash-root-2", TokenKind::Management),
        },
    );
    assert_eq!(
        again.rejected,
        Some(Rejection::AclBootstrapped { index: first.index })
    );
    assert!(store.acl_token("root-2").unwrap().is_none());
    assert_eq!(store.acl_tokens().unwrap().len(), 1);
}
