// The GPU check (run by scripts/gpu_check.sh on a machine with an NVIDIA GPU): umad on
// the CUDA libraries with every layer offloaded, against llama-bench on the same GPU and
// the same llama.cpp source, for the bench model and a 1.1B-parameter one. Writes
// Markdown to stdout (the BENCHMARKS.md section) and fails when the layers did not all
// go to the GPU.
//
// Usage: deno run -A scripts/gpu_check.ts LIB_DIR LLAMA_BENCH [--cwd DIR]
//   LIB_DIR      the CUDA libraries umad loads (the npm package, or a native build's lib/)
//   LLAMA_BENCH  llama-bench built from the same source (run with --cwd DIR, where
//                ggml_backend_load_all finds the package's loadable backends)
import { startDaemon } from "../tests/_daemon.ts";
import { connect } from "../src/client/client.ts";
import { BENCH_MODEL, ensureSyntheticModel, type SyntheticModelSpec } from "../src/llm/mod.ts";
import { type Figures, umadFigures } from "./bench_native.ts";
import { ROOT } from "./_bench_util.ts";

const [libDir, llamaBench, ...rest] = Deno.args;
if (!libDir || !llamaBench) {
  console.error(
    "usage: deno run -A scripts/gpu_check.ts LIB_DIR LLAMA_BENCH [--cwd DIR] [--ld-path DIR]",
  );
  Deno.exit(2);
}
const opt = (name: string) => (rest.includes(name) ? rest[rest.indexOf(name) + 1] : undefined);
const benchCwd = opt("--cwd");
const ldPath = opt("--ld-path");

/** About 1.1B parameters, F16 (2.2 GB): big enough that the GPU, not the launch overhead, counts. */
const BIG_MODEL: SyntheticModelSpec = {
  name: "umad-gpu-1b-random",
  nEmbd: 2048,
  nLayer: 22,
  nHead: 32,
  nHeadKv: 4,
  nFf: 5632,
  contextLength: 4096,
  type: "F16",
  seed: 7,
};

function log(msg: string) {
  console.error(`gpu check: ${msg}`);
}

async function text(cmd: string, args: string[], opts: Deno.CommandOptions = {}): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped", ...opts })
    .output();
  if (!out.success) {
    throw new Error(
      `${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr).slice(-1500)}`,
    );
  }
  return new TextDecoder().decode(out.stdout);
}

const devices = JSON.parse(
  await text(Deno.execPath(), [
    "run",
    "-A",
    `${ROOT}main.ts`,
    "devices",
    "--json",
    "--llama-lib",
    libDir,
  ]),
) as {
  library: { version: string; backends: string[] };
  devices: { name: string; type: string; description: string; memory_total: number }[];
};
const gpu = devices.devices.find((d) => d.type === "gpu");
if (!gpu) {
  console.error(`no GPU among the devices of ${libDir}: ${JSON.stringify(devices.devices)}`);
  Deno.exit(1);
}
log(`${gpu.name}: ${gpu.description}, ${(gpu.memory_total / 2 ** 30).toFixed(0)} GiB`);

async function helloOf(model: string): Promise<{ gpu_layers: number; gpu_layers_total: number }> {
  const d = await startDaemon(["--model", model, "--llama-lib", libDir, "--gpu-layers", "auto"], {
    withModel: true,
    stderr: "inherit",
    startTimeoutMs: 120_000,
  });
  try {
    const c = await connect({ socket: d.socket, reconnect: false });
    const m = c.hello.model as { gpu_layers: number; gpu_layers_total: number };
    await c.close();
    return m;
  } finally {
    await d.stop();
  }
}

async function llamaBenchRun(model: string): Promise<{ pp: number; tg: number }> {
  const json = JSON.parse(
    await text(llamaBench, [
      "-m",
      model,
      "-ngl",
      "99",
      "-p",
      "512",
      "-n",
      "128",
      "-r",
      "3",
      "-o",
      "json",
    ], {
      cwd: benchCwd,
      env: ldPath ? { LD_LIBRARY_PATH: ldPath } : {},
    }),
  ) as { n_prompt: number; n_gen: number; avg_ts: number }[];
  return {
    pp: json.find((r) => r.n_prompt > 0 && r.n_gen === 0)?.avg_ts ?? NaN,
    tg: json.find((r) => r.n_gen > 0 && r.n_prompt === 0)?.avg_ts ?? NaN,
  };
}

const f0 = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : "n/a");
const lines = [
  `## GPU offload (${gpu.description})`,
  "",
  `Written by scripts/gpu_check.sh on ${
    new Date().toISOString().slice(0, 10)
  }: llama.cpp ${devices.library.version} ` +
  `from ${libDir} (backends ${devices.library.backends.join(", ")}), every layer on ${gpu.name}; ` +
  "llama-bench from the same source on the same libraries and GPU; umad client to client over its socket.",
  "",
  "| model | layers on GPU | llama-bench pp512 | umad prefill | llama-bench tg128 | umad 1 stream | umad 8 streams | umad 16 streams | umad 1 stream / tg128 |",
  "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
];
let ok = true;
for (const spec of [BENCH_MODEL, BIG_MODEL]) {
  log(`model ${spec.name}`);
  const model = ensureSyntheticModel(spec);
  const hello = await helloOf(model);
  if (hello.gpu_layers !== hello.gpu_layers_total) ok = false;
  const bench = await llamaBenchRun(model);
  const u: Figures = await umadFigures(model, libDir, 0, [
    "--gpu-layers",
    "auto",
    "--threads",
    "4",
  ]);
  const one = u.decode.get(1)!;
  lines.push(
    `| ${spec.name} | ${hello.gpu_layers}/${hello.gpu_layers_total} | ${f0(bench.pp)} | ${
      f0(u.prefill)
    } | ${f0(bench.tg)} | ` +
      `${f0(one)} | ${f0(u.decode.get(8)!)} | ${f0(u.decode.get(16)!)} | ${
        (one / bench.tg).toFixed(2)
      }× |`,
  );
}
console.log(lines.join("\n"));
if (!ok) {
  console.error("not every layer was offloaded (see the layers column)");
  Deno.exit(1);
}
