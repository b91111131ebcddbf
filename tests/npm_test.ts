// The npm package as users get it: built by `deno task npm`, imported by name under real
// Node from a project of its own, talking to a real daemon; its .d.ts files type-check
// for a TypeScript consumer; and the build fails loudly on a type error.
import assert from "node:assert/strict";
import ts from "typescript";
import { startDaemon } from "./_daemon.ts";

const ROOT = decodeURIComponent(new URL("..", import.meta.url).pathname).replace(/\/$/, "");
const NPM_DIR = `${ROOT}/npm`;
const FIXTURE = `${ROOT}/tests/fixtures/npm_smoke.mjs`;
/** The tests in the fixture (two codecs × 8, plus 4). */
const FIXTURE_TESTS = 20;

interface Output {
  code: number;
  text: string;
}

async function run(cmd: string, args: string[], opts: Deno.CommandOptions = {}): Promise<Output> {
  const out = await new Deno.Command(cmd, { ...opts, args, stdin: "null" }).output();
  const dec = new TextDecoder();
  return { code: out.code, text: dec.decode(out.stdout) + dec.decode(out.stderr) };
}

/** Runs `deno task npm --if-stale` (a no-op when npm/ was built from these sources). */
async function buildPackage(extra: string[] = []): Promise<Output> {
  return await run(Deno.execPath(), ["run", "-A", `${ROOT}/scripts/build_npm.ts`, ...extra], {
    cwd: ROOT,
  });
}

/** A temporary project with npm/ installed as node_modules/umad-client. */
async function nodeProject(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "umad-npm-project-" });
  await Deno.mkdir(`${dir}/node_modules`);
  await Deno.symlink(NPM_DIR, `${dir}/node_modules/umad-client`);
  await Deno.writeTextFile(
    `${dir}/package.json`,
    JSON.stringify({ private: true, type: "module" }),
  );
  return dir;
}

function tapCount(tap: string, name: string): number {
  const m = tap.match(new RegExp(`^# ${name} (\\d+)$`, "m"));
  return m ? Number(m[1]) : NaN;
}

Deno.test("the built npm package passes its smoke tests under Node against a real daemon", async () => {
  const build = await buildPackage(["--if-stale"]);
  assert.equal(build.code, 0, `deno task npm failed:\n${build.text}`);
  const project = await nodeProject();
  await Deno.copyFile(FIXTURE, `${project}/smoke.test.mjs`);
  const daemon = await startDaemon();
  try {
    const node = await run("node", ["--test", "--test-reporter=tap", "smoke.test.mjs"], {
      cwd: project,
      env: { UMAD_SOCKET: daemon.socket, UMAD_CLIENT_PACKAGE: "umad-client" },
    });
    const report = `node --test exited ${node.code}:\n${node.text.slice(-6000)}`;
    assert.equal(node.code, 0, report);
    assert.equal(tapCount(node.text, "fail"), 0, report);
    assert.equal(tapCount(node.text, "skipped"), 0, report);
    assert.equal(tapCount(node.text, "pass"), FIXTURE_TESTS, report);
  } finally {
    await daemon.stop();
    await Deno.remove(project, { recursive: true });
  }
});

Deno.test("the built npm package's types check for a TypeScript consumer", async () => {
  const build = await buildPackage(["--if-stale"]);
  assert.equal(build.code, 0, `deno task npm failed:\n${build.text}`);
  const pkg = JSON.parse(await Deno.readTextFile(`${NPM_DIR}/package.json`));
  assert.equal(pkg.type, "module");
  assert.equal(pkg.engines.node, ">=18");
  assert.equal(pkg.dependencies["@msgpack/msgpack"], "^3.1.3");
  assert.equal(pkg.exports["."].types, "./esm/client/mod.d.ts");

  const project = await nodeProject();
  try {
    const file = `${project}/consumer.mts`;
    await Deno.writeTextFile(
      file,
      `import { BadRequestError, type Client, connect, type UmadError } from "umad-client";
const client: Client = await connect({ codec: "json", reconnect: { maxAttempts: 3 } });
const ms: number = await client.ping();
const hello: { server: string; protocol: number } = client.hello;
for await (const ev of client.stream({ type: "generate", prompt: "Hi" })) {
  if (ev.event === "token") console.log(ev.text.length);
  // @ts-expect-error a generation has no terminal output
  if (ev.event === "pty.output") console.log(ev);
}
const { tokens }: { tokens: number[] } = await client.request({ type: "tokenize", text: "Hi" });
// @ts-expect-error tokenize needs its text
await client.request({ type: "tokenize" });
// @ts-expect-error no such request type (rawRequest sends anything)
await client.request({ type: "nope" });
await client.rawRequest({ type: "nope" });
const err: UmadError = new BadRequestError("E_PROTO_BAD_REQUEST", "bad");
// @ts-expect-error codec is "msgpack" | "json"
await connect({ codec: "xml" });
// @ts-expect-error ping resolves to a number
const wrong: string = await client.ping();
console.log(ms, hello, err, wrong, tokens);
await client.close();
`,
    );
    const program = ts.createProgram({
      rootNames: [file],
      options: {
        target: ts.ScriptTarget.ES2022,
        module: ts.ModuleKind.NodeNext,
        moduleResolution: ts.ModuleResolutionKind.NodeNext,
        lib: ["lib.es2022.d.ts", "lib.dom.d.ts"],
        types: [],
        strict: true,
        noEmit: true,
      },
    });
    const diagnostics = ts.getPreEmitDiagnostics(program);
    const text = ts.formatDiagnostics(diagnostics, {
      getCanonicalFileName: (f) => f,
      getCurrentDirectory: () => project,
      getNewLine: () => "\n",
    });
    assert.equal(diagnostics.length, 0, text);
  } finally {
    await Deno.remove(project, { recursive: true });
  }
});

Deno.test("deno task npm exits 1 and names the file on a tsc error", async () => {
  const root = await Deno.makeTempDir({ prefix: "umad-npm-broken-" });
  try {
    await Deno.mkdir(`${root}/src`);
    await Deno.copyFile(`${ROOT}/deno.json`, `${root}/deno.json`);
    await Deno.copyFile(`${ROOT}/src/version.ts`, `${root}/src/version.ts`);
    for (const dir of ["client", "protocol"]) {
      await run("cp", ["-R", `${ROOT}/src/${dir}`, `${root}/src/${dir}`]);
    }
    await Deno.writeTextFile(`${root}/src/client/mod.ts`, `export const n: number = "one";\n`, {
      append: true,
    });
    const build = await buildPackage(["--root", root]);
    assert.equal(build.code, 1, build.text);
    assert.match(build.text, /src\/client\/mod\.ts.*TS2322/s);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
