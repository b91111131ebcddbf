/**
 * `umad llama build`: libllama and libggml built from the llama.cpp source that matches
 * the prebuilt packages (so the struct layouts are the same), optimized for this machine
 * (`GGML_NATIVE`: `-march=native`), into the user cache keyed by version, CPU and backend.
 * `umad serve` prefers such a build (see `llama_lib.ts`). Nothing here touches the
 * prebuilt libraries: a failed or interrupted build leaves no `build.json`, so it is
 * never chosen.
 *
 * The plan (tools found, backend, cmake command lines) is pure data, tested without
 * building; `buildNative` runs it.
 *
 * @module
 */
import {
  cpuSignature,
  fnv1a,
  gpuHints,
  LLAMA_CPP_VERSION,
  LLAMA_PACKAGE_VERSION,
  type LlamaBackend,
  llamaCacheDir,
  nativeBuildDir,
  type NativeBuildManifest,
} from "./llama_lib.ts";
import { ConfigError } from "../protocol/errors.ts";
import { LLAMA_PATCHES, type LlamaPatch } from "./llama_patches.ts";

/** What `--gpu` asks for: a backend, or `auto` (the machine's GPU toolkit if any). */
export type GpuRequest = "auto" | LlamaBackend;
/** The choices of `--gpu`. */
export const GPU_REQUESTS: readonly GpuRequest[] = ["auto", "cpu", "cuda", "vulkan", "metal"];

/** A build cannot start or failed; the message says what to install or where the log is. */
export class NativeBuildError extends ConfigError {
  /** Takes the message and, when wrapping, `{ cause }`. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NativeBuildError";
  }
}

/** What is installed on this machine, as far as a build cares. */
export interface ToolProbe {
  /** The OS. */
  os: typeof Deno.build.os;
  /** The CPU architecture. */
  arch: typeof Deno.build.arch;
  /** `cmake --version`'s version, or null when cmake is missing. */
  cmake: string | null;
  /** The C compiler found (`cc`, `gcc` or `clang`, with its C++ pair), or null. */
  cc: string | null;
  /** The C++ compiler found, or null. */
  cxx: string | null;
  /** The compiler's first version line (for the manifest). */
  compilerVersion: string;
  /** `ninja` is installed (its `[n/m]` lines give the progress). */
  ninja: boolean;
  /** CUDA: `nvcc`. */
  nvcc: boolean;
  /** Vulkan: the `glslc` shader compiler. */
  glslc: boolean;
  /** The Vulkan headers (`vulkan/vulkan.h`) are installed. */
  vulkanHeaders: boolean;
  /** GPU backends whose device this machine seems to have (`gpuHints`). */
  gpus: LlamaBackend[];
  /**
   * This x86 CPU has AVX512-FP16 and the compiler takes `-mno-avx512fp16`, so a native
   * build turns it off (see {@linkcode cmakeOptions}).
   */
  noAvx512Fp16?: boolean;
}

function installHint(probe: ToolProbe, what: "build" | "cuda" | "vulkan"): string {
  if (probe.os === "darwin") {
    if (what === "build") return "install them with: xcode-select --install && brew install cmake";
    return what === "vulkan"
      ? "install the Vulkan SDK (brew install molten-vk vulkan-headers glslang shaderc)"
      : "CUDA is not available on macOS; use --gpu metal";
  }
  if (probe.os === "windows") {
    if (what === "build") {
      return "install Visual Studio 2022 Build Tools with the C++ workload and CMake " +
        "(winget install Kitware.CMake)";
    }
    return what === "vulkan"
      ? "install the Vulkan SDK from LunarG (https://vulkan.lunarg.com)"
      : "install the CUDA Toolkit from NVIDIA (https://developer.nvidia.com/cuda-downloads)";
  }
  if (what === "build") {
    return "install them with: sudo apt-get install cmake g++ (Debian/Ubuntu), " +
      "sudo dnf install cmake gcc-c++ (Fedora), sudo pacman -S cmake gcc (Arch)";
  }
  return what === "vulkan"
    ? "install them with: sudo apt-get install libvulkan-dev glslc (Debian 12/Ubuntu 23.04+), " +
      "sudo dnf install vulkan-headers vulkan-loader-devel glslc (Fedora)"
    : "install the CUDA Toolkit (nvcc): sudo apt-get install nvidia-cuda-toolkit, or NVIDIA's " +
      "packages from https://developer.nvidia.com/cuda-downloads";
}

/**
 * The backend a request means on this machine: `auto` is Metal on Apple Silicon, else
 * CUDA when `nvcc` and an NVIDIA driver are there, else Vulkan when its shader compiler,
 * headers and a GPU are, else the CPU (a toolkit without a GPU builds for nothing). Pure.
 *
 * @example
 * ```ts
 * import { resolveBackend, type ToolProbe } from "./native_build.ts";
 * const probe: ToolProbe = { os: "linux", arch: "x86_64", cmake: "3.25.1", cc: "cc", cxx: "c++",
 *   compilerVersion: "", ninja: false, nvcc: true, glslc: false, vulkanHeaders: false, gpus: [] };
 * console.log(resolveBackend("auto", probe)); // "cpu"
 * ```
 */
export function resolveBackend(request: GpuRequest, probe: ToolProbe): LlamaBackend {
  if (request !== "auto") return request;
  if (probe.os === "darwin" && probe.arch === "aarch64") return "metal";
  if (probe.nvcc && probe.gpus.includes("cuda")) return "cuda";
  if (probe.glslc && probe.vulkanHeaders && probe.gpus.includes("vulkan")) return "vulkan";
  return "cpu";
}

/**
 * What is missing to build `backend`, each with how to install it (empty: ready). Pure.
 */
export function missingTools(backend: LlamaBackend, probe: ToolProbe): string[] {
  const out: string[] = [];
  const build: string[] = [];
  if (probe.cmake === null) build.push("cmake");
  else if (!versionAtLeast(probe.cmake, "3.14")) {
    build.push(`cmake 3.14 or newer (found ${probe.cmake})`);
  }
  if (probe.os !== "windows" && (probe.cc === null || probe.cxx === null)) {
    build.push("a C/C++ compiler (cc and c++: gcc or clang)");
  }
  if (build.length) {
    out.push(
      `${build.join(" and ")} ${build.length > 1 ? "are" : "is"} missing; ${
        installHint(probe, "build")
      }`,
    );
  }
  if (backend === "metal" && !(probe.os === "darwin")) {
    out.push("Metal builds only on macOS; use --gpu cuda, vulkan or cpu");
  }
  if (backend === "cuda" && !probe.nvcc) {
    out.push(`the CUDA compiler nvcc is missing; ${installHint(probe, "cuda")}`);
  }
  if (backend === "vulkan" && !(probe.glslc && probe.vulkanHeaders)) {
    const what = [
      !probe.vulkanHeaders && "the Vulkan headers",
      !probe.glslc && "the glslc shader compiler",
    ]
      .filter(Boolean).join(" and ");
    out.push(
      `${what} ${what.includes(" and ") ? "are" : "is"} missing; ${installHint(probe, "vulkan")}`,
    );
  }
  return out;
}

function versionAtLeast(version: string, min: string): boolean {
  const a = version.split(".").map(Number);
  const b = min.split(".").map(Number);
  for (let i = 0; i < b.length; i++) {
    if ((a[i] ?? 0) !== b[i]) return (a[i] ?? 0) > b[i];
  }
  return true;
}

/** A build to run: where and with which commands. */
export interface BuildPlan {
  /** The backend it builds. */
  backend: LlamaBackend;
  /**
   * `…/native/v0.4.0-<backend>-<cpu key>`: `src/` (the patched copy of the source), `build/`
   * (cmake's tree), `lib/`, `build.json`.
   */
  dir: string;
  /** The patched copy of the source that cmake configures ({@linkcode preparePatchedSource}). */
  sourceDir: string;
  /** cmake's build tree. */
  buildDir: string;
  /** Where the libraries are copied (what the loader opens). */
  libDir: string;
  /** The cmake options (also recorded in the manifest). */
  options: string[];
  /** `cmake` arguments to configure. */
  configure: string[];
  /** `cmake` arguments to build the `llama` target. */
  build: string[];
}

/** Settings of {@linkcode planNativeBuild}. */
export interface PlanOptions {
  /** The backend to build. */
  backend: LlamaBackend;
  /** The llama.cpp source checkout (`ensureLlamaSource()`); the build copies it. */
  source: string;
  /** Parallel compile jobs. */
  jobs: number;
  /** {@linkcode cpuSignature}'s key of this machine. */
  cpuKey: string;
  /** The OS the build runs on. */
  os: typeof Deno.build.os;
  /** Use the Ninja generator. */
  ninja: boolean;
  /** Add `-mno-avx512fp16` ({@linkcode ToolProbe.noAvx512Fp16}). */
  noAvx512Fp16?: boolean;
  /** The user cache's llama folder (default {@linkcode llamaCacheDir}). */
  cacheRoot?: string;
  /** More `-D` options (appended, so they override). */
  extra?: string[];
}

/**
 * The cmake options of a native build: libraries only, shared, `-march=native`, no
 * OpenMP (umad attaches its own thread pool), the backend on and the others off. Pure.
 *
 * `noAvx512Fp16` (see {@linkcode ToolProbe}) keeps `-march=native` from turning on
 * AVX512-FP16: with it ggml's F16 vector code computes in half precision, and prompt
 * chunks of 63 rows (umad's batch-invariant size) ran 2.4× slower than without it on a
 * Sapphire Rapids CPU (no faster at 512 rows; docs/BENCHMARKS.md, "Which flag").
 *
 * @example
 * ```ts
 * import { cmakeOptions } from "./native_build.ts";
 * console.log(cmakeOptions("cuda", "linux").includes("-DGGML_CUDA=ON")); // true
 * ```
 */
export function cmakeOptions(
  backend: LlamaBackend,
  os: typeof Deno.build.os,
  cpu: { noAvx512Fp16?: boolean } = {},
): string[] {
  const on = (b: LlamaBackend) => (backend === b ? "ON" : "OFF");
  const fp16 = cpu.noAvx512Fp16
    ? ["-DCMAKE_C_FLAGS=-mno-avx512fp16", "-DCMAKE_CXX_FLAGS=-mno-avx512fp16"]
    : [];
  return [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DGGML_NATIVE=ON",
    "-DGGML_OPENMP=OFF",
    "-DGGML_BACKEND_DL=OFF",
    // Libraries that find each other beside themselves, wherever the folder is.
    "-DCMAKE_BUILD_RPATH_USE_ORIGIN=ON",
    "-DLLAMA_BUILD_COMMON=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_TOOLS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    `-DGGML_CUDA=${on("cuda")}`,
    `-DGGML_VULKAN=${on("vulkan")}`,
    ...(os === "darwin" ? [`-DGGML_METAL=${on("metal")}`] : []),
    ...fp16,
  ];
}

/** The commands and folders of a native build. Pure. */
export function planNativeBuild(o: PlanOptions): BuildPlan {
  const dir = nativeBuildDir(o.backend, o.cpuKey, o.cacheRoot ?? llamaCacheDir());
  const buildDir = `${dir}/build`;
  const sourceDir = `${dir}/src`;
  const options = [
    ...cmakeOptions(o.backend, o.os, { noAvx512Fp16: o.noAvx512Fp16 }),
    ...(o.extra ?? []),
  ];
  return {
    backend: o.backend,
    dir,
    sourceDir,
    buildDir,
    libDir: `${dir}/lib`,
    options,
    configure: ["-S", sourceDir, "-B", buildDir, ...(o.ninja ? ["-G", "Ninja"] : []), ...options],
    build: ["--build", buildDir, "--config", "Release", "--target", "llama", "-j", String(o.jobs)],
  };
}

/**
 * Progress in a line of build output: Ninja's `[12/340]` or Make's `[ 42%]`, as a
 * fraction, or null. Pure.
 *
 * @example
 * ```ts
 * import { buildProgress } from "./native_build.ts";
 * console.log(buildProgress("[17/68] Building CXX object src/llama.cpp.o")); // 0.25
 * ```
 */
export function buildProgress(line: string): number | null {
  const ninja = line.match(/^\[(\d+)\/(\d+)\]/);
  if (ninja) return Number(ninja[2]) > 0 ? Number(ninja[1]) / Number(ninja[2]) : null;
  const make = line.match(/^\[\s*(\d+)%\]/);
  return make ? Number(make[1]) / 100 : null;
}

function firstLine(cmd: string, args: string[]): string | null {
  try {
    const out = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).outputSync();
    if (!out.success) return null;
    const text = new TextDecoder().decode(out.stdout) || new TextDecoder().decode(out.stderr);
    return text.split("\n")[0].trim();
  } catch {
    return null;
  }
}

function fileExists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** Looks for the tools of a build on this machine. */
export function probeTools(): ToolProbe {
  const cmake = firstLine("cmake", ["--version"])?.match(/(\d+\.\d+(\.\d+)?)/)?.[1] ?? null;
  const pairs: [string, string][] = [
    [Deno.env.get("CC") ?? "cc", Deno.env.get("CXX") ?? "c++"],
    ["gcc", "g++"],
    ["clang", "clang++"],
  ];
  let cc: string | null = null;
  let cxx: string | null = null;
  let compilerVersion = "";
  for (const [c, cpp] of pairs) {
    const v = firstLine(c, ["--version"]);
    if (v !== null && firstLine(cpp, ["--version"]) !== null) {
      cc = c;
      cxx = cpp;
      compilerVersion = v;
      break;
    }
  }
  const sdk = Deno.env.get("VULKAN_SDK");
  const cpuFlags = Deno.build.os === "linux"
    ? (readCpuinfo().match(/^flags\s*:(.*)$/m)?.[1] ?? "").split(/\s+/)
    : [];
  return {
    os: Deno.build.os,
    arch: Deno.build.arch,
    cmake,
    cc,
    cxx,
    compilerVersion,
    ninja: firstLine("ninja", ["--version"]) !== null,
    nvcc: firstLine("nvcc", ["--version"]) !== null ||
      fileExists("/usr/local/cuda/bin/nvcc"),
    glslc: firstLine("glslc", ["--version"]) !== null,
    vulkanHeaders: fileExists("/usr/include/vulkan/vulkan.h") ||
      fileExists("/usr/local/include/vulkan/vulkan.h") ||
      (sdk !== undefined && fileExists(`${sdk}/include/vulkan/vulkan.h`)),
    gpus: gpuHints(),
    noAvx512Fp16: cpuFlags.includes("avx512_fp16") && cc !== null &&
      compilerTakes(cc, "-mno-avx512fp16"),
  };
}

function readCpuinfo(): string {
  try {
    return Deno.readTextFileSync("/proc/cpuinfo");
  } catch {
    return "";
  }
}

/** The compiler accepts `flag` (older ones reject options they do not know). */
function compilerTakes(cc: string, flag: string): boolean {
  try {
    return new Deno.Command(cc, {
      args: [flag, "-x", "c", "-E", "-o", "/dev/null", "/dev/null"],
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
  } catch {
    return false;
  }
}

/** Settings of {@linkcode buildNative}. */
export interface NativeBuildOptions {
  /** What `--gpu` asked for. */
  gpu: GpuRequest;
  /** Parallel compile jobs (default: the CPUs). */
  jobs?: number;
  /** The llama.cpp source, or how to get it (called once the tools are known to be there). */
  source: string | (() => Promise<string>);
  /** The user cache's llama folder (default {@linkcode llamaCacheDir}). */
  cacheRoot?: string;
  /** Start from an empty build tree. */
  clean?: boolean;
  /** More cmake `-D` options (for experiments; recorded in the manifest). */
  extra?: string[];
  /** The patches to apply to the copy of the source (default {@linkcode LLAMA_PATCHES}). */
  patches?: readonly LlamaPatch[];
  /** Tools (default {@linkcode probeTools}); tests pass their own. */
  probe?: ToolProbe;
  /** Progress: a fraction and the current line. */
  onProgress?: (fraction: number, line: string) => void;
  /** Status lines. */
  log?: (message: string) => void;
}

/** What a finished build left. */
export interface NativeBuildResult {
  /** What ran, and where. */
  plan: BuildPlan;
  /** What `build.json` now says. */
  manifest: NativeBuildManifest;
}

function isAlive(pid: number): boolean {
  if (Deno.build.os === "windows") return true;
  try {
    Deno.kill(pid, "SIGCONT");
    return true;
  } catch {
    return false;
  }
}

async function runLogged(
  args: string[],
  logFile: Deno.FsFile,
  onLine: (line: string) => void,
): Promise<number> {
  const child = new Deno.Command("cmake", {
    args,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const enc = new TextEncoder();
  await logFile.write(enc.encode(`$ cmake ${args.join(" ")}\n`));
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    let rest = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      await logFile.write(enc.encode(chunk));
      const lines = (rest + chunk).split("\n");
      rest = lines.pop()!;
      for (const l of lines) onLine(l);
    }
    if (rest) onLine(rest);
  };
  await Promise.all([pump(child.stdout), pump(child.stderr)]);
  return (await child.status).code;
}

function occurrences(text: string, part: string): number {
  let n = 0;
  for (let at = text.indexOf(part); at >= 0; at = text.indexOf(part, at + part.length)) n++;
  return n;
}

/**
 * One file's text with a patch's edits applied. Each edit's `before` must occur exactly
 * once, else a {@linkcode NativeBuildError} names the patch and the edit. Pure.
 *
 * @example
 * ```ts
 * import { applyPatch } from "./native_build.ts";
 * const patch = { name: "x", why: "", file: "a.c", edits: [{ before: "1", after: "2" }] };
 * console.log(applyPatch("int a = 1;", patch)); // "int a = 2;"
 * ```
 */
export function applyPatch(text: string, patch: LlamaPatch): string {
  patch.edits.forEach((edit, i) => {
    const n = occurrences(text, edit.before);
    if (n !== 1) {
      throw new NativeBuildError(
        `umad's llama.cpp patch "${patch.name}" (edit ${i + 1} of ${patch.edits.length}) ` +
          `does not fit ${patch.file}: its text occurs ${n} times, not once; ` +
          `the source is not the one the patch was written for`,
      );
    }
    text = text.replace(edit.before, () => edit.after);
  });
  return text;
}

/**
 * A short id of a patch list (its names and texts, hashed): a build's copy of the source
 * is reused only when it was made with the same patches. Pure.
 */
export function patchSetId(patches: readonly LlamaPatch[]): string {
  return fnv1a(JSON.stringify(patches));
}

/** The file in a patched copy of the source that says which source and patches made it. */
export const SOURCE_MARK = ".umad-source.json";

/** What {@linkcode SOURCE_MARK} holds. */
interface SourceMark {
  from: string;
  patches: string[];
  id: string;
}

/** Folders of the source a library build does not read (GGUF vocabularies, docs, git). */
const NOT_COPIED = new Set([".git", "models", "docs"]);

function copyTree(from: string, to: string, top: boolean): void {
  Deno.mkdirSync(to, { recursive: true });
  for (const e of Deno.readDirSync(from)) {
    if (top && NOT_COPIED.has(e.name)) continue;
    const src = `${from}/${e.name}`;
    const dst = `${to}/${e.name}`;
    if (e.isSymlink) Deno.symlinkSync(Deno.readLinkSync(src), dst);
    else if (e.isDirectory) copyTree(src, dst, false);
    else Deno.copyFileSync(src, dst);
  }
}

/**
 * Makes `into` a copy of the source tree `from` (without `.git`, `models/` and `docs/`)
 * with `patches` applied (default {@linkcode LLAMA_PATCHES}), and returns the names
 * applied. Every patch is checked against the source before anything is written. A copy
 * made earlier from the same source with the same patches is kept as it is, so a rebuild
 * stays incremental; any other is replaced. `from` itself is never written.
 */
export function preparePatchedSource(
  from: string,
  into: string,
  patches: readonly LlamaPatch[] = LLAMA_PATCHES,
): string[] {
  const want: SourceMark = { from, patches: patches.map((p) => p.name), id: patchSetId(patches) };
  try {
    const have = JSON.parse(Deno.readTextFileSync(`${into}/${SOURCE_MARK}`)) as SourceMark;
    if (have.from === want.from && have.id === want.id) return want.patches;
  } catch { /* no usable copy yet */ }
  const texts = new Map<string, string>();
  for (const p of patches) {
    let text = texts.get(p.file);
    if (text === undefined) {
      try {
        text = Deno.readTextFileSync(`${from}/${p.file}`);
      } catch (e) {
        throw new NativeBuildError(
          `umad's llama.cpp patch "${p.name}" needs ${p.file}, which ${from} does not have`,
          { cause: e },
        );
      }
    }
    // Two patches of one file: the second applies on top of the first.
    texts.set(p.file, applyPatch(text, p));
  }
  try {
    Deno.removeSync(into, { recursive: true });
  } catch { /* first copy */ }
  copyTree(from, into, true);
  for (const [file, text] of texts) Deno.writeTextFileSync(`${into}/${file}`, text);
  Deno.writeTextFileSync(`${into}/${SOURCE_MARK}`, JSON.stringify(want, null, 2) + "\n");
  return want.patches;
}

/** The source folder cmake's tree in `buildDir` was configured from, or null. */
function builtFrom(buildDir: string): string | null {
  try {
    const cache = Deno.readTextFileSync(`${buildDir}/CMakeCache.txt`);
    return cache.match(/^CMAKE_HOME_DIRECTORY:INTERNAL=(.*)$/m)?.[1] ?? null;
  } catch {
    return null;
  }
}

function tail(path: string, n: number): string {
  try {
    return Deno.readTextFileSync(path).trimEnd().split("\n").slice(-n).join("\n");
  } catch {
    return "";
  }
}

/** Copies the built libraries of `from` to `to`, keeping the symlinks of versioned names. */
function copyLibraries(from: string, to: string): string[] {
  Deno.mkdirSync(to, { recursive: true });
  const names: string[] = [];
  for (const e of Deno.readDirSync(from)) {
    if (!/\.(so(\.\d+)*|dylib|dll)$/.test(e.name)) continue;
    const src = `${from}/${e.name}`;
    if (e.isSymlink) Deno.symlinkSync(Deno.readLinkSync(src), `${to}/${e.name}`);
    else Deno.copyFileSync(src, `${to}/${e.name}`);
    names.push(e.name);
  }
  return names.sort();
}

/**
 * Runs a native build: checks the tools (a {@linkcode NativeBuildError} names what to
 * install), configures and builds the `llama` target, copies the libraries to `lib/` and
 * writes `build.json` last. One build per key at a time (a `BUILDING` lock with the pid).
 * The whole output goes to `build.log` beside it; a failure quotes its last lines.
 */
export async function buildNative(o: NativeBuildOptions): Promise<NativeBuildResult> {
  const probe = o.probe ?? probeTools();
  const backend = resolveBackend(o.gpu, probe);
  const missing = missingTools(backend, probe);
  if (missing.length) {
    throw new NativeBuildError(`Cannot build llama.cpp (${backend}): ${missing.join("; ")}`);
  }
  const log = o.log ?? (() => {});
  const cpu = cpuSignature();
  const source = typeof o.source === "string" ? o.source : await o.source();
  const plan = planNativeBuild({
    backend,
    source,
    jobs: o.jobs ?? navigator.hardwareConcurrency ?? 2,
    cpuKey: cpu.key,
    os: probe.os,
    ninja: probe.ninja,
    noAvx512Fp16: probe.noAvx512Fp16,
    cacheRoot: o.cacheRoot,
    extra: o.extra,
  });
  Deno.mkdirSync(plan.dir, { recursive: true });
  const lock = `${plan.dir}/BUILDING`;
  try {
    Deno.writeTextFileSync(lock, String(Deno.pid), { createNew: true });
  } catch {
    const pid = Number(Deno.readTextFileSync(lock));
    if (pid > 0 && pid !== Deno.pid && isAlive(pid)) {
      throw new NativeBuildError(`Another build (pid ${pid}) is writing ${plan.dir}; wait for it`);
    }
    Deno.writeTextFileSync(lock, String(Deno.pid));
  }
  const logPath = `${plan.dir}/build.log`;
  const started = performance.now();
  try {
    // The manifest goes first, so a half-replaced build is never chosen.
    try {
      Deno.removeSync(`${plan.dir}/build.json`);
    } catch { /* first build */ }
    const patches = preparePatchedSource(source, plan.sourceDir, o.patches ?? LLAMA_PATCHES);
    log(
      `the llama.cpp source in ${plan.sourceDir}` +
        (patches.length ? `, with umad's patches: ${patches.join(", ")}` : ""),
    );
    if (o.clean || builtFrom(plan.buildDir) !== plan.sourceDir) {
      // cmake refuses a build tree configured from another source folder (builds before
      // the patched copy were configured from the shared checkout).
      try {
        Deno.removeSync(plan.buildDir, { recursive: true });
      } catch { /* nothing to clean */ }
    }
    const file = Deno.openSync(logPath, { write: true, create: true, truncate: true });
    try {
      log(`configuring llama.cpp v${LLAMA_CPP_VERSION} (${backend}) in ${plan.buildDir}`);
      let rc = await runLogged(plan.configure, file, () => o.onProgress?.(0, "configuring"));
      if (rc !== 0) {
        throw new NativeBuildError(
          `cmake could not configure the build (exit ${rc}); the end of ${logPath}:\n` +
            tail(logPath, 25),
        );
      }
      log(`building with ${plan.build.at(-1)} jobs (a few minutes)`);
      let last = 0;
      rc = await runLogged(plan.build, file, (line) => {
        const f = buildProgress(line);
        if (f !== null) last = f;
        o.onProgress?.(last, line);
      });
      if (rc !== 0) {
        throw new NativeBuildError(
          `the build failed (exit ${rc}); the end of ${logPath}:\n${tail(logPath, 25)}`,
        );
      }
    } finally {
      file.close();
    }
    const bin = [`${plan.buildDir}/bin`, `${plan.buildDir}/bin/Release`].find((d) => {
      try {
        return [...Deno.readDirSync(d)].some((e) => /llama\.(so|dylib|dll)$/.test(e.name));
      } catch {
        return false;
      }
    });
    if (!bin) {
      throw new NativeBuildError(`The build wrote no llama library under ${plan.buildDir}/bin`);
    }
    const staging = `${plan.dir}/lib.new`;
    try {
      Deno.removeSync(staging, { recursive: true });
    } catch { /* none */ }
    copyLibraries(bin, staging);
    try {
      Deno.removeSync(plan.libDir, { recursive: true });
    } catch { /* first build */ }
    Deno.renameSync(staging, plan.libDir);
    const manifest: NativeBuildManifest = {
      llama_cpp_version: LLAMA_CPP_VERSION,
      package_version: LLAMA_PACKAGE_VERSION,
      backend,
      cpu_key: cpu.key,
      cpu: cpu.description,
      cmake_options: plan.options,
      patches,
      compiler: probe.compilerVersion,
      built_at: new Date().toISOString(),
      build_seconds: Math.round((performance.now() - started) / 1000),
    };
    Deno.writeTextFileSync(`${plan.dir}/build.json`, JSON.stringify(manifest, null, 2) + "\n");
    return { plan, manifest };
  } finally {
    try {
      Deno.removeSync(lock);
    } catch { /* gone */ }
  }
}
