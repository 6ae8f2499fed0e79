//! openraft's storage conformance suite, run on [`LogStore`] and [`StateMachine`] over real
//! files in a temporary directory (DESIGN §8, level 3).

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;

use crate::log_store::LogStore;
use crate::state_machine::StateMachine;
use crate::type_config::TypeConfig;

/// Small segments so the suite's logs span several files and purges delete some.
const SEGMENT_BYTES_FOR_TESTS: u64 = 256;

struct FileStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for FileStoreBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let log = LogStore::open(&dir.path().join("log"), SEGMENT_BYTES_FOR_TESTS)
            .expect("open log store");
        let state_machine = StateMachine::open(&dir.path().join("state"), "conformance".into())
            .expect("open state machine");
        Ok((dir, log, state_machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_store_and_state_machine_pass_openraft_storage_suite() {
    Suite::test_all(FileStoreBuilder)
        .await
        .expect("openraft storage suite");
}
