//! Segment maintenance inside the workers: two workers ingesting while one of them (the lease holder) seals, indexes
//! and merges segments; every chunk stays stored once and searchable, and the other worker takes over the lease
//! when the holder stops.

use std::time::Duration;

use quern_testkit::fake_embedder::FakeEmbedderConfig;
use quern_testkit::{wait_until, TEST_DIM};
use tokio_util::sync::CancellationToken;

use crate::helpers::{document_text, upsert, Harness};

/// `(segment, state, rows)` of every segment.
async fn segments(client: &tokio_postgres::Client) -> Vec<(i64, String, i64)> {
    client
        .query(
            "SELECT s.segment, s.state, (SELECT count(*) FROM quern_chunks c WHERE c.segment = s.segment)
             FROM quern_segments s ORDER BY s.segment",
            &[],
        )
        .await
        .expect("segments")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_seal_index_and_merge_segments_while_ingesting_and_hand_the_lease_over() {
    let harness = Harness::start("segments", FakeEmbedderConfig::default()).await;
    let producer = harness.producer().await;
    let jobs: Vec<_> = (0..300).map(|i| upsert("c", &format!("doc-{i:03}"), &document_text(i, 12))).collect();
    let ids = producer.enqueue_many(&jobs).await.expect("enqueue");
    let flags = ["--segment-rows", "40", "--segment-merge-factor", "2", "--segment-quiet-secs", "1"];
    let (first_stop, second_stop) = (CancellationToken::new(), CancellationToken::new());
    let first = harness.spawn_worker(&[&flags[..], &["--worker-id", "w1"]].concat(), first_stop.clone());
    let second = harness.spawn_worker(&[&flags[..], &["--worker-id", "w2"]].concat(), second_stop.clone());
    let store = harness.db.store();
    let done = wait_until(Duration::from_secs(60), || async {
        store.count_finished(&ids).await.map(|c| c.succeeded == 300).unwrap_or(false)
    })
    .await;
    assert!(done, "not every job succeeded");

    // Maintenance settles: the quiet hot segment (over a tenth of 40 rows) is sealed too, every sealed segment
    // gets its index, and pairs of the same tier are merged.
    let client = harness.db.client().await;
    let settled = wait_until(Duration::from_secs(60), || async {
        let layout = segments(&client).await;
        let hot_rows = layout.iter().find(|(_, state, _)| state == "hot").map_or(0, |(_, _, rows)| *rows);
        hot_rows < 4 && layout.iter().all(|(_, state, _)| state == "hot" || state == "indexed")
    })
    .await;
    let layout = segments(&client).await;
    assert!(settled, "maintenance did not settle: {layout:?}");
    let indexed: Vec<i64> =
        layout.iter().filter(|(_, state, _)| state == "indexed").map(|(_, _, rows)| *rows).collect();
    let stored: i64 = layout.iter().map(|(_, _, rows)| rows).sum();
    assert_eq!(stored, 300, "{layout:?}");
    assert!(indexed.iter().sum::<i64>() > 296, "every chunk but a quiet few in an indexed segment: {layout:?}");
    assert!(indexed.len() < 300 / 40, "segments were merged: {layout:?}");
    assert_eq!(harness.db.duplicate_chunk_rows().await, 0);
    let query = quern_testkit::fake_embedder::embed_text(&jobs[123].text, TEST_DIM);
    let hits = store.search("c", pgvector::Vector::from(query), 1).await.expect("search");
    assert_eq!(hits[0].document_id, "doc-123");

    // The holder stops; the other worker takes the lease and seals what comes next.
    let holder: i32 = client
        .query_one(
            // Advisory locks are the whole server's: other tests' workers hold the same key in their databases.
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = $1::bigint::oid
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&(quern_store::segments::MAINTENANCE_LEASE & 0xffff_ffff)],
        )
        .await
        .expect("the lease is held")
        .get(0);
    let holder_name: String = client
        .query_one("SELECT application_name FROM pg_stat_activity WHERE pid = $1", &[&holder])
        .await
        .expect("holder")
        .get(0);
    assert_eq!(holder_name, "quern maintenance");
    first_stop.cancel();
    first.await.expect("task").expect("clean exit");
    let more: Vec<_> = (300..400).map(|i| upsert("c", &format!("doc-{i:03}"), &document_text(i, 12))).collect();
    let more_ids = producer.enqueue_many(&more).await.expect("enqueue");
    let sealed_again = wait_until(Duration::from_secs(60), || async {
        let finished = store.count_finished(&more_ids).await.map(|c| c.succeeded == 100).unwrap_or(false);
        let indexed: i64 =
            segments(&client).await.iter().filter(|(_, state, _)| state == "indexed").map(|(_, _, rows)| rows).sum();
        finished && indexed >= 396
    })
    .await;
    second_stop.cancel();
    second.await.expect("task").expect("clean exit");
    assert!(sealed_again, "the second worker did not take the maintenance over: {:?}", segments(&client).await);
    harness.cleanup().await;
}
