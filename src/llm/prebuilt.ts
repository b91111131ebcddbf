/**
 * `umad llama add cpu|cuda|vulkan|metal`: fetches one prebuilt `@node-llama-cpp/<platform>`
 * package from the npm registry (integrity-checked) into the user cache, where `umad
 * serve` finds it. GPU packages are large (CUDA 136 MB) and never fetched unless asked.
 *
 * @module
 */
import {
  LibraryError,
  LLAMA_PACKAGE_VERSION,
  type LlamaBackend,
  llamaCacheDir,
  prebuiltDir,
  type PrebuiltPackage,
  prebuiltPackage,
} from "./llama_lib.ts";
import { downloadVerified, runTool, tarballUrl } from "./npm_tarball.ts";

/** Options of {@linkcode addPrebuilt}. */
export interface AddPrebuiltOptions {
  /** Put the files here instead of the user cache (then pass it as `--llama-lib`). */
  dir?: string;
  /** The user cache's llama folder (default {@linkcode llamaCacheDir}). */
  cacheRoot?: string;
  /** npm registry base URL. */
  registry?: string;
  /** Fetch again even when the files are there. */
  force?: boolean;
  /** Status lines. */
  log?: (message: string) => void;
  /** Download progress in bytes (total 0 when unknown). */
  onBytes?: (done: number, total: number) => void;
}

/**
 * Fetches the package carrying `backend` for this platform (or the package named, of any
 * platform: `deno task compile` stages other platforms' libraries this way) and returns
 * the directory of its libraries. Throws {@linkcode LibraryError} when no such package
 * exists here.
 *
 * @example
 * ```ts ignore
 * const dir = await addPrebuilt("vulkan", { log: console.error });
 * ```
 */
export async function addPrebuilt(
  what: LlamaBackend | PrebuiltPackage,
  options: AddPrebuiltOptions = {},
): Promise<{ dir: string; pkg: PrebuiltPackage; fetched: boolean }> {
  const backend = typeof what === "string" ? what : what.backend;
  const pkg = typeof what === "string" ? prebuiltPackage(what) : what;
  if (pkg === null || (backend !== "cpu" && pkg.backend !== backend)) {
    throw new LibraryError(
      backend === "metal"
        ? `Metal is for macOS on Apple Silicon; this is ${Deno.build.os}-${Deno.build.arch}`
        : `There is no prebuilt ${backend} package for ${Deno.build.os}-${Deno.build.arch}; ` +
          `build one from source with "umad llama build --gpu ${backend}"`,
    );
  }
  const dir = options.dir ?? prebuiltDir(pkg, options.cacheRoot ?? llamaCacheDir());
  const log = options.log ?? (() => {});
  const stamp = `${dir}/.complete`;
  if (!options.force) {
    // The stamp names what is there: another version or package is fetched again.
    try {
      if (JSON.parse(Deno.readTextFileSync(stamp)).integrity === pkg.integrity) {
        return { dir, pkg, fetched: false };
      }
    } catch { /* not there yet */ }
  }
  const name = `@node-llama-cpp/${pkg.platform}`;
  const parent = dir.slice(0, dir.lastIndexOf("/")) || ".";
  Deno.mkdirSync(parent, { recursive: true });
  const tmp = Deno.makeTempDirSync({ dir: parent, prefix: ".fetch-" });
  try {
    const url = tarballUrl(name, LLAMA_PACKAGE_VERSION, options.registry);
    log(`fetching ${name}@${LLAMA_PACKAGE_VERSION} (${pkg.sizeMiB} MB) from ${url}`);
    await downloadVerified(url, pkg.integrity, `${tmp}/package.tgz`, options.onBytes);
    await runTool(
      "tar",
      ["-xzf", `${tmp}/package.tgz`, "-C", tmp, `package/bins/${pkg.platform}`],
      `unpack ${name}`,
    );
    const bins = `${tmp}/package/bins/${pkg.platform}`;
    // Node's addon and its import library are of no use to FFI.
    for (const e of Deno.readDirSync(bins)) {
      if (/\.(node|lib)$/.test(e.name)) Deno.removeSync(`${bins}/${e.name}`);
    }
    Deno.writeTextFileSync(
      `${bins}/.complete`,
      JSON.stringify({ package: name, version: LLAMA_PACKAGE_VERSION, integrity: pkg.integrity }),
    );
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch { /* not there */ }
    Deno.renameSync(bins, dir);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
  log(`${name} ready in ${dir}`);
  return { dir, pkg, fetched: true };
}
