// Terminal sessions end to end: a real daemon, the client library, real processes.
import { childrenOf } from "./_proc.ts";
import assert from "node:assert/strict";
import { type Client, connect } from "../src/client/client.ts";
import { attach, spawn, type Terminal } from "../src/client/terminal.ts";
import { decodeBase64, type Message } from "../src/protocol/mod.ts";
import { encodeFrame, encodePayload } from "../src/protocol/mod.ts";
import { bytes, ptyFds, type startPtyDaemon, waitUntil, withPtyDaemon } from "./pty_helpers.ts";
import { delay } from "../src/protocol/async.ts";

type Daemon = Awaited<ReturnType<typeof startPtyDaemon>>;

const withDaemon = withPtyDaemon;

async function withClient(
  socket: string,
  fn: (c: Client) => Promise<void>,
  opts: Parameters<typeof connect>[0] = {},
): Promise<void> {
  const c = await connect({ socket, reconnect: false, ...opts });
  try {
    await fn(c);
  } finally {
    await c.close();
  }
}

function collect(t: Terminal): { text: () => string; snapshots: string[] } {
  let text = "";
  const snapshots: string[] = [];
  t.onData((d) => text += d);
  t.onSnapshot((s) => snapshots.push(new TextDecoder().decode(s.data)));
  return { text: () => text, snapshots };
}

function exitOf(t: Terminal): Promise<{ exitCode: number; signal?: string }> {
  return new Promise((r) => t.onExit(r));
}

function toBytes(v: unknown): Uint8Array {
  return typeof v === "string" ? decodeBase64(v) : v as Uint8Array;
}

Deno.test("a spawned terminal echoes input and reports its exit after the last output", async () => {
  await withDaemon(async (d) => {
    for (const codec of ["msgpack", "json"] as const) {
      await withClient(d.socket, async (c) => {
        const t = await spawn(c, "/bin/sh", ["-c", "read x; seq 1 5000; echo got-$x; exit 3"], {
          cols: 90,
          rows: 20,
          name: `echo-${codec}`,
        });
        assert.ok(t.pid > 0);
        const out = collect(t);
        const exited = exitOf(t);
        await waitUntil(() => out.snapshots.length === 1, 5000, "snapshot");
        t.write("abc\r");
        const e = await exited;
        assert.equal(e.exitCode, 3);
        assert.equal(e.signal, undefined);
        assert.match(out.text(), /abc\r\n/);
        assert.match(out.text(), /4999\r\n5000\r\ngot-abc\r\n$/);
      }, { codec });
    }
  });
});

Deno.test("all 256 byte values are byte-exact through the daemon in both codecs", async () => {
  await withDaemon(async (d) => {
    for (const codec of ["msgpack", "json"] as const) {
      await withClient(d.socket, async (c) => {
        const spawned = await c.request({
          type: "pty.spawn",
          argv: ["/bin/sh", "-c", "stty raw -echo; printf READY; exec cat"],
        });
        const session = spawned.session as string;
        const stream = c.stream({ type: "pty.attach", session }, (e) => e.event === "pty.exit");
        let before = "";
        let output = new Uint8Array(0);
        let ready = false;
        const all = new Uint8Array(512).map((_, i) => i % 256);
        const done = (async () => {
          for await (const ev of stream) {
            if (ev.event === "pty.snapshot") {
              before += new TextDecoder().decode(toBytes(ev.data));
            } else if (ev.event === "pty.output") {
              const b = toBytes(ev.data);
              if (!ready) {
                before += new TextDecoder().decode(b);
              } else {
                const next = new Uint8Array(output.length + b.length);
                next.set(output);
                next.set(b, output.length);
                output = next;
                if (output.length >= all.length) return;
              }
            }
            if (!ready && before.includes("READY")) {
              ready = true;
              c.send({ type: "pty.input", session, data: all });
            }
          }
        })();
        await done;
        assert.deepEqual(output, all, `codec ${codec}`);
        await c.request({ type: "pty.kill", session, signal: "KILL" });
        await stream.return();
      }, { codec });
    }
  });
});

Deno.test("two clients of one session see the same output, and readonly is enforced", async () => {
  await withDaemon(async (d) => {
    await withClient(d.socket, async (c1) => {
      await withClient(d.socket, async (c2) => {
        const t1 = await spawn(c1, "cat", [], { name: "shared" });
        const o1 = collect(t1); // before anything else is awaited: events may come meanwhile
        const t2 = await attach(c2, "shared", { readonly: true });
        assert.equal(t2.session, t1.session);
        const o2 = collect(t2);
        await waitUntil(() => o1.snapshots.length === 1 && o2.snapshots.length === 1);
        t1.write("line-one\r");
        await waitUntil(() => o2.text().includes("line-one\r\nline-one"), 5000, "reader output");
        assert.throws(() => t2.write("x"), /read-only/);
        // The daemon refuses it too.
        const stream = c2.stream(
          { type: "pty.resize", session: t1.session, cols: 20, rows: 5, id: "x" },
          () => true,
        );
        await assert.rejects(stream.next(), (e: { code: string }) => {
          assert.equal(e.code, "E_PROTO_BAD_REQUEST");
          return true;
        });
        await t2.detach();
        await t1.kill("SIGKILL");
        await t1.closed;
      });
    });
  });
});

/** A Unix-socket proxy whose connections can be cut, to make a client reconnect. */
async function startProxy(target: string) {
  const dir = await Deno.makeTempDir({ prefix: "umad-proxy-" });
  const path = `${dir}/proxy.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  const conns = new Set<Deno.Conn>();
  const pipes: Promise<void>[] = [];
  const pipe = async (from: Deno.Conn, to: Deno.Conn) => {
    try {
      await from.readable.pipeTo(to.writable, { preventClose: false });
    } catch {
      // cut
    }
    for (const c of [from, to]) {
      try {
        c.close();
      } catch { /* closed */ }
      conns.delete(c);
    }
  };
  const accepting = (async () => {
    for await (const conn of listener) {
      const up = await Deno.connect({ transport: "unix", path: target });
      conns.add(conn);
      conns.add(up);
      pipes.push(pipe(conn, up), pipe(up, conn));
    }
  })();
  return {
    path,
    cut() {
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      conns.clear();
    },
    async close() {
      this.cut();
      listener.close();
      await accepting.catch(() => {});
      await Promise.allSettled(pipes);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

Deno.test("after a reconnect a terminal re-attaches and its screen comes back", async () => {
  await withDaemon(async (d) => {
    const proxy = await startProxy(d.socket);
    try {
      const c = await connect({ socket: proxy.path, reconnect: { initialDelayMs: 20 } });
      const other = await connect({ socket: d.socket, reconnect: false });
      try {
        const t = await spawn(c, "/bin/sh", ["-c", "echo BEFORE; read x; echo AFTER-$x; read y"]);
        const out = collect(t);
        await waitUntil(() => out.text().includes("BEFORE"), 5000, "BEFORE");
        let reconnected = 0;
        c.onReconnect(() => reconnected++);
        proxy.cut();
        // Output produced while the link is down...
        other.send({ type: "pty.input", session: t.session, data: bytes("zz\r") });
        await waitUntil(() => reconnected > 0, 10000, "reconnect");
        // ...is on the restored screen.
        await waitUntil(() => out.snapshots.length >= 2, 5000, "second snapshot");
        assert.match(out.snapshots.at(-1)!, /BEFORE[\s\S]*AFTER-zz/);
        const text = out.text();
        assert.ok(text.lastIndexOf("AFTER-zz") > text.lastIndexOf("\x1bc"), "reset, then redraw");
        // And the terminal is live again.
        t.write("done\r");
        const e = await exitOf(t);
        assert.equal(e.exitCode, 0);
      } finally {
        await c.close();
        await other.close();
      }
    } finally {
      await proxy.close();
    }
  });
});

Deno.test("a client that stops reading neither stalls another client nor grows the daemon", async () => {
  await withDaemon(async (d) => {
    await withClient(d.socket, async (c) => {
      const lines = 3_000_000;
      const spawned = await c.request({
        type: "pty.spawn",
        argv: ["/bin/sh", "-c", `read x; seq 1 ${lines}; echo SEQ-DONE; read x`],
      });
      const session = spawned.session as string;
      // A client that attaches and then never reads its socket.
      const stuck = await Deno.connect({ transport: "unix", path: d.socket });
      const frame = (m: Message) => encodeFrame(encodePayload(m, "msgpack"));
      await stuck.write(frame({ type: "hello", id: "h" }));
      await stuck.write(frame({ type: "pty.attach", id: "a", session }));
      try {
        const rss = () => {
          const m = Deno.readTextFileSync(`/proc/${d.pid}/status`).match(/VmRSS:\s+(\d+)/);
          return Number(m![1]) * 1024;
        };
        await delay(300);
        const rssBefore = rss();
        let tail = "";
        let total = 0;
        let maxRss = rssBefore;
        const stream = c.stream({ type: "pty.attach", session }, (e) => e.event === "pty.exit");
        const t0 = performance.now();
        c.send({ type: "pty.input", session, data: bytes("\r") });
        const dec = new TextDecoder();
        // A watchdog: if the end never shows, kill the program so the stream ends.
        const watchdog = setTimeout(() => {
          c.request({ type: "pty.kill", session, signal: "KILL" }).catch(() => {});
        }, 60_000);
        let chunks = 0;
        let done = false;
        for await (const ev of stream) {
          if (ev.event !== "pty.output" && ev.event !== "pty.snapshot") continue;
          const b = toBytes(ev.data);
          if (ev.event === "pty.output") total += b.length;
          tail = (tail + dec.decode(b)).slice(-200);
          if (++chunks % 10 === 0) maxRss = Math.max(maxRss, rss());
          if (tail.includes("SEQ-DONE")) {
            done = true;
            break;
          }
        }
        clearTimeout(watchdog);
        assert.ok(done, "the reading client saw the end of the output");
        const secs = (performance.now() - t0) / 1000;
        maxRss = Math.max(maxRss, rss());
        await stream.return();
        const metrics = (await c.metrics()).pty as Record<string, number>;
        assert.ok(metrics.dropped_backlogs >= 1, JSON.stringify(metrics));
        // Whatever was not relayed to the reading client went to the stuck one: at most
        // about its connection's cap (4 MiB), not the whole output.
        const toStuck = metrics.bytes_relayed - total;
        assert.ok(toStuck < 8e6, `${toStuck} bytes queued for the stuck client`);
        const growth = maxRss - rssBefore;
        console.log(
          `  ${(total / 1e6).toFixed(1)} MB in ${secs.toFixed(1)} s to the reading client; ` +
            `daemon RSS +${(growth / 1e6).toFixed(1)} MB with a stuck client ` +
            `(${((metrics.bytes_relayed - total) / 1e6).toFixed(1)} MB queued for it)`,
        );
        assert.ok(growth < 150e6, `daemon grew by ${growth} bytes`);
      } finally {
        stuck.close();
      }
      await c.request({ type: "pty.kill", session, signal: "KILL" });
    });
  });
});

Deno.test("100 sessions spawned and exited leave the daemon with no zombies and no new fds", async () => {
  await withDaemon(async (d) => {
    const fds = () => ptyFds(`/proc/${d.pid}/fd`);
    const zombies = () =>
      childrenOf(d.pid).filter((c) => c.state === "Z").map((c) => String(c.pid));
    const children = () => childrenOf(d.pid).length;
    await withClient(d.socket, async (c) => {
      // Warm up: the emulator worker and the poller's eventfd open on first use.
      const w = await spawn(c, "true");
      await exitOf(w);
      await c.request({ type: "pty.kill", session: w.session });
      const fdsBefore = fds();
      const terms = await Promise.all(
        Array.from({ length: 100 }, (_, i) => spawn(c, "/bin/sh", ["-c", `echo s${i}; exit 4`])),
      );
      const exits = await Promise.all(terms.map(exitOf));
      assert.ok(exits.every((e) => e.exitCode === 4));
      const list = await c.request({ type: "pty.list" });
      const sessions = list.sessions as { state: string; code: number }[];
      assert.equal(sessions.filter((s) => s.state === "exited" && s.code === 4).length, 100);
      await waitUntil(() => zombies().length === 0 && children() === 0, 5000, "reaped");
      for (const t of terms) await c.request({ type: "pty.kill", session: t.session });
      assert.equal(((await c.request({ type: "pty.list" })).sessions as unknown[]).length, 0);
      await waitUntil(() => fds().length <= fdsBefore.length, 3000, "fds back to the baseline");
      assert.deepEqual(fds(), fdsBefore);
      const metrics = (await c.metrics()).pty as Record<string, number>;
      assert.equal(metrics.live_children, 0);
    });
  });
});
