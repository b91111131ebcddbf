// Load generator for the server benchmark, run as its own process: N clients on one
// socket, each pinging every `everyMs`, for `ms`. It prints nothing; the probe that
// measures latency runs in another process, so the load's own event loop does not
// show up in the probe's round trips.
import { PingConn } from "./_bench_util.ts";
import { delay } from "../src/protocol/async.ts";

const [path, clientsArg, everyArg, msArg] = Deno.args;
const clients = Number(clientsArg);
const everyMs = Number(everyArg);
const until = performance.now() + Number(msArg);
const conns = await Promise.all(Array.from({ length: clients }, () => PingConn.open(path)));
await Promise.all(conns.map(async (c, i) => {
  await delay((i * everyMs) / clients); // spread the phases
  try {
    while (performance.now() < until) {
      const t0 = performance.now();
      await c.ping();
      const wait = everyMs - (performance.now() - t0);
      if (wait > 0) await delay(wait);
    }
  } catch {
    // the server went away: the probe reports it
  }
}));
for (const c of conns) c.close();
