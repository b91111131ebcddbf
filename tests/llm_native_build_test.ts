/**
 * `umad llama build`: the cmake command lines, the backend `--gpu auto` picks, what it says
 * when tools are missing, progress parsing, and the whole pipeline (configure, build,
 * copy, manifest, found by the loader) on a stand-in cmake project that builds in
 * seconds. A real llama.cpp build takes minutes: the benchmark runs one (cached).
 */
import assert from "node:assert/strict";
import {
  applyPatch,
  buildNative,
  buildProgress,
  cmakeOptions,
  missingTools,
  NativeBuildError,
  planNativeBuild,
  preparePatchedSource,
  probeTools,
  resolveBackend,
  SOURCE_MARK,
  type ToolProbe,
} from "../src/llm/native_build.ts";
import {
  cpuSignature,
  libraryCandidates,
  type LlamaBackend,
  nativeBuildDir,
} from "../src/llm/llama_lib.ts";
import { LLAMA_PATCHES, type LlamaPatch } from "../src/llm/llama_patches.ts";
import { ensureLlamaSource } from "../src/llm/llama_source.ts";
import { runUmad } from "./_daemon.ts";

const LINUX: ToolProbe = {
  os: "linux",
  arch: "x86_64",
  cmake: "3.25.1",
  cc: "cc",
  cxx: "c++",
  compilerVersion: "cc 12.2.0",
  ninja: false,
  nvcc: false,
  glslc: false,
  vulkanHeaders: false,
  gpus: [],
};

Deno.test("a native build is shared libraries for this CPU, no OpenMP, one backend on", () => {
  const cpu = cmakeOptions("cpu", "linux");
  for (
    const o of [
      "-DGGML_NATIVE=ON",
      "-DGGML_OPENMP=OFF",
      "-DBUILD_SHARED_LIBS=ON",
      "-DCMAKE_BUILD_TYPE=Release",
      "-DLLAMA_BUILD_TOOLS=OFF",
      "-DGGML_CUDA=OFF",
      "-DGGML_VULKAN=OFF",
    ]
  ) assert.ok(cpu.includes(o), o);
  assert.ok(!cpu.some((o) => o.startsWith("-DGGML_METAL")), "Metal is not a Linux option");
  assert.ok(cmakeOptions("cuda", "linux").includes("-DGGML_CUDA=ON"));
  assert.ok(cmakeOptions("vulkan", "linux").includes("-DGGML_VULKAN=ON"));
  assert.ok(cmakeOptions("metal", "darwin").includes("-DGGML_METAL=ON"));
  assert.ok(cmakeOptions("cpu", "darwin").includes("-DGGML_METAL=OFF"));
  assert.ok(!cpu.some((o) => o.includes("avx512fp16")));
  const spr = cmakeOptions("cpu", "linux", { noAvx512Fp16: true });
  assert.ok(
    spr.includes("-DCMAKE_C_FLAGS=-mno-avx512fp16") &&
      spr.includes("-DCMAKE_CXX_FLAGS=-mno-avx512fp16"),
  );
});

Deno.test("the plan builds the llama target into the cache keyed by version, backend and CPU", () => {
  const plan = planNativeBuild({
    backend: "vulkan",
    source: "/src",
    jobs: 3,
    cpuKey: "abc123",
    os: "linux",
    ninja: true,
    cacheRoot: "/cache",
    extra: ["-DGGML_AVX512=OFF"],
  });
  assert.equal(plan.dir, "/cache/native/v0.4.0-vulkan-abc123");
  assert.equal(plan.dir, nativeBuildDir("vulkan", "abc123", "/cache"));
  assert.equal(plan.libDir, `${plan.dir}/lib`);
  assert.equal(plan.sourceDir, `${plan.dir}/src`, "cmake reads the build's patched copy");
  assert.deepEqual(plan.configure.slice(0, 6), [
    "-S",
    plan.sourceDir,
    "-B",
    `${plan.dir}/build`,
    "-G",
    "Ninja",
  ]);
  assert.equal(plan.configure.at(-1), "-DGGML_AVX512=OFF", "extra options come last and win");
  assert.deepEqual(plan.build, [
    "--build",
    `${plan.dir}/build`,
    "--config",
    "Release",
    "--target",
    "llama",
    "-j",
    "3",
  ]);
  const make = planNativeBuild({
    backend: "cpu",
    source: "/s",
    jobs: 1,
    cpuKey: "k",
    os: "linux",
    ninja: false,
  });
  assert.ok(!make.configure.includes("-G"));
});

Deno.test("--gpu auto builds Metal on Apple Silicon, else CUDA or Vulkan where toolkit and GPU are, else CPU", () => {
  assert.equal(resolveBackend("auto", LINUX), "cpu");
  const gpu = { ...LINUX, gpus: ["cuda", "vulkan"] as LlamaBackend[] };
  assert.equal(
    resolveBackend("auto", { ...gpu, nvcc: true, glslc: true, vulkanHeaders: true }),
    "cuda",
  );
  assert.equal(resolveBackend("auto", { ...gpu, glslc: true, vulkanHeaders: true }), "vulkan");
  assert.equal(resolveBackend("auto", { ...gpu, glslc: true }), "cpu");
  // A toolkit without the GPU (these build machines have CUDA installed and no GPU).
  assert.equal(resolveBackend("auto", { ...LINUX, nvcc: true }), "cpu");
  assert.equal(resolveBackend("auto", { ...LINUX, os: "darwin", arch: "aarch64" }), "metal");
  assert.equal(resolveBackend("vulkan", LINUX), "vulkan");
});

Deno.test("missing tools are named with how to install them, per platform and backend", () => {
  assert.deepEqual(missingTools("cpu", LINUX), []);
  const noCmake = missingTools("cpu", { ...LINUX, cmake: null });
  assert.equal(noCmake.length, 1);
  assert.match(noCmake[0], /cmake is missing; .*apt-get install cmake g\+\+/);
  const nothing = missingTools("cpu", { ...LINUX, cmake: null, cc: null, cxx: null });
  assert.match(nothing[0], /cmake and a C\/C\+\+ compiler .* are missing/);
  assert.match(
    missingTools("cpu", { ...LINUX, cmake: "3.10.2" })[0],
    /cmake 3\.14 or newer \(found 3\.10\.2\)/,
  );
  assert.match(
    missingTools("cpu", { ...LINUX, os: "darwin", cmake: null })[0],
    /xcode-select --install && brew install cmake/,
  );
  assert.match(
    missingTools("cpu", { ...LINUX, os: "windows", cmake: null })[0],
    /Visual Studio 2022 Build Tools/,
  );
  assert.match(missingTools("cuda", LINUX)[0], /nvcc is missing; .*CUDA Toolkit/);
  assert.match(
    missingTools("vulkan", { ...LINUX, vulkanHeaders: true })[0],
    /glslc shader compiler is missing; .*libvulkan-dev glslc/,
  );
  assert.match(missingTools("metal", LINUX)[0], /Metal builds only on macOS/);
});

Deno.test("build progress is read from Ninja's and Make's lines", () => {
  assert.equal(buildProgress("[17/68] Building CXX object src/llama.cpp.o"), 0.25);
  assert.equal(buildProgress("[ 42%] Building C object ggml/src/ggml.c.o"), 0.42);
  assert.equal(buildProgress("[100%] Built target llama"), 1);
  assert.equal(buildProgress("-- Configuring done"), null);
});

Deno.test("missing tools stop the build before anything is fetched or written", async () => {
  const root = await Deno.makeTempDir({ prefix: "umad-nb-" });
  let fetched = false;
  try {
    await assert.rejects(
      buildNative({
        gpu: "cpu",
        source: () => {
          fetched = true;
          return Promise.resolve("/nowhere");
        },
        cacheRoot: root,
        probe: { ...LINUX, cmake: null },
      }),
      (e: Error) => e instanceof NativeBuildError && /cmake is missing/.test(e.message),
    );
    assert.equal(fetched, false);
    assert.deepEqual([...Deno.readDirSync(root)], []);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("umad llama build refuses bad flags, and without cmake says how to install it (exit 2)", async () => {
  let r = await runUmad(["llama", "build", "--gpu", "opencl"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--gpu must be one of auto, cpu, cuda, vulkan, metal/);
  r = await runUmad(["llama", "build", "--jobs", "0"]);
  assert.equal(r.code, 2);
  r = await runUmad(["llama", "add", "opencl"]);
  assert.equal(r.code, 2);
  const empty = await Deno.makeTempDir({ prefix: "umad-nopath-" });
  try {
    r = await runUmad(["llama", "build", "--gpu", "cpu"], { env: { PATH: empty } });
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      /Cannot build llama\.cpp \(cpu\): cmake and a C\/C\+\+ compiler .* are missing; install them with: sudo apt-get install cmake g\+\+/,
    );
  } finally {
    await Deno.remove(empty, { recursive: true });
  }
});

const tools = probeTools();
const canBuild = missingTools("cpu", tools).length === 0 && Deno.build.os !== "windows";

/** A cmake project with llama.cpp's target names that builds in seconds. */
async function standIn(dir: string, broken = false): Promise<void> {
  await Deno.writeTextFile(
    `${dir}/CMakeLists.txt`,
    `cmake_minimum_required(VERSION 3.14)
project(standin C)
set(CMAKE_LIBRARY_OUTPUT_DIRECTORY \${CMAKE_BINARY_DIR}/bin)
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY \${CMAKE_BINARY_DIR}/bin)
add_library(ggml-base SHARED base.c)
add_library(ggml SHARED ggml.c)
target_link_libraries(ggml ggml-base)
add_library(llama SHARED llama.c)
target_link_libraries(llama ggml)
set_target_properties(llama ggml ggml-base PROPERTIES VERSION 0.4.0 SOVERSION 0)
`,
  );
  await Deno.writeTextFile(`${dir}/base.c`, "int ggml_base(void) { return 1; }\n");
  await Deno.writeTextFile(
    `${dir}/ggml.c`,
    "int ggml_base(void);\nint ggml(void) { return ggml_base(); }\n",
  );
  await Deno.writeTextFile(
    `${dir}/llama.c`,
    broken ? "this is not C\n" : "int ggml(void);\nint llama(void) { return ggml(); }\n",
  );
}

/**
 * Runs `fn` with an empty cache root and a stand-in source (`broken`: one that does not
 * compile), both removed after.
 */
async function withStandIn(
  broken: boolean,
  fn: (root: string, src: string) => Promise<void>,
): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "umad-nb-" });
  const src = await Deno.makeTempDir({ prefix: "umad-nb-src-" });
  try {
    await standIn(src, broken);
    await fn(root, src);
  } finally {
    await Deno.remove(root, { recursive: true });
    await Deno.remove(src, { recursive: true });
  }
}

Deno.test({
  name:
    "a build configures, compiles the llama target, copies the libraries, and the loader finds it",
  ignore: !canBuild,
  async fn() {
    await withStandIn(false, async (root, src) => {
      const shipped = await Deno.readTextFile(`${src}/llama.c`);
      const seen: number[] = [];
      const { plan, manifest } = await buildNative({
        gpu: "cpu",
        jobs: 2,
        source: src,
        cacheRoot: root,
        probe: { ...tools, ninja: false },
        patches: [STAND_IN_PATCH],
        onProgress: (f) => seen.push(f),
      });
      assert.deepEqual(manifest.patches, ["plus-41"]);
      assert.equal(await Deno.readTextFile(`${src}/llama.c`), shipped, "the source is not written");
      // In a process of its own: this one may have llama.cpp's real libggml.so.0 loaded,
      // whose soname the stand-in's shares.
      const call = await new Deno.Command(Deno.execPath(), {
        args: [
          "eval",
          `const l = Deno.dlopen(${JSON.stringify(`${plan.libDir}/libllama.so`)}, ` +
          `{ llama: { parameters: [], result: "i32" } }); console.log(l.symbols.llama());`,
        ],
        stdout: "piped",
        stderr: "inherit",
      }).output();
      assert.equal(
        new TextDecoder().decode(call.stdout).trim(),
        "42",
        "the library is built from the patched copy",
      );
      assert.equal(manifest.backend, "cpu");
      assert.equal(manifest.llama_cpp_version, "0.4.0");
      assert.ok(manifest.cmake_options.includes("-DGGML_NATIVE=ON"));
      assert.ok(seen.some((f) => f > 0) && seen.at(-1) === 1, `progress ${seen}`);
      const names = [...Deno.readDirSync(plan.libDir)].map((e) => e.name).sort();
      for (const n of ["libggml-base.so", "libggml.so", "libllama.so", "libllama.so.0"]) {
        assert.ok(names.includes(n), `${n} in ${names}`);
      }
      assert.ok(
        Deno.lstatSync(`${plan.libDir}/libllama.so`).isSymlink,
        "versioned names stay links",
      );
      const found = libraryCandidates({ cacheRoot: root, cacheOnly: true });
      assert.equal(found.length, 1);
      assert.equal(found[0].source, "native");
      assert.equal(found[0].files?.layout, "cmake");
      assert.equal(found[0].manifest?.cpu_key, manifest.cpu_key);
      const left = [...Deno.readDirSync(plan.dir)].map((e) => e.name).sort();
      assert.deepEqual(
        left,
        ["build", "build.json", "build.log", "lib", "src"],
        "no lock or staging left",
      );
    });
  },
});

Deno.test({
  name: "a failed build quotes its log, leaves no manifest, and the loader ignores it",
  ignore: !canBuild,
  async fn() {
    await withStandIn(true, async (root, src) => {
      await assert.rejects(
        buildNative({
          gpu: "cpu",
          jobs: 1,
          source: src,
          cacheRoot: root,
          probe: { ...tools, ninja: false },
          patches: [],
        }),
        (e: Error) =>
          e instanceof NativeBuildError && /the build failed .*build\.log/s.test(e.message) &&
          /not C|error/.test(e.message),
      );
      assert.deepEqual(libraryCandidates({ cacheRoot: root, cacheOnly: true }), []);
    });
  },
});

/** A patch of the stand-in project's llama.c: `llama()` returns 42 instead of 1. */
const STAND_IN_PATCH: LlamaPatch = {
  name: "plus-41",
  why: "a test",
  file: "llama.c",
  edits: [{ before: "return ggml();", after: "return ggml() + 41;" }],
};

Deno.test("a patch applies each edit once, and refuses a source where its text is missing or repeated", () => {
  const patch: LlamaPatch = {
    name: "two-edits",
    why: "a test",
    file: "x.c",
    edits: [{ before: "a = 1;", after: "a = 2;" }, { before: "a = 2; int", after: "a = 3; int" }],
  };
  assert.equal(applyPatch("int a = 1; int b;", patch), "int a = 3; int b;", "edits apply in order");
  assert.equal(
    applyPatch('s = "$&"; a = 1;', { ...patch, edits: [{ before: "a = 1;", after: "$& $1" }] }),
    's = "$&"; $& $1',
    "replacement text is taken literally",
  );
  for (const text of ["int b;", "a = 1; a = 1;"]) {
    assert.throws(
      () => applyPatch(text, patch),
      (e: Error) =>
        e instanceof NativeBuildError &&
        /"two-edits" \(edit 1 of 2\) does not fit x\.c/.test(e.message) &&
        /occurs [02] times/.test(e.message),
    );
  }
});

Deno.test("each of umad's llama.cpp patches fits the source node-llama-cpp ships, once", async () => {
  const src = await ensureLlamaSource();
  assert.ok(LLAMA_PATCHES.length > 0);
  for (const p of LLAMA_PATCHES) {
    const shipped = await Deno.readTextFile(`${src}/${p.file}`);
    const patched = applyPatch(shipped, p);
    for (const e of p.edits) {
      assert.ok(patched.includes(e.after), `${p.name}: its text is in the result`);
      assert.ok(!shipped.includes(e.after), `${p.name}: the shipped source does not have it yet`);
    }
    assert.ok(patched.includes(`umad patch (${p.name})`), `${p.name} marks what it changed`);
  }
});

Deno.test("the patched copy leaves the source as it is, skips .git, models and docs, and is reused only for the same patches", async () => {
  const src = await Deno.makeTempDir({ prefix: "umad-nb-src-" });
  const into = await Deno.makeTempDir({ prefix: "umad-nb-copy-" });
  try {
    await standIn(src);
    for (const d of [".git", "models", "docs", "ggml/src"]) {
      await Deno.mkdir(`${src}/${d}`, { recursive: true });
      await Deno.writeTextFile(`${src}/${d}/f.txt`, d);
    }
    await Deno.symlink("llama.c", `${src}/link.c`);
    assert.deepEqual(preparePatchedSource(src, into, [STAND_IN_PATCH]), ["plus-41"]);
    const top = [...Deno.readDirSync(into)].map((e) => e.name).sort();
    assert.deepEqual(top, [
      SOURCE_MARK,
      "CMakeLists.txt",
      "base.c",
      "ggml",
      "ggml.c",
      "link.c",
      "llama.c",
    ]);
    assert.equal(await Deno.readTextFile(`${into}/ggml/src/f.txt`), "ggml/src");
    assert.equal(Deno.readLinkSync(`${into}/link.c`), "llama.c", "links stay links");
    assert.match(await Deno.readTextFile(`${into}/llama.c`), /return ggml\(\) \+ 41;/);
    assert.match(await Deno.readTextFile(`${src}/llama.c`), /return ggml\(\);/);

    // The same source and patches: the copy is kept (a rebuild stays incremental).
    await Deno.writeTextFile(`${into}/kept.txt`, "x");
    preparePatchedSource(src, into, [STAND_IN_PATCH]);
    assert.ok(Deno.statSync(`${into}/kept.txt`).isFile);
    // Other patches: a fresh copy.
    assert.deepEqual(preparePatchedSource(src, into, []), []);
    assert.throws(() => Deno.statSync(`${into}/kept.txt`), Deno.errors.NotFound);
    assert.match(await Deno.readTextFile(`${into}/llama.c`), /return ggml\(\);/);

    // A patch that does not fit: refused before anything is written.
    await Deno.writeTextFile(`${into}/kept.txt`, "x");
    const misfit = { ...STAND_IN_PATCH, name: "misfit", edits: [{ before: "nope", after: "" }] };
    assert.throws(
      () => preparePatchedSource(src, into, [misfit]),
      (e: Error) => e instanceof NativeBuildError && /"misfit"/.test(e.message),
    );
    assert.ok(Deno.statSync(`${into}/kept.txt`).isFile, "the old copy is untouched");
    const absent = { ...STAND_IN_PATCH, name: "absent", file: "no/such.c" };
    assert.throws(
      () => preparePatchedSource(src, into, [absent]),
      (e: Error) => e instanceof NativeBuildError && /"absent" needs no\/such\.c/.test(e.message),
    );
  } finally {
    await Deno.remove(src, { recursive: true });
    await Deno.remove(into, { recursive: true });
  }
});

Deno.test({
  name:
    "a build tree configured from another source folder is started afresh; one from the patched copy is kept",
  ignore: !canBuild,
  async fn() {
    await withStandIn(false, async (root, src) => {
      const build = `${nativeBuildDir("cpu", cpuSignature().key, root)}/build`;
      await Deno.mkdir(build, { recursive: true });
      // What a build before the patched copy left: configured from the shared checkout.
      await Deno.writeTextFile(
        `${build}/CMakeCache.txt`,
        `CMAKE_HOME_DIRECTORY:INTERNAL=${src}\n`,
      );
      await Deno.writeTextFile(`${build}/stale.txt`, "x");
      const options = {
        gpu: "cpu" as const,
        jobs: 2,
        source: src,
        cacheRoot: root,
        probe: { ...tools, ninja: false },
        patches: [],
      };
      const { plan } = await buildNative(options);
      assert.throws(() => Deno.statSync(`${build}/stale.txt`), Deno.errors.NotFound);
      assert.match(await Deno.readTextFile(`${build}/CMakeCache.txt`), new RegExp(plan.sourceDir));
      await Deno.writeTextFile(`${build}/kept.txt`, "x");
      await buildNative(options);
      assert.ok(Deno.statSync(`${build}/kept.txt`).isFile, "a rebuild stays incremental");
    });
  },
});
