//! The seeded bootstrap simulation (see `concord_sim::bootstrap`):
//! members that find each other by v3 discovery or DNS SRV under bootstrap
//! faults. `MADSIM_TEST_NUM=N` runs N seeds from `MADSIM_TEST_SEED`.
#![cfg(madsim)]

use concord_sim::bootstrap::{self, Options};

/// `CONCORD_SIM_PLANT=<Bug>` runs it with a planted bug.
#[tokio::test]
async fn bootstrap() {
    if let Ok(name) = std::env::var("CONCORD_SIM_PLANT") {
        let bug = concord::planted::Bug::from_name(&name).expect("a planted bug's name");
        concord::planted::set(Some(bug));
    }
    let report = bootstrap::run(Options::from_seed()).await;
    eprintln!("{report}");
    assert!(report.violations.is_empty(), "{report}");
}
