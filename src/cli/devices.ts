import { parse, UsageError } from "./_args.ts";
import { openLibraries } from "../llm/ffi.ts";
import { chooseLibrary, gpuHints, libraryCandidates } from "../llm/llama_lib.ts";
import { listDevices } from "../llm/devices.ts";

/** `umad devices --help`. */
export const DEVICES_HELP = `umad devices — the compute devices llama.cpp sees

Usage: umad devices [--llama-lib DIR] [--no-gpu] [--json]

Loads the llama.cpp library umad serve would load (or --llama-lib DIR) in this process
and lists its devices: name (for --device), type, description, free and total memory.
A GPU is listed only when the library carries its backend: "umad llama add cuda" or
"umad llama add vulkan" (Linux), or "umad llama build --gpu ..."; Metal is in the macOS
arm64 package. A running daemon reports the same in "umad status".`;

function mib(bytes: number): string {
  return `${Math.round(bytes / 2 ** 20)} MiB`;
}

/** `umad devices`. */
export function devicesCommand(args: string[]): Promise<number> {
  return Promise.resolve(devices(args));
}

function devices(args: string[]): number {
  const { values, positionals } = parse(args, {
    "llama-lib": { type: "string" },
    "no-gpu": { type: "boolean" },
    json: { type: "boolean" },
  }, false);
  if (values.help) {
    console.log(DEVICES_HELP);
    return 0;
  }
  if (positionals.length) throw new UsageError(`Unexpected argument "${positionals[0]}"`);
  const chosen = chooseLibrary(libraryCandidates({ libDir: values["llama-lib"] }), {
    gpu: !values["no-gpu"],
    present: gpuHints(),
  });
  const libs = openLibraries(chosen.choice.dir);
  try {
    const devices = listDevices(libs).map(({ index: _, ...d }) => d);
    const lib = libs.library;
    if (values.json) {
      console.log(JSON.stringify({ library: { ...lib, reason: chosen.reason }, devices }, null, 2));
      return 0;
    }
    console.log(`library: llama.cpp ${lib.version}, ${chosen.reason}`);
    console.log(
      `backends: ${lib.backends.join(", ")}` +
        (lib.cpuVariant ? `; CPU code ${lib.cpuVariant}` : ""),
    );
    const rows = devices.map((
      d,
    ) => [d.name, d.type, mib(d.memory_free), mib(d.memory_total), d.description]);
    const head = ["NAME", "TYPE", "FREE", "TOTAL", "DESCRIPTION"];
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
    for (const r of [head, ...rows]) {
      console.log(r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd());
    }
    if (!devices.some((d) => d.type !== "cpu")) {
      console.log(
        lib.backend === "cpu"
          ? "no GPU: this library is CPU-only (see umad devices --help)"
          : `no GPU found by the ${lib.backend} backend`,
      );
    }
    return 0;
  } finally {
    libs.close();
  }
}
