// Ping probe for the LLM benchmark (bench_llm.ts), run as its own process so that the
// decoding streams' traffic does not share its event loop: raw framed pings every 2 ms
// for `ms`, then the round trips (ms) as one JSON array on stdout.
// `deno run -A scripts/ping_probe.ts SOCKET MS`
import { PingConn } from "./_bench_util.ts";
import { delay } from "../src/protocol/async.ts";

const [path, ms] = Deno.args;
const conn = await PingConn.open(path);
const out: number[] = [];
const end = performance.now() + Number(ms);
while (performance.now() < end) {
  out.push(await conn.ping());
  await delay(2);
}
conn.close();
console.log(JSON.stringify(out));
