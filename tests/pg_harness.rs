//! The PostgreSQL test harness itself: start, fresh databases, password auth, restart,
//! crash and recovery, a second instance with other settings.

use crate::common::pg::{self, PgServer};

#[tokio::test]
async fn shared_instance_is_logical_and_databases_are_fresh() {
    let server = PgServer::get();
    assert!(server.port() > 0);
    let a = server.fresh_db();
    let b = server.fresh_db();
    assert_ne!(a.name(), b.name());
    a.exec("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'x')")
        .await;
    assert_eq!(
        a.text_rows("SELECT v FROM t").await,
        vec![vec![Some("x".to_owned())]]
    );
    // b is another database: no table t there.
    let err = b.client().await.simple_query("SELECT * FROM t").await;
    assert!(err.is_err());
    let settings = a
        .text_rows(
            "SELECT current_setting('wal_level'), current_setting('max_replication_slots'), \
             current_setting('max_wal_senders')",
        )
        .await;
    assert_eq!(
        settings,
        vec![vec![
            Some("logical".into()),
            Some("400".into()),
            Some("100".into())
        ]]
    );
    assert_eq!(a.psql("SELECT count(*) FROM t"), "1");
    assert!(server.version() >= 10);
}

/// `LOGTIDE_PG_VERSION=<major>` (scripts/pg_matrix.sh) must really run that major: the
/// server says so itself, not only the directory the binaries came from.
#[tokio::test]
async fn server_runs_the_requested_major() {
    let server = PgServer::get();
    let db = server.fresh_db();
    let rows = db
        .text_rows("SELECT current_setting('server_version_num')::int / 10000")
        .await;
    let running: u32 = rows[0][0]
        .as_deref()
        .expect("version")
        .parse()
        .expect("int");
    assert_eq!(running, server.version(), "harness version vs server");
    if let Some(want) = pg::requested_version() {
        assert_eq!(running, want, "{} asked for {want}", pg::VERSION_ENV);
    }
}

#[tokio::test]
async fn scram_md5_and_wrong_passwords() {
    let server = PgServer::get();
    let db = server.fresh_db();
    let c = server
        .connect_as(db.name(), pg::USER, pg::PASSWORD)
        .await
        .expect("scram login");
    let method = c
        .query_one(
            "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = $1",
            &[&pg::USER],
        )
        .await
        .expect("query");
    assert!(
        method.get::<_, bool>(0),
        "logtide's password is stored as SCRAM"
    );
    let md5_stored = c
        .query_one(
            "SELECT rolpassword LIKE 'md5%' FROM pg_authid WHERE rolname = $1",
            &[&pg::MD5_USER],
        )
        .await
        .expect("query");
    assert!(
        md5_stored.get::<_, bool>(0),
        "md5 user's password is stored as md5"
    );
    server
        .connect_as(db.name(), pg::MD5_USER, pg::MD5_PASSWORD)
        .await
        .expect("md5 login");
    server
        .connect_as(db.name(), pg::PLAIN_USER, pg::PLAIN_PASSWORD)
        .await
        .expect("plain login");
    let e = server
        .connect_as(db.name(), pg::USER, "wrong")
        .await
        .expect_err("wrong password must fail");
    assert!(format!("{e:?}").contains("password"), "{e:?}");
    assert_eq!(std::env::var(pg::PASSWORD_ENV).as_deref(), Ok(pg::PASSWORD));
    assert!(server
        .source_toml(db.name(), "s")
        .contains(&format!("port = {}", server.port())));
}

#[tokio::test]
async fn text_output_helper_gives_the_servers_own_text() {
    let db = PgServer::get().fresh_db();
    let sql = "SELECT 1.50::numeric, NULL::int, '\\x00ff'::bytea, ARRAY[1,NULL]::int[], \
               'Infinity'::float8, '1 year 2 mons -3 days 04:05:06.5'::interval";
    let rows = db.text_rows(sql).await;
    assert_eq!(
        rows,
        vec![vec![
            Some("1.50".into()),
            None,
            Some("\\x00ff".into()),
            Some("{1,NULL}".into()),
            Some("Infinity".into()),
            Some("1 year 2 mons -3 days +04:05:06.5".into()),
        ]]
    );
    assert_eq!(
        db.column_oids(sql).await,
        vec![1700, 23, 17, 1007, 701, 1186]
    );
}

/// Restart and crash on a private instance (never on the shared one, which other tests use).
#[tokio::test]
async fn restart_kill9_and_start_keep_committed_data() {
    let server = PgServer::start_with(&[]);
    let db = server.fresh_db();
    db.exec("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .await;
    server.restart();
    let c = db.connect().await;
    c.batch_execute("INSERT INTO t VALUES (2)")
        .await
        .expect("insert after restart");
    server.kill9();
    assert!(
        c.simple_query("SELECT 1").await.is_err(),
        "connection is gone after kill -9"
    );
    server.start();
    let c = db.connect().await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 2);
    assert!(
        server.log().contains("database system was interrupted"),
        "crash recovery ran"
    );
}

#[tokio::test]
async fn second_instance_with_wal_level_replica() {
    let server = PgServer::start_with(&[
        ("wal_level", "replica"),
        ("logical_decoding_work_mem", "64kB"),
    ]);
    assert_ne!(server.port(), PgServer::get().port());
    let db = server.fresh_db();
    assert_eq!(
        db.text_rows(
            "SELECT current_setting('wal_level'), current_setting('logical_decoding_work_mem')"
        )
        .await,
        vec![vec![Some("replica".into()), Some("64kB".into())]]
    );
    server.set_config("wal_level", "logical");
    assert_eq!(server.psql("postgres", "SHOW wal_level"), "logical");
    let root = server.data_dir().parent().expect("root").to_owned();
    drop(server);
    assert!(
        !root.exists(),
        "dropping a private instance removes its directory"
    );
}
