// fd exhaustion (hardening finding 1): under a low `ulimit -n` the daemon refuses
// connections and sessions with E_BUSY before it runs out of descriptors, keeps
// accepting after an error, and serves again once clients leave. Real processes.
import assert from "node:assert/strict";
import { RawClient, startDaemon } from "./_daemon.ts";
import type { Message } from "../src/protocol/mod.ts";
import { delay } from "../src/protocol/async.ts";

const IS_LINUX = Deno.build.os === "linux";

/** The first reply to a ping: pong, or the E_BUSY a full daemon sends before closing. */
async function firstReply(c: RawClient): Promise<Message> {
  await c.send({ type: "ping", id: "p" }).catch(() => {});
  return await c.next(() => true, 20_000);
}

Deno.test("under ulimit -n 128 connections past the budget get E_BUSY, and accept works again after", async () => {
  const d = await startDaemon([], { ulimit: "-n 128" });
  const clients: RawClient[] = [];
  try {
    for (let i = 0; i < 150; i++) clients.push(await RawClient.connect(d.socket));
    const replies = await Promise.all(clients.map(firstReply));
    const served = replies.filter((m) => m.event === "pong").length;
    const busy = replies.filter((m) => m.code === "E_BUSY").length;
    // Every connection got an answer: served, or told the daemon is full. None hangs.
    assert.equal(served + busy, 150, JSON.stringify(replies.filter((m) => m.event !== "pong")));
    assert.ok(served >= 10 && served < 128, `served ${served}`);
    assert.ok(busy >= 1);
    const busyMessage = replies.find((m) => m.code === "E_BUSY")!.message as string;
    assert.match(busyMessage, /clients already \(--max-clients\)/);

    // Clients leave; the daemon accepts and serves new ones.
    for (const c of clients.splice(0)) c.close();
    for (let tries = 0;; tries++) {
      const c = await RawClient.connect(d.socket);
      clients.push(c);
      const reply = await firstReply(c);
      if (reply.event === "pong") break;
      // The daemon may not have seen every close yet.
      assert.ok(tries < 100, "the daemon never served again");
      await delay(50);
    }
    const again = await Promise.all(
      Array.from({ length: 20 }, () => RawClient.connect(d.socket)),
    );
    clients.push(...again);
    const replies2 = await Promise.all(again.map(firstReply));
    assert.deepEqual(replies2.map((m) => m.event), Array(20).fill("pong"));
  } finally {
    for (const c of clients) c.close();
    await d.stop();
  }
});

Deno.test("accept survives EMFILE: with --max-clients above ulimit -n the daemon logs once and serves again", async () => {
  // --max-clients 500 under ulimit -n 128 overcommits on purpose, so accept() itself fails.
  const d = await startDaemon(["--max-clients", "500"], { ulimit: "-n 128" });
  const clients: RawClient[] = [];
  try {
    assert.match(d.stderr(), /need more descriptors than the limit of 128 leaves/);
    for (let i = 0; i < 150; i++) clients.push(await RawClient.connect(d.socket));
    for (const c of clients) await c.send({ type: "ping", id: "p" }).catch(() => {});
    // The first ones are served; the rest wait in the listen backlog while accept fails.
    await clients[0].next((m) => m.event === "pong");
    for (let tries = 0; !d.stderr().includes("accept failed"); tries++) {
      assert.ok(tries < 400, "accept never failed: the test did not exhaust descriptors");
      await delay(50);
    }
    for (const c of clients.splice(0)) c.close();
    // Accept goes on: new connections are served once descriptors are free again.
    const again = await Promise.all(Array.from({ length: 20 }, () => RawClient.connect(d.socket)));
    clients.push(...again);
    const replies = await Promise.all(again.map((c) => c.request({ type: "ping", id: "q" })));
    assert.deepEqual(replies.map((m) => m.event), Array(20).fill("pong"));
    assert.equal(d.stderr().match(/accept failed/g)?.length, 1, "logged once per burst");
  } finally {
    for (const c of clients) c.close();
    await d.stop();
  }
});

Deno.test("130 pty.spawn under ulimit -n 128 get E_BUSY past --max-sessions; others are unaffected", async () => {
  const d = await startDaemon([], { ulimit: "-n 128" });
  const spawner = await RawClient.connect(d.socket);
  const other = await RawClient.connect(d.socket);
  try {
    const codes: string[] = [];
    for (let i = 0; i < 130; i++) {
      const r = await spawner.request({ type: "pty.spawn", id: `s${i}`, argv: ["sleep", "600"] });
      codes.push(r.event === "pty.spawned" ? "spawned" : String(r.code));
    }
    const spawned = codes.filter((c) => c === "spawned").length;
    assert.ok(spawned >= 1, codes.join(","));
    // Refused cleanly, never E_INTERNAL (EMFILE): the budget held.
    assert.deepEqual(new Set(codes), new Set(["spawned", "E_BUSY"]));
    // The daemon keeps serving: the other client, the spawner, and new connections.
    assert.equal((await other.request({ type: "ping", id: "o" })).event, "pong");
    const list = await spawner.request({ type: "pty.list", id: "l" });
    assert.equal((list.sessions as unknown[]).length, spawned);
    const late = await RawClient.connect(d.socket);
    assert.equal((await late.request({ type: "ping", id: "x" })).event, "pong");
    late.close();
    // A session freed is a session available.
    const first = (list.sessions as { session: string }[])[0].session;
    await spawner.request({ type: "pty.kill", id: "k", session: first, signal: "KILL" });
    for (let tries = 0;; tries++) {
      const r = await spawner.request({
        type: "pty.spawn",
        id: `t${tries}`,
        argv: ["sleep", "600"],
      });
      if (r.event === "pty.spawned") break;
      assert.equal(r.code, "E_BUSY");
      assert.ok(tries < 100, "no session slot came back after a kill");
      await delay(50);
    }
  } finally {
    spawner.close();
    other.close();
    await d.stop();
  }
});

Deno.test({
  name: "the daemon runs with its soft descriptor limit raised to the hard one and budgets from it",
  ignore: !IS_LINUX,
  fn: async () => {
    const out = await new Deno.Command("bash", { args: ["-c", "ulimit -Hn"] }).output();
    const hard = Number(new TextDecoder().decode(out.stdout).trim());
    if (!(hard > 256)) return; // nothing to raise on this machine
    // A soft limit of 256 under a higher hard limit, as login shells often set.
    const d = await startDaemon([], { ulimit: "-Sn 256" });
    try {
      const limits = Deno.readTextFileSync(`/proc/${d.pid}/limits`);
      const m = limits.match(/Max open files\s+(\d+)\s+(\d+)/);
      assert.ok(m, limits);
      assert.equal(Number(m[1]), hard);
      assert.equal(Number(m[2]), hard);
      // (Deno itself raises the soft limit at start; the daemon's own raise covers runtimes
      // that do not.) The budget is computed from the raised limit.
      assert.match(d.stderr(), new RegExp(`descriptors: limit ${hard}\\b`));
    } finally {
      await d.stop();
    }
  },
});

Deno.test("the descriptor budget splits what is spare between sessions and clients", async () => {
  const { fdBudget, FDS_PER_SESSION } = await import("../src/server/fd_budget.ts");
  // ulimit -n 128 with the daemon's ~25 descriptors at start.
  const small = fdBudget({ limit: 128, inUse: 25 });
  assert.deepEqual(small, { maxClients: 55, maxSessions: 8, reserve: 32, overcommitted: false });
  // What is budgeted never exceeds what is there.
  for (const limit of [64, 128, 256, 1024, 4096, 20_000, 1 << 20]) {
    for (const inUse of [10, 25, 60]) {
      const b = fdBudget({ limit, inUse });
      const used = inUse + b.reserve + b.maxClients + b.maxSessions * FDS_PER_SESSION;
      assert.ok(used <= limit || b.overcommitted, `${limit}/${inUse}: ${JSON.stringify(b)}`);
      assert.ok(b.maxClients >= 1 && b.maxSessions >= 1);
      assert.ok(b.maxClients <= 4096 && b.maxSessions <= 1024);
    }
  }
  // A large limit gets the default caps.
  assert.deepEqual(
    fdBudget({ limit: 1 << 20, inUse: 30 }),
    { maxClients: 4096, maxSessions: 1024, reserve: 52429, overcommitted: false },
  );
  // A given limit is kept; the other takes what remains.
  const fixedClients = fdBudget({ limit: 128, inUse: 25, maxClients: 60 });
  assert.equal(fixedClients.maxClients, 60);
  assert.equal(fixedClients.maxSessions, 5);
  const fixedSessions = fdBudget({ limit: 128, inUse: 25, maxSessions: 20 });
  assert.equal(fixedSessions.maxSessions, 20);
  assert.equal(fixedSessions.maxClients, 31);
  // Asking for more than there is says so.
  assert.equal(fdBudget({ limit: 128, inUse: 25, maxClients: 1000 }).overcommitted, true);
});
