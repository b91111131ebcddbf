// `deno task bench`: every benchmark side by side in one run, written to
// docs/BENCHMARKS.md with the machine and the date. `--only server,pty,llm,native` picks
// some (`native`: prebuilt library vs native build, ~6 min; see scripts/bench_native.ts).
import { parseArgs } from "node:util";
import { benchServer } from "./bench_server.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { only: { type: "string" }, out: { type: "string" } },
});
const only = new Set((values.only ?? "server,pty,llm,native").split(","));
const outPath = values.out ?? new URL("../docs/BENCHMARKS.md", import.meta.url).pathname;

function machine(): string {
  const cpu = Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1] ??
    "unknown CPU";
  const mem = Deno.systemMemoryInfo().total / 2 ** 30;
  return `${cpu}, ${navigator.hardwareConcurrency} CPUs visible, ${
    mem.toFixed(0)
  } GiB, ${Deno.build.os} ${Deno.build.arch}, Deno ${Deno.version.deno}`;
}

const sections: string[] = [];
const started = new Date();
if (only.has("server")) {
  console.error("bench: control channel");
  sections.push(await benchServer());
}
if (only.has("pty")) {
  console.error("bench: terminals");
  const { benchPty, llmDecodeLoad } = await import("./bench_pty.ts");
  // The daemon has its (demo) model loaded so the echo can be measured again while 8
  // streams decode beside it.
  sections.push(
    await benchPty({
      daemonArgs: [],
      backgroundLoad: llmDecodeLoad(8),
      backgroundLabel: "8 LLM streams decode (demo model)",
    }),
  );
}
if (only.has("llm")) {
  console.error("bench: llm");
  const { benchLlm } = await import("./bench_llm.ts");
  sections.push(await benchLlm());
}

if (only.has("native")) {
  console.error("bench: native build vs prebuilt library");
  const { benchNative } = await import("./bench_native.ts");
  sections.push(await benchNative());
}

const doc = [
  "# Benchmarks",
  "",
  `Written by \`deno task bench\` on ${started.toISOString().slice(0, 10)}.`,
  "",
  `Machine: ${machine()}.`,
  "",
  "Every comparison below was measured side by side in one run, on a shared machine:",
  "ratios are the figures to read; absolute numbers move with the machine's load.",
  "",
  ...sections,
].join("\n");
Deno.writeTextFileSync(outPath, doc.endsWith("\n") ? doc : doc + "\n");
// Keep the generated file as `deno fmt --check` wants it.
await new Deno.Command(Deno.execPath(), { args: ["fmt", "-q", outPath] }).output();
console.log(doc);
