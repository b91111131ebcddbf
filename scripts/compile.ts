/**
 * Builds the umad executables: `dist/umad-<target>` for every `deno compile` target
 * (or those named with `--target`), each with the llama.cpp libraries of its platform
 * embedded.
 *
 * The libraries come from `@node-llama-cpp/<platform>@3.21.1` (llama.cpp v0.4.0, one
 * version for every platform, pinned in src/llm/llama_lib.ts and deno.json), folder
 * `bins/<platform>/`: the installed package for the host, the others fetched once into
 * the user cache (as `umad llama add` does); copied to `dist/llama/<platform>/` and
 * embedded with `--include`. GPU packages are not embedded (CUDA alone is 136 MB): a
 * compiled umad fetches one with `umad llama add cuda|vulkan`. On Apple Silicon the
 * embedded package is the Metal one. The Windows executable serves HTTP on loopback
 * only, until named pipes exist. The binary is `--self-extracting`: on first run it unpacks its files
 * beside itself (`.umad-<target>/<hash>/`, else under the user's data directory), so
 * `Deno.dlopen` and llama.cpp's own backend loader see real files. In the running
 * binary the directory is `new URL("../../dist/llama/<platform>/", import.meta.url)`
 * from `src/llm/`, i.e. `dist/llama/<platform>/` beside `main.ts`.
 *
 * `deno compile` needs `denort` for each target: `$DENO_DIR/dl/release/v<deno>/
 * denort-<target>.zip`, downloaded on first use when the machine has internet. Without
 * it this script says so and exits 1.
 *
 * Usage: `deno task compile [--target T]... [options]` (see `--help`).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { exists } from "./_fs.ts";
import {
  inspectLibraryDir,
  LLAMA_CPP_VERSION,
  LLAMA_PACKAGE_VERSION,
  PREBUILT_PACKAGES,
} from "../src/llm/llama_lib.ts";
import { addPrebuilt } from "../src/llm/prebuilt.ts";

/** Each `deno compile` target and the `@node-llama-cpp/<platform>` package it needs. */
export const TARGETS: Readonly<Record<string, string>> = {
  "x86_64-unknown-linux-gnu": "linux-x64",
  "aarch64-unknown-linux-gnu": "linux-arm64",
  "x86_64-apple-darwin": "mac-x64",
  "aarch64-apple-darwin": "mac-arm64-metal",
  "x86_64-pc-windows-msvc": "win-x64",
};

const ROOT = decodeURIComponent(new URL("..", import.meta.url).pathname).replace(/\/$/, "");
const DIST = `${ROOT}/dist`;
const LLAMA_SCOPE = "@node-llama-cpp";

const HELP = `Build dist/umad-<target> with deno compile, llama.cpp embedded.

Usage: deno run -A scripts/compile.ts [--target T]... [options]

Targets (default: all):
${Object.entries(TARGETS).map(([t, p]) => `  ${t.padEnd(28)} ${LLAMA_SCOPE}/${p}`).join("\n")}

Options:
  --target T                build this target (repeatable)
  --llama-dir [T=]DIR       take target T's llama.cpp libraries from DIR instead of
                            npm (T may be left out when one target is built)
  --no-llama                embed no llama.cpp libraries (the binary then needs
                            --llama-lib or UMAD_LLAMA_LIB to serve a model)
  --allow-missing-llama     build a target whose llama.cpp package cannot be had
                            without the libraries, with a warning, instead of failing
  --dry-run                 stage the libraries and print the deno compile commands
  -h, --help                show this help

denort: deno compile needs $DENO_DIR/dl/release/v${Deno.version.deno}/denort-<target>.zip;
it downloads it when the machine has internet. Exit codes: 0 built, 1 build failed
(denort or libraries unavailable, compile error), 2 usage error.`;

/** A failure the message explains (exit 1), or a usage error (exit 2). */
class CompileError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = "CompileError";
    this.exitCode = exitCode;
  }
}

interface Options {
  targets: string[];
  llamaDirs: Map<string, string>;
  noLlama: boolean;
  allowMissingLlama: boolean;
  dryRun: boolean;
}

function parseOptions(args: string[]): Options | "help" {
  let values;
  try {
    values = parseArgs({
      args,
      options: {
        target: { type: "string", multiple: true },
        "llama-dir": { type: "string", multiple: true },
        "no-llama": { type: "boolean" },
        "allow-missing-llama": { type: "boolean" },
        "dry-run": { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (e) {
    throw new CompileError(`${(e as Error).message}\n\n${HELP}`, 2);
  }
  if (values.help) return "help";
  const targets = values.target?.length ? [...new Set(values.target)] : Object.keys(TARGETS);
  for (const t of targets) {
    if (!(t in TARGETS)) {
      throw new CompileError(
        `Unknown target "${t}"; one of: ${Object.keys(TARGETS).join(", ")}`,
        2,
      );
    }
  }
  const llamaDirs = new Map<string, string>();
  for (const spec of values["llama-dir"] ?? []) {
    const eq = spec.indexOf("=");
    const target = eq > 0 && spec.slice(0, eq) in TARGETS ? spec.slice(0, eq) : null;
    if (target === null && targets.length !== 1) {
      throw new CompileError(
        `--llama-dir "${spec}": name the target (T=DIR) when building several`,
        2,
      );
    }
    llamaDirs.set(target ?? targets[0], target === null ? spec : spec.slice(eq + 1));
  }
  return {
    targets,
    llamaDirs,
    noLlama: values["no-llama"] ?? false,
    allowMissingLlama: values["allow-missing-llama"] ?? false,
    dryRun: values["dry-run"] ?? false,
  };
}

interface Output {
  success: boolean;
  code: number;
  text: string;
}

async function run(cmd: string, args: string[], opts: Deno.CommandOptions = {}): Promise<Output> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cmd, { ...opts, args, stdin: "null" }).output();
  } catch (e) {
    throw new CompileError(`Cannot run ${cmd}: ${(e as Error).message}`);
  }
  const dec = new TextDecoder();
  return {
    success: out.success,
    code: out.code,
    text: dec.decode(out.stdout) + dec.decode(out.stderr),
  };
}

/** `umad-<target>`, with `.exe` for Windows. */
export function exeName(target: string): string {
  return `umad-${target}${target.includes("windows") ? ".exe" : ""}`;
}

// ---- denort ---------------------------------------------------------------------------

async function denoDir(): Promise<string> {
  const out = await run(Deno.execPath(), ["info", "--json"]);
  try {
    return JSON.parse(out.text).denoDir;
  } catch {
    throw new CompileError(`Cannot read DENO_DIR from "deno info --json":\n${out.text}`);
  }
}

/** Refuses a DENORT_BIN that is plain deno: the "executable" would be the deno CLI. */
async function checkDenortBin(targets: string[]): Promise<string | null> {
  const bin = Deno.env.get("DENORT_BIN");
  if (!bin) return null;
  const real = await Deno.realPath(bin).catch(() => {
    throw new CompileError(`DENORT_BIN="${bin}" does not exist`, 2);
  });
  const base = real.split(/[\\/]/).pop() ?? "";
  if (real === await Deno.realPath(Deno.execPath()) || /^deno(\.exe)?$/.test(base)) {
    throw new CompileError(
      `DENORT_BIN="${bin}" is the deno CLI, not denort: the result would be deno itself, ` +
        `not umad. Unset DENORT_BIN and provide denort-<target>.zip in DENO_DIR instead.`,
      2,
    );
  }
  if (targets.length !== 1 || targets[0] !== Deno.build.target) {
    throw new CompileError(
      `DENORT_BIN is a runtime for one platform; with it set, build only ` +
        `--target ${Deno.build.target}`,
      2,
    );
  }
  return real;
}

/** The lines of deno compile's output that say why the download failed. */
function downloadError(text: string): string {
  const lines = text.split("\n").map((l) => l.trim()).filter((l) =>
    /denort|error sending|dns|connect|not found|denied/i.test(l) && !/temporary file/.test(l)
  );
  return (lines.length ? lines.slice(0, 3) : [text.trim()]).join("\n  ");
}

function denortMissing(target: string, zip: string, detail: string): CompileError {
  return new CompileError(
    `denort for ${target} is not available, so deno compile cannot build ${exeName(target)}.
deno compile looks for ${zip}
and otherwise downloads it, which failed here:
  ${downloadError(detail)}
Run "deno task compile" on a machine with internet (the zips are cached in DENO_DIR
after the first run), or copy denort-<target>.zip for deno ${Deno.version.deno} into
${zip.slice(0, zip.lastIndexOf("/") + 1)}
(see docs/NPM_AND_COMPILE.md).`,
  );
}

/**
 * Makes sure `deno compile` has denort for `target`: the zip in DENO_DIR, else a probe
 * compile of a one-line script (which downloads and caches the zip when it can).
 */
async function ensureDenort(target: string, dir: string, denortBin: string | null) {
  if (denortBin) return;
  const zip = `${dir}/dl/release/v${Deno.version.deno}/denort-${target}.zip`;
  if (await exists(zip)) return;
  const probe = await Deno.makeTempDir({ prefix: "umad-denort-probe-" });
  try {
    await Deno.writeTextFile(`${probe}/probe.ts`, "console.log(1);\n");
    const out = await run(Deno.execPath(), [
      "compile",
      "--no-config",
      "--quiet",
      "--target",
      target,
      "--output",
      `${probe}/probe`,
      `${probe}/probe.ts`,
    ], { cwd: probe, env: { NO_COLOR: "1" } });
    if (!out.success) throw denortMissing(target, zip, out.text);
  } finally {
    await Deno.remove(probe, { recursive: true }).catch(() => {});
  }
}

// ---- llama.cpp libraries --------------------------------------------------------------

/** The OS and architecture a `deno compile` target runs on. */
export function targetPlatform(
  target: string,
): { os: typeof Deno.build.os; arch: typeof Deno.build.arch } {
  return {
    os: target.includes("windows") ? "windows" : target.includes("apple") ? "darwin" : "linux",
    arch: target.startsWith("aarch64") ? "aarch64" : "x86_64",
  };
}

/** The one pinned version (src/llm/llama_lib.ts), which deno.json's import must agree with. */
async function llamaVersion(): Promise<string> {
  const denoJson = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`));
  for (const value of Object.values(denoJson.imports ?? {})) {
    const m = String(value).match(/^npm:@node-llama-cpp\/[^@]+@(\d[^/]*)$/);
    if (m && m[1] !== LLAMA_PACKAGE_VERSION) {
      throw new CompileError(
        `deno.json pins ${value} but src/llm/llama_lib.ts is written for ` +
          `${LLAMA_PACKAGE_VERSION}: make them agree`,
      );
    }
  }
  return LLAMA_PACKAGE_VERSION;
}

/** The installed package's bins dir when it is this platform at this version. */
async function installedBins(platform: string, version: string): Promise<string | null> {
  const pkgDir = `${ROOT}/node_modules/${LLAMA_SCOPE}/${platform}`;
  try {
    const pkg = JSON.parse(await Deno.readTextFile(`${pkgDir}/package.json`));
    if (pkg.version !== version) return null;
  } catch {
    return null;
  }
  const bins = `${pkgDir}/bins/${platform}`;
  return await exists(bins) ? bins : null;
}

async function copyDir(from: string, to: string): Promise<number> {
  await Deno.mkdir(to, { recursive: true });
  let bytes = 0;
  for await (const e of Deno.readDir(from)) {
    const src = `${from}/${e.name}`;
    const dst = `${to}/${e.name}`;
    if (e.isDirectory) bytes += await copyDir(src, dst);
    // Node's addon, its import library and its C++ helpers: FFI uses none of them.
    else if (/\.(node|lib)$|^(lib)?llama-common\.|^\./.test(e.name)) continue;
    else {
      await Deno.copyFile(await Deno.realPath(src), dst);
      bytes += (await Deno.stat(dst)).size;
    }
  }
  return bytes;
}

/** How {@linkcode stageLlama} finds a target's libraries. */
export interface StageOptions {
  /** `--llama-dir`: the target's libraries from this directory instead of npm. */
  llamaDir?: string;
  noLlama?: boolean;
  allowMissingLlama?: boolean;
  /** The output folder (default `dist/`). */
  dist?: string;
  /** The user cache's llama folder, where other platforms' packages are fetched to. */
  cacheRoot?: string;
}

/**
 * Puts the target's llama.cpp libraries in `<dist>/llama/<platform>/` (where the running
 * executable looks: see `embeddedDir` in src/llm/llama_lib.ts) and returns that path, or
 * null when the target is built without them. The libraries are the installed npm
 * package for the host, else `@node-llama-cpp/<platform>` fetched once (integrity-checked,
 * the same fetch as `umad llama add`) into the user cache; either is checked to be a
 * complete llama.cpp v${LLAMA_CPP_VERSION} set for the target's OS.
 */
export async function stageLlama(target: string, opts: StageOptions = {}): Promise<string | null> {
  if (opts.noLlama) return null;
  const dist = opts.dist ?? DIST;
  const platform = TARGETS[target];
  const { os, arch } = targetPlatform(target);
  const pkg = PREBUILT_PACKAGES.find((p) =>
    p.platform === platform && p.os === os && p.arch === arch
  );
  if (!pkg) {
    throw new CompileError(`No @node-llama-cpp package is known for ${target} (${platform})`);
  }
  const version = await llamaVersion();
  let source = opts.llamaDir ?? null;
  if (source !== null) {
    if (!await exists(source)) throw new CompileError(`--llama-dir "${source}" does not exist`);
  } else {
    source = await installedBins(platform, version);
    if (source === null) {
      try {
        source = (await addPrebuilt(pkg, {
          cacheRoot: opts.cacheRoot,
          log: (m) => console.error(`compile: ${m}`),
        })).dir;
      } catch (e) {
        const why = `${(e as Error).message}; ${target} needs its llama.cpp libraries.`;
        if (!opts.allowMissingLlama) {
          throw new CompileError(
            `${why}\nPass --llama-dir ${target}=DIR (a llama.cpp v${LLAMA_CPP_VERSION} build, ` +
              `e.g. "umad llama build" on that platform), --allow-missing-llama to build it ` +
              `without them, --no-llama, or leave the target out.`,
          );
        }
        console.warn(`warning: ${why} Building ${exeName(target)} without them.`);
        return null;
      }
    }
  }
  try {
    inspectLibraryDir(source, os);
  } catch (e) {
    throw new CompileError(`${source} is not llama.cpp for ${target}: ${(e as Error).message}`);
  }
  const staged = `${dist}/llama/${platform}`;
  await Deno.remove(staged, { recursive: true }).catch(() => {});
  const bytes = await copyDir(source, staged);
  console.log(`${target}: llama.cpp from ${source} (${(bytes / 2 ** 20).toFixed(1)} MiB)`);
  return staged;
}

// ---- compile --------------------------------------------------------------------------

/**
 * node_modules entries the executable does not load (typescript, the host's llama.cpp
 * package...), so they are not embedded: the packages main.ts's module graph reaches
 * are kept, the rest excluded.
 */
async function unusedNpmDirs(): Promise<string[]> {
  type Info = {
    modules: { npmPackage?: string }[];
    npmPackages: Record<string, { name: string; dependencies: string[]; localPath?: string }>;
  };
  // The executable's module graph: main.ts and every Worker entry point.
  const graphs: Info[] = [];
  for (const entry of ["main.ts", ...WORKERS]) {
    const out = await run(Deno.execPath(), ["info", "--json", `${ROOT}/${entry}`], { cwd: ROOT });
    if (!out.success) return [];
    try {
      graphs.push(JSON.parse(out.text));
    } catch {
      return [];
    }
  }
  const info: Info = {
    modules: graphs.flatMap((g) => g.modules),
    npmPackages: Object.assign({}, ...graphs.map((g) => g.npmPackages)),
  };
  const used = new Set<string>();
  const queue = info.modules.flatMap((m) => m.npmPackage ? [m.npmPackage] : []);
  while (queue.length) {
    const id = queue.pop()!;
    if (used.has(id)) continue;
    used.add(id);
    queue.push(...(info.npmPackages[id]?.dependencies ?? []));
  }
  const dirs: string[] = [];
  for (const [id, pkg] of Object.entries(info.npmPackages)) {
    if (used.has(id) || !pkg.localPath) continue;
    const m = pkg.localPath.match(/\/node_modules\/\.deno\/([^/]+)\//);
    if (!m) continue;
    dirs.push(`node_modules/.deno/${m[1]}`);
    if (await exists(`${ROOT}/node_modules/${pkg.name}`)) dirs.push(`node_modules/${pkg.name}`);
  }
  return dirs;
}

/** Modules started as Workers (`new Worker(new URL(...))`), which compile must embed. */
export const WORKERS = ["src/pty/emulator_worker.ts", "src/llm/engine_worker.ts"];

/**
 * The `deno compile` arguments for a target: everything allowed, self-extracting (so
 * llama.cpp sees real files), the staged libraries and the Worker entry points included.
 */
export function compileArgs(target: string, llama: string | null, exclude: string[]): string[] {
  const args = [
    "compile",
    "-A",
    "--self-extracting",
    "--no-check=remote",
    "--target",
    target,
    "--output",
    `dist/${exeName(target)}`,
  ];
  if (llama) args.push("--include", llama.slice(ROOT.length + 1));
  // Workers are loaded by URL at run time, so the module graph does not reach them.
  for (const w of WORKERS) args.push("--include", w);
  for (const e of exclude) args.push("--exclude", e);
  args.push("main.ts");
  return args;
}

async function version(): Promise<string> {
  const text = await Deno.readTextFile(`${ROOT}/src/version.ts`);
  return text.match(/VERSION\s*=\s*"([^"]+)"/)?.[1] ?? "";
}

async function compileAll(opts: Options): Promise<void> {
  const denortBin = await checkDenortBin(opts.targets);
  if (!opts.dryRun) {
    const dir = await denoDir();
    for (const t of opts.targets) await ensureDenort(t, dir, denortBin);
  }
  await Deno.mkdir(DIST, { recursive: true });
  const staged = new Map<string, string | null>();
  for (const t of opts.targets) {
    staged.set(
      t,
      await stageLlama(t, {
        llamaDir: opts.llamaDirs.get(t),
        noLlama: opts.noLlama,
        allowMissingLlama: opts.allowMissingLlama,
      }),
    );
  }
  const exclude = await unusedNpmDirs();
  for (const t of opts.targets) {
    const args = compileArgs(t, staged.get(t)!, exclude);
    if (opts.dryRun) {
      console.log(`deno ${args.join(" ")}`);
      continue;
    }
    const t0 = performance.now();
    const out = await run(Deno.execPath(), args, { cwd: ROOT });
    if (!out.success) {
      throw new CompileError(`deno compile for ${t} failed (exit ${out.code}):\n${out.text}`);
    }
    const exe = `${DIST}/${exeName(t)}`;
    const size = (await Deno.stat(exe)).size / 2 ** 20;
    const secs = ((performance.now() - t0) / 1000).toFixed(1);
    console.log(`built dist/${exeName(t)} (${size.toFixed(0)} MiB) in ${secs} s`);
    if (t === Deno.build.target) {
      // The host's binary can be run: it must start (and self-extract) and know its version.
      const v = await run(exe, ["--version"], { cwd: DIST });
      const want = await version();
      if (!v.success || !v.text.includes(want)) {
        throw new CompileError(`dist/${exeName(t)} --version did not print ${want}:\n${v.text}`);
      }
      console.log(`dist/${exeName(t)} --version: ${v.text.trim()}`);
    }
  }
}

async function main(args: string[]): Promise<number> {
  try {
    const opts = parseOptions(args);
    if (opts === "help") {
      console.log(HELP);
      return 0;
    }
    await compileAll(opts);
    return 0;
  } catch (e) {
    if (e instanceof CompileError) {
      console.error(`compile: ${e.message}`);
      return e.exitCode;
    }
    throw e;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
