//! SQL: error oracles and a differential against a server holding one tenant's data.

use super::*;
use corral_testkit::ADMIN_TOKEN;

/// Error oracles: each query fails exactly when its guess about globex's data is true. Unscoped,
/// the true guess must fail (else the oracle proves nothing); acme's viewer must get the same
/// answer, its own rows counted, whether the guess is true or false.
async fn assert_oracles_closed(server: &TestServer, viewer: &str) {
    let temperature = ("device = 'globex-d1' AND temperature > 50", "device = 'globex-d1' AND temperature > 500");
    let cases = [
        ("telemetry", temperature, ACME_ROWS, ALL_ROWS),
        ("latest.telemetry", temperature, 3, 5),
        ("devices", ("device = 'globex-d1'", "device = 'globex-d9'"), 3, 5),
    ];
    for (table, (true_guess, false_guess), acme, all) in cases {
        let query = |guess: &str| {
            format!("SELECT count(*) AS n FROM {table} WHERE CAST(CASE WHEN {guess} THEN 'x' ELSE '1' END AS INT) = 1")
        };
        let (status, out) = sql(server, ADMIN_TOKEN, &query(true_guess)).await;
        assert_ne!(status, 200, "unscoped, the true guess must fail on {table} or this oracle tests nothing: {out}");
        assert_eq!(sql(server, ADMIN_TOKEN, &query(false_guess)).await, (200, json!([[all]])), "{table}");
        for guess in [true_guess, false_guess] {
            let answer = sql(server, viewer, &query(guess)).await;
            assert_eq!(answer, (200, json!([[acme]])), "acme's answer on {table} must not depend on globex's data ({guess})");
        }
    }
}

#[tokio::test]
async fn an_sql_error_never_reveals_another_tenants_rows() {
    let mut server = TestServer::start(BIN).await;
    populate(&server, &["acme", "globex"]).await;
    let viewer = server.api_token("acme-viewer", "viewer", Some("acme")).await;
    // From the write buffer...
    assert_oracles_closed(&server, &viewer).await;
    assert_names_are_the_tenants(&server, &viewer).await;
    // ...and from Parquet, where user filters are pushed into decoding and statistics pruning.
    assert_eq!(server.terminate(), Some(0), "SIGTERM persists to Parquet; log:\n{}", server.log_text());
    assert!(server.data_dir().join("store/tables/telemetry").is_dir(), "telemetry was persisted to Parquet");
    server.restart();
    assert_oracles_closed(&server, &viewer).await;
    assert_names_are_the_tenants(&server, &viewer).await;
}

/// The names globex gave its table (`vault`) and its field (`pin_code`) are globex's: acme's
/// viewer meets them nowhere, and asking for them fails exactly as for names nobody used.
async fn assert_names_are_the_tenants(server: &TestServer, viewer: &str) {
    for (sql, theirs) in [("SELECT * FROM telemetry LIMIT 1", "pin_code"), ("SELECT * FROM latest.telemetry LIMIT 1", "pin_code")]
    {
        let (status, out) = server.call(Method::POST, "/api/v1/query", viewer, Some(json!({"sql": sql}))).await;
        assert_eq!(status, 200, "{sql}: {out}");
        assert_eq!(out["columns"], json!(["time", "device", "temperature"]), "{sql}: no {theirs} for acme");
        let (status, out) = server.call(Method::POST, "/api/v1/query", ADMIN_TOKEN, Some(json!({"sql": sql}))).await;
        assert_eq!(status, 200, "{sql}: {out}");
        assert!(out["columns"].as_array().unwrap().contains(&json!(theirs)), "unscoped, {theirs} is there: {out}");
    }
    let catalog = "SELECT table_name, column_name FROM information_schema.columns \
                   WHERE table_schema IN ('public', 'latest') AND (column_name = 'pin_code' OR table_name = 'vault') \
                   ORDER BY 1, 2";
    assert_eq!(sql(server, viewer, catalog).await, (200, json!([])));
    assert_ne!(sql(server, ADMIN_TOKEN, catalog).await, (200, json!([])), "unscoped, the catalog lists them");
    let tables = "SELECT table_name FROM information_schema.tables WHERE table_name = 'vault'";
    assert_eq!(sql(server, viewer, tables).await, (200, json!([])));
    // Their names fail as names nobody used do: the same status, the same message but the name.
    for (theirs, nobodys) in [
        ("SELECT pin_code FROM telemetry", "SELECT pin_kode FROM telemetry"),
        ("SELECT * FROM vault", "SELECT * FROM vaulx"),
        ("SELECT * FROM latest.vault", "SELECT * FROM latest.vaulx"),
    ] {
        let (status, theirs_error) = sql(server, viewer, theirs).await;
        let (other_status, nobodys_error) = sql(server, viewer, nobodys).await;
        assert_eq!((status, other_status), (400, 400), "{theirs_error} / {nobodys_error}");
        let unname = |e: &Value| {
            e.to_string().replace("pin_code", "X").replace("pin_kode", "X").replace("vaulx", "X").replace("vault", "X")
        };
        assert_eq!(unname(&theirs_error), unname(&nobodys_error));
    }
}

/// A small deterministic generator (no dependency): Knuth's MMIX LCG, high bits.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }

    /// -10.0..=80.0 in steps of 0.5: often exactly a stored value, to probe the boundaries.
    fn temperature(&mut self) -> f64 {
        self.below(181) as f64 * 0.5 - 10.0
    }
}

fn random_query(lcg: &mut Lcg) -> String {
    const SITES: [&str; 4] = ["north", "south", "east", "west"];
    const PREFIXES: [&str; 7] = ["", "a", "acme", "acme-d1", "g", "globex", "globex-d1"];
    let c = format!("{:.1}", lcg.temperature());
    let (x, y) = (lcg.temperature(), lcg.temperature());
    let (a, b) = (format!("{:.1}", x.min(y)), format!("{:.1}", x.max(y)));
    let site = SITES[lcg.below(SITES.len() as u64) as usize];
    let prefix = PREFIXES[lcg.below(PREFIXES.len() as u64) as usize];
    match lcg.below(10) {
        0 => format!(
            "SELECT device, count(*), sum(temperature) FROM telemetry WHERE temperature > {c} GROUP BY device ORDER BY device"
        ),
        1 => format!(
            "SELECT t.device, d.site, t.temperature FROM telemetry t JOIN devices d USING (device) WHERE t.temperature < {c} ORDER BY 1, 3"
        ),
        2 => format!("SELECT count(*) FROM latest.telemetry WHERE temperature BETWEEN {a} AND {b}"),
        3 => format!("SELECT device FROM devices WHERE site = '{site}' ORDER BY device"),
        4 => format!("SELECT max(temperature) FROM telemetry WHERE device LIKE '{prefix}%'"),
        5 => format!("SELECT count(*) FROM telemetry WHERE CAST(CASE WHEN temperature > {c} THEN 'x' ELSE '1' END AS INT) = 1"),
        6 => format!(
            "SELECT l.device, d.profile, l.temperature FROM latest.telemetry l JOIN devices d USING (device) WHERE d.site = '{site}' ORDER BY 1"
        ),
        7 => {
            format!("SELECT count(*) FROM devices WHERE CAST(CASE WHEN device LIKE '{prefix}%' THEN 'x' ELSE '1' END AS INT) = 1")
        }
        // `*`: the same columns as a server that never heard of globex's fields.
        8 => format!("SELECT * FROM telemetry WHERE temperature > {c} ORDER BY device, time"),
        _ => format!("SELECT * FROM latest.telemetry WHERE device LIKE '{prefix}%' ORDER BY device"),
    }
}

/// Differential: whatever acme's viewer asks of a shared server, it must get exactly what an
/// admin gets from a server that never held globex's data: the same status and the same rows.
#[tokio::test]
async fn a_tenants_sql_answers_are_those_of_a_server_holding_only_its_data() {
    let shared = TestServer::start(BIN).await;
    populate(&shared, &["acme", "globex"]).await;
    let viewer = shared.api_token("acme-viewer", "viewer", Some("acme")).await;
    let alone = TestServer::start(BIN).await;
    populate(&alone, &["acme"]).await;

    let mut lcg = Lcg(16);
    let mut answered = 0;
    for n in 0..60 {
        let query = random_query(&mut lcg);
        let (scoped, reference) = (sql(&shared, &viewer, &query).await, sql(&alone, ADMIN_TOKEN, &query).await);
        assert_eq!(
            scoped.0, reference.0,
            "query {n}, status: {query}\nshared, acme viewer: {}\nacme alone: {}",
            scoped.1, reference.1
        );
        if scoped.0 == 200 {
            assert_eq!(scoped.1, reference.1, "query {n}, rows: {query}");
            answered += 1;
        }
    }
    assert!(answered >= 30, "only {answered} of 60 queries answered: the comparison is mostly of errors");
}
