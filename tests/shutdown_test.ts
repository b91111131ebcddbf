import assert from "node:assert/strict";
import { RawClient, startDaemon } from "./_daemon.ts";
import { tinyModel } from "./llm_helpers.ts";
import type { Service } from "../src/protocol/service.ts";

Deno.test("SIGTERM ends open generations with eos shutdown, hangs up terminals, exits 0", async () => {
  const d = await startDaemon([
    "--model",
    tinyModel(),
    "--parallel",
    "2",
    "--threads",
    "1",
    "--ctx",
    "8192",
  ]);
  const c = await RawClient.connect(d.socket);
  let stopped = false;
  try {
    // Two running streams and one waiting for a sequence, in both codecs. Greedy: these
    // prompts' trajectories on the tiny model run 3000 tokens without an end-of-generation
    // token (and are the same whatever runs beside them), so no stream ends by itself.
    const gen = { max_tokens: 100_000, temperature: 0 };
    await c.send({ type: "generate", id: "g1", prompt: "one", ...gen });
    await c.send({ type: "generate", id: "g2", prompt: "two", ...gen }, "msgpack");
    await c.send({ type: "generate", id: "g3", prompt: "three", ...gen });
    await c.next((m) => m.id === "g1" && m.event === "token");
    await c.next((m) => m.id === "g2" && m.event === "token");
    const spawned = await c.request({ type: "pty.spawn", id: "s", argv: ["sleep", "60"] });
    await c.request({ type: "pty.attach", id: "a", session: spawned.session });

    // Exit 0: neither the daemon's own hard stop (exit 1) nor stop()'s SIGKILL after 5 s.
    const status = await d.stop();
    stopped = true;
    assert.equal(status.code, 0, d.stderr());
    for (const id of ["g1", "g2", "g3"]) {
      const eos = await c.next((m) => m.id === id && m.event === "eos");
      assert.equal(eos.reason, "shutdown", `${id}: ${JSON.stringify(eos)}`);
    }
    await c.done;
    assert.ok(c.closed);
    assert.throws(() => Deno.lstatSync(d.socket), Deno.errors.NotFound);
    // The session's child was hung up and reaped along with the daemon.
    let alive = true;
    try {
      Deno.statSync(`/proc/${spawned.pid}`);
      const stat = Deno.readTextFileSync(`/proc/${spawned.pid}/stat`);
      alive = !/\) [ZX] /.test(stat);
    } catch {
      alive = false;
    }
    assert.equal(alive, false, `session child ${spawned.pid} outlived the daemon`);
  } finally {
    c.close();
    if (!stopped) await d.stop();
  }
});

Deno.test("Server.close(deadline) passes one deadline down to every service and goes on past one stuck at it", async () => {
  const { Server } = await import("../src/server/server.ts");
  const dir = await Deno.makeTempDir({ prefix: "umad-shutdown-" });
  const seen: (number | undefined)[] = [];
  const polite: Service = {
    types: [],
    handle() {},
    close(deadline) {
      seen.push(deadline);
      return Promise.resolve();
    },
  };
  // A service that never finishes closing: the server goes on at the deadline.
  const stuck: Service = {
    types: [],
    handle() {},
    close(deadline) {
      seen.push(deadline);
      return new Promise(() => {});
    },
  };
  const server = await Server.listen({
    socket: `${dir}/umad.sock`,
    log: () => {},
    services: [polite, stuck],
  });
  try {
    const deadline = performance.now() + 600;
    await server.close(deadline);
    assert.equal(seen.length, 2);
    assert.equal(seen[0], seen[1], "one deadline for every service");
    // Services get the deadline less the flush's share (a quarter of what is left).
    assert.ok(seen[0]! <= deadline && seen[0]! >= deadline - 600 / 4 - 1, String(seen[0]));
    assert.throws(() => Deno.lstatSync(`${dir}/umad.sock`), Deno.errors.NotFound);
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});
