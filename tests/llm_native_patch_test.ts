/**
 * umad's patch of llama.cpp's CPU flash attention (`llama_patches.ts`, `fa-masked-tiles`)
 * computes what the shipped kernel computes: the same decodes, through a unified KV cache
 * where most cells belong to other sequences, on a native build with the patch and on the
 * prebuilt package, give the same logits (up to the float differences of two builds for
 * different CPU flags) and the same greedy token on every row. Runs where a patched native
 * build for this CPU exists (`umad llama build`; the benchmarks use one); CI's fresh
 * machines have none and skip it, and test there only that the patch fits the source
 * (`llm_native_build_test.ts`).
 */
import assert from "node:assert/strict";
import { libraryCandidates } from "../src/llm/llama_lib.ts";
import { LLAMA_PATCHES } from "../src/llm/llama_patches.ts";
import { tinyModel } from "./llm_helpers.ts";

const candidates = libraryCandidates();
const patched = candidates.find((c) =>
  c.source === "native" && !c.problem && c.manifest?.backend === "cpu" &&
  LLAMA_PATCHES.every((p) => c.manifest?.patches?.includes(p.name))
);
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
      probe(patched!.dir, model),
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
