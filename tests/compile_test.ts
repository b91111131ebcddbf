/**
 * `deno task compile` cannot run here (no denort), so this checks what it would embed:
 * for every target, the staged libraries are a complete llama.cpp v0.4.0 set for that
 * OS (the first run fetches the four other platforms' packages, ~31 MB, into the user
 * cache), sit where the running executable looks for them, and the deno compile command
 * includes them and the Worker entry points.
 */
import assert from "node:assert/strict";
import {
  compileArgs,
  exeName,
  stageLlama,
  targetPlatform,
  TARGETS,
  WORKERS,
} from "../scripts/compile.ts";
import { inspectLibraryDir, prebuiltPackage } from "../src/llm/llama_lib.ts";

const ROOT = decodeURIComponent(new URL("..", import.meta.url).pathname).replace(/\/$/, "");

Deno.test("deno compile builds the five targets: Linux x64/arm64, macOS arm64/x64, Windows x64", () => {
  assert.deepEqual(Object.keys(TARGETS).sort(), [
    "aarch64-apple-darwin",
    "aarch64-unknown-linux-gnu",
    "x86_64-apple-darwin",
    "x86_64-pc-windows-msvc",
    "x86_64-unknown-linux-gnu",
  ]);
  for (const [target, platform] of Object.entries(TARGETS)) {
    const { os, arch } = targetPlatform(target);
    // The running executable looks in dist/llama/<this platform>/ (llama_lib.ts).
    assert.equal(prebuiltPackage("cpu", os, arch)?.platform, platform, target);
  }
  assert.equal(exeName("x86_64-pc-windows-msvc"), "umad-x86_64-pc-windows-msvc.exe");
});

Deno.test("each target embeds its own platform's llama.cpp v0.4.0 libraries and nothing FFI does not load", async () => {
  const dist = await Deno.makeTempDir({ prefix: "umad-dist-" });
  try {
    for (const [target, platform] of Object.entries(TARGETS)) {
      const staged = await stageLlama(target, { dist });
      assert.equal(staged, `${dist}/llama/${platform}`);
      const { os } = targetPlatform(target);
      const files = inspectLibraryDir(staged!, os);
      assert.equal(files.layout, "npm", target);
      assert.equal(files.backend, target === "aarch64-apple-darwin" ? "metal" : "cpu", target);
      const names = [...Deno.readDirSync(staged!)].map((e) => e.name);
      assert.ok(!names.some((n) => /\.node$|\.lib$|llama-common/.test(n)), `${target}: ${names}`);
      // The CPU code comes as loadable variants the loader picks from at run time.
      assert.ok(names.some((n) => /ggml-cpu/.test(n)), `${target} has CPU backends: ${names}`);
      const meta = JSON.parse(await Deno.readTextFile(`${staged}/_nlcBuildMetadata.json`));
      assert.equal(meta.buildOptions.llamaCpp.release, "v0.4.0", target);
    }
  } finally {
    await Deno.remove(dist, { recursive: true });
  }
});

Deno.test("the deno compile command embeds the staged libraries and the Worker entry points", () => {
  for (const [target, platform] of Object.entries(TARGETS)) {
    const args = compileArgs(target, `${ROOT}/dist/llama/${platform}`, ["node_modules/typescript"]);
    const flag = (name: string) => args.flatMap((a, i) => (a === name ? [args[i + 1]] : []));
    assert.deepEqual(flag("--target"), [target]);
    assert.deepEqual(flag("--output"), [`dist/${exeName(target)}`]);
    assert.deepEqual(flag("--include"), [`dist/llama/${platform}`, ...WORKERS]);
    assert.deepEqual(flag("--exclude"), ["node_modules/typescript"]);
    assert.ok(args.includes("--self-extracting"), "llama.cpp needs real files on disk");
    assert.equal(args.at(-1), "main.ts");
  }
  assert.ok(!compileArgs("x86_64-unknown-linux-gnu", null, []).includes("dist/llama/linux-x64"));
});
