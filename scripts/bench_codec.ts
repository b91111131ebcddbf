// Frame decode cost of strict UTF-8 for MessagePack `str` (hardening finding 3): the
// library's decoder alone (what the daemon did before: it repaired invalid UTF-8
// silently) beside decodePayload (the decoder plus the strict str check), per frame
// kind, interleaved in one run. `deno task bench --only codec` (a few seconds).
import { Decoder } from "@msgpack/msgpack";
import { decodePayload, encodePayload, type Message } from "../src/protocol/mod.ts";
import { fmt } from "./_bench_util.ts";

const libraryOnly = new Decoder();

function frames(): [string, Uint8Array][] {
  const ascii = "The quick brown fox jumps over the lazy dog. ".repeat(46).slice(0, 2048);
  const mixed = "Grüße, 世界! Ça va? ".repeat(120).slice(0, 2048);
  const bin = crypto.getRandomValues(new Uint8Array(4096));
  const kinds: [string, Message][] = [
    ["ping", { type: "ping", id: "p1" }],
    ["pty.input, 16 B str", { type: "pty.input", id: "i1", session: "a1b2c3d4", data: "ls -la\r" }],
    ["pty.input, 4 KiB bin", { type: "pty.input", id: "i2", session: "a1b2c3d4", data: bin }],
    ["generate, 2 KiB ASCII prompt", { type: "generate", id: "g1", prompt: ascii, max_tokens: 64 }],
    ["generate, 2 KiB non-ASCII prompt", {
      type: "generate",
      id: "g2",
      prompt: mixed,
      max_tokens: 64,
    }],
  ];
  return kinds.map(([name, m]) => [name, encodePayload(m, "msgpack")]);
}

function nsPerOp(fn: () => unknown, iterations: number): number {
  const t0 = performance.now();
  for (let i = 0; i < iterations; i++) fn();
  return ((performance.now() - t0) * 1e6) / iterations;
}

/** The codec section of docs/BENCHMARKS.md. */
export function benchCodec(rounds = 15): string {
  const rows: string[] = [];
  for (const [name, payload] of frames()) {
    const iterations = payload.length > 1000 ? 20_000 : 100_000;
    const before: number[] = [];
    const after: number[] = [];
    for (let r = 0; r < rounds; r++) {
      before.push(nsPerOp(() => libraryOnly.decode(payload), iterations));
      after.push(nsPerOp(() => decodePayload(payload), iterations));
    }
    const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const b = median(before);
    const a = median(after);
    rows.push(`| ${name} | ${payload.length} | ${fmt(b, 0)} | ${fmt(a, 0)} | ${fmt(a / b, 2)}× |`);
  }
  return [
    "## Frame decode: strict UTF-8 for MessagePack str",
    "",
    "Median ns per decode over 15 interleaved rounds (`scripts/bench_codec.ts`). Before: the",
    "library's decoder alone, which repairs invalid UTF-8 silently. After: `decodePayload`, the",
    "decoder plus the check that refuses it (skipped when the payload has no byte above 0x7f).",
    "",
    "| frame | bytes | before (ns) | after (ns) | after / before |",
    "|---|---|---|---|---|",
    ...rows,
    "",
  ].join("\n");
}

if (import.meta.main) console.log(benchCodec());
