import assert from "node:assert/strict";
import {
  createLlmService,
  GgufError,
  readGgufHeader,
  TINY_MODEL,
  writeGgufSync,
  writeSyntheticModel,
} from "../src/llm/mod.ts";
import { tinyModel } from "./llm_helpers.ts";

function tempDir(): string {
  return Deno.makeTempDirSync({ prefix: "umad-gguf-test-" });
}

Deno.test("gguf writer and reader round-trip metadata and tensor layout", () => {
  const dir = tempDir();
  try {
    const path = `${dir}/m.gguf`;
    writeGgufSync(path, {
      "general.architecture": { type: "string", value: "llama" },
      "a.u32": { type: "u32", value: 7 },
      "a.f32": { type: "f32", value: 0.5 },
      "a.bool": { type: "bool", value: true },
      "a.i64": { type: "i64", value: -5n },
      "a.strs": { type: "array", itemType: "string", values: ["x", "ÿ", ""] },
      "a.ints": { type: "array", itemType: "i32", values: [1, -2, 3] },
    }, [
      { name: "t0", dims: [3], type: "F32", fill: (o, s) => o.forEach((_, i) => (o[i] = s + i)) },
      { name: "t1", dims: [5, 2], type: "F16", fill: (o) => o.fill(1.5) },
    ]);
    const h = readGgufHeader(path);
    assert.equal(h.version, 3);
    assert.equal(h.metadata.get("general.architecture"), "llama");
    assert.equal(h.metadata.get("a.u32"), 7);
    assert.equal(h.metadata.get("a.f32"), 0.5);
    assert.equal(h.metadata.get("a.bool"), true);
    assert.equal(h.metadata.get("a.i64"), -5n);
    assert.deepEqual(h.metadata.get("a.strs"), ["x", "ÿ", ""]);
    assert.deepEqual(h.metadata.get("a.ints"), [1, -2, 3]);
    assert.deepEqual(h.tensors.map((t) => [t.name, t.dims, t.type, t.offset, t.size]), [
      ["t0", [3], 0, 0, 12],
      ["t1", [5, 2], 1, 32, 20],
    ]);
    assert.equal(h.dataOffset % 32, 0);
    const bytes = Deno.readFileSync(path);
    const f32 = new Float32Array(bytes.slice(h.dataOffset, h.dataOffset + 12).buffer);
    assert.deepEqual([...f32], [0, 1, 2]);
    const f16 = new Float16Array(bytes.slice(h.dataOffset + 32, h.dataOffset + 52).buffer);
    assert.deepEqual([...f16], new Array(10).fill(1.5));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("generated models are deterministic: the same spec gives the same bytes", () => {
  const dir = tempDir();
  try {
    writeSyntheticModel(`${dir}/a.gguf`, TINY_MODEL);
    writeSyntheticModel(`${dir}/b.gguf`, TINY_MODEL);
    assert.deepEqual(Deno.readFileSync(`${dir}/a.gguf`), Deno.readFileSync(`${dir}/b.gguf`));
    writeSyntheticModel(`${dir}/c.gguf`, { ...TINY_MODEL, seed: 99 });
    assert.notDeepEqual(Deno.readFileSync(`${dir}/a.gguf`), Deno.readFileSync(`${dir}/c.gguf`));
    const h = readGgufHeader(`${dir}/a.gguf`);
    const tokens = h.metadata.get("tokenizer.ggml.tokens") as string[];
    assert.equal(new Set(tokens).size, tokens.length, "token strings are unique");
    for (let b = 0; b < 256; b++) {
      assert.ok(tokens.includes(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`));
    }
    assert.equal((h.metadata.get("tokenizer.ggml.token_type") as number[]).length, tokens.length);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("gguf reader rejects a file that is not GGUF with a clear message", () => {
  const dir = tempDir();
  try {
    Deno.writeTextFileSync(`${dir}/notes.gguf`, "this is a text file, not a model\n");
    assert.throws(() => readGgufHeader(`${dir}/notes.gguf`), (e: Error) => {
      assert.ok(e instanceof GgufError);
      assert.match(e.message, /not a GGUF model file/);
      assert.match(e.message, /notes\.gguf/);
      return true;
    });
    assert.throws(() => readGgufHeader(`${dir}/missing.gguf`), /does not exist/);
    Deno.mkdirSync(`${dir}/adir`);
    assert.throws(() => readGgufHeader(`${dir}/adir`), /not a regular file/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("gguf reader reports a truncated model before llama.cpp sees it", () => {
  const dir = tempDir();
  try {
    const bytes = Deno.readFileSync(tinyModel());
    for (const cut of [30, 2000, bytes.length - 100]) {
      Deno.writeFileSync(`${dir}/cut.gguf`, bytes.subarray(0, cut));
      assert.throws(() => readGgufHeader(`${dir}/cut.gguf`), /truncated/, `cut at ${cut}`);
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("createLlmService refuses a non-GGUF model file with an error naming it", async () => {
  const dir = tempDir();
  try {
    Deno.writeTextFileSync(`${dir}/model.bin`, "PK\x03\x04 zip archive, not a model");
    await assert.rejects(
      () => createLlmService({ model: `${dir}/model.bin` }),
      /model\.bin" is not a GGUF model file/,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("createLlmService says where it looked when the llama.cpp libraries are missing", async () => {
  await assert.rejects(
    () => createLlmService({ model: tinyModel(), libDir: "/nonexistent/llama-libs" }),
    /--llama-lib "\/nonexistent\/llama-libs": llama\.cpp library directory .* does not exist/,
  );
});
