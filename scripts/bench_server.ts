// Issue 2's benchmark: ping round trip through umad vs a bare Deno Unix-socket echo,
// and 10 / 100 / 1000 concurrent clients pinging, side by side in one run.
import { connect } from "../src/client/client.ts";
import { fmt, pct, PingConn, ROOT, spawnDeno, stopChild, waitForSocket } from "./_bench_util.ts";
import { startDaemon } from "../tests/_daemon.ts";
import { delay } from "../src/protocol/async.ts";

async function rttSample(path: string, n: number): Promise<number[]> {
  const c = await PingConn.open(path);
  try {
    for (let i = 0; i < 500; i++) await c.ping(); // warm up
    const out: number[] = [];
    for (let i = 0; i < n; i++) out.push(await c.ping());
    return out;
  } finally {
    c.close();
  }
}

async function concurrent(
  path: string,
  clients: number,
  ms: number,
): Promise<{ rate: number; p99: number; errors: number; connected: number }> {
  const conns: PingConn[] = [];
  let errors = 0;
  for (let i = 0; i < clients; i++) {
    try {
      conns.push(await PingConn.open(path));
    } catch {
      errors++;
    }
  }
  const lat: number[] = [];
  let count = 0;
  const until = performance.now() + ms;
  await Promise.all(conns.map(async (c) => {
    try {
      await c.ping();
      while (performance.now() < until) {
        lat.push(await c.ping());
        count++;
      }
    } catch {
      errors++;
    }
  }));
  for (const c of conns) c.close();
  return { rate: count / (ms / 1000), p99: pct(lat, 0.99), errors, connected: conns.length };
}

/** `clients` connections, each pinging every `everyMs`, for `ms`: latency under load. */
async function paced(
  path: string,
  clients: number,
  everyMs: number,
  ms: number,
): Promise<{ p50: number; p99: number; count: number; errors: number }> {
  const conns = await Promise.all(Array.from({ length: clients }, () => PingConn.open(path)));
  const lat: number[] = [];
  let errors = 0;
  const until = performance.now() + ms;
  await Promise.all(conns.map(async (c, i) => {
    await delay((i * everyMs) / clients); // spread the phases
    try {
      while (performance.now() < until) {
        const t0 = performance.now();
        lat.push(await c.ping());
        const wait = everyMs - (performance.now() - t0);
        if (wait > 0) await delay(wait);
      }
    } catch {
      errors++;
    }
  }));
  for (const c of conns) c.close();
  return { p50: pct(lat, 0.5), p99: pct(lat, 0.99), count: lat.length, errors };
}

/**
 * One probe client measuring round trips (a ping every 2 ms) while `clients - 1` other
 * clients, in a separate process, each ping every `everyMs`.
 */
async function probeUnderLoad(
  path: string,
  clients: number,
  everyMs: number,
  ms: number,
): Promise<{ p50: number; p99: number; count: number }> {
  const load = spawnDeno([
    "run",
    "-A",
    `${ROOT}scripts/ping_load.ts`,
    path,
    String(clients - 1),
    String(everyMs),
    String(ms + 1000),
  ]);
  try {
    await delay(500); // the load's clients are connected
    const probe = await PingConn.open(path);
    const lat: number[] = [];
    const until = performance.now() + ms;
    while (performance.now() < until) {
      lat.push(await probe.ping());
      await delay(2);
    }
    probe.close();
    return { p50: pct(lat, 0.5), p99: pct(lat, 0.99), count: lat.length };
  } finally {
    await load.status;
  }
}

/** Runs the server benchmarks; returns a Markdown section. */
export async function benchServer(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "umad-bench-" });
  const umadSock = `${dir}/umad.sock`;
  const echoSock = `${dir}/echo.sock`;
  const daemon = await startDaemon(["--log-level", "warn"], {
    socket: umadSock,
    dir,
    stderr: "inherit",
  });
  const echo = spawnDeno(["run", "-A", `${ROOT}scripts/echo_server.ts`, echoSock]);
  try {
    await waitForSocket(echoSock);
    const N = 20_000;
    // Interleave the two so machine noise hits both alike.
    const umad: number[] = [];
    const bare: number[] = [];
    for (let round = 0; round < 4; round++) {
      bare.push(...await rttSample(echoSock, N / 4));
      umad.push(...await rttSample(umadSock, N / 4));
    }
    const client = await connect({ socket: umadSock, reconnect: false });
    const lib: number[] = [];
    for (let i = 0; i < 500; i++) await client.ping();
    for (let i = 0; i < 5000; i++) lib.push(await client.ping());
    await client.close();

    const lines = [
      "## Control channel (issue 2)",
      "",
      `Ping round trip, ${N} sequential pings each, one raw Deno client (the same code for`,
      "both servers), the two servers interleaved in 4 rounds:",
      "",
      "| server | p50 ms | p99 ms |",
      "|---|---|---|",
      `| bare Deno Unix-socket echo | ${fmt(pct(bare, 0.5))} | ${fmt(pct(bare, 0.99))} |`,
      `| umad \`ping\` | ${fmt(pct(umad, 0.5))} | ${fmt(pct(umad, 0.99))} |`,
      `| umad \`ping\` via the client library (Deno.connect under Deno) | ${fmt(pct(lib, 0.5))} | ${
        fmt(pct(lib, 0.99))
      } |`,
      "",
      `umad / bare: p50 **${fmt(pct(umad, 0.5) / pct(bare, 0.5), 2)}×** (target ≤ 1.5×), p99 ${
        fmt(pct(umad, 0.99) / pct(bare, 0.99), 2)
      }×.`,
      "",
      "Concurrent clients, each pinging in lockstep for 3 s (client and daemon share the",
      "machine's 2 cores):",
      "",
      "| clients | connected | umad msgs/s | umad p99 ms | errors | bare echo msgs/s | bare p99 ms |",
      "|---|---|---|---|---|---|---|",
    ];
    for (const n of [10, 100, 1000]) {
      const u = await concurrent(umadSock, n, 3000);
      const b = await concurrent(echoSock, n, 3000);
      lines.push(
        `| ${n} | ${u.connected} | ${Math.round(u.rate)} | ${fmt(u.p99)} | ${u.errors} | ${
          Math.round(b.rate)
        } | ${fmt(b.p99)} |`,
      );
    }
    const pu = await paced(umadSock, 100, 20, 5000);
    const pb = await paced(echoSock, 100, 20, 5000);
    lines.push(
      "",
      "100 clients, each pinging every 20 ms for 5 s (5,000 pings/s in all: latency under",
      "a realistic load rather than at saturation, where every client waits on 99 others):",
      "",
      "| server | pings | p50 ms | p99 ms | errors |",
      "|---|---|---|---|---|",
      `| bare echo | ${pb.count} | ${fmt(pb.p50)} | ${fmt(pb.p99)} | ${pb.errors} |`,
      `| umad | ${pu.count} | ${fmt(pu.p50)} | ${fmt(pu.p99)} | ${pu.errors} |`,
    );
    const qu = await probeUnderLoad(umadSock, 100, 20, 5000);
    const qb = await probeUnderLoad(echoSock, 100, 20, 5000);
    lines.push(
      "",
      "The same load from 99 clients in a separate process, measured by one more client",
      "(a ping every 2 ms) in this process, so the load generator's own event loop is not",
      "in the figures:",
      "",
      "| server | probe pings | p50 ms | p99 ms |",
      "|---|---|---|---|",
      `| bare echo | ${qb.count} | ${fmt(qb.p50)} | ${fmt(qb.p99)} |`,
      `| umad | ${qu.count} | ${fmt(qu.p50)} | ${fmt(qu.p99)} |`,
    );
    lines.push(
      "",
      "Targets: p99 under 1 ms with 100 clients; 1000 clients connected at once, served",
      "without errors.",
      "",
    );
    return lines.join("\n");
  } finally {
    await daemon.stop();
    await stopChild(echo);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) console.log(await benchServer());
