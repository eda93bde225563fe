//! `corral-bench fleet-gen`: a deterministic truck fleet in the shape of the TSBS "iot" use case.
//!
//! Two tables, one row per truck every 10 s:
//! - `readings`: latitude, longitude, elevation, velocity, heading, grade, fuel_consumption;
//! - `diagnostics`: fuel_state, current_load, status (integer).
//!
//! Every row carries the truck's tags, as TSBS does: name (`truck_N`), fleet, driver, model,
//! device_version, load_capacity, fuel_capacity, nominal_fuel_consumption. Values are bounded
//! random walks. About 1% of rows are missing, about 1% of field values are null (omitted in line
//! protocol, empty in CSV) and about 2% of rows are out of order (swapped with a later row of
//! the same truck at most 50 s away). The same seed gives the same bytes.
//!
//! Output in `--out`: `readings.lp`, `diagnostics.lp` (line protocol, ns timestamps) and
//! `readings.csv`, `diagnostics.csv` (header line, then the same rows in the same order, for
//! PostgreSQL `COPY ... CSV`; time as RFC 3339 UTC).

use anyhow::Context;
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub const INTERVAL_NS: i64 = 10_000_000_000;
pub const TAGS: [&str; 8] =
    ["name", "fleet", "driver", "model", "device_version", "load_capacity", "fuel_capacity", "nominal_fuel_consumption"];
pub const READINGS: [&str; 7] = ["latitude", "longitude", "elevation", "velocity", "heading", "grade", "fuel_consumption"];
pub const DIAGNOSTICS: [&str; 3] = ["fuel_state", "current_load", "status"];
const FLEETS: [&str; 4] = ["East", "West", "North", "South"];
const DRIVERS: [&str; 10] = ["Albert", "Derek", "Andy", "Seth", "Trish", "Rodney", "Nina", "Ivan", "Marta", "Kofi"];
/// model, load capacity, fuel capacity, nominal fuel consumption
const MODELS: [(&str, u32, u32, u32); 3] = [("F-150", 2000, 200, 15), ("G-2000", 5000, 300, 19), ("H-2", 1500, 150, 12)];
const VERSIONS: [&str; 4] = ["v1.0", "v1.5", "v2.0", "v2.3"];

#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    /// Trucks in the fleet.
    #[arg(long, default_value_t = 100)]
    pub trucks: usize,
    /// Hours of data, one row per truck and table every 10 s.
    #[arg(long, default_value_t = 6)]
    pub hours: u64,
    /// Seed of the random walks (same seed, same files).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Time of the first row (RFC 3339, UTC).
    #[arg(long, default_value = "2026-01-01T00:00:00Z")]
    pub start: String,
    /// Directory for readings.lp, diagnostics.lp, readings.csv, diagnostics.csv.
    #[arg(long, default_value = "target/bench/fleet")]
    pub out: PathBuf,
}

/// What was written: rows and non-null values per table, and the time span.
#[derive(Debug, Clone, Default)]
pub struct FleetSummary {
    pub readings_rows: u64,
    pub readings_values: u64,
    pub diagnostics_rows: u64,
    pub diagnostics_values: u64,
    pub start_ns: i64,
    pub end_ns: i64,
}

struct Truck {
    tags: [String; 8],
    /// latitude, longitude, elevation, velocity, heading, grade, fuel_consumption, fuel_state, current_load, status
    state: [f64; 10],
    load_capacity: f64,
}

/// One generated row: time, truck index, field values (None = null).
struct Row {
    time_ns: i64,
    truck: usize,
    values: Vec<Option<String>>,
}

pub fn run(args: FleetArgs) -> anyhow::Result<()> {
    let s = generate(&args)?;
    println!(
        "fleet-gen: {} trucks x {} h (seed {}): readings {} rows / {} values, diagnostics {} rows / {} values -> {}",
        args.trucks,
        args.hours,
        args.seed,
        s.readings_rows,
        s.readings_values,
        s.diagnostics_rows,
        s.diagnostics_values,
        args.out.display()
    );
    Ok(())
}

pub fn parse_rfc3339_ns(s: &str) -> anyhow::Result<i64> {
    let t = chrono::DateTime::parse_from_rfc3339(s.trim()).context("start must look like 2026-01-01T00:00:00Z")?;
    t.timestamp_nanos_opt().context("start is out of range")
}

/// RFC 3339 UTC text of a ns timestamp (whole seconds).
pub fn format_ns(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn walk(rng: &mut StdRng, v: f64, step: f64, lo: f64, hi: f64) -> f64 {
    let n = v + rng.random_range(-step..=step);
    if n < lo {
        lo + (lo - n).min(hi - lo)
    } else if n > hi {
        hi - (n - hi).min(hi - lo)
    } else {
        n
    }
}

pub fn generate(args: &FleetArgs) -> anyhow::Result<FleetSummary> {
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let start_ns = parse_rfc3339_ns(&args.start)?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut trucks: Vec<Truck> = (0..args.trucks)
        .map(|i| {
            let (model, load, fuel, nominal) = MODELS[rng.random_range(0..MODELS.len())];
            let tags = [
                format!("truck_{i}"),
                FLEETS[rng.random_range(0..FLEETS.len())].to_string(),
                DRIVERS[rng.random_range(0..DRIVERS.len())].to_string(),
                model.to_string(),
                VERSIONS[rng.random_range(0..VERSIONS.len())].to_string(),
                load.to_string(),
                fuel.to_string(),
                nominal.to_string(),
            ];
            let state = [
                rng.random_range(-60.0..60.0),
                rng.random_range(-170.0..170.0),
                rng.random_range(0.0..1000.0),
                // ~30% of the trucks start parked (and stay so for hours), so "stationary trucks" finds some
                if rng.random_bool(0.3) { 0.0 } else { rng.random_range(0.0..80.0) },
                rng.random_range(0.0..360.0),
                rng.random_range(0.0..10.0),
                rng.random_range(0.0..nominal as f64 * 2.0),
                rng.random_range(0.02..1.0),
                rng.random_range(0.0..load as f64),
                rng.random_range(0.0..5.0f64).floor(),
            ];
            Truck { tags, state, load_capacity: load as f64 }
        })
        .collect();
    let steps = (args.hours * 3600 * 1_000_000_000 / INTERVAL_NS as u64) as i64;
    let mut readings = Vec::with_capacity(steps as usize * args.trucks);
    let mut diagnostics = Vec::with_capacity(steps as usize * args.trucks);
    for step in 0..steps {
        let time_ns = start_ns + step * INTERVAL_NS;
        for (i, t) in trucks.iter_mut().enumerate() {
            let s = &mut t.state;
            s[0] = walk(&mut rng, s[0], 0.001, -90.0, 90.0);
            s[1] = walk(&mut rng, s[1], 0.001, -180.0, 180.0);
            s[2] = walk(&mut rng, s[2], 2.0, 0.0, 5000.0);
            s[3] = if s[3] < 1.0 && rng.random_bool(0.9995) {
                walk(&mut rng, s[3], 0.1, 0.0, 1.0)
            } else {
                walk(&mut rng, s[3], 3.0, 0.0, 100.0)
            };
            s[4] = walk(&mut rng, s[4], 5.0, 0.0, 360.0);
            s[5] = walk(&mut rng, s[5], 0.5, 0.0, 100.0);
            s[6] = walk(&mut rng, s[6], 0.5, 0.0, 50.0);
            s[7] = if s[7] < 0.03 { 1.0 } else { walk(&mut rng, s[7] - 0.0005, 0.001, 0.0, 1.0) };
            s[8] = walk(&mut rng, s[8], t.load_capacity * 0.02, 0.0, t.load_capacity);
            if rng.random_bool(0.01) {
                s[9] = rng.random_range(0..5) as f64;
            }
            let r: Vec<String> = vec![
                format!("{:.5}", s[0]),
                format!("{:.5}", s[1]),
                format!("{:.1}", s[2]),
                format!("{:.2}", s[3]),
                format!("{:.1}", s[4]),
                format!("{:.2}", s[5]),
                format!("{:.2}", s[6]),
            ];
            let d: Vec<String> = vec![format!("{:.4}", s[7]), format!("{:.1}", s[8]), format!("{}", s[9] as i64)];
            for (fields, out) in [(r, &mut readings), (d, &mut diagnostics)] {
                if rng.random_bool(0.01) {
                    continue; // a missing row
                }
                let mut values: Vec<Option<String>> =
                    fields.into_iter().map(|v| if rng.random_bool(0.01) { None } else { Some(v) }).collect();
                if values.iter().all(Option::is_none) {
                    values[0] = Some("0".into()); // a line protocol line needs one field
                }
                out.push(Row { time_ns, truck: i, values });
            }
        }
    }
    let mut summary = FleetSummary { start_ns, end_ns: start_ns + (steps - 1).max(0) * INTERVAL_NS, ..Default::default() };
    for (name, fields, rows) in [("readings", &READINGS[..], &mut readings), ("diagnostics", &DIAGNOSTICS[..], &mut diagnostics)]
    {
        shuffle_neighbours(&mut rng, rows);
        let values = write_table(&args.out, name, fields, rows, &trucks)?;
        if name == "readings" {
            (summary.readings_rows, summary.readings_values) = (rows.len() as u64, values);
        } else {
            (summary.diagnostics_rows, summary.diagnostics_values) = (rows.len() as u64, values);
        }
    }
    Ok(summary)
}

/// ~2% of rows swap places with a later row of the same truck at most 50 s away.
fn shuffle_neighbours(rng: &mut StdRng, rows: &mut [Row]) {
    let n = rows.len();
    for i in 0..n {
        if !rng.random_bool(0.02) {
            continue;
        }
        let mut j = i + 1;
        while j < n && rows[j].time_ns - rows[i].time_ns <= 50_000_000_000 {
            if rows[j].truck == rows[i].truck && rows[j].time_ns > rows[i].time_ns && rng.random_bool(0.5) {
                rows.swap(i, j);
                break;
            }
            j += 1;
        }
    }
}

fn write_table(dir: &Path, name: &str, fields: &[&str], rows: &[Row], trucks: &[Truck]) -> anyhow::Result<u64> {
    let mut lp = BufWriter::new(std::fs::File::create(dir.join(format!("{name}.lp")))?);
    let mut csv = BufWriter::new(std::fs::File::create(dir.join(format!("{name}.csv")))?);
    writeln!(csv, "time,{},{}", TAGS.join(","), fields.join(","))?;
    let integer = |f: &str| f == "status";
    let mut values = 0;
    for row in rows {
        let t = &trucks[row.truck];
        write!(lp, "{name}")?;
        for (k, v) in TAGS.iter().zip(&t.tags) {
            write!(lp, ",{k}={v}")?;
        }
        write!(csv, "{},{}", format_ns(row.time_ns), t.tags.join(","))?;
        let mut first = true;
        for (f, v) in fields.iter().zip(&row.values) {
            match v {
                Some(v) => {
                    values += 1;
                    write!(lp, "{}{f}={v}{}", if first { ' ' } else { ',' }, if integer(f) { "i" } else { "" })?;
                    write!(csv, ",{v}")?;
                    first = false;
                }
                None => write!(csv, ",")?,
            }
        }
        writeln!(lp, " {}", row.time_ns)?;
        writeln!(csv)?;
    }
    lp.flush()?;
    csv.flush()?;
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path, seed: u64) -> FleetArgs {
        FleetArgs { trucks: 5, hours: 1, seed, start: "2026-01-01T00:00:00Z".into(), out: dir.to_path_buf() }
    }

    #[test]
    fn deterministic_and_csv_matches_lp() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let sa = generate(&args(a.path(), 7)).unwrap();
        generate(&args(b.path(), 7)).unwrap();
        for f in ["readings.lp", "diagnostics.lp", "readings.csv", "diagnostics.csv"] {
            assert_eq!(std::fs::read(a.path().join(f)).unwrap(), std::fs::read(b.path().join(f)).unwrap(), "{f}");
        }
        let lp = std::fs::read_to_string(a.path().join("readings.lp")).unwrap();
        let csv = std::fs::read_to_string(a.path().join("readings.csv")).unwrap();
        assert_eq!(lp.lines().count() as u64, sa.readings_rows);
        assert_eq!(csv.lines().count() as u64, sa.readings_rows + 1);
        assert!(sa.readings_rows < 5 * 360 && sa.readings_rows > 5 * 340, "about 1% missing");
        // same values, same order
        let lp_values: usize = lp.lines().map(|l| l.split(' ').nth(1).unwrap().split(',').count()).sum();
        let csv_values: usize = csv.lines().skip(1).map(|l| l.split(',').skip(9).filter(|v| !v.is_empty()).count()).sum();
        assert_eq!(lp_values, csv_values);
        assert_eq!(lp_values as u64, sa.readings_values);
        let times: Vec<i64> = lp.lines().map(|l| l.rsplit(' ').next().unwrap().parse().unwrap()).collect();
        assert!(times.windows(2).any(|w| w[0] > w[1]), "some rows out of order");
        assert_eq!(format_ns(parse_rfc3339_ns("2026-03-01T12:34:56Z").unwrap()), "2026-03-01T12:34:56Z");
    }
}
