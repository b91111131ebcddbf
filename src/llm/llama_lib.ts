/**
 * Where umad's llama.cpp libraries come from, and which one it loads.
 *
 * Every source holds the same llama.cpp release (v0.4.0, the one inside
 * `@node-llama-cpp/*@3.21.1`), so one set of struct layouts fits all:
 * - `--llama-lib DIR` or `$UMAD_LLAMA_LIB`: named by the user, used or refused, never
 *   silently replaced;
 * - a native build for this machine (`umad llama build`), in the user cache, keyed by
 *   version, CPU and backend;
 * - a prebuilt package added with `umad llama add cuda|vulkan|cpu` (user cache);
 * - the libraries a compiled executable embeds;
 * - the npm package Deno installed (`@node-llama-cpp/<platform>`, from `deno.json`).
 *
 * Two layouts are accepted: npm's (`libllama[.<gpu>].v0.4.0.so`, loadable backends such
 * as `libggml-cpu-haswell.so` that `ggml_backend_load_all_from_path` picks from) and a
 * plain cmake build (`libllama.so`, `libggml.so`, `libggml-base.so`, backends linked in).
 *
 * @module
 */
import { pathExists } from "./fs.ts";
import { ConfigError } from "../protocol/errors.ts";
import { cacheDir } from "./synthetic_model.ts";

/** The npm version of every `@node-llama-cpp/*` package umad uses. */
export const LLAMA_PACKAGE_VERSION = "3.21.1";
/** The llama.cpp release in those packages (`llama_version()`; struct layouts in ffi.ts). */
export const LLAMA_CPP_VERSION = "0.4.0";

/** A compute backend a library set is built with (CPU code is in every one). */
export type LlamaBackend = "cpu" | "cuda" | "vulkan" | "metal";
/** The GPU backends. */
export const GPU_BACKENDS: readonly LlamaBackend[] = ["cuda", "vulkan", "metal"];

/** How the files of a library directory are named. */
export type LibraryLayout = "npm" | "cmake";

/** Where a library directory came from. */
export type LibrarySource =
  | "--llama-lib"
  | "UMAD_LLAMA_LIB"
  | "native"
  | "prebuilt"
  | "embedded"
  | "npm";

/** The llama.cpp libraries are missing, unusable or of another release (exit code 2). */
export class LibraryError extends ConfigError {
  /** Takes the message and, when wrapping, `{ cause }`. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "LibraryError";
  }
}

/** The three files umad opens from a library directory. */
export interface LibraryFiles {
  /** The directory. */
  dir: string;
  /** How its files are named. */
  layout: LibraryLayout;
  /** Path of libllama. */
  llama: string;
  /** Path of libggml (the registry). */
  ggml: string;
  /** Path of libggml-base. */
  ggmlBase: string;
  /** The GPU backend the directory carries, or "cpu". */
  backend: LlamaBackend;
}

/** An operating system, as `Deno.build.os` names it. */
export type Os = typeof Deno.build.os;

function libAffixes(os: Os): { prefix: string; ext: string } {
  if (os === "windows") return { prefix: "", ext: "dll" };
  return { prefix: "lib", ext: os === "darwin" ? "dylib" : "so" };
}

function listDir(dir: string): string[] | null {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name);
  } catch {
    return null;
  }
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * Recognizes the layout of a directory from its file names (`names`, for tests; else it
 * is read). Throws {@linkcode LibraryError} naming what is missing, or the release found
 * when the files belong to another llama.cpp version.
 *
 * @example
 * ```ts
 * import { inspectLibraryDir } from "./llama_lib.ts";
 * const files = inspectLibraryDir("/opt/llama", "linux", ["libllama.so", "libggml.so", "libggml-base.so"]);
 * console.log(files.layout); // "cmake"
 * ```
 */
export function inspectLibraryDir(
  dir: string,
  os: Os = Deno.build.os,
  names?: string[],
): LibraryFiles {
  const found = names ?? listDir(dir);
  if (found === null) throw new LibraryError(`llama.cpp library directory "${dir}" does not exist`);
  const { prefix, ext } = libAffixes(os);
  const p = escape(prefix);
  const npm = new RegExp(`^${p}llama(?:\\.(\\w+))?\\.v(\\d+\\.\\d+\\.\\d+)\\.${ext}$`);
  const base = `${prefix}ggml-base.${ext}`;
  const path = (n: string) => `${dir}/${n}`;
  for (const name of found) {
    const m = name.match(npm);
    if (!m) continue;
    const [, tag, version] = m;
    if (version !== LLAMA_CPP_VERSION) {
      throw new LibraryError(
        `${path(name)} is llama.cpp v${version}, but umad is built for v${LLAMA_CPP_VERSION} ` +
          `(its struct layouts); use @node-llama-cpp/*@${LLAMA_PACKAGE_VERSION} ` +
          `("umad llama add") or a native build ("umad llama build")`,
      );
    }
    const ggml = `${prefix}ggml${tag ? `.${tag}` : ""}.v${version}.${ext}`;
    const missing = [ggml, base].filter((n) => !found.includes(n));
    if (missing.length) {
      throw new LibraryError(`${dir} has ${name} but lacks ${missing.join(", ")}`);
    }
    const backend = (GPU_BACKENDS as readonly string[]).includes(tag ?? "")
      ? tag as LlamaBackend
      : "cpu";
    return {
      dir,
      layout: "npm",
      llama: path(name),
      ggml: path(ggml),
      ggmlBase: path(base),
      backend,
    };
  }
  const llama = `${prefix}llama.${ext}`;
  const ggml = `${prefix}ggml.${ext}`;
  if (found.includes(llama)) {
    const missing = [ggml, base].filter((n) => !found.includes(n));
    if (missing.length) {
      throw new LibraryError(`${dir} has ${llama} but lacks ${missing.join(", ")}`);
    }
    const backend = GPU_BACKENDS.find((b) =>
      found.some((n) =>
        n.startsWith(`${prefix}ggml-${b}.`) && n.includes(`.${ext}`)
      )
    ) ?? "cpu";
    return {
      dir,
      layout: "cmake",
      llama: path(llama),
      ggml: path(ggml),
      ggmlBase: path(base),
      backend,
    };
  }
  throw new LibraryError(
    `${dir} holds no llama.cpp libraries: expected ${prefix}llama.v${LLAMA_CPP_VERSION}.${ext} ` +
      `(npm package) or ${llama} (cmake build) with ${ggml} and ${base}`,
  );
}

// ---- the packages -----------------------------------------------------------------

/** One `@node-llama-cpp/<platform>` package at {@linkcode LLAMA_PACKAGE_VERSION}. */
export interface PrebuiltPackage {
  /** `linux-x64-vulkan`: the package name without its scope, and its `bins/` folder. */
  platform: string;
  /** The OS it runs on. */
  os: Os;
  /** The CPU architecture it runs on. */
  arch: typeof Deno.build.arch;
  /** The GPU backend it carries, or "cpu". */
  backend: LlamaBackend;
  /** The registry's `dist.integrity` of the tarball. */
  integrity: string;
  /** Download size, for the messages. */
  sizeMiB: number;
}

/** Every package umad can load. The CPU package of a platform carries all its CPU variants. */
export const PREBUILT_PACKAGES: readonly PrebuiltPackage[] = [
  {
    platform: "linux-x64",
    os: "linux",
    arch: "x86_64",
    backend: "cpu",
    integrity:
      "sha512-Totj6RTDMGo3FoK2yNUaz/oGmZD0olAqTrRluFUWmu0kW2i9TOzHSW0OWCAiGkzRCVX0WsU2CyUQo/W2NYtdPA==",
    sizeMiB: 10,
  },
  {
    platform: "linux-x64-vulkan",
    os: "linux",
    arch: "x86_64",
    backend: "vulkan",
    integrity:
      "sha512-flEeSzONQ6OIm5bYKLQf4eEnBzcC5WugFbyPUwkCqyyOFZ8pH0H9ulQ7ZNDLSIczeKneMRJornlyY1Hq7d3GDA==",
    sizeMiB: 26,
  },
  {
    platform: "linux-x64-cuda",
    os: "linux",
    arch: "x86_64",
    backend: "cuda",
    integrity:
      "sha512-idsE55VoD/FbvLhnBC9krUJaUoC0XnebseAAnCpm/brKf61HEbu+idgbb5eN6mxkjLSrHtILprJ0nDcUJjVrFg==",
    sizeMiB: 136,
  },
  {
    platform: "linux-arm64",
    os: "linux",
    arch: "aarch64",
    backend: "cpu",
    integrity:
      "sha512-eI3anSEGzJiwF2rpMpZVTdHzw47LztbvfvuRzlu/fPO18ROnBOd+75RPUBlV6qENPpmNtbov85+3VODwEwBurg==",
    sizeMiB: 7,
  },
  {
    // Metal is in the package itself (libggml-metal.so), with the Apple CPU variants.
    platform: "mac-arm64-metal",
    os: "darwin",
    arch: "aarch64",
    backend: "metal",
    integrity:
      "sha512-6MIDAZV7DXD9R1+jEXWJkFuolni3GATGE6mmuyFYc6ZmtOh9djAy15df0T0AXK3sCmVKL+fQcOAWZezxx4MvQQ==",
    sizeMiB: 5,
  },
  {
    platform: "mac-x64",
    os: "darwin",
    arch: "x86_64",
    backend: "cpu",
    integrity:
      "sha512-Q4nyNmbcNiKygBZQZjX+qLk2w3YzoiFpLWsxNURQN7xjyUi2p2rWxjRa7Otg0FrjGf/ri4aQ+X3Uj5Y0zD06eg==",
    sizeMiB: 10,
  },
  {
    platform: "win-x64",
    os: "windows",
    arch: "x86_64",
    backend: "cpu",
    integrity:
      "sha512-JcIpCnra7bAd7JNWA8ehdn2DIRaTMuj+fBC8bw+5rKSNzszWFbuj2XA05c5QHovonDMBLN1ePXE/hcfZtzXoUQ==",
    sizeMiB: 9,
  },
];

/**
 * The package of a platform that carries `backend`: "cpu" gives the platform's default
 * package (on Apple Silicon that is the Metal one, whose CPU code runs without a GPU),
 * null when there is none for that platform.
 *
 * @example
 * ```ts
 * import { prebuiltPackage } from "./llama_lib.ts";
 * console.log(prebuiltPackage("vulkan", "linux", "x86_64")?.platform); // "linux-x64-vulkan"
 * ```
 */
export function prebuiltPackage(
  backend: LlamaBackend,
  os: Os = Deno.build.os,
  arch: typeof Deno.build.arch = Deno.build.arch,
): PrebuiltPackage | null {
  const mine = PREBUILT_PACKAGES.filter((p) => p.os === os && p.arch === arch);
  if (backend === "cpu") return mine.find((p) => p.backend === "cpu") ?? mine[0] ?? null;
  return mine.find((p) => p.backend === backend) ?? null;
}

// ---- the user cache ---------------------------------------------------------------

/** `…/umad/llama`: native builds and added packages. */
export function llamaCacheDir(): string {
  return `${cacheDir()}/llama`;
}

/** Where an added package's `bins/<platform>/` files go. */
export function prebuiltDir(pkg: PrebuiltPackage, root = llamaCacheDir()): string {
  return `${root}/prebuilt/${pkg.platform}-${LLAMA_PACKAGE_VERSION}`;
}

/** What `umad llama build` writes beside a native build's libraries (`build.json`). */
export interface NativeBuildManifest {
  /** The llama.cpp release built (`0.4.0`). */
  llama_cpp_version: string;
  /** The npm package version whose source it came from. */
  package_version: string;
  /** The backend built in. */
  backend: LlamaBackend;
  /** {@linkcode cpuSignature}'s key of the machine it was built on. */
  cpu_key: string;
  /** That CPU, in words. */
  cpu: string;
  /** The cmake options it was configured with. */
  cmake_options: string[];
  /** umad's patches applied to its source (`llama_patches.ts`); absent in older builds. */
  patches?: string[];
  /** The compiler's version line. */
  compiler: string;
  /** When (ISO 8601). */
  built_at: string;
  /** How long the build took. */
  build_seconds: number;
}

/** The directory of one native build: `…/llama/native/v0.4.0-<backend>-<cpu key>`. */
export function nativeBuildDir(
  backend: LlamaBackend,
  cpuKey: string,
  root = llamaCacheDir(),
): string {
  return `${root}/native/v${LLAMA_CPP_VERSION}-${backend}-${cpuKey}`;
}

/**
 * 64-bit FNV-1a of `text`'s UTF-8 bytes, as 12 hex digits: the keys of native builds (the
 * CPU) and of their patched sources (the patch set). Pure.
 *
 * @example
 * ```ts
 * import { fnv1a } from "./llama_lib.ts";
 * console.log(fnv1a("").length); // 12
 * ```
 */
export function fnv1a(text: string): string {
  let h = 0xcbf29ce484222325n;
  for (const b of new TextEncoder().encode(text)) {
    h = ((h ^ BigInt(b)) * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return h.toString(16).padStart(16, "0").slice(0, 12);
}

function readText(path: string): string | null {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return null;
  }
}

/**
 * This CPU, as a native build is keyed: its model and feature flags (Linux
 * `/proc/cpuinfo`, macOS `sysctl`, Windows `PROCESSOR_IDENTIFIER`), hashed. A build
 * made with `-march=native` may use any of those features, so another CPU gets its own.
 */
export function cpuSignature(): { key: string; description: string } {
  let model = "";
  let flags = "";
  if (Deno.build.os === "linux") {
    const info = readText("/proc/cpuinfo") ?? "";
    const field = (name: string) =>
      info.match(new RegExp(`^${name}\\s*:\\s*(.*)$`, "m"))?.[1]?.trim() ?? "";
    model = field("model name") || [field("CPU implementer"), field("CPU part")].join(":");
    flags = (field("flags") || field("Features")).split(/\s+/).sort().join(" ");
  } else if (Deno.build.os === "darwin") {
    const sysctl = (key: string) => {
      try {
        const out = new Deno.Command("sysctl", { args: ["-n", key], stderr: "null" }).outputSync();
        return new TextDecoder().decode(out.stdout).trim();
      } catch {
        return "";
      }
    };
    model = sysctl("machdep.cpu.brand_string");
    flags = sysctl("machdep.cpu.features") + " " + sysctl("machdep.cpu.leaf7_features");
  } else {
    model = Deno.env.get("PROCESSOR_IDENTIFIER") ?? "";
  }
  const description = `${Deno.build.arch} ${model || "unknown CPU"}`.trim();
  return { key: fnv1a(`${Deno.build.arch}\n${model}\n${flags}`), description };
}

// ---- finding candidates -----------------------------------------------------------

/** One place a library might be loaded from. */
export interface LibraryCandidate {
  /** Where it came from. */
  source: LibrarySource;
  /** Its directory. */
  dir: string;
  /** The files, when the directory holds a usable set. */
  files?: LibraryFiles;
  /** Why it cannot be used, when it cannot. */
  problem?: string;
  /** A native build's manifest. */
  manifest?: NativeBuildManifest;
}

function candidate(source: LibrarySource, dir: string): LibraryCandidate {
  try {
    return { source, dir, files: inspectLibraryDir(dir) };
  } catch (e) {
    return { source, dir, problem: (e as Error).message };
  }
}

function nativeCandidates(root: string, cpuKey: string): LibraryCandidate[] {
  const out: LibraryCandidate[] = [];
  for (const name of (listDir(`${root}/native`) ?? []).sort()) {
    const dir = `${root}/native/${name}`;
    const text = readText(`${dir}/build.json`);
    if (text === null) continue; // a build in progress or one that failed
    let manifest: NativeBuildManifest;
    try {
      manifest = JSON.parse(text);
    } catch {
      out.push({ source: "native", dir, problem: `${dir}/build.json is not valid JSON` });
      continue;
    }
    const c = { ...candidate("native", `${dir}/lib`), manifest };
    if (manifest.llama_cpp_version !== LLAMA_CPP_VERSION) {
      c.problem = `built from llama.cpp v${manifest.llama_cpp_version}, not v${LLAMA_CPP_VERSION}`;
    } else if (manifest.cpu_key !== cpuKey) {
      c.problem = `built for another CPU (${manifest.cpu}); run "umad llama build" for this one`;
    }
    if (c.problem) delete c.files;
    out.push(c);
  }
  return out;
}

/**
 * `dist/llama/<platform>/` beside `main.ts`: where `deno task compile` embeds the
 * libraries (a self-extracting binary unpacks them to real files there).
 */
function embeddedDir(): string | null {
  const pkg = prebuiltPackage("cpu");
  if (pkg === null) return null;
  const url = new URL(`../../dist/llama/${pkg.platform}/`, import.meta.url);
  if (url.protocol !== "file:") return null;
  return decodeURIComponent(url.pathname).replace(/\/$/, "").replace(/^\/([A-Za-z]:)/, "$1");
}

/** The `bins/<platform>` folder of the npm package Deno installed for this platform. */
function npmPackageDir(): string | null {
  const pkg = prebuiltPackage("cpu");
  if (pkg === null) return null;
  const name = `@node-llama-cpp/${pkg.platform}`;
  // The bare name resolves through deno.json's imports; the versioned npm: form works
  // without it where the package is installed.
  for (const specifier of [name, `npm:${name}@${LLAMA_PACKAGE_VERSION}`]) {
    let url: string;
    try {
      url = import.meta.resolve(specifier);
    } catch {
      continue;
    }
    if (!url.startsWith("file:")) continue;
    const file = decodeURIComponent(new URL(url).pathname);
    // …/<package>/dist/index.js → …/<package>/bins/<platform>
    const root = file.slice(0, file.lastIndexOf("/dist/"));
    return `${root}/bins/${pkg.platform}`;
  }
  return null;
}

/** Where candidates are looked for (defaults: this process's environment). */
export interface CandidateOptions {
  /** `--llama-lib DIR`. */
  libDir?: string;
  /** `$UMAD_LLAMA_LIB` (default: read from the environment). */
  envDir?: string;
  /** The user cache's llama folder (default {@linkcode llamaCacheDir}). */
  cacheRoot?: string;
  /** This CPU's key (default {@linkcode cpuSignature}). */
  cpuKey?: string;
  /** Leave out the embedded and npm directories (tests of the cache alone). */
  cacheOnly?: boolean;
}

/**
 * Every place a library might come from, in no particular order; each says whether it is
 * usable. An explicit directory (`libDir`, else `$UMAD_LLAMA_LIB`) is the only candidate.
 */
export function libraryCandidates(options: CandidateOptions = {}): LibraryCandidate[] {
  if (options.libDir !== undefined) return [candidate("--llama-lib", options.libDir)];
  const env = options.envDir ?? Deno.env.get("UMAD_LLAMA_LIB");
  if (env) return [candidate("UMAD_LLAMA_LIB", env)];
  const root = options.cacheRoot ?? llamaCacheDir();
  const out = nativeCandidates(root, options.cpuKey ?? cpuSignature().key);
  for (const pkg of PREBUILT_PACKAGES) {
    if (pkg.os !== Deno.build.os || pkg.arch !== Deno.build.arch) continue;
    const dir = prebuiltDir(pkg, root);
    if (readText(`${dir}/.complete`) !== null) out.push(candidate("prebuilt", dir));
  }
  if (!options.cacheOnly) {
    for (const [source, dir] of [["embedded", embeddedDir()], ["npm", npmPackageDir()]] as const) {
      if (dir && listDir(dir) !== null) out.push(candidate(source, dir));
    }
  }
  return out;
}

// ---- choosing ---------------------------------------------------------------------

/** What {@linkcode chooseLibrary} picked, why, and what comes next if it fails to load. */
export interface LibraryChoice {
  /** The candidate to load. */
  choice: LibraryCandidate & { files: LibraryFiles };
  /** One sentence for the log. */
  reason: string;
  /** Usable candidates after the choice, best first (tried when the choice fails to open). */
  fallbacks: (LibraryCandidate & { files: LibraryFiles })[];
  /** Candidates that cannot be used, with why. */
  skipped: string[];
}

/** What {@linkcode chooseLibrary} weighs besides the candidates. */
export interface LibraryPrefs {
  /** False under --no-gpu: CPU libraries first. */
  gpu: boolean;
  /**
   * GPU backends this machine seems to have ({@linkcode gpuHints}); a GPU library whose
   * backend is not among them ranks after the CPU ones. Default: all of them.
   */
  present?: readonly LlamaBackend[];
}

/**
 * The GPU backends this machine seems to have, from device nodes, without loading
 * anything: CUDA where the NVIDIA driver is (`/dev/nvidiactl`), Vulkan where a render
 * node is (`/dev/dri/renderD*`) or the NVIDIA driver, or where `GGML_VK_VISIBLE_DEVICES`
 * names devices (software Vulkan in tests); Metal on Apple Silicon. On Windows every
 * backend counts (no cheap check).
 */
export function gpuHints(): LlamaBackend[] {
  const os = Deno.build.os;
  if (os === "darwin") return Deno.build.arch === "aarch64" ? ["metal"] : [];
  if (os === "windows") return ["cuda", "vulkan"];
  const nvidia = pathExists("/dev/nvidiactl") || pathExists("/proc/driver/nvidia/version");
  const render = (listDir("/dev/dri") ?? []).some((n) => n.startsWith("renderD"));
  const out: LlamaBackend[] = [];
  if (nvidia) out.push("cuda");
  if (nvidia || render || Deno.env.get("GGML_VK_VISIBLE_DEVICES")) out.push("vulkan");
  return out;
}

function rank(c: LibraryCandidate & { files: LibraryFiles }, prefs: LibraryPrefs): number {
  const present = prefs.present ?? GPU_BACKENDS;
  const gpu = prefs.gpu && present.includes(c.files.backend);
  const isGpu = c.files.backend !== "cpu";
  // GPU libraries run on the CPU too, so with --no-gpu they come last rather than never.
  const order: Record<LibrarySource, number> = {
    "--llama-lib": 0,
    UMAD_LLAMA_LIB: 0,
    native: 1,
    prebuilt: 2,
    embedded: 3,
    npm: 4,
  };
  return (isGpu ? (gpu ? 0 : 20) : 10) + order[c.source];
}

function describe(c: LibraryCandidate & { files: LibraryFiles }): string {
  const what = c.files.backend === "cpu" ? "CPU" : c.files.backend;
  switch (c.source) {
    case "--llama-lib":
      return `the ${what} libraries named by --llama-lib`;
    case "UMAD_LLAMA_LIB":
      return `the ${what} libraries named by $UMAD_LLAMA_LIB`;
    case "native":
      return `a native ${what} build for this CPU ("umad llama build")`;
    case "prebuilt":
      return `the prebuilt ${what} package added with "umad llama add ${c.files.backend}"`;
    case "embedded":
      return `the ${what} libraries embedded in this executable`;
    case "npm":
      return `the prebuilt ${what} package from npm`;
  }
}

/**
 * Picks the library to load (pure: decides over {@linkcode libraryCandidates}' answer).
 * An explicit directory is used or refused. Otherwise GPU libraries whose device seems
 * present come first (unless `gpu` is false), then CPU libraries, then other GPU ones
 * (they run on the CPU too); within each kind a native build, then an added package, then
 * the embedded libraries, then the npm package. Throws {@linkcode LibraryError} when nothing
 * is usable, listing what was tried and how to get a library.
 *
 * @example
 * ```ts
 * import { chooseLibrary } from "./llama_lib.ts";
 * const files = { dir: "/n", layout: "npm" as const, llama: "", ggml: "", ggmlBase: "", backend: "cpu" as const };
 * const { choice } = chooseLibrary([
 *   { source: "npm", dir: "/n", files },
 *   { source: "native", dir: "/b", files: { ...files, dir: "/b", layout: "cmake" } },
 * ], { gpu: true });
 * console.log(choice.source); // "native"
 * ```
 */
export function chooseLibrary(
  candidates: LibraryCandidate[],
  prefs: LibraryPrefs,
): LibraryChoice {
  const explicit = candidates.find((c) =>
    c.source === "--llama-lib" || c.source === "UMAD_LLAMA_LIB"
  );
  if (explicit) {
    if (!explicit.files) {
      throw new LibraryError(`${explicit.source} "${explicit.dir}": ${explicit.problem}`);
    }
    const choice = explicit as LibraryChoice["choice"];
    return { choice, reason: `${describe(choice)} (${choice.dir})`, fallbacks: [], skipped: [] };
  }
  const usable = candidates.filter((c): c is LibraryChoice["choice"] => c.files !== undefined)
    .sort((a, b) => rank(a, prefs) - rank(b, prefs));
  const skipped = candidates.filter((c) => !c.files).map((c) =>
    `${c.source} ${c.dir}: ${c.problem}`
  );
  if (usable.length === 0) {
    const pkg = prebuiltPackage("cpu");
    throw new LibraryError(
      `Cannot find the llama.cpp libraries (v${LLAMA_CPP_VERSION}) for ` +
        `${Deno.build.os}-${Deno.build.arch}. ` +
        (skipped.length ? `Tried ${skipped.join("; ")}. ` : "") +
        (pkg
          ? `Run "umad llama add cpu" (downloads @node-llama-cpp/${pkg.platform}@` +
            `${LLAMA_PACKAGE_VERSION}, ${pkg.sizeMiB} MB) or "umad llama build", `
          : `No prebuilt package exists for this platform: run "umad llama build", `) +
        `or pass --llama-lib DIR (or set UMAD_LLAMA_LIB) to a directory holding them.`,
    );
  }
  const [choice, ...fallbacks] = usable;
  const others = fallbacks.length
    ? `; preferred over ${fallbacks.map((f) => `${f.source} (${f.files.backend})`).join(", ")}`
    : "";
  const gpuLibs = usable.filter((u) => u.files.backend !== "cpu");
  const why = choice.files.backend !== "cpu" || gpuLibs.length === 0
    ? ""
    : !prefs.gpu
    ? " (--no-gpu)"
    : ` (no ${[...new Set(gpuLibs.map((u) => u.files.backend))].join("/")} device on this machine)`;
  return {
    choice,
    reason: `${describe(choice)} (${choice.dir})${why}${others}`,
    fallbacks,
    skipped,
  };
}
