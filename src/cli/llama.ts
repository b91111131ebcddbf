import { parse, UsageError } from "./_args.ts";
import { ensureLlamaSource } from "../llm/llama_source.ts";
import { buildNative, GPU_REQUESTS, type GpuRequest } from "../llm/native_build.ts";
import { addPrebuilt } from "../llm/prebuilt.ts";
import {
  chooseLibrary,
  gpuHints,
  libraryCandidates,
  LLAMA_CPP_VERSION,
  LLAMA_PACKAGE_VERSION,
  type LlamaBackend,
  llamaCacheDir,
  type NativeBuildManifest,
} from "../llm/llama_lib.ts";
import { LLAMA_PATCHES } from "../llm/llama_patches.ts";

/** `umad llama --help`. */
export const LLAMA_HELP = `umad llama — the llama.cpp libraries umad runs on

Usage:
  umad llama build [--gpu auto|cpu|cuda|vulkan|metal] [--jobs N] [--clean]
  umad llama add cpu|cuda|vulkan|metal [--dir DIR] [--force]
  umad llama list [--json] [--no-gpu]

build   Builds libllama/libggml for this machine from the llama.cpp source that
        matches the prebuilt packages (v${LLAMA_CPP_VERSION}, fetched once from npm), with
        -march=native, into ${llamaCacheDir()}/native/.
        umad serve prefers it from then on. --gpu auto (default) builds Metal on
        Apple Silicon, CUDA where nvcc is installed, Vulkan where glslc and the Vulkan
        headers are, else the CPU only. Needs cmake and a C++ compiler; takes a few
        minutes (about 3 on 2 cores for the CPU).
add     Downloads the prebuilt @node-llama-cpp package for this platform with that
        backend (v${LLAMA_PACKAGE_VERSION}; CUDA is 136 MB) into ${llamaCacheDir()}/prebuilt/,
        or into --dir DIR (then pass --llama-lib DIR to umad serve).
list    Shows every library found, which one umad serve would load, and why.

Exit codes: 0 ok, 1 build or download failed, 2 usage error or missing tools.`;

function progressReporter(label: string): {
  update(fraction: number, line: string): void;
  done(): void;
} {
  const tty = Deno.stderr.isTerminal();
  const enc = new TextEncoder();
  const cols = () => {
    try {
      return Deno.consoleSize().columns;
    } catch {
      return 80;
    }
  };
  let lastStep = -1;
  let lastDraw = 0;
  return {
    update(fraction, line) {
      const pct = Math.floor(fraction * 100);
      if (tty) {
        const now = performance.now();
        if (now - lastDraw < 100 && pct === lastStep) return;
        lastDraw = now;
        lastStep = pct;
        const width = 30;
        const filled = Math.round(fraction * width);
        const bar = "█".repeat(filled) + "░".repeat(width - filled);
        const what = line.replace(/^\[[^\]]*\]\s*/, "");
        const room = Math.max(0, cols() - width - 16 - label.length);
        const text = `\r\x1b[2K${label} [${bar}] ${String(pct).padStart(3)}% ${
          what.slice(0, room)
        }`;
        Deno.stderr.writeSync(enc.encode(text));
      } else if (Math.floor(pct / 10) > lastStep) {
        lastStep = Math.floor(pct / 10);
        console.error(`${label}: ${lastStep * 10}%`);
      }
    },
    done() {
      if (tty) Deno.stderr.writeSync(enc.encode("\r\x1b[2K"));
    },
  };
}

async function buildCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    gpu: { type: "string" },
    jobs: { type: "string" },
    clean: { type: "boolean" },
    define: { type: "string", multiple: true, short: "D" },
  }, false);
  if (values.help) {
    console.log(LLAMA_HELP);
    return 0;
  }
  if (positionals.length) throw new UsageError(`Unexpected argument "${positionals[0]}"`);
  const gpu = (values.gpu ?? "auto") as GpuRequest;
  if (!GPU_REQUESTS.includes(gpu)) {
    throw new UsageError(`--gpu must be one of ${GPU_REQUESTS.join(", ")}, got "${values.gpu}"`);
  }
  const jobs = values.jobs === undefined ? undefined : Number(values.jobs);
  if (jobs !== undefined && !(Number.isInteger(jobs) && jobs >= 1 && jobs <= 1024)) {
    throw new UsageError(`--jobs must be a whole number from 1 to 1024, got "${values.jobs}"`);
  }
  const bar = progressReporter("building llama.cpp");
  // A log line first clears the bar it would otherwise be written after.
  const log = (m: string) => {
    bar.done();
    console.error(`umad llama build: ${m}`);
  };
  let result;
  try {
    result = await buildNative({
      gpu,
      jobs,
      source: () => ensureLlamaSource({ log }),
      clean: values.clean,
      extra: (values.define ?? []).map((d) => `-D${d}`),
      log,
      onProgress: (f, line) => bar.update(f, line),
    });
  } finally {
    bar.done();
  }
  const m = result.manifest;
  console.log(
    `built llama.cpp v${m.llama_cpp_version} (${m.backend}) for ${m.cpu} in ${m.build_seconds} s` +
      (m.patches?.length ? ` with umad's patches (${m.patches.join(", ")})` : "") + ":\n" +
      `  ${result.plan.libDir}\numad serve uses it from now on (check with "umad llama list").`,
  );
  return 0;
}

const BACKENDS: readonly LlamaBackend[] = ["cpu", "cuda", "vulkan", "metal"];

async function addCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    dir: { type: "string" },
    force: { type: "boolean" },
  });
  if (values.help) {
    console.log(LLAMA_HELP);
    return 0;
  }
  const backend = positionals[0] as LlamaBackend | undefined;
  if (!backend || !BACKENDS.includes(backend) || positionals.length > 1) {
    throw new UsageError(`umad llama add takes one of ${BACKENDS.join(", ")}`);
  }
  const bar = progressReporter(`downloading ${backend}`);
  let result;
  try {
    result = await addPrebuilt(backend, {
      dir: values.dir,
      force: values.force,
      log: (m) => {
        bar.done();
        console.error(`umad llama add: ${m}`);
      },
      onBytes: (done, total) =>
        total > 0 && bar.update(done / total, `${(done / 2 ** 20).toFixed(1)} MiB`),
    });
  } finally {
    bar.done();
  }
  console.log(
    `${result.fetched ? "added" : "already there:"} @node-llama-cpp/${result.pkg.platform}@` +
      `${LLAMA_PACKAGE_VERSION} in ${result.dir}` +
      (values.dir ? `\nuse it with: umad serve --llama-lib ${result.dir}` : ""),
  );
  return 0;
}

/** Which of umad's llama.cpp patches a native build carries, in words. */
function patchLine(m: NativeBuildManifest): string {
  const have = m.patches ?? [];
  const missing = LLAMA_PATCHES.map((p) => p.name).filter((n) => !have.includes(n));
  if (missing.length) {
    return `built without umad's patches (${
      missing.join(", ")
    }): "umad llama build" again adds them`;
  }
  return `with umad's patches: ${have.join(", ")}`;
}

function listCommand(args: string[]): number {
  const { values, positionals } = parse(args, {
    json: { type: "boolean" },
    "no-gpu": { type: "boolean" },
    "llama-lib": { type: "string" },
  }, false);
  if (values.help) {
    console.log(LLAMA_HELP);
    return 0;
  }
  if (positionals.length) throw new UsageError(`Unexpected argument "${positionals[0]}"`);
  const candidates = libraryCandidates({ libDir: values["llama-lib"] });
  let chosen: ReturnType<typeof chooseLibrary> | null = null;
  let error: string | null = null;
  try {
    chosen = chooseLibrary(candidates, { gpu: !values["no-gpu"], present: gpuHints() });
  } catch (e) {
    error = (e as Error).message;
  }
  if (values.json) {
    console.log(
      JSON.stringify(
        { candidates, chosen: chosen?.choice.dir ?? null, reason: chosen?.reason ?? error },
        null,
        2,
      ),
    );
    return chosen ? 0 : 2;
  }
  for (const c of candidates) {
    const mark = chosen?.choice === c ? "*" : " ";
    const what = c.files
      ? `${c.files.backend.padEnd(6)} ${c.files.layout.padEnd(5)}`
      : "unusable    ";
    console.log(
      `${mark} ${c.source.padEnd(14)} ${what} ${c.dir}${c.problem ? `\n    ${c.problem}` : ""}`,
    );
    if (c.source === "native" && c.manifest && !c.problem) {
      console.log(`    ${patchLine(c.manifest)}`);
    }
  }
  if (chosen) console.log(`\numad serve would load ${chosen.reason}`);
  else console.error(`\n${error}`);
  return chosen ? 0 : 2;
}

/** `umad llama build|add|list`. */
export async function llamaCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case "build":
      return await buildCommand(rest);
    case "add":
      return await addCommand(rest);
    case "list":
      return listCommand(rest);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      console.log(LLAMA_HELP);
      return sub === undefined ? 2 : 0;
    default:
      throw new UsageError(`Unknown "umad llama ${sub}"; one of build, add, list`);
  }
}
