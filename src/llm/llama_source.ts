/**
 * The llama.cpp source that matches the prebuilt libraries: `npm:node-llama-cpp` ships
 * it as a git bundle (`llama/gitRelease.bundle`). Fetched once from the npm registry,
 * checked against the published integrity hash, cloned into the user cache directory,
 * and shared by `umad llama build`, the benchmarks (llama-server, llama-bench) and the
 * tests (real vocabularies in `models/ggml-vocab-*.gguf`, real chat templates in
 * `models/templates/`).
 *
 * @module
 */
import { pathExists } from "./fs.ts";
import { cacheDir } from "./synthetic_model.ts";
import { downloadVerified, runTool, tarballUrl } from "./npm_tarball.ts";

/** The npm package whose bundled source matches the prebuilt libraries. */
export const LLAMA_SOURCE_PACKAGE = {
  name: "node-llama-cpp",
  version: "3.21.1",
  /** The registry's `dist.integrity` of that version's tarball. */
  integrity:
    "sha512-E3N0Ev2Va0wzydvXYFwM9Hvyo07PoWjt8T/9GMc43Cvt8YkV/NU/tYUgEMC1grTPv2o9PRjQi0G3Wb5P/awiMg==",
} as const;

/** Options of {@linkcode ensureLlamaSource}. */
export interface LlamaSourceOptions {
  /** Where checkouts are kept (default: the user cache directory, `…/umad/llama.cpp`). */
  dir?: string;
  /** npm registry base URL (default `$npm_config_registry`, else registry.npmjs.org). */
  registry?: string;
  /** Progress lines. */
  log?: (message: string) => void;
}

/**
 * The directory a checkout of the source lives in (it may not exist yet).
 *
 * @example
 * ```ts
 * import { llamaSourceDir } from "./llama_source.ts";
 * console.log(llamaSourceDir("/tmp/cache")); // "/tmp/cache/src-node-llama-cpp-3.21.1"
 * ```
 */
export function llamaSourceDir(dir: string = `${cacheDir()}/llama.cpp`): string {
  return `${dir}/src-${LLAMA_SOURCE_PACKAGE.name}-${LLAMA_SOURCE_PACKAGE.version}`;
}

/**
 * Returns the path of a llama.cpp source checkout matching the prebuilt libraries,
 * fetching it first if it is not in the cache (about 35 MB from the npm registry, a few
 * seconds; needs `tar` and `git`). Concurrent callers are safe: each works in its own
 * temporary directory and the checkout appears with one rename.
 *
 * @example
 * ```ts ignore
 * import { ensureLlamaSource } from "./llama_source.ts";
 * const src = await ensureLlamaSource({ log: console.error });
 * console.log(Deno.statSync(`${src}/include/llama.h`).isFile); // true
 * ```
 */
export async function ensureLlamaSource(options: LlamaSourceOptions = {}): Promise<string> {
  const target = llamaSourceDir(options.dir);
  if (pathExists(`${target}/include/llama.h`)) return target;
  const log = options.log ?? (() => {});
  const parent = target.slice(0, target.lastIndexOf("/"));
  Deno.mkdirSync(parent, { recursive: true });
  const tmp = Deno.makeTempDirSync({ dir: parent, prefix: ".fetch-" });
  try {
    const { name, version, integrity } = LLAMA_SOURCE_PACKAGE;
    const url = tarballUrl(name, version, options.registry);
    log(`fetching the llama.cpp source from ${url}`);
    const tgz = `${tmp}/package.tgz`;
    await downloadVerified(url, integrity, tgz);
    await runTool("tar", ["-xzf", tgz, "-C", tmp, "package/llama/gitRelease.bundle"], "unpack it");
    log("cloning the bundled llama.cpp source");
    await runTool(
      "git",
      [
        "clone",
        "-q",
        "-c",
        "advice.detachedHead=false",
        `${tmp}/package/llama/gitRelease.bundle`,
        `${tmp}/src`,
      ],
      "clone the llama.cpp source",
    );
    try {
      Deno.renameSync(`${tmp}/src`, target);
    } catch (e) {
      // Another process finished first: its checkout is the same.
      if (!pathExists(`${target}/include/llama.h`)) throw e;
    }
    log(`llama.cpp source ready in ${target}`);
    return target;
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
}
