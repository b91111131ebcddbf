/**
 * HTTP's limits and hostile input, with no model loaded (fast): keep-alive, a malformed
 * request line, a 10 MiB header, a slow sender, a body over the limit, random bytes
 * after a method — each gets its status and leaves other clients unaffected — and the
 * bearer token on TCP.
 */
import { delay } from "../src/protocol/async.ts";
import assert from "node:assert/strict";
import { RawClient, runUmad, startDaemon, type TestDaemon } from "./_daemon.ts";
import { parseResponses, RawHttp, startHttpDaemon, unixFetch } from "./_http.ts";

/** A test against a daemon (no model), started with `args`. */
function withDaemon(
  name: string,
  args: string[],
  fn: (d: TestDaemon) => Promise<void>,
) {
  Deno.test({
    name,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const d = await startDaemon(args);
      try {
        await fn(d);
      } catch (e) {
        console.error(d.stderr());
        throw e;
      } finally {
        await d.stop();
      }
    },
  });
}

/** The daemon still answers a framed ping and an HTTP request. */
async function stillServes(socket: string): Promise<void> {
  const c = await RawClient.connect(socket);
  try {
    assert.equal((await c.request({ type: "ping", id: "p" })).event, "pong");
  } finally {
    c.close();
  }
  const uf = unixFetch(socket);
  try {
    const res = await uf.fetch("http://localhost/health");
    assert.equal(res.status, 200);
    await res.body?.cancel();
  } finally {
    uf.close();
  }
}

const GET = (path: string) => `GET ${path} HTTP/1.1\r\nHost: localhost\r\n\r\n`;

withDaemon(
  "several requests on one kept-alive connection get their answers in order",
  [],
  async (d) => {
    const c = await RawHttp.connect(d.socket);
    try {
      // Pipelined: all three sent before any answer is read.
      await c.write(GET("/health") + GET("/v1/models") + GET("/api/version"));
      const text = await c.until((s) => parseResponses(s).length >= 3);
      const rs = parseResponses(text);
      assert.deepEqual(rs.map((r) => r.status), [200, 200, 200]);
      assert.deepEqual(JSON.parse(rs[0].body), { status: "ok" });
      assert.equal(JSON.parse(rs[1].body).object, "list");
      assert.equal(typeof JSON.parse(rs[2].body).version, "string");
      assert.equal(rs[0].headers.connection, "keep-alive");
      // And once more on the same connection after the answers.
      await c.write(GET("/health"));
      assert.equal(
        parseResponses(await c.until((s) => parseResponses(s).length >= 4))[3].status,
        200,
      );
      assert.equal(c.closed, false);
    } finally {
      c.close();
    }
  },
);

withDaemon(
  "a malformed request line gets 400 and the connection closes; others go on",
  [],
  async (d) => {
    const framed = await RawClient.connect(d.socket);
    const c = await RawHttp.connect(d.socket);
    try {
      await framed.send({ type: "generate", id: "g", prompt: "Hi" }); // E_NO_MODEL, stays open
      await c.write("GET /health HTTP/1.1 trailing-garbage\r\nHost: x\r\n\r\n");
      await c.done;
      assert.match(c.received, /^HTTP\/1\.1 400 /);
      assert.equal((await framed.nextFor("g")).code, "E_NO_MODEL");
      assert.equal((await framed.request({ type: "ping", id: "p" })).event, "pong");
      await stillServes(d.socket);
    } finally {
      c.close();
      framed.close();
    }
  },
);

withDaemon("a 10 MiB header gets 431 and the daemon stays well", [], async (d) => {
  const c = await RawHttp.connect(d.socket);
  try {
    await c.write("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ");
    const chunk = new TextEncoder().encode("a".repeat(1 << 20));
    for (let i = 0; i < 10 && await c.write(chunk); i++) { /* until it closes on us */ }
    await c.write("\r\n\r\n");
    await c.done;
    assert.match(c.received, /^HTTP\/1\.1 431 /);
    await stillServes(d.socket);
  } finally {
    c.close();
  }
});

withDaemon("a slow sender gets 408 at the header timeout while others are served", [
  "--idle-timeout",
  "1500",
], async (d) => {
  const slow = await RawHttp.connect(d.socket);
  try {
    await slow.write("GET /health HTTP/1.1\r\nHost: x\r\n");
    // Trickle a header line byte by byte, as slowloris does, never finishing the head.
    for (const ch of "X-Slow: 1") {
      await slow.write(ch);
      await delay(100);
      await stillServes(d.socket);
    }
    await slow.done;
    assert.match(slow.received, /^HTTP\/1\.1 408 /);
  } finally {
    slow.close();
  }
});

withDaemon("a body over --max-frame gets 413, declared or chunked", [
  "--max-frame",
  "65536",
], async (d) => {
  const body = JSON.stringify({ messages: [{ role: "user", content: "x".repeat(100_000) }] });
  const declared = await RawHttp.connect(d.socket);
  const chunked = await RawHttp.connect(d.socket);
  try {
    await declared.write(
      `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${body.length}\r\n\r\n`,
    );
    await declared.write(body);
    await declared.done;
    const r = parseResponses(declared.received)[0];
    assert.equal(r.status, 413);
    assert.equal(JSON.parse(r.body).error.type, "invalid_request_error");

    await chunked.write(
      `POST /api/chat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n`,
    );
    for (let i = 0; i < body.length; i += 8192) {
      const part = body.slice(i, i + 8192);
      if (!await chunked.write(`${part.length.toString(16)}\r\n${part}\r\n`)) break;
    }
    await chunked.write("0\r\n\r\n");
    await chunked.done;
    const r2 = parseResponses(chunked.received)[0];
    assert.equal(r2.status, 413);
    assert.equal(typeof JSON.parse(r2.body).error, "string"); // Ollama's shape under /api
    await stillServes(d.socket);
  } finally {
    declared.close();
    chunked.close();
  }
});

withDaemon(
  "unknown routes, wrong methods and bad JSON get each API's error shape",
  [],
  async (d) => {
    const uf = unixFetch(d.socket);
    try {
      const get = async (path: string, init?: RequestInit) => {
        const res = await uf.fetch(`http://localhost${path}`, init);
        return { status: res.status, body: await res.json(), allow: res.headers.get("allow") };
      };
      const v1 = await get("/v1/nothing");
      assert.equal(v1.status, 404);
      assert.equal(v1.body.error.type, "not_found_error");
      assert.equal(typeof v1.body.error.message, "string");
      const api = await get("/api/nothing");
      assert.equal(api.status, 404);
      assert.equal(typeof api.body.error, "string");
      const wrong = await get("/v1/chat/completions");
      assert.equal(wrong.status, 405);
      assert.equal(wrong.allow, "POST");
      const badJson = await get("/v1/chat/completions", { method: "POST", body: "{not json" });
      assert.equal(badJson.status, 400);
      assert.equal(badJson.body.error.type, "invalid_request_error");
      const noModel = await get("/v1/chat/completions", {
        method: "POST",
        body: JSON.stringify({ messages: [{ role: "user", content: "Hi" }] }),
      });
      assert.equal(noModel.status, 503);
      assert.equal(noModel.body.error.code, "E_NO_MODEL");
      assert.deepEqual((await get("/v1/models")).body, { object: "list", data: [] });
    } finally {
      uf.close();
    }
  },
);

withDaemon(
  "random bytes after a method never disturb the daemon or another client",
  [],
  async (d) => {
    const seed = Number(Deno.env.get("FUZZ_SEED") ?? Date.now() % 1e9);
    let x = seed || 1;
    const rnd = () => ((x = (x * 1103515245 + 12345) % 2147483648) / 2147483648);
    const watcher = await RawClient.connect(d.socket);
    const methods = ["GET ", "POST ", "HEAD ", "PUT ", "DELETE ", "OPTIONS "];
    const pieces = [
      "/v1/chat/completions",
      " HTTP/1.1\r\n",
      "Host: x\r\n",
      "Content-Length: 5\r\n",
      "Transfer-Encoding: chunked\r\n",
      "\r\n",
      '{"messages":[]}',
      "0\r\n\r\n",
      "\x00\xff",
      "%%%",
    ];
    try {
      for (let n = 0; n < 200; n++) {
        let req = methods[Math.floor(rnd() * methods.length)];
        const parts = 1 + Math.floor(rnd() * 8);
        for (let i = 0; i < parts; i++) {
          req += rnd() < 0.3
            ? String.fromCharCode(...Array.from({ length: 8 }, () => Math.floor(rnd() * 256)))
            : pieces[Math.floor(rnd() * pieces.length)];
        }
        const c = await RawHttp.connect(d.socket);
        await c.write(new Uint8Array([...req].map((ch) => ch.charCodeAt(0) & 0xff)));
        await c.conn.closeWrite().catch(() => {});
        await c.done;
        const status = c.received.match(/^HTTP\/1\.1 (\d{3}) /)?.[1];
        assert.ok(
          c.received === "" || (status !== undefined && Number(status) < 500),
          `seed ${seed}: ${JSON.stringify(req)} got ${c.received.slice(0, 120)}`,
        );
        c.close();
        if (n % 20 === 0) {
          assert.equal((await watcher.request({ type: "ping", id: `p${n}` })).event, "pong");
        }
      }
      await stillServes(d.socket);
    } finally {
      watcher.close();
    }
  },
);

Deno.test({
  name: "TCP needs the bearer token from the 0600 token file; status shows the endpoints",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const d = await startHttpDaemon([]);
    try {
      const tokenFile = `${d.dir}/umad.token`;
      assert.equal(Deno.statSync(tokenFile).mode! & 0o777, 0o600);
      const without = await fetch(`${d.base}/v1/models`);
      assert.equal(without.status, 401);
      assert.match(without.headers.get("www-authenticate") ?? "", /^Bearer/);
      assert.equal((await without.json()).error.code, "invalid_api_key");
      const wrong = await fetch(`${d.base}/health`, { headers: { Authorization: "Bearer nope" } });
      assert.equal(wrong.status, 401);
      await wrong.body?.cancel();
      const right = await fetch(`${d.base}/v1/models`, {
        headers: { Authorization: `Bearer ${d.token}` },
      });
      assert.equal(right.status, 200);
      await right.body?.cancel();
      // The socket needs no token: its own permissions guard it.
      await stillServes(d.socket);
      const status = await runUmad(["status", "--socket", d.socket]);
      assert.equal(status.code, 0, status.stderr);
      assert.match(status.stdout, new RegExp(`http\\.tcp\\s+${d.base.replace(/\./g, "\\.")}`));
      assert.match(status.stdout, /http\.auth\s+bearer/);
      assert.match(status.stdout, /http\.token_file\s+.*umad\.token/);
      assert.match(status.stdout, /curl --unix-socket/);
      const file = await runUmad(["status", "--token-file", "--socket", d.socket]);
      assert.equal(file.stdout.trim(), tokenFile);
    } catch (e) {
      console.error(d.stderr());
      throw e;
    } finally {
      await d.stop();
    }
    const open = await startHttpDaemon(["--http-no-auth"]);
    try {
      assert.equal(open.token, null);
      const res = await fetch(`${open.base}/health`);
      assert.equal(res.status, 200);
      await res.body?.cancel();
    } finally {
      await open.stop();
    }
  },
});
