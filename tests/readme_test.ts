// README.md as a newcomer runs it: every fenced code block is executed as written
// against a real daemon (the built-in demo model), or carries a marker saying why it
// cannot run here. Shell blocks run under bash in the repository with `umad` on PATH
// (the CLI through `deno run -A main.ts` until `deno task install` puts the real one
// there); JavaScript blocks run under Node with the built npm package installed, and
// under Deno with the source mapped as the README says; TypeScript blocks under Deno.
// The daemon also serves --http, and every block gets OPENAI_BASE_URL and OPENAI_API_KEY
// for it, as the README's HTTP section sets them; the `openai` package is the repo's own.
//
// Marker (on the line before the block, used sparingly):
//   <!-- readme-test: skip (why it cannot run in CI) -->
import assert from "node:assert/strict";
import { type HttpDaemon, startHttpDaemon } from "./_http.ts";

const ROOT = decodeURIComponent(new URL("..", import.meta.url).pathname).replace(/\/$/, "");
const MARKER = /^<!--\s*readme-test:\s*(\S+)\s*(.*?)\s*-->$/;
const SHELL = new Set(["sh", "bash", "shell", "console"]);
const JS = new Set(["js", "javascript", "mjs"]);
const TS = new Set(["ts", "typescript"]);
/** Fences that are not code: nothing to run. */
const TEXT = new Set(["", "text", "txt"]);

/** One fenced block of a Markdown file. */
export interface CodeBlock {
  /** The fence's language tag ("" when none). */
  lang: string;
  /** The block's text, without the fences. */
  code: string;
  /** 1-based line of the opening fence. */
  line: number;
  /** The marker before it, if any: `skip` and its reason. */
  marker?: { directive: string; reason: string };
}

/** The fenced code blocks of `markdown`, with the marker before each. */
export function codeBlocks(markdown: string): CodeBlock[] {
  const lines = markdown.split("\n");
  const blocks: CodeBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = lines[i].match(/^(```+|~~~+)\s*([\w-]*)/);
    if (!open) continue;
    const fence = open[1];
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !lines[i].startsWith(fence); i++) body.push(lines[i]);
    let j = start - 1;
    while (j >= 0 && lines[j].trim() === "") j--;
    const m = j >= 0 ? lines[j].trim().match(MARKER) : null;
    blocks.push({
      lang: open[2].toLowerCase(),
      code: body.join("\n") + "\n",
      line: start + 1,
      marker: m ? { directive: m[1], reason: m[2] } : undefined,
    });
  }
  return blocks;
}

Deno.test("the README extractor finds blocks, their language and their marker", () => {
  const md = [
    "# t",
    "<!-- readme-test: skip (a daemon in the foreground) -->",
    "",
    "```sh",
    "umad serve",
    "```",
    "",
    "```js",
    'console.log("hi");',
    "```",
  ].join("\n");
  assert.deepEqual(codeBlocks(md), [
    {
      lang: "sh",
      code: "umad serve\n",
      line: 4,
      marker: { directive: "skip", reason: "(a daemon in the foreground)" },
    },
    { lang: "js", code: 'console.log("hi");\n', line: 8, marker: undefined },
  ]);
});

interface Output {
  code: number;
  text: string;
}

async function run(cmd: string, args: string[], options: Deno.CommandOptions): Promise<Output> {
  const out = await new Deno.Command(cmd, { stdin: "null", ...options, args }).output();
  const dec = new TextDecoder();
  return { code: out.code, text: dec.decode(out.stdout) + dec.decode(out.stderr) };
}

/** A folder with an `umad` that runs this checkout's CLI. */
async function umadShim(dir: string): Promise<string> {
  const bin = `${dir}/shim`;
  await Deno.mkdir(bin);
  await Deno.writeTextFile(
    `${bin}/umad`,
    `#!/bin/sh\nexec "${Deno.execPath()}" run -A "${ROOT}/main.ts" "$@"\n`,
    { mode: 0o755 },
  );
  return bin;
}

/** Runs one block; returns what it printed, or throws with it. */
async function runBlock(block: CodeBlock, daemon: HttpDaemon, scratch: string): Promise<void> {
  const where = `README.md:${block.line} (${block.lang})`;
  const denoDir = Deno.execPath().replace(/\/[^/]+$/, "");
  const env = {
    UMAD_SOCKET: daemon.socket,
    NO_COLOR: "1",
    OPENAI_BASE_URL: `${daemon.base}/v1`,
    OPENAI_API_KEY: daemon.token ?? "",
  };
  let out: Output;
  if (SHELL.has(block.lang)) {
    // A `deno task install` in the README installs into the scratch folder, not $HOME.
    const shim = await umadShim(scratch);
    out = await run("bash", ["-e", "-o", "pipefail", "-c", block.code], {
      cwd: ROOT,
      env: {
        ...env,
        DENO_INSTALL_ROOT: scratch,
        PATH: `${scratch}/bin:${shim}:${denoDir}:${Deno.env.get("PATH")}`,
      },
    });
  } else if (JS.has(block.lang)) {
    // Under Node, with npm/ installed as node_modules/umad-client.
    const build = await run(Deno.execPath(), ["task", "npm", "--if-stale"], { cwd: ROOT });
    assert.equal(build.code, 0, `deno task npm failed:\n${build.text}`);
    const project = `${scratch}/node-project`;
    await Deno.mkdir(`${project}/node_modules`, { recursive: true });
    await Deno.symlink(`${ROOT}/npm`, `${project}/node_modules/umad-client`);
    // The README's HTTP example uses OpenAI's client: the one deno.json installs.
    await Deno.symlink(`${ROOT}/node_modules/openai`, `${project}/node_modules/openai`);
    await Deno.writeTextFile(`${project}/package.json`, '{"private":true,"type":"module"}');
    await Deno.writeTextFile(`${project}/demo.mjs`, block.code);
    out = await run("node", ["demo.mjs"], { cwd: project, env });
    assert.equal(out.code, 0, `${where} under Node exited ${out.code}:\n${out.text}`);
    out = await runUnderDeno(block.code, "demo.mjs", `${scratch}/deno-project`, env);
    assert.equal(out.code, 0, `${where} under Deno exited ${out.code}:\n${out.text}`);
  } else if (TS.has(block.lang)) {
    out = await runUnderDeno(block.code, "demo.ts", `${scratch}/deno-project`, env);
  } else {
    throw new Error(`${where}: no way to run "${block.lang}" blocks; mark it or change it`);
  }
  assert.equal(out.code, 0, `${where} exited ${out.code}:\n${out.text}`);
  if (Deno.env.get("README_TEST_VERBOSE")) console.log(out.text);
}

/** A Deno project whose deno.json maps umad-client to the source, as the README says. */
async function runUnderDeno(
  code: string,
  file: string,
  project: string,
  env: Record<string, string>,
): Promise<Output> {
  await Deno.mkdir(project, { recursive: true });
  const imports = {
    "umad-client": `${ROOT}/src/client/mod.ts`,
    "@msgpack/msgpack": "npm:@msgpack/msgpack@^3.1.3",
    openai: JSON.parse(Deno.readTextFileSync(`${ROOT}/deno.json`)).imports.openai,
  };
  await Deno.writeTextFile(`${project}/deno.json`, JSON.stringify({ imports }));
  await Deno.writeTextFile(`${project}/${file}`, code);
  return await run(Deno.execPath(), ["run", "-A", file], { cwd: project, env });
}

const readme = await Deno.readTextFile(`${ROOT}/README.md`);
const blocks = codeBlocks(readme).filter((b) => !TEXT.has(b.lang));

Deno.test("every README code block either runs here or says why not", () => {
  const skipped = blocks.filter((b) => b.marker);
  for (const b of skipped) {
    assert.equal(b.marker!.directive, "skip", `README.md:${b.line}: unknown marker`);
    assert.ok(b.marker!.reason, `README.md:${b.line}: a skip marker says why`);
  }
  assert.ok(blocks.length > skipped.length, "the README has blocks that run");
});

Deno.test("the README's code blocks run as written against a real daemon", async (t) => {
  const daemon = await startHttpDaemon(["--threads", "1", "--parallel", "2"], { withModel: true });
  try {
    for (const block of blocks.filter((b) => !b.marker)) {
      await t.step(`README.md:${block.line} (${block.lang})`, async () => {
        const scratch = await Deno.makeTempDir({ prefix: "umad-readme-" });
        try {
          await runBlock(block, daemon, scratch);
        } finally {
          await Deno.remove(scratch, { recursive: true });
        }
      });
    }
  } finally {
    await daemon.stop();
  }
});
