//! The six fleet queries, each written in every system's own language over the same data, and
//! the comparison of Corral's answers with PostgreSQL's.
//!
//! Corral's line protocol door consumes the `name` tag as the device (`?device_tag=name`), so
//! Corral's SQL says `device` where PostgreSQL's says `name`; Corral's tags are strings, so numeric
//! tags are cast. PostgreSQL uses the TSBS TimescaleDB-style `DISTINCT ON` for "latest per truck";
//! Corral reads its `latest` schema, which holds exactly those rows (each device's newest).
//! VictoriaMetrics gets MetricsQL only where a faithful equivalent exists; otherwise `n/a` and why.

use crate::fleet::format_ns;
use serde_json::Value;

/// A VictoriaMetrics instant query (`/api/v1/query?query=&time=`), or why there is none.
pub type Metricsql = Result<(String, f64), &'static str>;

pub struct Query {
    pub name: &'static str,
    pub corral: String,
    pub postgres: String,
    pub influx: Result<String, &'static str>,
    pub victoria: Metricsql,
}

/// The queries for data spanning `[start_ns, end_ns)` (`end_ns` = one interval after the last row).
pub fn fleet_queries(start_ns: i64, end_ns: i64) -> Vec<Query> {
    let end = format_ns(end_ns);
    let win_start = format_ns(end_ns - 600_000_000_000);
    let day0 = format_ns(start_ns - start_ns.rem_euclid(86_400_000_000_000));
    let sql_ts = |s: &str| format!("TIMESTAMP '{}'", s.trim_end_matches('Z').replace('T', " "));
    // (t - 1 ms) so that MetricsQL's (t - d, t] windows are [start, end) for 10 s-aligned samples
    let vm_end = end_ns as f64 / 1e9 - 0.001;
    let span_s = (end_ns - start_ns) / 1_000_000_000;
    vec![
        Query {
            name: "last location per truck (fleet South)",
            corral: "SELECT device, driver, latitude, longitude FROM latest.readings WHERE fleet = 'South'".into(),
            postgres: "SELECT DISTINCT ON (name) name, driver, latitude, longitude FROM readings \
                       WHERE fleet = 'South' ORDER BY name, time DESC"
                .into(),
            influx: Ok("SELECT latitude, longitude, driver FROM \"readings\" WHERE fleet = 'South' \
                        GROUP BY \"name\" ORDER BY time DESC LIMIT 1"
                .into()),
            victoria: Ok(("last_over_time({__name__=~\"readings_(latitude|longitude)\", fleet=\"South\"}[1h])".into(), vm_end)),
        },
        Query {
            name: "trucks with fuel below 10% (latest diagnostics)",
            corral: "SELECT device, driver, fuel_state FROM latest.diagnostics WHERE fuel_state < 0.1".into(),
            postgres: "SELECT name, driver, fuel_state FROM (SELECT DISTINCT ON (name) name, driver, fuel_state \
                       FROM diagnostics ORDER BY name, time DESC) d WHERE fuel_state < 0.1"
                .into(),
            influx: Ok("SELECT fuel_state FROM (SELECT last(fuel_state) AS fuel_state FROM \"diagnostics\" \
                        GROUP BY \"name\") WHERE fuel_state < 0.1 GROUP BY \"name\""
                .into()),
            victoria: Ok(("last_over_time(diagnostics_fuel_state[1h]) < 0.1".into(), vm_end)),
        },
        Query {
            name: "trucks with load above 90% of capacity",
            corral: "SELECT device, driver, current_load, load_capacity FROM latest.diagnostics \
                     WHERE current_load > 0.9 * CAST(load_capacity AS DOUBLE)"
                .into(),
            postgres: "SELECT name, driver, current_load, load_capacity FROM (SELECT DISTINCT ON (name) name, driver, \
                       current_load, load_capacity FROM diagnostics ORDER BY name, time DESC) d \
                       WHERE current_load > 0.9 * load_capacity"
                .into(),
            influx: Err("load_capacity is a tag; InfluxQL cannot compare a field with a tag"),
            victoria: Ok((
                "last_over_time(diagnostics_current_load[1h]) > 0.9 * \
                 label_value(last_over_time(diagnostics_current_load[1h]), \"load_capacity\")"
                    .into(),
                vm_end,
            )),
        },
        Query {
            name: "stationary trucks (avg velocity < 1, last 10 min, fleet West)",
            corral: format!(
                "SELECT device, driver FROM readings WHERE fleet = 'West' AND time >= {} AND time < {} \
                 GROUP BY device, driver HAVING avg(velocity) < 1",
                sql_ts(&win_start),
                sql_ts(&end)
            ),
            postgres: format!(
                "SELECT name, driver FROM readings WHERE fleet = 'West' AND time >= '{win_start}' AND time < '{end}' \
                 GROUP BY name, driver HAVING avg(velocity) < 1"
            ),
            influx: Ok(format!(
                "SELECT mean_velocity FROM (SELECT mean(velocity) AS mean_velocity FROM \"readings\" WHERE fleet = 'West' \
                 AND time >= '{win_start}' AND time < '{end}' GROUP BY \"name\", driver) WHERE mean_velocity < 1 \
                 GROUP BY \"name\", driver"
            )),
            victoria: Ok(("avg_over_time(readings_velocity{fleet=\"West\"}[10m]) < 1".into(), vm_end)),
        },
        Query {
            name: "average load by fleet and model",
            corral: "SELECT fleet, model, avg(current_load) FROM diagnostics GROUP BY fleet, model".into(),
            postgres: "SELECT fleet, model, avg(current_load) FROM diagnostics GROUP BY fleet, model".into(),
            influx: Ok("SELECT mean(current_load) FROM \"diagnostics\" GROUP BY fleet, model".into()),
            victoria: Ok((
                format!(
                    "sum by (fleet, model) (sum_over_time(diagnostics_current_load[{span_s}s])) / \
                     sum by (fleet, model) (count_over_time(diagnostics_current_load[{span_s}s]))"
                ),
                vm_end,
            )),
        },
        Query {
            name: "daily activity per fleet (10-min windows with avg velocity > 1)",
            corral: "SELECT to_char(date_trunc('day', w), '%Y-%m-%d') AS day, fleet, count(*) AS active FROM \
                     (SELECT date_bin(INTERVAL '10 minutes', time) AS w, device, fleet, avg(velocity) AS v \
                     FROM readings GROUP BY 1, 2, 3) t WHERE v > 1 GROUP BY 1, 2"
                .into(),
            postgres: "SELECT to_char(date_trunc('day', w), 'YYYY-MM-DD') AS day, fleet, count(*) AS active FROM \
                       (SELECT date_bin('10 minutes', time, TIMESTAMPTZ '2000-01-01') AS w, name, fleet, \
                       avg(velocity) AS v FROM readings GROUP BY 1, 2, 3) t WHERE v > 1 GROUP BY 1, 2"
                .into(),
            influx: Ok(format!(
                "SELECT count(v) FROM (SELECT mean(velocity) AS v FROM \"readings\" WHERE time >= '{day0}' AND time < '{end}' \
                 GROUP BY time(10m), \"name\", fleet) WHERE v > 1 AND time >= '{day0}' AND time < '{end}' \
                 GROUP BY time(1d), fleet"
            )),
            victoria: Err("MetricsQL subqueries do not give clock-aligned 10-minute windows per day"),
        },
    ]
}

/// One cell, normalised: `None` is NULL.
pub type Cell = Option<String>;

/// Corral's JSON rows as cells.
pub fn corral_rows(answer: &Value) -> Vec<Vec<Cell>> {
    answer["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            r.as_array()
                .into_iter()
                .flatten()
                .map(|v| match v {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                })
                .collect()
        })
        .collect()
}

fn cell_eq(a: &Cell, b: &Cell) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(x), Ok(y)) => (x - y).abs() <= 1e-6 * x.abs().max(y.abs()).max(1.0),
            _ => a == b,
        },
        _ => false,
    }
}

/// Sorted rows equal, numbers within 1e-6 (relative above 1). `Err` says where they differ.
pub fn compare(mut corral: Vec<Vec<Cell>>, mut postgres: Vec<Vec<Cell>>) -> Result<usize, String> {
    let key = |r: &Vec<Cell>| r.iter().map(|c| c.clone().unwrap_or_default()).collect::<Vec<_>>().join("\u{1f}");
    corral.sort_by_key(key);
    postgres.sort_by_key(key);
    if corral.len() != postgres.len() {
        return Err(format!("{} rows vs {} rows", corral.len(), postgres.len()));
    }
    for (a, b) in corral.iter().zip(&postgres) {
        if a.len() != b.len() || !a.iter().zip(b).all(|(x, y)| cell_eq(x, y)) {
            return Err(format!("row {a:?} vs {b:?}"));
        }
    }
    Ok(corral.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_sorted_with_tolerance() {
        let c = vec![vec![Some("b".into()), Some("1.0000000001".into())], vec![Some("a".into()), None]];
        let p = vec![vec![Some("a".into()), None], vec![Some("b".into()), Some("1".into())]];
        assert_eq!(compare(c.clone(), p), Ok(2));
        assert!(compare(c, vec![]).is_err());
        assert_eq!(fleet_queries(0, 7_200_000_000_000).len(), 6);
    }
}
