//! Model-based property test of the key lifecycle: random sequences of operations applied to
//! the vault and to the plain in-memory model of `vault_core::testing::model` must give the
//! same verify codes and states.

use proptest::prelude::*;
use vault_core::testing::model::{KeyLifecycle, Op};

use crate::common::*;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (proptest::option::of(0u8..4), any::<bool>())
            .prop_map(|(credits, scoped)| Op::Create { credits, scoped }),
        (0u8..6, any::<bool>(), any::<bool>(), 0u8..3).prop_map(|(key, old, scope, cost)| {
            Op::Verify {
                key,
                old,
                scope,
                cost,
            }
        }),
        (0u8..6).prop_map(|key| Op::Revoke { key }),
        (0u8..6, any::<bool>()).prop_map(|(key, disabled)| Op::Disable { key, disabled }),
        (0u8..6, any::<bool>()).prop_map(|(key, grace)| Op::Rotate { key, grace }),
        (0u8..6, proptest::option::of(0u8..4))
            .prop_map(|(key, credits)| Op::SetCredits { key, credits }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn the_vault_behaves_like_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let (_tmp, vault) = passphrase_vault();
        let mut model = KeyLifecycle::new(&vault);
        for op in &ops {
            if let Err(disagreement) = model.apply(op) {
                prop_assert!(false, "{disagreement} after {op:?}");
            }
        }
        // And the stored state agrees with the model.
        if let Err(disagreement) = model.check_stored() {
            prop_assert!(false, "{disagreement}");
        }
    }
}
