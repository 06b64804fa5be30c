//! Jobs past a limit are dead-lettered on the first attempt, with the limit named, and no embedding call.

use quern_core::Outcome;
use quern_testkit::fake_embedder::FakeEmbedderConfig;

use crate::helpers::{document_text, upsert, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_limit_dead_letters_with_its_name() {
    let harness = Harness::start("limits", FakeEmbedderConfig::default()).await;
    let pipeline =
        harness.pipeline(&["--max-message-bytes", "4000", "--max-document-chars", "1500", "--max-chunks", "3"]).await;
    let cases = [
        (document_text(1, 700), "limit_message_bytes", "max_message_bytes"),
        (document_text(2, 250), "limit_document_chars", "max_document_chars"),
        (document_text(3, 180), "limit_chunks", "max_chunks"),
    ];
    for (text, reason, named) in cases {
        let outcome = pipeline.process_delivery(&upsert("c", "doc", &text).encode(), 0).await;
        let Outcome::DeadLetter { failure, failed_attempts } = outcome else { panic!("{reason}: {outcome:?}") };
        assert_eq!(failure.reason, reason);
        assert!(failure.detail.contains(named), "{}", failure.detail);
        assert_eq!(failed_attempts, 1);
    }
    assert_eq!(harness.embedder.stats().snapshot().requests, 0, "nothing over a limit is embedded");
    assert_eq!(pipeline.process_delivery(&upsert("c", "doc", &document_text(4, 60)).encode(), 0).await, Outcome::Ack);
    harness.cleanup().await;
}
