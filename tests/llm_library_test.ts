/**
 * Which llama.cpp library umad loads: the two layouts, the choice among a native build,
 * an added package, the embedded and npm libraries, and what a missing or mismatched
 * library does (a clear error, exit 2) — as units and through `umad serve`.
 */
import { LLAMA_PATCHES } from "../src/llm/llama_patches.ts";
import assert from "node:assert/strict";
import {
  chooseLibrary,
  cpuSignature,
  inspectLibraryDir,
  type LibraryCandidate,
  libraryCandidates,
  LibraryError,
  type LibraryFiles,
  nativeBuildDir,
  type NativeBuildManifest,
  prebuiltDir,
  prebuiltPackage,
} from "../src/llm/llama_lib.ts";
import { connect } from "../src/client/client.ts";
import { generate } from "../src/client/generate.ts";
import { runUmad, startDaemon } from "./_daemon.ts";
import { tinyModel } from "./llm_helpers.ts";

const NPM_LINUX = [
  "libllama.v0.4.0.so",
  "libggml.v0.4.0.so",
  "libggml-base.so",
  "libggml-cpu-haswell.so",
];

Deno.test("a directory of npm's versioned names is the npm layout, its GPU tag the backend", () => {
  const cpu = inspectLibraryDir("/p", "linux", NPM_LINUX);
  assert.equal(cpu.layout, "npm");
  assert.equal(cpu.backend, "cpu");
  assert.equal(cpu.llama, "/p/libllama.v0.4.0.so");
  assert.equal(cpu.ggml, "/p/libggml.v0.4.0.so");
  const vk = inspectLibraryDir("/v", "linux", [
    "libllama.vulkan.v0.4.0.so",
    "libggml.vulkan.v0.4.0.so",
    "libggml-base.so",
    "libggml-vulkan.so",
  ]);
  assert.equal(vk.backend, "vulkan");
  assert.equal(vk.ggml, "/v/libggml.vulkan.v0.4.0.so");
  const metal = inspectLibraryDir("/m", "darwin", [
    "libllama.metal.v0.4.0.dylib",
    "libggml.metal.v0.4.0.dylib",
    "libggml-base.dylib",
  ]);
  assert.equal(metal.backend, "metal");
  const win = inspectLibraryDir("C:/w", "windows", [
    "llama.v0.4.0.dll",
    "ggml.v0.4.0.dll",
    "ggml-base.dll",
  ]);
  assert.equal(win.llama, "C:/w/llama.v0.4.0.dll");
});

Deno.test("a plain cmake build is the cmake layout; a linked GPU backend is its backend", () => {
  const names = ["libllama.so", "libllama.so.0", "libggml.so", "libggml-base.so", "libggml-cpu.so"];
  const cpu = inspectLibraryDir("/b", "linux", names);
  assert.equal(cpu.layout, "cmake");
  assert.equal(cpu.backend, "cpu");
  assert.equal(cpu.llama, "/b/libllama.so");
  const cuda = inspectLibraryDir("/b", "linux", [...names, "libggml-cuda.so", "libggml-cuda.so.0"]);
  assert.equal(cuda.backend, "cuda");
  const mac = inspectLibraryDir("/b", "darwin", [
    "libllama.dylib",
    "libggml.dylib",
    "libggml-base.dylib",
    "libggml-metal.dylib",
  ]);
  assert.equal(mac.backend, "metal");
});

Deno.test("another llama.cpp release, a missing file or an empty directory is refused with what was found", () => {
  assert.throws(
    () =>
      inspectLibraryDir("/old", "linux", [
        "libllama.v0.5.0.so",
        "libggml.v0.5.0.so",
        "libggml-base.so",
      ]),
    (e: Error) =>
      e instanceof LibraryError && /v0\.5\.0/.test(e.message) && /v0\.4\.0/.test(e.message),
  );
  assert.throws(
    () => inspectLibraryDir("/half", "linux", ["libllama.v0.4.0.so", "libggml-base.so"]),
    /lacks libggml\.v0\.4\.0\.so/,
  );
  assert.throws(
    () => inspectLibraryDir("/b", "linux", ["libllama.so", "libggml.so"]),
    /lacks libggml-base\.so/,
  );
  assert.throws(() => inspectLibraryDir("/e", "linux", []), /holds no llama\.cpp libraries/);
  assert.throws(() => inspectLibraryDir("/nonexistent-umad-dir"), /does not exist/);
});

function usable(
  source: LibraryCandidate["source"],
  backend: LibraryFiles["backend"],
  dir = `/${source}-${backend}`,
): LibraryCandidate {
  return { source, dir, files: { dir, layout: "npm", llama: "", ggml: "", ggmlBase: "", backend } };
}

Deno.test("a native build beats an added package, which beats the embedded and npm libraries", () => {
  const c = [
    usable("npm", "cpu"),
    usable("embedded", "cpu"),
    usable("prebuilt", "cpu"),
    usable("native", "cpu"),
  ];
  const r = chooseLibrary(c, { gpu: true });
  assert.equal(r.choice.source, "native");
  assert.deepEqual(r.fallbacks.map((f) => f.source), ["prebuilt", "embedded", "npm"]);
  assert.match(r.reason, /native CPU build/);
  assert.equal(
    chooseLibrary([usable("npm", "cpu"), usable("embedded", "cpu")], { gpu: true }).choice.source,
    "embedded",
  );
});

Deno.test("GPU libraries come first unless --no-gpu, which prefers a CPU library", () => {
  const c = [usable("npm", "cpu"), usable("native", "cpu"), usable("prebuilt", "vulkan")];
  assert.equal(chooseLibrary(c, { gpu: true }).choice.files.backend, "vulkan");
  const off = chooseLibrary(c, { gpu: false });
  assert.equal(off.choice.source, "native");
  assert.match(off.reason, /--no-gpu/);
  // A GPU library alone still runs on the CPU.
  assert.equal(
    chooseLibrary([usable("prebuilt", "cuda")], { gpu: false }).choice.files.backend,
    "cuda",
  );
});

Deno.test("a GPU library whose device this machine lacks ranks after the CPU libraries", () => {
  const c = [
    usable("npm", "cpu"),
    usable("native", "cpu"),
    usable("prebuilt", "vulkan"),
    usable("prebuilt", "cuda"),
  ];
  const none = chooseLibrary(c, { gpu: true, present: [] });
  assert.equal(none.choice.source, "native");
  assert.match(none.reason, /no vulkan\/cuda device on this machine/);
  assert.deepEqual(none.fallbacks.map((f) => f.files.backend), ["cpu", "vulkan", "cuda"]);
  assert.equal(chooseLibrary(c, { gpu: true, present: ["cuda"] }).choice.files.backend, "cuda");
});

Deno.test("an explicit directory is used or refused, never replaced; nothing usable says what to do", () => {
  const bad: LibraryCandidate = { source: "--llama-lib", dir: "/x", problem: "it is empty" };
  assert.throws(
    () => chooseLibrary([bad, usable("npm", "cpu")], { gpu: true }),
    (e: Error) => e instanceof LibraryError && /--llama-lib "\/x": it is empty/.test(e.message),
  );
  const skipped: LibraryCandidate = {
    source: "native",
    dir: "/n",
    problem: "built for another CPU",
  };
  const r = chooseLibrary([skipped, usable("npm", "cpu")], { gpu: true });
  assert.equal(r.choice.source, "npm");
  assert.deepEqual(r.skipped, ["native /n: built for another CPU"]);
  assert.throws(
    () => chooseLibrary([skipped], { gpu: true }),
    /umad llama add cpu|umad llama build/,
  );
});

/** The npm package's libraries (whatever else this machine's cache holds). */
function npmDir(): string {
  const npm = libraryCandidates().find((c) => c.source === "npm");
  assert.ok(npm?.files, "the @node-llama-cpp package for this platform is installed");
  return npm.dir;
}

/** A fake user cache holding a "native build" made of the npm package's real files. */
/** The names of umad's llama.cpp patches, in order. */
const PATCH_NAMES = LLAMA_PATCHES.map((p) => p.name);

function fakeNativeBuild(root: string, manifest: Partial<NativeBuildManifest> = {}): string {
  const npm = npmDir();
  const dir = nativeBuildDir("cpu", cpuSignature().key, root);
  Deno.mkdirSync(`${dir}/lib`, { recursive: true });
  for (const e of Deno.readDirSync(npm)) {
    if (e.isFile && /\.so$/.test(e.name)) {
      Deno.copyFileSync(`${npm}/${e.name}`, `${dir}/lib/${e.name}`);
    }
  }
  const full: NativeBuildManifest = {
    llama_cpp_version: "0.4.0",
    package_version: "3.21.1",
    backend: "cpu",
    cpu_key: cpuSignature().key,
    cpu: cpuSignature().description,
    cmake_options: [],
    compiler: "test",
    built_at: new Date().toISOString(),
    build_seconds: 0,
    ...manifest,
  };
  Deno.writeTextFileSync(`${dir}/build.json`, JSON.stringify(full));
  return `${dir}/lib`;
}

Deno.test("the cache's native builds count only for this CPU and release; an added package once complete", () => {
  const root = Deno.makeTempDirSync({ prefix: "umad-libcache-" });
  try {
    const lib = fakeNativeBuild(root);
    let c = libraryCandidates({ cacheRoot: root, cacheOnly: true });
    assert.equal(c.length, 1);
    assert.equal(c[0].source, "native");
    assert.equal(c[0].dir, lib);
    assert.ok(c[0].files);
    const other = nativeBuildDir("cpu", "000000000000", root);
    Deno.mkdirSync(`${other}/lib`, { recursive: true });
    Deno.writeTextFileSync(
      `${other}/build.json`,
      JSON.stringify({
        llama_cpp_version: "0.4.0",
        cpu_key: "000000000000",
        cpu: "x86_64 Other CPU",
      }),
    );
    // A build without build.json (in progress or failed) is not a candidate at all.
    Deno.mkdirSync(`${nativeBuildDir("vulkan", cpuSignature().key, root)}/lib`, {
      recursive: true,
    });
    c = libraryCandidates({ cacheRoot: root, cacheOnly: true });
    assert.equal(c.length, 2);
    const foreign = c.find((x) => x.dir.startsWith(other))!;
    assert.equal(foreign.files, undefined);
    assert.match(foreign.problem!, /another CPU \(x86_64 Other CPU\)/);
    const pkg = prebuiltPackage("cpu")!;
    const pre = prebuiltDir(pkg, root);
    Deno.mkdirSync(pre, { recursive: true });
    assert.equal(
      libraryCandidates({ cacheRoot: root, cacheOnly: true }).length,
      2,
      "no .complete yet",
    );
    Deno.writeTextFileSync(`${pre}/.complete`, "{}");
    assert.equal(libraryCandidates({ cacheRoot: root, cacheOnly: true }).length, 3);
    // An explicit directory is the only candidate.
    assert.deepEqual(libraryCandidates({ libDir: lib, cacheRoot: root }).map((x) => x.source), [
      "--llama-lib",
    ]);
    assert.deepEqual(libraryCandidates({ envDir: lib, cacheRoot: root }).map((x) => x.source), [
      "UMAD_LLAMA_LIB",
    ]);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

// ---- through umad serve ------------------------------------------------------------

Deno.test("umad serve --llama-lib to a missing directory or another release exits 2 saying so", async () => {
  const dir = await Deno.makeTempDir({ prefix: "umad-badlib-" });
  try {
    const serveOn = (lib: string) =>
      runUmad(["serve", "--socket", `${dir}/s.sock`, "--model", tinyModel(), "--llama-lib", lib]);
    let r = await serveOn(`${dir}/none`);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--llama-lib ".*none": llama\.cpp library directory .* does not exist/);
    for (const n of ["libllama.v0.5.0.so", "libggml.v0.5.0.so", "libggml-base.so"]) {
      await Deno.writeFile(`${dir}/${n}`, new Uint8Array(0));
    }
    r = await serveOn(dir);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /is llama\.cpp v0\.5\.0, but umad is built for v0\.4\.0/);
    // Right names, wrong contents: the loader's own refusal, still a configuration error.
    const junk = `${dir}/junk`;
    await Deno.mkdir(junk);
    for (const n of ["libllama.v0.4.0.so", "libggml.v0.4.0.so", "libggml-base.so"]) {
      await Deno.writeTextFile(`${junk}/${n}`, "not a library");
    }
    r = await serveOn(junk);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /Cannot load the llama\.cpp libraries in .*junk/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("umad serve prefers a native build in the cache, --llama-lib still wins, and hello says which", async () => {
  const xdg = await Deno.makeTempDir({ prefix: "umad-xdg-" });
  const native = fakeNativeBuild(`${xdg}/umad/llama`, { patches: PATCH_NAMES });
  const env = { XDG_CACHE_HOME: xdg };
  const args = ["--model", tinyModel(), "--threads", "1", "--parallel", "2", "--ctx", "512"];
  try {
    for (
      const [extra, source, dir] of [[[], "native", native], [
        ["--llama-lib", npmDir()],
        "--llama-lib",
        npmDir(),
      ]] as const
    ) {
      const d = await startDaemon([...args, ...extra], { withModel: true, env });
      try {
        const client = await connect({ socket: d.socket, reconnect: false });
        try {
          const model = client.hello.model as {
            library: {
              source: string;
              path: string;
              layout: string;
              version: string;
              backends: string[];
            };
            devices: { type: string }[];
            gpu_layers: number;
          };
          assert.equal(model.library.source, source);
          assert.equal(model.library.path, dir);
          assert.equal(model.library.version.replace(/-dev$/, ""), "0.4.0");
          assert.deepEqual(model.library.backends, ["CPU"]);
          assert.ok(model.devices.some((x) => x.type === "cpu"));
          assert.equal(model.gpu_layers, 0);
          const r = await generate(client, { prompt: "hi", max_tokens: 3, temperature: 0 })
            .complete();
          assert.equal(r.usage.completion_tokens, 3);
          const status = await runUmad(["status", "--socket", d.socket]);
          assert.match(status.stdout, new RegExp(`^model\\.library\\.source\\s+${source}$`, "m"));
          assert.match(status.stdout, /^model\.devices\[0\]\.name\s+CPU$/m);
          assert.match(status.stdout, /^model\.gpu_layers\s+0$/m);
        } finally {
          await client.close();
        }
        assert.match(
          d.stderr(),
          new RegExp(
            `llama\\.cpp: loading .*${source === "native" ? "native CPU build" : "--llama-lib"}`,
          ),
        );
        // The npm package is not patched: the log says what a native build would add.
        assert.equal(
          new RegExp(`lacks umad's patch ${PATCH_NAMES.join(", ")}.*"umad llama build"`).test(
            d.stderr(),
          ),
          source !== "native",
          d.stderr(),
        );
      } finally {
        await d.stop();
      }
    }
  } finally {
    await Deno.remove(xdg, { recursive: true });
  }
});

Deno.test("bad GPU flags exit 2: --gpu-layers not a number, --no-gpu with --gpu-layers, a --device that does not exist", async () => {
  const dir = await Deno.makeTempDir({ prefix: "umad-gpuflags-" });
  const serve = (...a: string[]) =>
    runUmad(["serve", "--socket", `${dir}/s.sock`, "--model", tinyModel(), ...a]);
  try {
    let r = await serve("--gpu-layers", "lots");
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--gpu-layers/);
    r = await serve("--no-gpu", "--gpu-layers", "3");
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--no-gpu conflicts/);
    r = await serve("--device", "CUDA7", "--llama-lib", npmDir());
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--device "CUDA7" does not exist; devices: CPU/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a native build that fails to load falls back to the prebuilt package with a warning", async () => {
  const xdg = await Deno.makeTempDir({ prefix: "umad-xdg-" });
  const native = fakeNativeBuild(`${xdg}/umad/llama`);
  await Deno.writeTextFile(`${native}/libllama.v0.4.0.so`, "truncated by a crash");
  try {
    const d = await startDaemon([
      "--model",
      tinyModel(),
      "--threads",
      "1",
      "--parallel",
      "2",
      "--ctx",
      "512",
    ], {
      withModel: true,
      env: { XDG_CACHE_HOME: xdg },
    });
    try {
      const client = await connect({ socket: d.socket, reconnect: false });
      const model = client.hello.model as { library: { source: string } };
      await client.close();
      assert.equal(model.library.source, "npm");
      assert.match(d.stderr(), /failed to load .*falling back to/);
    } finally {
      await d.stop();
    }
  } finally {
    await Deno.remove(xdg, { recursive: true });
  }
});

Deno.test("umad llama list says which of umad's llama.cpp patches a native build carries", async () => {
  for (
    const [patches, expect] of [
      [
        undefined,
        new RegExp(
          `built without umad's patches \\(${PATCH_NAMES.join(", ")}\\): "umad llama build"`,
        ),
      ],
      [
        ["fa-masked-tiles"],
        new RegExp(`without umad's patches \\(${PATCH_NAMES.slice(1).join(", ")}\\)`),
      ],
      [PATCH_NAMES, new RegExp(`with umad's patches: ${PATCH_NAMES.join(", ")}$`)],
    ] as const
  ) {
    const xdg = await Deno.makeTempDir({ prefix: "umad-xdg-" });
    try {
      const lib = fakeNativeBuild(`${xdg}/umad/llama`, patches ? { patches: [...patches] } : {});
      const r = await runUmad(["llama", "list"], { env: { XDG_CACHE_HOME: xdg } });
      assert.equal(r.code, 0, r.stderr);
      const line = r.stdout.split("\n").findIndex((l) => l.includes(lib));
      assert.ok(line >= 0, r.stdout);
      assert.match(r.stdout.split("\n")[line + 1], expect);
    } finally {
      await Deno.remove(xdg, { recursive: true });
    }
  }
});
