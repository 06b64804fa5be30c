//! The HNSW vector index against a real Postgres with pgvector: its status, search without it, a rebuild with other
//! parameters and its progress, an invalid leftover replaced, a build elsewhere left alone, bad settings refused.

use std::time::Duration;

use pgvector::Vector;
use quern_store::{HnswParams, IndexBuildProgress, IndexBuildSettings, IndexCreation, IndexError, Store};
use quern_testkit::{TestDatabase, TEST_DIM};

/// The default build settings with other HNSW parameters.
fn custom_settings(m: u32, ef_construction: u32) -> IndexBuildSettings {
    IndexBuildSettings { hnsw: HnswParams { m, ef_construction }, ..IndexBuildSettings::default() }
}

async fn create(store: &Store, settings: &IndexBuildSettings) -> Result<IndexCreation, IndexError> {
    store.create_vector_index(settings, |_| {}).await
}

/// Holds a write lock on `quern_chunks` until the returned client commits: a concurrent build waits for it.
async fn hold_writer(db: &TestDatabase) -> tokio_postgres::Client {
    let client = db.client().await;
    client.batch_execute("BEGIN; LOCK TABLE quern_chunks IN ROW EXCLUSIVE MODE").await.expect("lock");
    client
}

/// Waits for a `CREATE INDEX` on `quern_chunks` to show in the progress view; returns its backend pid.
async fn running_build_pid(db: &TestDatabase) -> i32 {
    let client = db.client().await;
    for _ in 0..100 {
        let row = client
            .query_opt("SELECT pid FROM pg_stat_progress_create_index WHERE relid = 'quern_chunks'::regclass", &[])
            .await
            .expect("read progress");
        if let Some(row) = row {
            return row.get(0);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no index build showed up");
}

#[tokio::test]
async fn the_migration_creates_a_valid_index() {
    let db = TestDatabase::create(TEST_DIM).await;
    db.insert_random_chunks(10, TEST_DIM).await;
    let status = db.store().vector_index_status().await.unwrap();
    let index = status.index.expect("the migration's index");
    assert_eq!(index.name, "quern_chunks_embedding_hnsw");
    assert!(index.valid);
    assert!(index.definition.contains("USING hnsw (embedding vector_cosine_ops)"), "{}", index.definition);
    assert!(index.size_bytes > 0);
    assert_eq!(status.running_build, None);
    assert_eq!(status.chunk_rows, 10);
    db.drop_database().await;
}

#[tokio::test]
async fn search_finds_the_exact_nearest_chunks_without_the_index() {
    let db = TestDatabase::create(TEST_DIM).await;
    let store = db.store();
    db.insert_random_chunks(300, TEST_DIM).await;
    assert!(store.drop_vector_index().await.unwrap(), "the index existed");
    assert_eq!(store.vector_index_status().await.unwrap().index, None);
    assert!(!store.drop_vector_index().await.unwrap(), "dropping it again is a no-op");

    // The nearest chunks by cosine distance, worked out here from the stored vectors.
    let rows = db.client().await.query("SELECT document_id, embedding FROM quern_chunks", &[]).await.unwrap();
    let vectors: Vec<(String, Vec<f32>)> =
        rows.iter().map(|row| (row.get(0), row.get::<_, Vector>(1).to_vec())).collect();
    let query: Vec<f32> = (0..TEST_DIM).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
    let cosine = |v: &[f32]| {
        let dot: f32 = v.iter().zip(&query).map(|(a, b)| a * b).sum();
        let norm = |x: &[f32]| x.iter().map(|a| a * a).sum::<f32>().sqrt();
        dot / (norm(v) * norm(&query))
    };
    let mut expected: Vec<(f32, &str)> = vectors.iter().map(|(id, v)| (cosine(v), id.as_str())).collect();
    expected.sort_by(|a, b| b.0.total_cmp(&a.0));

    let hits = store.search("docs", Vector::from(query.clone()), 5).await.unwrap();
    let found: Vec<&str> = hits.iter().map(|hit| hit.document_id.as_str()).collect();
    let nearest: Vec<&str> = expected.iter().take(5).map(|(_, id)| *id).collect();
    assert_eq!(found, nearest);
    assert!((hits[0].score - f64::from(expected[0].0)).abs() < 1e-4);
    db.drop_database().await;
}

#[tokio::test]
async fn create_rebuilds_the_index_with_the_given_parameters_and_reports_progress() {
    let db = TestDatabase::create(TEST_DIM).await;
    let store = db.store();
    db.insert_random_chunks(2_000, TEST_DIM).await;
    assert!(store.drop_vector_index().await.unwrap());

    let settings = IndexBuildSettings {
        hnsw: HnswParams { m: 8, ef_construction: 32 },
        maintenance_work_mem: Some("128MB".into()),
        parallel_workers: Some(0),
    };
    let mut reports: Vec<IndexBuildProgress> = Vec::new();
    let outcome = store.create_vector_index(&settings, |report| reports.push(report.clone())).await.unwrap();
    let IndexCreation::Created { index, duration, replaced_invalid } = outcome else {
        panic!("not built: {outcome:?}");
    };
    assert!(index.valid);
    assert!(!replaced_invalid);
    assert!(duration > Duration::ZERO);
    assert!(index.definition.contains("WITH (m='8', ef_construction='32')"), "{}", index.definition);

    let last = reports.last().expect("a progress report");
    assert_eq!((last.phase.as_str(), last.tuples_done, last.tuples_total), ("done", 2_000, 2_000));
    // Reports read from Postgres during the load, if the build lasted long enough to see any.
    for report in reports.iter().filter(|r| r.phase.starts_with("building index")) {
        assert_eq!(report.tuples_total, 2_000, "{report:?}");
    }

    let again = create(&store, &IndexBuildSettings::default()).await.unwrap();
    assert!(matches!(again, IndexCreation::AlreadyExists(ref existing) if *existing == index), "{again:?}");
    db.drop_database().await;
}

#[tokio::test]
async fn an_invalid_leftover_is_replaced() {
    let db = TestDatabase::create(TEST_DIM).await;
    let store = db.store();
    db.insert_random_chunks(100, TEST_DIM).await;
    // What a failed or interrupted `CREATE INDEX CONCURRENTLY` leaves.
    db.client()
        .await
        .execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'quern_chunks_embedding_hnsw'::regclass",
            &[],
        )
        .await
        .expect("invalidate the index");
    let status = store.vector_index_status().await.unwrap();
    assert_eq!(status.index.as_ref().map(|index| index.valid), Some(false));
    assert_eq!(status.running_build, None, "a leftover, not a build in progress");

    let outcome = create(&store, &custom_settings(12, 48)).await.unwrap();
    let IndexCreation::Created { index, replaced_invalid, .. } = outcome else { panic!("not built: {outcome:?}") };
    assert!(replaced_invalid);
    assert!(index.valid);
    assert!(index.definition.contains("m='12'"), "{}", index.definition);
    db.drop_database().await;
}

#[tokio::test]
async fn a_build_running_elsewhere_is_neither_dropped_nor_duplicated() {
    let db = TestDatabase::create(TEST_DIM).await;
    let store = db.store();
    db.insert_random_chunks(100, TEST_DIM).await;
    assert!(store.drop_vector_index().await.unwrap());

    let writer = hold_writer(&db).await;
    let builder = db.client().await;
    let build = tokio::spawn(async move {
        builder
            .batch_execute(
                "CREATE INDEX CONCURRENTLY quern_chunks_embedding_hnsw ON quern_chunks
                 USING hnsw (embedding vector_cosine_ops)",
            )
            .await
    });
    let pid = running_build_pid(&db).await;

    let status = store.vector_index_status().await.unwrap();
    assert_eq!(status.running_build.as_ref().map(|b| b.pid), Some(pid));
    assert_eq!(status.index.as_ref().map(|index| index.valid), Some(false));
    let create_error = create(&store, &IndexBuildSettings::default()).await.unwrap_err();
    let drop_error = store.drop_vector_index().await.unwrap_err();
    for error in [create_error, drop_error] {
        assert!(matches!(error, IndexError::BuildRunning(ref b) if b.pid == pid), "{error}");
        assert!(error.to_string().contains(&format!("pg_cancel_backend({pid})")), "{error}");
    }

    writer.batch_execute("COMMIT").await.unwrap();
    build.await.unwrap().expect("the other build finishes");
    assert!(store.vector_index().await.unwrap().expect("index").valid);
    db.drop_database().await;
}

#[tokio::test]
async fn a_failed_build_drops_its_unfinished_index() {
    let db = TestDatabase::create(TEST_DIM).await;
    let store = db.store();
    db.insert_random_chunks(100, TEST_DIM).await;
    assert!(store.drop_vector_index().await.unwrap());

    // The build waits for this writer; meanwhile it is cancelled, as an operator's pg_cancel_backend would. The
    // writer then finishes, as writers do, which lets the unfinished index be dropped.
    let writer = hold_writer(&db).await;
    let canceller = db.client().await;
    let cancel = async {
        let pid = running_build_pid(&db).await;
        canceller.execute("SELECT pg_cancel_backend($1)", &[&pid]).await.expect("cancel");
        writer.batch_execute("COMMIT").await.unwrap();
    };
    let settings = IndexBuildSettings::default();
    let (result, ()) = tokio::join!(create(&store, &settings), cancel);
    let error = result.unwrap_err();
    assert!(matches!(error, IndexError::BuildFailed { invalid_index_left: false, .. }), "{error}");
    assert!(error.to_string().contains("canceling statement due to user request"), "{error}");
    assert_eq!(store.vector_index().await.unwrap(), None);
    db.drop_database().await;
}

#[tokio::test]
async fn bad_settings_are_refused_naming_the_flag() {
    let db = TestDatabase::create(TEST_DIM).await;
    let store = db.store();
    let cases = [
        (custom_settings(1, 64), "--m must be between 2 and 100, got 1"),
        (custom_settings(101, 1000), "--m must be between 2 and 100, got 101"),
        (custom_settings(16, 1001), "--ef-construction must be between 4 and 1000, got 1001"),
        (custom_settings(16, 20), "--ef-construction must be at least 2 × --m = 32, got 20"),
        (
            IndexBuildSettings { parallel_workers: Some(5_000), ..IndexBuildSettings::default() },
            "--parallel-workers must be at most 1024",
        ),
        (
            IndexBuildSettings { maintenance_work_mem: Some("lots".into()), ..IndexBuildSettings::default() },
            r#"--maintenance-work-mem was refused by Postgres: invalid value for parameter "maintenance_work_mem""#,
        ),
    ];
    for (settings, message) in cases {
        // Drop the index so a refusal cannot pass for "already exists".
        store.drop_vector_index().await.unwrap();
        let error = create(&store, &settings).await.unwrap_err();
        assert!(matches!(error, IndexError::InvalidSetting { .. }), "{error:?}");
        assert!(error.to_string().starts_with(message), "{error}");
        assert_eq!(store.vector_index().await.unwrap(), None, "nothing was built");
    }
    db.drop_database().await;
}
