/**
 * GPU offload tested without a GPU: Mesa's software Vulkan driver (lavapipe) through
 * `@node-llama-cpp/linux-x64-vulkan`, all layers of the tiny model offloaded. Needs
 * `mesa-vulkan-drivers libvulkan1` and the package (`umad llama add vulkan --dir DIR`;
 * `.ci/run` does both and sets UMAD_TEST_VULKAN_LIB=DIR, so in CI it must run). Slow:
 * the first decode compiles shaders (minutes on 2 busy cores; cached in
 * MESA_SHADER_CACHE_DIR, kept outside the clone), later ones run at a few tokens/s.
 */
import { pathExists } from "../src/llm/fs.ts";
import assert from "node:assert/strict";
import { connect } from "../src/client/client.ts";
import { generate } from "../src/client/generate.ts";
import { cacheDir } from "../src/llm/synthetic_model.ts";
import { libraryCandidates, prebuiltDir, prebuiltPackage } from "../src/llm/llama_lib.ts";
import { runUmad, startDaemon, type TestDaemon } from "./_daemon.ts";
import { tinyModel } from "./llm_helpers.ts";

/** The Vulkan package's directory: $UMAD_TEST_VULKAN_LIB, else one added to the user cache. */
function vulkanLib(): string | null {
  const env = Deno.env.get("UMAD_TEST_VULKAN_LIB");
  if (env) return env;
  const pkg = prebuiltPackage("vulkan");
  const dir = pkg ? prebuiltDir(pkg) : null;
  return dir && pathExists(`${dir}/.complete`) ? dir : null;
}

function lavapipe(): boolean {
  const icd = ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"].some((d) => {
    try {
      return [...Deno.readDirSync(d)].some((e) => e.name.startsWith("lvp_icd"));
    } catch {
      return false;
    }
  });
  const loader = [
    "/usr/lib/x86_64-linux-gnu/libvulkan.so.1",
    "/usr/lib64/libvulkan.so.1",
    "/usr/lib/libvulkan.so.1",
  ]
    .some(pathExists);
  return icd && loader;
}

const LIB = vulkanLib();
const REQUIRED = Deno.env.get("UMAD_TEST_VULKAN_LIB") !== undefined;
const why = Deno.build.os !== "linux" || Deno.build.arch !== "x86_64"
  ? "not linux-x64"
  : LIB === null
  ? "no Vulkan package (umad llama add vulkan, or UMAD_TEST_VULKAN_LIB)"
  : !lavapipe()
  ? "no lavapipe (apt-get install mesa-vulkan-drivers libvulkan1)"
  : null;
if (why !== null) {
  if (REQUIRED) {
    throw new Error(`UMAD_TEST_VULKAN_LIB is set but the Vulkan test cannot run: ${why}`);
  }
  console.warn(`llm_gpu_test: skipped (${why})`);
}

/** lavapipe shows up as a GPU only when named; shaders compiled once are kept. */
const ENV = {
  GGML_VK_VISIBLE_DEVICES: "0",
  MESA_SHADER_CACHE_DIR: Deno.env.get("MESA_SHADER_CACHE_DIR") ?? `${cacheDir()}/mesa-shader-cache`,
};

function npmLib(): string {
  const npm = libraryCandidates().find((c) => c.source === "npm" && c.files);
  assert.ok(npm, "the @node-llama-cpp CPU package is installed");
  return npm.dir;
}

const ARGS = () => ["--model", tinyModel(), "--threads", "1", "--parallel", "2", "--ctx", "512"];
const PROMPT = "the quick brown fox";
const TOKENS = 10;

async function greedyTokens(
  d: TestDaemon,
): Promise<{ tokens: number[]; model: Record<string, unknown> }> {
  const client = await connect({ socket: d.socket, reconnect: false });
  try {
    const tokens: number[] = [];
    for await (
      const e of generate(client, { prompt: PROMPT, max_tokens: TOKENS, temperature: 0 })
    ) {
      if (e.event === "token") tokens.push(e.token_id);
    }
    return { tokens, model: client.hello.model as Record<string, unknown> };
  } finally {
    await client.close();
  }
}

Deno.test({
  name: "umad devices lists lavapipe as a Vulkan GPU with its memory",
  ignore: why !== null,
  async fn() {
    const r = await runUmad(["devices", "--llama-lib", LIB!, "--json"], { env: ENV });
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as {
      devices: { name: string; type: string; memory_total: number }[];
    };
    const vk = out.devices.find((d) => d.name === "Vulkan0");
    assert.ok(vk, r.stdout);
    assert.equal(vk.type, "gpu");
    assert.ok(vk.memory_total > 0);
  },
});

Deno.test({
  name:
    "all layers offloaded to Vulkan give the CPU's greedy tokens; cancel mid-decode; clean shutdown",
  ignore: why !== null,
  async fn() {
    const cpu = await startDaemon([...ARGS(), "--llama-lib", npmLib()], { withModel: true });
    let reference: number[];
    try {
      reference = (await greedyTokens(cpu)).tokens;
    } finally {
      await cpu.stop();
    }
    assert.equal(reference.length, TOKENS);

    const d = await startDaemon([...ARGS(), "--llama-lib", LIB!, "--gpu-layers", "99"], {
      withModel: true,
      env: ENV,
    });
    try {
      const { tokens, model } = await greedyTokens(d);
      const devices = model.devices as { name: string; type: string }[];
      assert.ok(
        devices.some((x) => x.name === "Vulkan0" && x.type === "gpu"),
        JSON.stringify(devices),
      );
      assert.equal(model.gpu_layers, model.gpu_layers_total);
      assert.deepEqual(model.gpu_devices, ["Vulkan0"]);
      assert.equal((model.library as { backend: string }).backend, "vulkan");
      assert.match(d.stderr(), /GPU offload: (\d+)\/\1 layers on Vulkan0/);
      assert.deepEqual(tokens, reference, "Vulkan and the CPU sample the same greedy tokens");

      // Cancel while the stream decodes: it ends "cancelled", and the engine goes on.
      const client = await connect({ socket: d.socket, reconnect: false });
      try {
        const g = generate(client, { prompt: PROMPT, max_tokens: 400, temperature: 0 });
        let n = 0;
        let reason = "";
        let completion = 0;
        for await (const e of g) {
          if (e.event === "token" && ++n === 2) g.cancel();
          if (e.event === "eos") {
            reason = e.reason;
            completion = e.usage.completion_tokens;
          }
        }
        assert.equal(reason, "cancelled");
        assert.ok(completion < 400, `${completion} tokens after the cancel`);
        const again = await generate(client, { prompt: "again", max_tokens: 2, temperature: 0 })
          .complete();
        assert.equal(again.usage.completion_tokens, 2);
      } finally {
        await client.close();
      }
      const status = await d.stop();
      assert.equal(status.code, 0, d.stderr());
      assert.doesNotMatch(d.stderr(), / error /);
    } catch (e) {
      console.error(d.stderr());
      throw e;
    } finally {
      await d.stop();
    }
  },
});
