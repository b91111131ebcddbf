import assert from "node:assert/strict";
import { runUmad, startDaemon } from "./_daemon.ts";

Deno.test("umad ping prints n, p50 and p99 of real round trips", async () => {
  const d = await startDaemon();
  try {
    const r = await runUmad(["ping", "--socket", d.socket, "--count", "25", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.equal(result.n, 25);
    assert.ok(result.p50_ms > 0 && result.p50_ms <= result.p99_ms);
    const text = await runUmad(["ping", "--socket", d.socket, "-c", "3"]);
    assert.match(text.stdout, /^n=3 p50=[\d.]+ ms p99=[\d.]+ ms/);
  } finally {
    await d.stop();
  }
});

Deno.test("umad status shows the daemon's hello and counters", async () => {
  const d = await startDaemon();
  try {
    const r = await runUmad(["status", "--socket", d.socket, "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const { hello, metrics } = JSON.parse(r.stdout);
    assert.equal(hello.server, "umad");
    assert.equal(hello.pid, d.pid);
    assert.equal(metrics.connections.now, 1);
    assert.ok("pty" in metrics);
    const text = await runUmad(["status", "--socket", d.socket]);
    assert.match(text.stdout, /^server\s+umad /m);
    assert.match(text.stdout, /^connections\.total\s+\d+/m);
  } finally {
    await d.stop();
  }
});

Deno.test("usage errors exit 2, runtime errors exit 1, --help exits 0", async () => {
  assert.equal((await runUmad(["ping", "--bogus"])).code, 2);
  assert.equal((await runUmad(["teleport"])).code, 2);
  assert.equal((await runUmad(["serve", "--max-clients", "many"])).code, 2);
  const prio = await runUmad(["serve", "--decode-priority", "high"]);
  assert.equal(prio.code, 2);
  assert.match(prio.stderr, /--decode-priority must be one of idle, low, normal/);
  for (const bad of ["0.5", "fast", "0"]) {
    const budget = await runUmad(["serve", "--latency-budget", bad]);
    assert.equal(budget.code, 2, bad);
    assert.match(budget.stderr, /--latency-budget must be a number from 1 to 100, or "unlimited"/);
  }
  const dir = await Deno.makeTempDir();
  try {
    const r = await runUmad(["ping", "--socket", `${dir}/none.sock`]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /the umad daemon is not running/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  for (const c of ["serve", "ping", "status", "generate", "run", "attach", "ls", "kill"]) {
    const r = await runUmad([c, "--help"]);
    assert.equal(r.code, 0, c);
    assert.match(r.stdout, new RegExp(`umad ${c}`), c);
  }
});
