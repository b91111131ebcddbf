// `deno task bench`: every benchmark side by side in one run, written to
// docs/BENCHMARKS.md with the machine and the date. `--only server,codec,pty,llm,http,models,native` picks
// some; `pty` is all of `pty.throughput,pty.echo,pty.capture,pty.wait` (about 6 minutes
// here: throughput ~3, echo ~2 with the LLM load, capture ~20 s, wait ~20 s), which run
// alone too.
// (`native`: prebuilt library vs native build, see scripts/bench_native.ts).
// `--only llm.storm,llm.sweep` picks parts of the LLM one (see bench_llm.ts).
import { parseArgs } from "node:util";
import { benchServer } from "./bench_server.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { only: { type: "string" }, out: { type: "string" } },
});
const only = new Set((values.only ?? "server,codec,pty,llm,http,models,native").split(","));
const PTY_PARTS = ["pty.throughput", "pty.echo", "pty.capture", "pty.wait"];
if (only.has("pty")) { for (const p of PTY_PARTS) only.add(p); }
/** LLM parts named as `llm.<part>` (none: every part). */
const llmParts = new Set([...only].filter((o) => o.startsWith("llm.")).map((o) => o.slice(4)));
if (llmParts.size) only.add("llm");
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
if (only.has("codec")) {
  console.error("bench: frame decode");
  const { benchCodec } = await import("./bench_codec.ts");
  sections.push(benchCodec());
}
if (only.has("pty.throughput") || only.has("pty.echo")) {
  console.error("bench: terminals");
  const { benchPty, llmDecodeLoad } = await import("./bench_pty.ts");
  const echo = only.has("pty.echo");
  // The daemon has its (demo) model loaded so the echo can be measured again while 8
  // streams decode beside it.
  sections.push(
    await benchPty({
      daemonArgs: echo ? [] : ["--no-model"],
      echoOnly: !only.has("pty.throughput"),
      noEcho: !echo,
      ...(echo
        ? { backgroundLoad: llmDecodeLoad(8), backgroundLabel: "8 LLM streams decode (demo model)" }
        : {}),
    }),
  );
}
if (only.has("pty.capture") || only.has("pty.wait")) {
  console.error("bench: terminals read by programs");
  const { benchPtyPrograms } = await import("./bench_pty_programs.ts");
  const parts = (["capture", "wait"] as const).filter((p) => only.has(`pty.${p}`));
  sections.push(await benchPtyPrograms({ parts: [...parts] }));
}
if (only.has("llm")) {
  console.error("bench: llm");
  const { benchLlm } = await import("./bench_llm.ts");
  sections.push(await benchLlm(llmParts));
}

if (only.has("http")) {
  console.error("bench: http");
  const { benchHttp } = await import("./bench_http.ts");
  sections.push(await benchHttp());
}

if (only.has("models")) {
  console.error("bench: real vocabularies and structured output");
  const { benchModels } = await import("./bench_models.ts");
  sections.push(await benchModels());
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
