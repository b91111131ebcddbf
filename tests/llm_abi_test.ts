/**
 * The struct layouts of src/llm/ffi.ts against the llama.cpp release they were written
 * for: a C program compiled with the system compiler against that release's headers
 * (the source bundled in npm:node-llama-cpp@3.21.1) prints every sizeof and offsetof.
 */
import assert from "node:assert/strict";
import {
  BATCH,
  CONTEXT_PARAMS,
  DEVICE_TYPES,
  LLAMA_CPP_VERSION,
  MODEL_PARAMS,
  POOLING,
  THREADPOOL_PARAMS,
  TOKEN_ATTR,
  TOKEN_DATA,
  TOKEN_DATA_ARRAY,
  VOCAB_TYPES,
} from "../src/llm/ffi.ts";
import { ensureLlamaSource } from "../src/llm/llama_source.ts";

function compilerPath(): string | null {
  for (const cc of [Deno.env.get("CC"), "cc", "gcc", "clang"]) {
    if (!cc) continue;
    try {
      if (
        new Deno.Command(cc, { args: ["--version"], stdout: "null", stderr: "null" }).outputSync()
          .success
      ) {
        return cc;
      }
    } catch { /* not installed */ }
  }
  return null;
}

const cc = compilerPath();
if (cc === null) {
  console.warn("llm_abi_test: no C compiler (cc, gcc, clang): the layout check is skipped");
}

const STRUCTS: Record<string, Record<string, number>> = {
  "struct llama_model_params": MODEL_PARAMS,
  "struct llama_context_params": CONTEXT_PARAMS,
  "struct llama_batch": BATCH,
  "struct ggml_threadpool_params": THREADPOOL_PARAMS,
  "llama_token_data": TOKEN_DATA,
  "llama_token_data_array": TOKEN_DATA_ARRAY,
};
/** Table keys that name a C field differently (`size` is sizeof in every table). */
const FIELD_NAMES: Record<string, Record<string, string>> = {
  "llama_token_data_array": { n: "size" },
};

/** Enum constants ffi.ts hard-codes, by the C name of each value. */
const ENUMS: Record<string, number> = {
  ...Object.fromEntries(
    Object.entries(POOLING).map(([k, v]) => [`LLAMA_POOLING_TYPE_${k.toUpperCase()}`, v]),
  ),
  ...Object.fromEntries(VOCAB_TYPES.map((k, i) => [`LLAMA_VOCAB_TYPE_${k.toUpperCase()}`, i])),
  ...Object.fromEntries(
    Object.entries(TOKEN_ATTR).map((
      [k, v],
    ) => [`LLAMA_TOKEN_ATTR_${k.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`, v]),
  ),
};

function program(): string {
  const lines = [
    "#include <stdio.h>",
    "#include <stddef.h>",
    '#include "llama.h"',
    '#include "ggml-backend.h"',
    "int main(void) {",
    '  printf("{\\"version\\":\\"%d.%d.%d\\"", LLAMA_VERSION_MAJOR_, LLAMA_VERSION_MINOR_, LLAMA_VERSION_PATCH_);',
  ];
  for (const [struct, table] of Object.entries(STRUCTS)) {
    for (const field of Object.keys(table)) {
      const cField = FIELD_NAMES[struct]?.[field] ?? field;
      const expr = field === "size" ? `sizeof(${struct})` : `offsetof(${struct}, ${cField})`;
      lines.push(`  printf(",\\"${struct}.${field}\\":%zu", (size_t) ${expr});`);
    }
  }
  for (const [i, name] of DEVICE_TYPES.entries()) {
    lines.push(
      `  printf(",\\"device_type.${name}\\":%d", (int) GGML_BACKEND_DEVICE_TYPE_${name.toUpperCase()});`,
      `  (void) ${i};`,
    );
  }
  for (const name of Object.keys(ENUMS)) {
    lines.push(`  printf(",\\"${name}\\":%d", (int) ${name});`);
  }
  lines.push(
    '  printf(",\\"struct ggml_backend_feature.size\\":%zu", sizeof(struct ggml_backend_feature));',
    '  printf("}\\n");',
    "  return 0;",
    "}",
  );
  return lines.join("\n");
}

Deno.test({
  name: "ffi.ts struct layouts and enum values match llama.cpp v0.4.0's headers, field by field",
  ignore: cc === null,
  async fn() {
    const src = await ensureLlamaSource();
    const cmake = await Deno.readTextFile(`${src}/CMakeLists.txt`);
    const version = ["MAJOR", "MINOR", "PATCH"].map((p) =>
      cmake.match(new RegExp(`set\\(LLAMA_VERSION_${p} (\\d+)\\)`))?.[1]
    ).join(".");
    assert.equal(version, LLAMA_CPP_VERSION, "the fetched source is the release ffi.ts names");
    const dir = await Deno.makeTempDir({ prefix: "umad-abi-" });
    try {
      const [maj, min, pat] = version.split(".");
      await Deno.writeTextFile(`${dir}/abi.c`, program());
      const out = await new Deno.Command(cc!, {
        args: [
          `-DLLAMA_VERSION_MAJOR_=${maj}`,
          `-DLLAMA_VERSION_MINOR_=${min}`,
          `-DLLAMA_VERSION_PATCH_=${pat}`,
          "-I",
          `${src}/include`,
          "-I",
          `${src}/ggml/include`,
          `${dir}/abi.c`,
          "-o",
          `${dir}/abi`,
        ],
      }).output();
      assert.ok(out.success, `cc failed:\n${new TextDecoder().decode(out.stderr)}`);
      const run = await new Deno.Command(`${dir}/abi`).output();
      const c = JSON.parse(new TextDecoder().decode(run.stdout));
      for (const [struct, table] of Object.entries(STRUCTS)) {
        for (const [field, offset] of Object.entries(table)) {
          assert.equal(offset, c[`${struct}.${field}`], `${struct}.${field}`);
        }
      }
      for (const [i, name] of DEVICE_TYPES.entries()) assert.equal(c[`device_type.${name}`], i);
      for (const [name, value] of Object.entries(ENUMS)) assert.equal(value, c[name], name);
      // ffi.ts walks the feature list in 16-byte steps.
      assert.equal(c["struct ggml_backend_feature.size"], 16);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
