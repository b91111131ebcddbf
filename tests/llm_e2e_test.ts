/**
 * The generate service through a real daemon process: the client library, the
 * `umad generate` CLI, a UMA Serve client in Python, disconnects, and ping latency
 * while streams decode.
 */
import assert from "node:assert/strict";
import { type Client, connect } from "../src/client/client.ts";
import { generate } from "../src/client/generate.ts";
import type { UmadError } from "../src/client/errors.ts";
import { RawClient, startDaemon, type TestDaemon } from "./_daemon.ts";
import { tinyModel } from "./llm_helpers.ts";
import { delay } from "../src/protocol/async.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** `umad serve` (the real daemon) with the model its arguments name, in a temp dir. */
function startLlmDaemon(args: string[], env?: Record<string, string>): Promise<TestDaemon> {
  return startDaemon(args, { withModel: true, env });
}

/** A test against `umad serve` with these arguments, with a client connected to it. */
function withDaemon(
  name: string,
  args: string[],
  fn: (d: TestDaemon, client: Client) => Promise<void>,
) {
  Deno.test(name, async () => {
    const d = await startLlmDaemon(args);
    let client: Client | undefined;
    try {
      client = await connect({ socket: d.socket, reconnect: false });
      await fn(d, client);
    } catch (err) {
      console.error(d.stderr());
      throw err;
    } finally {
      await client?.close();
      await d.stop();
    }
  });
}

const TINY = () => ["--model", tinyModel(), "--threads", "1", "--parallel", "4", "--ctx", "4096"];

withDaemon(
  "umad serve runs the default scheduler and says so in hello; old flags warn and are ignored",
  [...TINY(), "--no-batch-invariance", "--prefill-ratio", "1"],
  async (d, client) => {
    const hello = client.hello as {
      model?: {
        mode: string;
        batch_invariant: boolean;
        kv_unified: boolean;
        lookup_drafts: boolean;
        latency_budget: number | null;
        prefix_cache: boolean;
      };
    };
    assert.equal(hello.model?.mode, "default");
    assert.equal(hello.model?.batch_invariant, false);
    assert.equal(hello.model?.kv_unified, true);
    // No padding row, so no lookup drafts either.
    assert.equal(hello.model?.lookup_drafts, false);
    assert.equal(hello.model?.prefix_cache, true);
    // --prefill-ratio R maps to --latency-budget 1+R.
    assert.equal(hello.model?.latency_budget, 2);
    assert.match(d.stderr(), /--no-batch-invariance is the default now/);
    assert.match(d.stderr(), /--prefill-ratio 1 is replaced by --latency-budget 2/);
    const r = await generate(client, { prompt: "Hello world", max_tokens: 9, seed: 3 })
      .complete();
    assert.equal(r.usage.completion_tokens, 9);
  },
);

withDaemon(
  "umad serve --deterministic --latency-budget unlimited --no-prefix-cache says so in hello",
  [...TINY(), "--deterministic", "--latency-budget", "unlimited", "--no-prefix-cache"],
  async (_d, client) => {
    const hello = client.hello as {
      model?: {
        mode: string;
        batch_invariant: boolean;
        kv_unified: boolean;
        lookup_drafts: boolean;
        latency_budget: number | null;
        prefix_cache: boolean;
        n_ctx: number;
      };
    };
    assert.equal(hello.model?.mode, "deterministic");
    assert.equal(hello.model?.batch_invariant, true);
    assert.equal(hello.model?.kv_unified, false);
    assert.equal(hello.model?.lookup_drafts, true);
    assert.equal(hello.model?.latency_budget, null);
    assert.equal(hello.model?.prefix_cache, false);
    assert.equal(hello.model?.n_ctx, 1024, "each stream its share of --ctx");
    const r = await generate(client, { prompt: "Hello world", max_tokens: 9, seed: 3 })
      .complete();
    assert.equal(r.usage.completion_tokens, 9);
    assert.equal(r.usage.cached_tokens, 0);
  },
);

withDaemon(
  "umad serve --deterministic --no-lookup leaves the padding row empty: no drafts decoded",
  [...TINY(), "--deterministic", "--no-lookup"],
  async (_d, client) => {
    const hello = client.hello as { model?: { lookup_drafts: boolean } };
    assert.equal(hello.model?.lookup_drafts, false);
    const r = await generate(client, { prompt: "Hello world", max_tokens: 40, temperature: 0 })
      .complete();
    assert.equal(r.usage.completion_tokens, 40);
    const m = (await client.metrics()).llm as {
      decode_steps: number;
      lookup_drafts: { decoded: number };
    };
    assert.equal(m.lookup_drafts.decoded, 0);
    assert.equal(m.decode_steps, 40);
  },
);

withDaemon(
  "the client's generate() streams exactly max_tokens tokens and cancel() stops it",
  TINY(),
  async (_d, client) => {
    const hello = client.hello as { model?: { n_ctx: number; parallel: number } };
    assert.equal(hello.model?.parallel, 4);
    assert.equal(hello.model?.n_ctx, 4096, "one stream may use the whole context");
    const r = await generate(client, { prompt: "Hello world", max_tokens: 21, seed: 3 })
      .complete();
    assert.equal(r.reason, "length");
    assert.equal(r.usage.completion_tokens, 21);

    const gen = generate(client, {
      prompt: "Once upon a time",
      max_tokens: 100000,
      temperature: 0,
    });
    let n = 0;
    let reason = "";
    for await (const ev of gen) {
      if (ev.event === "token" && ++n === 5) gen.cancel();
      if (ev.event === "eos") reason = ev.reason;
    }
    assert.equal(reason, "cancelled");
    assert.ok(n >= 5 && n < 50, `stopped soon after the cancel (${n} tokens)`);
    const whole = await generate(client, {
      prompt: "Hello world",
      max_tokens: 21,
      seed: 3,
      stream: false,
    })
      .complete();
    assert.equal(whole.text, r.text, "stream:false gives the streamed text");
  },
);

withDaemon(
  "umad generate prints the streamed text and --json prints each event",
  TINY(),
  async (d, client) => {
    const expected = await generate(client, {
      prompt: "the water",
      max_tokens: 15,
      seed: 11,
      temperature: 0,
    })
      .complete();
    const run = async (extra: string[], stdin?: string) => {
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          `${ROOT}main.ts`,
          "generate",
          "--socket",
          d.socket,
          "--max-tokens",
          "15",
          "--seed",
          "11",
          "--temperature",
          "0",
          ...extra,
          ...(stdin === undefined ? ["the water"] : []),
        ],
        stdin: stdin === undefined ? "null" : "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      if (stdin !== undefined) {
        const w = child.stdin.getWriter();
        await w.write(new TextEncoder().encode(stdin));
        await w.close();
      }
      const out = await child.output();
      return {
        code: out.code,
        stdout: new TextDecoder().decode(out.stdout),
        stderr: new TextDecoder().decode(out.stderr),
      };
    };
    // The CLI ends its text with a newline (unless the text has one).
    const printed = expected.text.endsWith("\n") ? expected.text : expected.text + "\n";
    const plain = await run([]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(plain.stdout, printed);
    const piped = await run([], "the water");
    assert.equal(piped.code, 0, piped.stderr);
    assert.equal(piped.stdout, printed, "the prompt read from stdin");
    const stop = expected.text.slice(6, 9);
    const stopped = await run(["--stop", "never-seen", "--stop", stop]);
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.equal(stopped.stdout, expected.text.slice(0, expected.text.indexOf(stop)) + "\n");
    const json = await run(["--json"]);
    assert.equal(json.code, 0, json.stderr);
    const lines = json.stdout.trim().split("\n").map((l) => JSON.parse(l));
    assert.equal(lines.length, 16);
    assert.equal(lines.filter((e) => e.event === "token").length, 15);
    assert.equal(lines[15].event, "eos");
    assert.equal(lines[15].reason, "length");
  },
);

withDaemon("a client written for UMA Serve works unchanged (Python)", [
  ...TINY(),
  "--max-tokens",
  "7",
], async (d) => {
  const out = await new Deno.Command("python3", {
    args: [`${ROOT}tests/fixtures/uma_client.py`, d.socket, "7"],
    stdin: "null",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `${stdout}\n${stderr}`);
  const r = JSON.parse(stdout);
  assert.equal(r.a_tokens, 12);
  assert.equal(r.d_reason, "cancelled");
  assert.equal(r.big_code, "E_LIMIT_001");
  assert.equal(r.utf8_code, "E_PROTO_001");
  assert.equal(r.default_tokens, 7);
  assert.ok(r.uma_metrics.batch_calls_total >= 1);
  assert.deepEqual(r.failures, []);
});

withDaemon(
  "a client that disconnects mid-stream frees its sequences for the next request",
  ["--model", tinyModel(), "--threads", "1", "--parallel", "2", "--ctx", "4096"],
  async (d, client) => {
    const raw = await RawClient.connect(d.socket);
    for (const id of ["x", "y"]) {
      await raw.send(
        { type: "generate", id, prompt: "Hello", max_tokens: 100000, temperature: 0 },
        "json",
      );
    }
    await raw.next((m) => m.event === "token" && m.id === "y");
    const waiting = generate(client, { prompt: "after", max_tokens: 3 }).complete();
    await delay(100);
    raw.close();
    const r = await waiting;
    assert.equal(r.usage.completion_tokens, 3);
    // Both disconnected streams are counted once the engine has cleared their
    // sequences; the waiting request may have started on the first one freed.
    let disconnected = 0;
    for (let i = 0; i < 100 && disconnected < 2; i++) {
      const m = (await client.metrics()).llm as { requests: Record<string, number> };
      disconnected = m.requests.disconnected;
      if (disconnected < 2) await delay(50);
    }
    assert.equal(disconnected, 2);
  },
);

withDaemon(
  "a full queue gives E_BUSY over the wire and the connection goes on",
  ["--model", tinyModel(), "--threads", "1", "--parallel", "1", "--queue", "1", "--ctx", "4096"],
  async (_d, client) => {
    const a = generate(client, { prompt: "a", max_tokens: 100000, temperature: 0 });
    const b = generate(client, { prompt: "b", max_tokens: 2 });
    const first = await a[Symbol.asyncIterator]().next();
    assert.equal(first.value?.event, "token");
    await assert.rejects(
      () => generate(client, { prompt: "c", max_tokens: 2 }).complete(),
      (e: UmadError) => e.code === "E_BUSY",
    );
    a.cancel();
    const rb = await b.complete();
    assert.equal(rb.usage.completion_tokens, 2);
  },
);

// How fast: `deno task bench --only llm` measures the ping round trip beside eight
// streams, from another process; here, that pings are answered while they decode.
withDaemon("pings are answered while eight streams decode", [
  "--model",
  tinyModel(),
  "--threads",
  "1",
  "--parallel",
  "8",
  "--ctx",
  "16384",
], async (_d, client) => {
  const gens = Array.from(
    { length: 8 },
    (_, i) => generate(client, { prompt: `stream ${i}`, max_tokens: 100000, temperature: 0 }),
  );
  const iterators = gens.map((g) => g[Symbol.asyncIterator]());
  await Promise.all(iterators.map((it) => it.next()));
  for (let t = 0; t < 200; t++) assert.equal((await client.request({ type: "ping", t })).t, t);
  // Every stream was still decoding after the last pong: the pings did not wait for them.
  const next = await Promise.all(iterators.map((it) => it.next()));
  assert.deepEqual(next.map((r) => r.value?.event), Array(8).fill("token"));
  for (const g of gens) g.cancel();
});

withDaemon(
  "a daemon started with --no-model answers generate with E_NO_MODEL",
  ["--no-model"],
  async (_d, client) => {
    await assert.rejects(
      () => generate(client, { prompt: "hi" }).complete(),
      (e: UmadError) => e.code === "E_NO_MODEL",
    );
    const after = await client.request({ type: "ping", t: "after" });
    assert.equal(after.t, "after", "the connection goes on");
  },
);

Deno.test("umad serve without --model generates the demo model into the cache dir and says it is random", async () => {
  const cache = await Deno.makeTempDir({ prefix: "umad-llm-cache-" });
  const d = await startLlmDaemon(["--threads", "1", "--parallel", "2"], { XDG_CACHE_HOME: cache });
  try {
    const client = await connect({ socket: d.socket, reconnect: false });
    try {
      const model = (client.hello as { model?: { name: string; random_weights: boolean } }).model;
      assert.equal(model?.random_weights, true);
      assert.match(model!.name, /demo/);
      const r = await generate(client, { prompt: "Hello world", max_tokens: 4 }).complete();
      assert.equal(r.usage.completion_tokens, 4);
    } finally {
      await client.close();
    }
    const files = [...Deno.readDirSync(`${cache}/umad`)].map((e) => e.name);
    assert.ok(files.some((f) => f.endsWith(".gguf")), files.join());
    assert.match(d.stderr(), /random\s+weights/);
    assert.match(d.stderr(), /--model FILE\.gguf/);
  } finally {
    await d.stop();
    await Deno.remove(cache, { recursive: true });
  }
});
