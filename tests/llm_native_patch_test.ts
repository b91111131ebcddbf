/**
 * umad's patch of llama.cpp's CPU flash attention (`llama_patches.ts`, `fa-masked-tiles`)
 * computes what the shipped kernel computes: the same decodes, through a unified KV cache
 * where most cells belong to other sequences, on a native build with the patch and on the
 * prebuilt package, give the same logits (up to the float differences of two builds for
 * different CPU flags) and the same greedy token on every row. Runs on the native build
 * `$UMAD_TEST_NATIVE_LIB` names (`.ci/run` makes one, in a cache of its own so the other tests
 * keep the prebuilt package), else on a patched native build in the user cache (`umad llama
 * build`); skipped where neither exists.
 */
import assert from "node:assert/strict";
import { libraryCandidates, type NativeBuildManifest } from "../src/llm/llama_lib.ts";
import { LLAMA_PATCHES } from "../src/llm/llama_patches.ts";
import { tinyModel } from "./llm_helpers.ts";

const candidates = libraryCandidates();

/** The patched library: `$UMAD_TEST_NATIVE_LIB` (CI builds one), else a native build in the cache. */
function patchedLib(): string | null {
  const carries = (m: NativeBuildManifest | undefined) =>
    m?.backend === "cpu" && LLAMA_PATCHES.every((p) => m.patches?.includes(p.name));
  const env = Deno.env.get("UMAD_TEST_NATIVE_LIB");
  if (env) {
    const manifest = JSON.parse(Deno.readTextFileSync(`${env}/../build.json`));
    if (!carries(manifest)) throw new Error(`${env} is not a CPU build with umad's patches`);
    return env;
  }
  return candidates.find((c) => c.source === "native" && !c.problem && carries(c.manifest))?.dir ??
    null;
}
const patched = patchedLib();
const shipped = candidates.find((c) =>
  (c.source === "npm" || c.source === "prebuilt") && !c.problem && c.files?.backend === "cpu"
);

async function probe(libDir: string, model: string): Promise<number[][]> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("./fixtures/attention_probe.ts", import.meta.url).pathname, model],
    env: { UMAD_LLAMA_LIB: libDir },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(out.stderr);
  assert.ok(out.success, `the probe failed on ${libDir}:\n${err}`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

function argmax(xs: number[]): number {
  let best = 0;
  for (let i = 1; i < xs.length; i++) if (xs[i] > xs[best]) best = i;
  return best;
}

Deno.test({
  name: "the patched flash attention gives the shipped kernel's logits through a shared KV cache",
  ignore: !patched || !shipped,
  async fn() {
    const model = tinyModel();
    const [mine, theirs] = await Promise.all([
      probe(patched!, model),
      probe(shipped!.dir, model),
    ]);
    assert.equal(mine.length, 17, "4 prompts, 4 rows + 4 prompt outputs, 4 rows, 1 row");
    assert.equal(theirs.length, mine.length);
    // The probe is not degenerate: the four sequences' last logits differ from each other.
    for (let s = 1; s < 4; s++) {
      assert.ok(mine[s].some((x, j) => Math.abs(x - mine[0][j]) > 0.1), `sequence ${s}`);
    }
    for (let r = 0; r < mine.length; r++) {
      const a = mine[r];
      const b = theirs[r];
      let diff = 0;
      let scale = 1;
      for (let j = 0; j < a.length; j++) {
        diff = Math.max(diff, Math.abs(a[j] - b[j]));
        scale = Math.max(scale, Math.abs(b[j]));
      }
      assert.ok(diff <= 2e-2 * scale, `row ${r}: logits differ by ${diff} (scale ${scale})`);
      const top = argmax(b);
      const gap = b[top] - Math.max(...b.filter((_, j) => j !== top));
      if (gap > 2 * diff) assert.equal(argmax(a), top, `row ${r}: greedy token`);
    }
  },
});
