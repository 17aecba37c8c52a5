//! Random operation sequences on the lifecycle state machine and the pending table, checked step by step
//! against a plain model written independently of the implementation.

use std::collections::BTreeSet;

use proptest::prelude::*;
use tessera_session::{
    FailureReason, LimitScope, Registry, RegistryConfig, SessionError, SessionGuard, SessionState,
};

const PER_SESSION: usize = 4;
const GLOBAL: usize = 6;

#[derive(Debug, Clone)]
enum Op {
    Transition(usize, u8),
    Insert(usize, i64),
    Take(usize, i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..2usize, 0..4u8).prop_map(|(s, t)| Op::Transition(s, t)),
        (0..2usize, 0..6i64).prop_map(|(s, id)| Op::Insert(s, id)),
        (0..2usize, 0..6i64).prop_map(|(s, id)| Op::Take(s, id)),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModelState {
    Initializing,
    Active,
    ShuttingDown,
    Closed,
    Failed,
}

struct ModelSession {
    state: ModelState,
    pending: BTreeSet<i64>,
}

fn target(t: u8) -> (SessionState, ModelState) {
    match t {
        0 => (SessionState::Active, ModelState::Active),
        1 => (SessionState::ShuttingDown, ModelState::ShuttingDown),
        2 => (SessionState::Closed, ModelState::Closed),
        _ => (
            SessionState::Failed(FailureReason::error("model")),
            ModelState::Failed,
        ),
    }
}

fn legal(from: ModelState, to: ModelState) -> bool {
    use ModelState::*;
    const TABLE: &[(ModelState, ModelState)] = &[
        (Initializing, Active),
        (Initializing, ShuttingDown),
        (Initializing, Closed),
        (Initializing, Failed),
        (Active, ShuttingDown),
        (Active, Closed),
        (Active, Failed),
        (ShuttingDown, Closed),
        (ShuttingDown, Failed),
    ];
    TABLE.contains(&(from, to))
}

fn same(real: &SessionState, model: ModelState) -> bool {
    matches!(
        (real, model),
        (SessionState::Initializing, ModelState::Initializing)
            | (SessionState::Active, ModelState::Active)
            | (SessionState::ShuttingDown, ModelState::ShuttingDown)
            | (SessionState::Closed, ModelState::Closed)
            | (SessionState::Failed(_), ModelState::Failed)
    )
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _enter = rt.enter();
    let mut config = RegistryConfig::new("model");
    config.pending.per_session = PER_SESSION;
    config.pending.global = GLOBAL;
    let registry: Registry<()> = Registry::new(config);
    let guards: Vec<SessionGuard<()>> = (0..2)
        .map(|_| registry.create("m").expect("create"))
        .collect();
    let mut model: Vec<ModelSession> = (0..2)
        .map(|_| ModelSession {
            state: ModelState::Initializing,
            pending: BTreeSet::new(),
        })
        .collect();
    let mut waiters = Vec::new();

    for op in ops {
        let global: usize = model.iter().map(|m| m.pending.len()).sum();
        match op {
            Op::Transition(s, t) => {
                let (real_to, model_to) = target(t);
                let result = guards[s].transition(real_to);
                let expect_ok = legal(model[s].state, model_to);
                prop_assert_eq!(
                    result.is_ok(),
                    expect_ok,
                    "{:?} -> {:?}",
                    model[s].state,
                    model_to
                );
                if let Err(e) = result {
                    prop_assert!(matches!(e, SessionError::IllegalTransition(_)));
                }
                if expect_ok {
                    model[s].state = model_to;
                    if matches!(model_to, ModelState::Closed | ModelState::Failed) {
                        model[s].pending.clear();
                    }
                }
            }
            Op::Insert(s, id) => {
                let result = guards[s].insert_pending(id, "m");
                let m = &mut model[s];
                let accepts = matches!(m.state, ModelState::Initializing | ModelState::Active);
                match result {
                    Ok(w) => {
                        prop_assert!(accepts && m.pending.len() < PER_SESSION);
                        prop_assert!(!m.pending.contains(&id) && global < GLOBAL);
                        m.pending.insert(id);
                        waiters.push(w);
                    }
                    Err(SessionError::NotAccepting(_)) => prop_assert!(!accepts),
                    Err(SessionError::TooManyRequests {
                        scope: LimitScope::Session,
                        ..
                    }) => {
                        prop_assert!(accepts && m.pending.len() >= PER_SESSION)
                    }
                    Err(SessionError::DuplicateRequest(_)) => {
                        prop_assert!(
                            accepts && m.pending.len() < PER_SESSION && m.pending.contains(&id)
                        )
                    }
                    Err(SessionError::TooManyRequests {
                        scope: LimitScope::Global,
                        ..
                    }) => {
                        prop_assert!(accepts && !m.pending.contains(&id) && global >= GLOBAL)
                    }
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                }
            }
            Op::Take(s, id) => {
                let taken = guards[s].take_pending(&id.into());
                prop_assert_eq!(taken.is_some(), model[s].pending.remove(&id));
            }
        }
        for (g, m) in guards.iter().zip(&model) {
            prop_assert!(
                same(&g.state(), m.state),
                "{:?} vs {:?}",
                g.state(),
                m.state
            );
            prop_assert_eq!(g.pending_len(), m.pending.len());
            prop_assert_eq!(
                g.is_ended(),
                matches!(m.state, ModelState::Closed | ModelState::Failed)
            );
        }
        prop_assert_eq!(
            registry.pending_len(),
            model.iter().map(|m| m.pending.len()).sum::<usize>()
        );
        let live = model
            .iter()
            .filter(|m| !matches!(m.state, ModelState::Closed | ModelState::Failed))
            .count();
        prop_assert_eq!(registry.len(), live);
    }
    drop(guards);
    prop_assert_eq!(registry.len(), 0);
    prop_assert_eq!(registry.pending_len(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn state_machine_and_pending_table_match_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}
