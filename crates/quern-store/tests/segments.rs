//! Chunk segments against a real Postgres with pgvector: writes land in the hot segment and are found at once; the
//! life cycle (seal, bulk build, tiered merge) keeps every chunk searchable and queries on the indexes; deletes made
//! during a merge stay deleted; a maintainer killed mid-build is replaced; the lease admits one maintainer; and
//! migration 4 converts a filled single table in place; half-precision storage goes through the same life cycle;
//! a search reads every segment once, also while maintenance seals, builds and swaps merges in.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use pgvector::Vector;
use quern_core::Job;
use quern_store::migrate::MIGRATIONS;
use quern_store::segments::MAINTENANCE_LEASE;
use quern_store::StoreConfig;
use quern_store::{
    ChunkRow, DocumentChange, DocumentCommit, DocumentState, HnswParams, JobVersion, Maintainer, MaintenanceStep,
    SegmentPolicy, SegmentState, Store, VectorStorage,
};
use quern_testkit::{TestDatabase, TEST_DIM};

/// Seals at `seal_rows`, merges pairs: small numbers make every step of the life cycle happen in a test.
fn policy(seal_rows: u64) -> SegmentPolicy {
    SegmentPolicy {
        seal_rows,
        merge_factor: 2,
        hnsw: HnswParams { m: 8, ef_construction: 32 },
        maintenance_work_mem: None,
        seal_when_quiet: None,
    }
}

/// A vector of its own for each `n` below `TEST_DIM²`: mostly along axis `n % TEST_DIM`, partly along another axis
/// picked by `n / TEST_DIM`, so that each document is the one clear nearest of its own vector.
fn axis_vector(n: usize) -> Vector {
    let mut values = vec![0.01_f32; TEST_DIM];
    values[n % TEST_DIM] = 1.0;
    values[(n / TEST_DIM + TEST_DIM / 2) % TEST_DIM] += 0.5;
    Vector::from(values)
}

/// Writes documents `first..first + count` of collection `docs`, one chunk each, through the writers' path.
async fn write_documents(store: &Store, first: usize, count: usize) {
    let commits: Vec<DocumentCommit> = (first..first + count)
        .map(|i| {
            let document = format!("doc-{i}");
            let job = Job::upsert("docs", &document, "text");
            let text = format!("chunk of {document}");
            let change = DocumentChange::Replace {
                document: DocumentState {
                    content_sha256: quern_core::digest::content_sha256(&text),
                    embedding_model: "test-model".into(),
                    chunking: "chars:1000:200".into(),
                    metadata: None,
                },
                chunks: vec![ChunkRow {
                    content_sha256: quern_core::digest::content_sha256(&text),
                    content: text,
                    embedding: axis_vector(i),
                }],
            };
            DocumentCommit::new(&job, JobVersion { at: Utc::now(), job_id: job.job_id }, change)
        })
        .collect();
    for group in commits.chunks(200) {
        store.commit_documents(group).await.expect("commit documents");
    }
}

/// (segment, state, rows) of every segment, oldest first.
async fn layout(store: &Store) -> Vec<(i64, SegmentState, u64)> {
    let status = store.segments_status().await.expect("segments status");
    status.segments.iter().map(|s| (s.id, s.state, s.rows)).collect()
}

/// Rows of `quern_chunks` per document id `doc-i` present, sorted.
async fn documents_present(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query("SELECT document_id FROM quern_chunks ORDER BY document_id", &[])
        .await
        .expect("read chunks")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn a_committed_chunk_is_in_the_hot_segment_and_found_at_once() {
    let db = TestDatabase::create(TEST_DIM).await;
    let store = db.store();
    assert_eq!(layout(&store).await, vec![(1, SegmentState::Indexed, 0), (2, SegmentState::Hot, 0)]);
    write_documents(&store, 0, 3).await;
    assert_eq!(layout(&store).await[1], (2, SegmentState::Hot, 3));
    let hits = store.search("docs", axis_vector(1), 1).await.expect("search");
    assert_eq!(hits[0].document_id, "doc-1");
    assert!(hits[0].score > 0.99, "{}", hits[0].score);
    db.drop_database().await;
}

#[tokio::test]
async fn seal_build_and_tiered_merges_keep_every_chunk_searchable_through_the_indexes() {
    let db = TestDatabase::create(TEST_DIM).await;
    let store = db.store();
    let client = db.client().await;
    let mut maintainer = Maintainer::new(store.clone(), policy(40));

    write_documents(&store, 0, 30).await;
    // The migration's first segment has no rows: it is dropped rather than merged.
    let steps = maintainer.run_until_idle().await.unwrap();
    assert_eq!(steps, vec![MaintenanceStep::Dropped { segment: 1 }], "30 rows: the hot segment is not full");
    write_documents(&store, 30, 10).await;
    let steps = maintainer.run_until_idle().await.unwrap();
    assert!(matches!(steps[0], MaintenanceStep::Sealed { segment: 2, rows: 40, next: 3 }), "{steps:?}");
    assert!(matches!(steps[1], MaintenanceStep::Built { segment: 2, replaced_invalid: false, .. }), "{steps:?}");
    assert_eq!(steps.len(), 2, "one segment in its tier: nothing to merge yet: {steps:?}");
    assert_eq!(layout(&store).await, vec![(2, SegmentState::Indexed, 40), (3, SegmentState::Hot, 0)]);

    write_documents(&store, 40, 40).await;
    let steps = maintainer.run_until_idle().await.unwrap();
    assert!(matches!(steps[1], MaintenanceStep::Built { segment: 3, .. }), "{steps:?}");
    // Two segments of the smallest tier: merged (merge factor 2).
    assert!(matches!(&steps[2], MaintenanceStep::Merged { from, into: 5, rows: 80, .. } if from == &[2, 3]));
    assert_eq!(layout(&store).await, vec![(4, SegmentState::Hot, 0), (5, SegmentState::Indexed, 80)]);
    write_documents(&store, 80, 5).await;

    // Every document is still there once, and each query finds its own document first: from the merged
    // segment's index and from the hot segment's exact scan alike.
    assert_eq!(documents_present(&client).await.len(), 85);
    assert_eq!(db.duplicate_chunk_rows().await, 0);
    for i in [3, 41, 79, 82] {
        let hits = store.search("docs", axis_vector(i), 3).await.expect("search");
        assert_eq!(hits[0].document_id, format!("doc-{i}"), "{hits:?}");
    }
    // The plain query an application runs can read the indexed segment through its HNSW index. (At 80 rows a
    // sequential scan is cheaper and the planner rightly takes it; the README shows the plan at 100,000 rows.)
    client.batch_execute("ANALYZE quern_chunks; SET enable_seqscan = off").await.unwrap();
    let plan: Vec<String> = client
        .query("EXPLAIN SELECT document_id FROM quern_chunks ORDER BY embedding <=> $1 LIMIT 5", &[&axis_vector(7)])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("Index Scan using quern_chunks_segment_5_hnsw"), "{plan}");
    assert!(plan.contains("quern_chunks_segment_4"), "the hot segment is read too: {plan}");
    db.drop_database().await;
}

#[tokio::test]
async fn rows_deleted_while_a_merge_waits_to_swap_stay_deleted() {
    let db = TestDatabase::create(TEST_DIM).await;
    let store = db.store();
    let client = db.client().await;
    let mut maintainer = Maintainer::new(store.clone(), policy(20));
    // Two indexed segments of 20 rows, 2 and 3 (the empty first one dropped): their merge is due.
    write_documents(&store, 0, 20).await;
    maintainer.run_until_idle().await.unwrap();
    write_documents(&store, 20, 20).await;
    assert!(matches!(maintainer.step().await.unwrap(), Some(MaintenanceStep::Sealed { segment: 3, .. })));
    assert!(matches!(maintainer.step().await.unwrap(), Some(MaintenanceStep::Built { segment: 3, .. })));
    assert_eq!(
        layout(&store).await,
        vec![(2, SegmentState::Indexed, 20), (3, SegmentState::Indexed, 20), (4, SegmentState::Hot, 0)]
    );

    // A writer deletes rows of segment 2 and holds its transaction open: the merge copies, indexes, then waits
    // for its swap lock in vain and keeps its table for the next step.
    let mut writer = db.client().await;
    let tx = writer.transaction().await.unwrap();
    tx.execute("DELETE FROM quern_chunks WHERE document_id IN ('doc-3', 'doc-4')", &[]).await.unwrap();
    assert_eq!(maintainer.step().await.unwrap(), None, "the swap could not take its lock");
    let merging = layout(&store).await;
    assert!(merging.iter().any(|(_, state, _)| *state == SegmentState::Merging), "{merging:?}");
    tx.commit().await.unwrap();

    let step = maintainer.step().await.unwrap();
    assert!(matches!(&step, Some(MaintenanceStep::Merged { from, rows: 38, .. }) if from == &[2, 3]), "{step:?}");
    let present = documents_present(&client).await;
    assert_eq!(present.len(), 38);
    assert!(!present.contains(&"doc-3".to_owned()) && !present.contains(&"doc-4".to_owned()), "{present:?}");
    db.drop_database().await;
}

#[tokio::test]
async fn a_maintainer_killed_mid_build_is_replaced_by_another() {
    let db = TestDatabase::create(TEST_DIM).await;
    let store = db.store();
    let mut first = Maintainer::new(store.clone(), policy(10));
    let mut second = Maintainer::new(store.clone(), policy(10));
    write_documents(&store, 0, 10).await;
    assert!(first.acquire().await.unwrap());
    assert!(!second.acquire().await.unwrap(), "one maintainer at a time");
    assert!(matches!(first.step().await.unwrap(), Some(MaintenanceStep::Sealed { segment: 2, .. })));

    // An open write transaction on segment 2 holds its concurrent build in its first phase: the build has
    // started (its invalid index exists) when the maintainer's session dies.
    let writer = db.client().await;
    writer.batch_execute("BEGIN; LOCK TABLE quern_chunks_segment_2 IN ROW EXCLUSIVE MODE").await.unwrap();
    let building = tokio::spawn(async move { first.step().await });
    let observer = db.client().await;
    let build_pid = || async {
        observer
            .query_opt(
                "SELECT pid FROM pg_stat_progress_create_index WHERE relid = 'quern_chunks_segment_2'::regclass",
                &[],
            )
            .await
            .ok()
            .flatten()
            .map(|row| row.get::<_, i32>(0))
    };
    assert!(quern_testkit::wait_until(Duration::from_secs(10), || async { build_pid().await.is_some() }).await);
    let pid = build_pid().await.expect("the build's backend");
    observer.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap();
    assert!(building.await.unwrap().is_err(), "the step fails with its session");
    writer.batch_execute("COMMIT").await.unwrap();

    let mut took_over = false;
    for _ in 0..150 {
        if second.acquire().await.unwrap_or(false) {
            took_over = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(took_over, "the lease was never freed");
    let steps = second.run_until_idle().await.unwrap();
    assert!(
        matches!(steps[0], MaintenanceStep::Built { segment: 2, replaced_invalid: true, .. }),
        "the interrupted build's invalid index is replaced: {steps:?}"
    );
    let status = store.segments_status().await.unwrap();
    let two = status.segments.iter().find(|s| s.id == 2 || s.merged_from.contains(&2)).expect("segment 2 or its merge");
    assert!(two.index.as_ref().is_some_and(|index| index.valid), "{two:?}");
    assert!(status.maintainer_pid.is_some(), "the second maintainer holds the lease");
    db.drop_database().await;
}

#[tokio::test]
async fn a_merge_left_half_done_by_a_dead_maintainer_is_cleared() {
    let db = TestDatabase::create(TEST_DIM).await;
    let store = db.store();
    let client = db.client().await;
    write_documents(&store, 0, 5).await;
    // What a maintainer dying while copying leaves: the merge's row and its table, outside quern_chunks.
    client
        .batch_execute(
            "INSERT INTO quern_segments (segment, state, merged_from) VALUES (nextval('quern_segment_ids'), 'merging', '{1}');
             CREATE TABLE quern_chunks_segment_3 (LIKE quern_chunks)",
        )
        .await
        .unwrap();
    let mut maintainer = Maintainer::new(store.clone(), policy(100));
    let steps = maintainer.run_until_idle().await.unwrap();
    assert_eq!(
        steps,
        vec![
            MaintenanceStep::Recovered { dropped_tables: vec!["quern_chunks_segment_3".into()], unindexed: vec![] },
            MaintenanceStep::Dropped { segment: 1 },
        ]
    );
    assert_eq!(layout(&store).await, vec![(2, SegmentState::Hot, 5)]);
    db.drop_database().await;
}

#[tokio::test]
async fn migration_4_converts_a_filled_single_table_in_place() {
    let db = TestDatabase::create_empty().await;
    let client = db.client().await;
    // The schema as migrations 1 to 3 left it, recorded as the runner records it.
    client
        .batch_execute(
            "CREATE TABLE quern_schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
             checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .unwrap();
    for migration in &MIGRATIONS[..3] {
        client.batch_execute(&migration.sql.replace("{{dimension}}", &TEST_DIM.to_string())).await.unwrap();
        client
            .execute(
                "INSERT INTO quern_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                &[&migration.version, &migration.name, &quern_core::digest::content_sha256(migration.sql)],
            )
            .await
            .unwrap();
    }
    db.insert_random_chunks(2000, TEST_DIM).await;
    let store = db.store();
    // Half precision asked for: a filled table keeps its storage (converting it is a rewrite no upgrade should do).
    let report = store.migrate_with_storage(TEST_DIM, VectorStorage::Halfvec).await.expect("migrate");
    let later: Vec<i32> = MIGRATIONS[3..].iter().map(|migration| migration.version).collect();
    assert_eq!(report.applied, later, "4 and every later migration");
    assert_eq!(store.vector_storage().await.unwrap(), VectorStorage::Vector);

    // The old table is segment 1, its rows and its HNSW index kept; new writes go to segment 2.
    assert_eq!(layout(&store).await, vec![(1, SegmentState::Indexed, 2000), (2, SegmentState::Hot, 0)]);
    let status = store.segments_status().await.unwrap();
    let index = status.segments[0].index.clone().expect("the old index");
    assert_eq!(index.name, "quern_chunks_segment_1_hnsw");
    assert!(index.valid);
    write_documents(&store, 5000, 1).await;
    assert_eq!(layout(&store).await[1], (2, SegmentState::Hot, 1));
    let hits = store.search("docs", axis_vector(5000), 1).await.unwrap();
    assert_eq!(hits[0].document_id, "doc-5000");
    // A re-ingest of a document stored before the migration replaces its chunk across segments.
    write_documents(&store, 7, 1).await;
    let rows: i64 =
        client.query_one("SELECT count(*) FROM quern_chunks WHERE document_id = 'doc-7'", &[]).await.unwrap().get(0);
    assert_eq!(rows, 1);
    assert_eq!(layout(&store).await[0], (1, SegmentState::Indexed, 1999));
    db.drop_database().await;
}

#[tokio::test]
async fn the_lease_is_free_again_once_its_holder_releases_it() {
    let db = TestDatabase::create(TEST_DIM).await;
    let store = db.store();
    let other = db.client().await;
    other.execute("SELECT pg_advisory_lock($1)", &[&MAINTENANCE_LEASE]).await.unwrap();
    let mut maintainer = Maintainer::new(store.clone(), policy(1));
    write_documents(&store, 0, 3).await;
    assert_eq!(maintainer.step().await.unwrap(), None, "another session holds the lease: nothing is done");
    assert_eq!(layout(&store).await[1], (2, SegmentState::Hot, 3));
    other.execute("SELECT pg_advisory_unlock($1)", &[&MAINTENANCE_LEASE]).await.unwrap();
    assert!(matches!(maintainer.step().await.unwrap(), Some(MaintenanceStep::Sealed { segment: 2, rows: 3, .. })));
    db.drop_database().await;
}

#[tokio::test]
async fn sealers_seal_only_under_the_lease_and_never_one_segment_twice() {
    let db = TestDatabase::create(TEST_DIM).await;
    let store = db.store();
    let mut maintainer = Maintainer::new(store.clone(), policy(10));
    let (mut first, mut second) = (maintainer.sealer(), maintainer.sealer());
    write_documents(&store, 0, 10).await;
    assert_eq!(first.seal_if_due().await.unwrap(), None, "the maintainer does not hold the lease");
    assert!(maintainer.acquire().await.unwrap());
    // Both may find segment 2 full; the second to take the switch lock finds it sealed and leaves it.
    let (a, b) = tokio::join!(first.seal_if_due(), second.seal_if_due());
    let sealed: Vec<MaintenanceStep> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert!(matches!(sealed[..], [MaintenanceStep::Sealed { segment: 2, rows: 10, .. }]), "{sealed:?}");
    let states: Vec<SegmentState> = layout(&store).await.into_iter().map(|(_, state, _)| state).collect();
    assert_eq!(states, vec![SegmentState::Indexed, SegmentState::Sealed, SegmentState::Hot]);
    db.drop_database().await;
}

#[tokio::test]
async fn a_quiet_hot_segment_is_sealed_early_once_it_holds_a_tenth_of_a_full_one() {
    let db = TestDatabase::create(TEST_DIM).await;
    let store = db.store();
    let quiet = Duration::from_millis(300);
    let mut maintainer = Maintainer::new(store.clone(), SegmentPolicy { seal_when_quiet: Some(quiet), ..policy(100) });
    assert!(maintainer.acquire().await.unwrap());
    let mut sealer = maintainer.sealer();
    // 9 rows: under a tenth of 100, cheaper to scan than to index; never sealed for quiet.
    write_documents(&store, 0, 9).await;
    for _ in 0..3 {
        assert_eq!(sealer.seal_if_due().await.unwrap(), None);
        tokio::time::sleep(quiet).await;
    }
    // A tenth: sealed once no row has come for the quiet period, counted from when the count last changed.
    write_documents(&store, 9, 1).await;
    assert_eq!(sealer.seal_if_due().await.unwrap(), None, "the count just changed");
    tokio::time::sleep(quiet / 2).await;
    assert_eq!(sealer.seal_if_due().await.unwrap(), None, "not quiet for long enough yet");
    tokio::time::sleep(quiet).await;
    let sealed = sealer.seal_if_due().await.unwrap();
    assert!(matches!(sealed, Some(MaintenanceStep::Sealed { segment: 2, rows: 10, next: 3 })), "{sealed:?}");
    db.drop_database().await;
}

#[tokio::test]
async fn half_precision_storage_goes_through_the_whole_life_cycle() {
    let db = TestDatabase::create_with_storage(TEST_DIM, VectorStorage::Halfvec).await;
    let store = db.store();
    let client = db.client().await;
    assert_eq!(store.vector_storage().await.unwrap(), VectorStorage::Halfvec);
    let mut maintainer = Maintainer::new(store.clone(), policy(40));

    // Written and found in the hot segment at once (exact scan of half-precision vectors).
    write_documents(&store, 0, 40).await;
    let hits = store.search("docs", axis_vector(5), 1).await.unwrap();
    assert_eq!(hits[0].document_id, "doc-5");
    let steps = maintainer.run_until_idle().await.unwrap();
    assert!(steps.iter().any(|step| matches!(step, MaintenanceStep::Built { .. })), "{steps:?}");
    write_documents(&store, 40, 40).await;
    let steps = maintainer.run_until_idle().await.unwrap();
    assert!(steps.iter().any(|step| matches!(step, MaintenanceStep::Merged { rows: 80, .. })), "{steps:?}");

    // The indexes use the half-precision operator class, and each row takes half the bytes.
    let status = store.segments_status().await.unwrap();
    assert_eq!(status.storage, VectorStorage::Halfvec);
    let indexed: Vec<_> = status.segments.iter().filter(|s| s.state == SegmentState::Indexed).collect();
    assert_eq!(indexed.len(), 1, "{:?}", status.segments);
    let index = indexed[0].index.as_ref().expect("the merged segment's index");
    assert!(index.valid && index.definition.contains("halfvec_cosine_ops"), "{index:?}");
    let bytes: i32 =
        client.query_one("SELECT max(pg_column_size(embedding)) FROM quern_chunks", &[]).await.unwrap().get(0);
    assert_eq!(bytes as usize, 8 + 2 * TEST_DIM, "2 bytes per dimension and an 8-byte header");

    // Every document is its own nearest through the index; the hot segment is searched beside it.
    write_documents(&store, 80, 3).await;
    for i in [3, 41, 79, 81] {
        let hits = store.search("docs", axis_vector(i), 3).await.expect("search");
        assert_eq!(hits[0].document_id, format!("doc-{i}"), "{hits:?}");
    }
    // An application's plain query with a `vector` parameter reads the segment through its half-precision index.
    client.batch_execute("ANALYZE quern_chunks; SET enable_seqscan = off").await.unwrap();
    let plan: Vec<String> = client
        .query(
            "EXPLAIN SELECT document_id FROM quern_chunks ORDER BY embedding <=> $1::vector LIMIT 5",
            &[&axis_vector(7)],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(plan.join("\n").contains(&format!("Index Scan using {}", index.name)), "{plan:?}");
    // Unchanged chunks are reused at half precision: the stored vector comes back within f16's rounding.
    let sha = quern_core::digest::content_sha256("chunk of doc-3");
    let reused = store.reusable_vectors("docs", "doc-3", "test-model", &[sha.as_str()]).await.unwrap();
    let stored = reused.get(&sha).expect("the stored vector");
    for (read, written) in stored.as_slice().iter().zip(axis_vector(3).as_slice()) {
        assert!((read - written).abs() < 1e-3, "{read} against {written}");
    }
    db.drop_database().await;
}

#[tokio::test]
async fn a_store_in_a_schema_of_its_own_has_its_own_tables_and_lease() {
    // An empty database: the shadow store migrates first, so pgvector must still land where the default
    // schema's tables find it.
    let db = TestDatabase::create_empty().await;
    let shadow_config = StoreConfig { schema: Some("quern_shadow".into()), ..StoreConfig::new(db.url.clone()) };
    let shadow = Store::connect(&shadow_config).expect("shadow store");
    assert_eq!(shadow.schema(), Some("quern_shadow"));
    shadow.migrate(TEST_DIM).await.expect("migrate the shadow schema");
    let production = db.store();
    production.migrate(TEST_DIM).await.expect("migrate the default schema");

    write_documents(&shadow, 0, 3).await;
    write_documents(&production, 100, 1).await;
    let client = db.client().await;
    let count = |table: &'static str| {
        let client = &client;
        async move { client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!((count("quern_shadow.quern_chunks").await, count("public.quern_chunks").await), (3, 1));
    assert_eq!(shadow.search("docs", axis_vector(2), 1).await.unwrap()[0].document_id, "doc-2");
    assert_eq!(production.search("docs", axis_vector(2), 1).await.unwrap()[0].document_id, "doc-100");

    // Each schema's maintainer holds its own lease at once, and seals and indexes only its own segments.
    let production_before = layout(&production).await;
    let mut shadow_maintainer = Maintainer::new(shadow.clone(), policy(1));
    let mut production_maintainer = Maintainer::new(production.clone(), policy(1));
    assert!(production_maintainer.acquire().await.unwrap(), "production's lease");
    assert!(shadow_maintainer.acquire().await.unwrap(), "the shadow's lease, while production holds its own");
    shadow_maintainer.run_until_idle().await.expect("shadow maintenance");
    let indexed: u64 = layout(&shadow).await.iter().filter(|s| s.1 == SegmentState::Indexed).map(|s| s.2).sum();
    assert_eq!(indexed, 3, "the shadow's rows sealed and indexed");
    assert_eq!(layout(&production).await, production_before, "production's segments untouched");
    shadow_maintainer.release().await;
    production_maintainer.release().await;

    let bad = StoreConfig { schema: Some("Robert'); DROP".into()), ..StoreConfig::new(db.url.clone()) };
    assert!(Store::connect(&bad).unwrap_err().to_string().contains("must be 1-63 lower-case letters"));
    db.drop_database().await;
}

/// Document ids `doc-i` for `range`, sorted as strings.
fn documents(range: std::ops::Range<usize>) -> Vec<String> {
    let mut ids: Vec<String> = range.map(|i| format!("doc-{i}")).collect();
    ids.sort();
    ids
}

/// Document ids of `hits`, sorted, asserting that none appears twice and that the nearest come first.
fn distinct_documents(hits: &[quern_store::SearchHit]) -> Vec<String> {
    assert!(hits.windows(2).all(|pair| pair[0].score >= pair[1].score), "nearest first: {hits:?}");
    let mut ids: Vec<String> = hits.iter().map(|hit| hit.document_id.clone()).collect();
    ids.sort();
    let count = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), count, "a document found twice: {hits:?}");
    ids
}

#[tokio::test]
async fn a_search_reads_every_segment_once_and_keeps_the_nearest_k() {
    let db = TestDatabase::create(TEST_DIM).await;
    let store = db.store();
    // Two indexed segments of 40 rows (no merge: a factor of 4) and 5 rows in the hot segment.
    let mut maintainer = Maintainer::new(store.clone(), SegmentPolicy { merge_factor: 4, ..policy(40) });
    write_documents(&store, 0, 40).await;
    maintainer.run_until_idle().await.unwrap();
    write_documents(&store, 40, 40).await;
    maintainer.run_until_idle().await.unwrap();
    write_documents(&store, 80, 5).await;
    assert_eq!(
        layout(&store).await,
        vec![(2, SegmentState::Indexed, 40), (3, SegmentState::Indexed, 40), (4, SegmentState::Hot, 5)]
    );
    let widths = store.search_widths(10).await.unwrap();
    assert_eq!(widths.iter().map(|w| (w.segment, w.rows, w.ef_search)).collect::<Vec<_>>(), [(2, 40, 20), (3, 40, 20)]);

    // Asked for more than there are: every chunk, from both indexes and the exact scan, each once.
    let query = axis_vector(41);
    let all = store.search("docs", query.clone(), 1000).await.unwrap();
    assert_eq!(distinct_documents(&all), documents(0..85));
    // Asked for 7: the 7 nearest of them all, wherever they are stored (by score: the test vectors tie).
    let scores =
        |hits: &[quern_store::SearchHit]| hits.iter().map(|h| (h.score * 1e6).round() as i64).collect::<Vec<_>>();
    let nearest = store.search("docs", query.clone(), 7).await.unwrap();
    assert_eq!(scores(&nearest), scores(&all[..7]), "{nearest:?}");
    assert_eq!(nearest[0].document_id, "doc-41");
    // A fixed width for every segment finds the same.
    let fixed = store.search_with_ef("docs", query, 7, 5).await.unwrap();
    assert_eq!(scores(&fixed), scores(&all[..7]), "{fixed:?}");
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_during_seals_builds_and_merge_swaps_find_every_chunk_once() {
    let db = TestDatabase::create(TEST_DIM).await;
    let store = db.store();
    let mut maintainer = Maintainer::new(store.clone(), policy(20));
    let mut searched = 0;
    for round in 0..6 {
        write_documents(&store, round * 20, 20).await;
        let expected = documents(0..(round + 1) * 20);
        // Searches run back to back while the maintainer seals, builds, merges and swaps.
        let done = Arc::new(AtomicBool::new(false));
        let searcher = {
            let (store, done, expected) = (store.clone(), done.clone(), expected.clone());
            tokio::spawn(async move {
                let mut count = 0;
                loop {
                    let stop = done.load(Ordering::Acquire);
                    let hits = store.search("docs", axis_vector(count % 100), 1000).await.expect("search");
                    assert_eq!(distinct_documents(&hits), expected, "search {count} of round {round}");
                    count += 1;
                    if stop {
                        return count;
                    }
                }
            })
        };
        let steps = maintainer.run_until_idle().await.unwrap();
        assert!(steps.iter().any(|step| matches!(step, MaintenanceStep::Sealed { .. })), "{steps:?}");
        done.store(true, Ordering::Release);
        searched += searcher.await.expect("the searches found every chunk once");
    }
    let merged = layout(&store).await.iter().filter(|s| s.1 == SegmentState::Indexed).count();
    assert!(merged < 6, "six sealed segments were merged: {:?}", layout(&store).await);
    assert!(searched >= 6, "{searched}");
    db.drop_database().await;
}
