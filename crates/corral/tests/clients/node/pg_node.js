// node-postgres against Corral's PG door: a parameterised query (extended protocol, $1 and $2
// bound by the driver), printed as JSON rows for crates/corral/tests/pg.rs to compare.
//   node pg_node.js HOST PORT TOKEN
const { Client } = require("pg");

async function main() {
  const [host, port, token] = process.argv.slice(2);
  const client = new Client({ host, port: Number(port), user: "token", password: token, database: "corral" });
  await client.connect();
  try {
    const { rows } = await client.query(
      "SELECT device, temperature, door_open FROM readings WHERE device = $1 AND temperature > $2 AND door_open",
      ["truck-2", 7.0],
    );
    console.log(JSON.stringify(rows));
  } finally {
    await client.end();
  }
}

main().catch((e) => {
  console.error(e.message);
  process.exit(1);
});
