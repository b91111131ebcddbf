/**
 * Builds the npm package `umad-client` into `npm/`: the client library
 * (`src/client/mod.ts` and every module it imports) compiled by tsc to ESM with
 * `.d.ts` files for Node 18+, plus package.json, README.md and LICENSE, with its
 * dependencies installed into `npm/node_modules` so the package runs in place.
 *
 * Usage: `deno task npm [--if-stale]` (`deno run -A scripts/build_npm.ts`).
 * Exits 1 on any tsc error or unresolvable import, 2 on a usage error.
 *
 * @module
 */
import ts from "typescript";
import { parseArgs } from "node:util";
import { exists } from "./_fs.ts";

/** The package name on npm. */
export const PACKAGE_NAME = "umad-client";
/** `@types/node` used to type-check `node:*` imports (Node 18 is the oldest supported). */
const NODE_TYPES = "^18";
const ENTRY = "src/client/mod.ts";
/** The repository this script belongs to. */
const REPO = decodeURIComponent(new URL("..", import.meta.url).pathname).replace(/\/$/, "");
const STAMP = ".build-stamp";
const LICENSE_FILES = ["LICENSE", "LICENSE.md", "LICENSE.txt"];

/** An npm package the client imports, taken from deno.json's import map. */
interface Dependency {
  name: string;
  range: string;
}

/** What one build reads and writes: the source tree, `npm/` inside it, the version. */
interface Context {
  root: string;
  out: string;
  version: string;
}

/** The client's module graph: files (relative to the root) and the npm packages they import. */
interface Graph {
  files: string[];
  dependencies: Map<string, Dependency>;
}

/** The build failed for a reason the message states (exit code 1). */
export class BuildError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BuildError";
  }
}

const HELP = `Build the npm package ${PACKAGE_NAME} into npm/.

Usage: deno run -A scripts/build_npm.ts [--if-stale] [--root DIR]

  --if-stale   do nothing when npm/ was built from the same sources
  --root DIR   build from another source tree (into DIR/npm); default: this repository
  -h, --help   show this help`;

function normalize(path: string): string {
  const out: string[] = [];
  for (const part of path.split("/")) {
    if (part === "..") out.pop();
    else if (part !== "." && part !== "") out.push(part);
  }
  return out.join("/");
}

function dirOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i < 0 ? "" : path.slice(0, i);
}

/** `npm:@scope/name@^1.2/sub` → `{name: "@scope/name", range: "^1.2"}`. */
function parseNpmSpecifier(target: string): Dependency | null {
  if (!target.startsWith("npm:")) return null;
  const rest = target.slice(4).replace(/^\//, "");
  const m = rest.match(/^((?:@[^/@]+\/)?[^/@]+)(?:@([^/]+))?/);
  if (!m) return null;
  return { name: m[1], range: m[2] ?? "*" };
}

/** Resolves a bare specifier through deno.json's `imports` to an npm package. */
function resolveBare(
  specifier: string,
  imports: Record<string, string>,
  from: string,
): Dependency {
  let key = specifier in imports ? specifier : "";
  if (!key) {
    for (const k of Object.keys(imports)) {
      if (k.endsWith("/") && specifier.startsWith(k) && k.length > key.length) key = k;
    }
  }
  const dep = key ? parseNpmSpecifier(imports[key]) : null;
  if (!dep) {
    throw new BuildError(
      `${from} imports "${specifier}", which is neither relative, "node:*", nor an npm ` +
        `package in deno.json's imports; Node cannot resolve it`,
    );
  }
  const pkg = specifier.match(/^((?:@[^/]+\/)?[^/]+)/)?.[1];
  if (pkg !== dep.name) {
    throw new BuildError(
      `${from} imports "${specifier}", which deno.json maps to the package "${dep.name}"; ` +
        `import it by that name so Node resolves it too`,
    );
  }
  return dep;
}

/** Walks the imports of ENTRY: relative `.ts` files, `node:*` builtins, npm packages. */
async function collectGraph(root: string): Promise<Graph> {
  const denoJson = JSON.parse(await Deno.readTextFile(`${root}/deno.json`));
  const imports: Record<string, string> = denoJson.imports ?? {};
  const graph: Graph = { files: [], dependencies: new Map() };
  const seen = new Set<string>();
  const queue = [ENTRY];
  while (queue.length) {
    const file = queue.shift()!;
    if (seen.has(file)) continue;
    seen.add(file);
    let text: string;
    try {
      text = await Deno.readTextFile(`${root}/${file}`);
    } catch (e) {
      throw new BuildError(`Cannot read "${file}": ${(e as Error).message}`);
    }
    graph.files.push(file);
    for (const { fileName: spec } of ts.preProcessFile(text, true, true).importedFiles) {
      if (spec.startsWith("./") || spec.startsWith("../")) {
        if (!spec.endsWith(".ts") || spec.endsWith(".d.ts")) {
          throw new BuildError(`${file} imports "${spec}"; relative imports must name a .ts file`);
        }
        const target = normalize(`${dirOf(file)}/${spec}`);
        if (!target.startsWith("src/")) {
          throw new BuildError(`${file} imports "${spec}", outside src/`);
        }
        queue.push(target);
      } else if (!spec.startsWith("node:")) {
        const dep = resolveBare(spec, imports, file);
        graph.dependencies.set(dep.name, dep);
      }
    }
  }
  graph.files.sort();
  return graph;
}

async function sha256(parts: string[]): Promise<string> {
  const data = new TextEncoder().encode(parts.join("\0"));
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return Array.from(hash, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A digest of everything the build reads: sources, this script, deno.json, LICENSE. */
async function inputsDigest(ctx: Context, graph: Graph): Promise<string> {
  const { root } = ctx;
  const parts = [ctx.version, await Deno.readTextFile(new URL(import.meta.url))];
  parts.push(await Deno.readTextFile(`${root}/deno.json`));
  for (const name of LICENSE_FILES) {
    parts.push(name, await Deno.readTextFile(`${root}/${name}`).catch(() => ""));
  }
  for (const file of graph.files) parts.push(file, await Deno.readTextFile(`${root}/${file}`));
  return sha256(parts);
}

async function isFresh(ctx: Context, graph: Graph, digest: string): Promise<boolean> {
  const stamp = await Deno.readTextFile(`${ctx.out}/${STAMP}`).catch(() => "");
  if (stamp.trim() !== digest) return false;
  for (const name of graph.dependencies.keys()) {
    if (!await exists(`${ctx.out}/node_modules/${name}/package.json`)) return false;
  }
  return true;
}

/** Runs a command quietly; throws with its output when it fails. */
async function run(cmd: string, args: string[], cwd: string): Promise<string> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cmd, { args, cwd, stdin: "null" }).output();
  } catch (e) {
    throw new BuildError(`Cannot run ${cmd}: ${(e as Error).message}`);
  }
  const dec = new TextDecoder();
  const text = dec.decode(out.stdout) + dec.decode(out.stderr);
  if (!out.success) {
    throw new BuildError(`${cmd} ${args.join(" ")} failed (exit ${out.code}) in ${cwd}:\n${text}`);
  }
  return text;
}

const NPM_QUIET = [
  "--no-audit",
  "--no-fund",
  "--no-package-lock",
  "--ignore-scripts",
  "--prefer-offline",
  "--loglevel=error",
];

function dependencyRecord(graph: Graph): Record<string, string> {
  const deps: Record<string, string> = {};
  for (const d of [...graph.dependencies.values()].sort((a, b) => a.name < b.name ? -1 : 1)) {
    deps[d.name] = d.range;
  }
  return deps;
}

/** Copies the graph into a staging dir with the packages tsc needs for types. */
async function stage(root: string, graph: Graph): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "umad-npm-" });
  for (const file of graph.files) {
    await Deno.mkdir(`${dir}/${dirOf(file)}`, { recursive: true });
    await Deno.copyFile(`${root}/${file}`, `${dir}/${file}`);
  }
  const pkg = {
    private: true,
    type: "module",
    dependencies: dependencyRecord(graph),
    devDependencies: { "@types/node": NODE_TYPES },
  };
  await Deno.writeTextFile(`${dir}/package.json`, JSON.stringify(pkg, null, 2));
  await run("npm", ["install", ...NPM_QUIET], dir);
  return dir;
}

const COMPILER_OPTIONS: ts.CompilerOptions = {
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
  lib: ["lib.es2022.d.ts"],
  types: ["node"],
  strict: true,
  isolatedModules: true,
  skipLibCheck: true,
  declaration: true,
  rewriteRelativeImportExtensions: true,
  noEmitOnError: true,
  forceConsistentCasingInFileNames: true,
  newLine: ts.NewLineKind.LineFeed,
};

/** Each export of the entry module by name, with its line for the README's API list. */
function describeExports(program: ts.Program, entry: string): Map<string, string> {
  const checker = program.getTypeChecker();
  const source = program.getSourceFile(entry);
  const moduleSymbol = source && checker.getSymbolAtLocation(source);
  if (!moduleSymbol) return new Map();
  const lines = new Map<string, string>();
  for (const exported of checker.getExportsOfModule(moduleSymbol)) {
    const symbol = exported.flags & ts.SymbolFlags.Alias
      ? checker.getAliasedSymbol(exported)
      : exported;
    const f = symbol.flags;
    const kind = f & ts.SymbolFlags.Class
      ? "class"
      : f & ts.SymbolFlags.Function
      ? "function"
      : f & (ts.SymbolFlags.Interface | ts.SymbolFlags.TypeAlias)
      ? "type"
      : f & ts.SymbolFlags.Variable
      ? "const"
      : "";
    const doc = ts.displayPartsToString(symbol.getDocumentationComment(checker))
      .split(/\n\s*\n/)[0].replace(/\{@link(?:code|plain)?\s+([^}]+?)\s*\}/g, "`$1`").replace(
        /\s+/g,
        " ",
      ).trim();
    lines.set(
      exported.name,
      `- \`${exported.name}\`${kind ? ` (${kind})` : ""}${doc ? ` — ${doc}` : ""}`,
    );
  }
  return lines;
}

const isRelativeTs = (s: string) => /^\.\.?\//.test(s) && s.endsWith(".ts") && !s.endsWith(".d.ts");

/**
 * `.d.ts` output keeps `./x.ts` specifiers (`rewriteRelativeImportExtensions` only
 * rewrites JavaScript); point them at the emitted `./x.js` so consumers resolve them.
 */
const rewriteDeclarationImports: ts.TransformerFactory<ts.SourceFile | ts.Bundle> = (ctx) => {
  const f = ctx.factory;
  const literal = (node: ts.Node): ts.Node =>
    ts.isStringLiteral(node) && isRelativeTs(node.text)
      ? f.createStringLiteral(node.text.slice(0, -3) + ".js")
      : node;
  const visit = (node: ts.Node): ts.Node => {
    if (ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) {
      const spec = node.moduleSpecifier;
      return ts.visitEachChild(node, (c) => c === spec ? literal(c) : visit(c), ctx);
    }
    if (ts.isImportTypeNode(node)) {
      const arg = node.argument;
      return ts.visitEachChild(
        node,
        (c) =>
          c === arg && ts.isLiteralTypeNode(arg)
            ? f.updateLiteralTypeNode(arg, literal(arg.literal) as ts.StringLiteral)
            : visit(c),
        ctx,
      );
    }
    return ts.visitEachChild(node, visit, ctx);
  };
  return (root) => ts.visitNode(root, visit) as ts.SourceFile | ts.Bundle;
};

/** Compiles the staged sources into `npm/esm`; returns its exports (see describeExports). */
function compile(stageDir: string, out: string): Map<string, string> {
  const entry = `${stageDir}/${ENTRY}`;
  const options: ts.CompilerOptions = {
    ...COMPILER_OPTIONS,
    rootDir: `${stageDir}/src`,
    outDir: `${out}/esm`,
    typeRoots: [`${stageDir}/node_modules/@types`],
  };
  const program = ts.createProgram({ rootNames: [entry], options });
  const diagnostics = [...ts.getPreEmitDiagnostics(program)];
  if (diagnostics.length === 0) {
    const emitted = program.emit(undefined, undefined, undefined, false, {
      afterDeclarations: [rewriteDeclarationImports],
    });
    diagnostics.push(...emitted.diagnostics);
  }
  if (diagnostics.length) {
    const host: ts.FormatDiagnosticsHost = {
      getCanonicalFileName: (f) => f,
      getCurrentDirectory: () => stageDir,
      getNewLine: () => "\n",
    };
    const format = Deno.stderr.isTerminal()
      ? ts.formatDiagnosticsWithColorAndContext
      : ts.formatDiagnostics;
    const text = format(diagnostics, host)
      .replaceAll(`${stageDir}/`, "");
    throw new BuildError(`tsc found ${diagnostics.length} error(s):\n${text}`);
  }
  return describeExports(program, entry);
}

function licenseId(text: string): string {
  if (/\bMIT License\b/i.test(text) || /Permission is hereby granted, free of charge/.test(text)) {
    return "MIT";
  }
  if (/Apache License,? Version 2\.0/i.test(text)) return "Apache-2.0";
  return "SEE LICENSE IN LICENSE";
}

const TERMINALS_NODE_PTY = `\`spawn\` and \`attach\` give a node-pty-shaped \`Terminal\`:

\`\`\`js
import { attach, connect, spawn } from "${PACKAGE_NAME}";

const client = await connect();
const term = await spawn(client, "bash", [], { cols: 100, rows: 30, cwd: process.cwd() });
term.onData((text) => process.stdout.write(text));
term.onExit(({ exitCode, signal }) => console.log("exit", exitCode, signal));
term.write("ls\\r");
term.resize(120, 40);
await term.detach(); // the session goes on in the daemon

// Later, from this or another program: the screen comes back.
const again = await attach(client, term.session);
again.onData((text) => process.stdout.write(text));
\`\`\`

After the client reconnects, an attached terminal re-attaches by itself.`;

const TERMINALS_PROTOCOL = `Terminal requests go through \`request\`, \`stream\` and \`send\`:

\`\`\`js
const { session } = await client.request({ type: "pty.spawn", argv: ["bash"], cols: 80, rows: 24 });
const events = client.stream({ type: "pty.attach", session }); // until pty.exit or pty.detached
client.send({ type: "pty.input", session, data: new TextEncoder().encode("echo hi\\n") });
for await (const ev of events) {
  // Terminal data is bytes in both codecs.
  if (ev.event === "pty.snapshot" || ev.event === "pty.output") process.stdout.write(ev.data);
}
\`\`\``;

function readme(api: string[], exports: Set<string>): string {
  const terminals = exports.has("spawn") && exports.has("attach")
    ? TERMINALS_NODE_PTY
    : TERMINALS_PROTOCOL;
  return `# ${PACKAGE_NAME}

Client for [umad](https://www.npmjs.com/package/${PACKAGE_NAME}), the local runtime
daemon that shares one LLM and many terminal sessions among all the programs of a
machine over a Unix socket. It runs on Node 18+, Deno and Bun (\`node:net\`, or
\`Deno.connect\` under Deno) and speaks umad's framed protocol in MessagePack (default) or JSON.

It is not on the npm registry: build it from a umad checkout with \`deno task npm\`
(this folder, \`npm/\`) and install the folder into your project:

\`\`\`sh
npm install /path/to/umad/npm    # or "${PACKAGE_NAME}": "file:/path/to/umad/npm" in package.json
\`\`\`

Start the daemon first (\`umad serve\`).

## Connect, ping, metrics

\`\`\`js
import { connect } from "${PACKAGE_NAME}";

// The socket defaults to $UMAD_SOCKET, else $XDG_RUNTIME_DIR/umad/umad.sock,
// else /tmp/umad-<uid>/umad.sock.
const client = await connect({ client: "my-editor" });
console.log(client.hello); // { server: "umad", version, protocol: 1, pid, ... }
console.log(await client.ping(), "ms round trip");
const metrics = await client.metrics();
console.log(metrics.connections);
await client.close();
\`\`\`

Options of \`connect\`: \`socket\` (path), \`codec\` (\`"msgpack"\` or \`"json"\`),
\`client\` (name sent in \`hello\`), \`timeoutMs\`, \`reconnect\` (\`true\` by
default, \`false\`, or \`{ initialDelayMs, maxDelayMs, factor, jitter, maxAttempts }\`),
and \`dialer\` (a function returning a \`Transport\`: tests pass \`memoryPipe()\`'s end).
When the connection drops, requests in flight fail with \`ConnectionClosedError\` and one
reconnect loop redials with exponential backoff and jitter; requests made meanwhile wait
for it; \`onDisconnect(cb)\` and \`onReconnect(cb)\` tell you when. A failed first
\`connect()\` leaves nothing running, and \`close()\` settles every request.

Requests and events are typed by umad's wire contract: \`request({type: "tokenize", text})\`
resolves with a \`tokenize\` event, \`stream({type: "generate", ...})\` yields \`token\`,
\`eos\` or \`result\`. \`rawRequest\`, \`rawStream\` and \`rawSend\` send any map as it
is.

## Stream a generation

Streams are async iterators. Leaving the loop early cancels the request (a generation
stops, an attach detaches, a watch ends).

\`\`\`js
for await (const ev of client.stream({ type: "generate", prompt: "Hello", max_tokens: 32 })) {
  if (ev.event === "token") process.stdout.write(ev.text);
  if (ev.event === "eos") console.log("\\n", ev.reason, ev.usage);
}
\`\`\`

## Terminals

The daemon owns the PTYs; a session outlives the client that started it, and attaching
again restores the screen. ${terminals}

## Errors

A request the daemon refuses rejects with a \`UmadError\` whose \`code\` is the wire code
(\`E_PROTO_BAD_REQUEST\`, \`E_BUSY\`, \`E_NO_MODEL\`, \`E_NOT_FOUND\`, ...); subclasses such
as \`BusyError\`, \`NoModelError\` and \`ConnectionClosedError\` let you catch by class.

## API

${api.join("\n")}
`;
}

/** True when an emitted `.d.ts` names Node's types (then `@types/node` is a peer). */
async function declarationsNeedNodeTypes(dir: string): Promise<boolean> {
  for await (const entry of Deno.readDir(dir)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) {
      if (await declarationsNeedNodeTypes(path)) return true;
    } else if (entry.name.endsWith(".d.ts")) {
      const text = await Deno.readTextFile(path);
      if (/from "node:|import\("node:|<reference types="node"/.test(text)) return true;
    }
  }
  return false;
}

function packageJson(
  graph: Graph,
  license: string | null,
  nodeTypes: boolean,
  version: string,
): Record<string, unknown> {
  const files = ["esm", "README.md"];
  if (license !== null) files.push("LICENSE");
  const pkg: Record<string, unknown> = {
    name: PACKAGE_NAME,
    version,
    description:
      "Client for umad, the local daemon that shares one LLM and many terminal sessions over a Unix socket",
    keywords: ["umad", "llm", "llama.cpp", "pty", "terminal", "daemon", "unix-socket"],
    type: "module",
    main: "./esm/client/mod.js",
    types: "./esm/client/mod.d.ts",
    exports: {
      ".": { types: "./esm/client/mod.d.ts", default: "./esm/client/mod.js" },
      "./package.json": "./package.json",
    },
    files,
    sideEffects: false,
    engines: { node: ">=18" },
    dependencies: dependencyRecord(graph),
  };
  if (license !== null) pkg.license = licenseId(license);
  if (nodeTypes) {
    pkg.peerDependencies = { "@types/node": ">=18" };
    pkg.peerDependenciesMeta = { "@types/node": { optional: true } };
  }
  return pkg;
}

async function readLicense(root: string): Promise<string | null> {
  for (const name of LICENSE_FILES) {
    const text = await Deno.readTextFile(`${root}/${name}`).catch(() => null);
    if (text !== null) return text;
  }
  return null;
}

/** Reads `VERSION` from `<root>/src/version.ts`. */
async function readVersion(root: string): Promise<string> {
  const text = await Deno.readTextFile(`${root}/src/version.ts`).catch(() => "");
  const m = text.match(/export const VERSION\s*=\s*"([^"]+)"/);
  if (!m) throw new BuildError(`Cannot read VERSION from "${root}/src/version.ts"`);
  return m[1];
}

/** Options of {@linkcode buildNpm}. */
export interface BuildNpmOptions {
  /** The source tree (default: this repository); the package goes to `<root>/npm`. */
  root?: string;
  /** Do nothing when `npm/` was built from the same inputs. */
  ifStale?: boolean;
}

/**
 * Builds `<root>/npm`. Resolves with whether it built (false: it was fresh); rejects
 * with a `BuildError` on a tsc error, an import Node cannot resolve, or a failed
 * install.
 */
export async function buildNpm(opts: BuildNpmOptions = {}): Promise<boolean> {
  const root = (opts.root ?? REPO).replace(/\/$/, "");
  const ctx: Context = { root, out: `${root}/npm`, version: await readVersion(root) };
  const { out } = ctx;
  const graph = await collectGraph(root);
  const digest = await inputsDigest(ctx, graph);
  if (opts.ifStale && await isFresh(ctx, graph, digest)) return false;

  const stageDir = await stage(root, graph);
  try {
    await Deno.remove(out, { recursive: true }).catch(() => {});
    await Deno.mkdir(out, { recursive: true });
    const api = compile(stageDir, out);
    const license = await readLicense(root);
    const nodeTypes = await declarationsNeedNodeTypes(`${out}/esm`);
    const pkg = packageJson(graph, license, nodeTypes, ctx.version);
    await Deno.writeTextFile(`${out}/package.json`, JSON.stringify(pkg, null, 2) + "\n");
    await Deno.writeTextFile(
      `${out}/README.md`,
      readme([...api.values()].sort(), new Set(api.keys())),
    );
    if (license !== null) await Deno.writeTextFile(`${out}/LICENSE`, license);
    if (graph.dependencies.size) await run("npm", ["install", "--omit=dev", ...NPM_QUIET], out);
    // Fail here, not in a user's project, when the ESM graph does not load under Node.
    await run("node", [
      "--input-type=module",
      "-e",
      `const m = await import(${JSON.stringify(`${out}/esm/client/mod.js`)});` +
      `if (typeof m.connect !== "function") throw new Error("no connect export");`,
    ], out);
    await Deno.writeTextFile(`${out}/${STAMP}`, digest + "\n");
  } finally {
    await Deno.remove(stageDir, { recursive: true }).catch(() => {});
  }
  return true;
}

async function main(args: string[]): Promise<number> {
  let flags;
  try {
    flags = parseArgs({
      args,
      options: {
        "if-stale": { type: "boolean" },
        root: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (e) {
    console.error(`${(e as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (flags.help) {
    console.log(HELP);
    return 0;
  }
  const t0 = performance.now();
  try {
    const built = await buildNpm({ root: flags.root, ifStale: flags["if-stale"] });
    const ms = Math.round(performance.now() - t0);
    console.log(built ? `Built npm/ (${PACKAGE_NAME}) in ${ms} ms` : `npm/ is up to date`);
    return 0;
  } catch (e) {
    if (e instanceof BuildError) {
      console.error(`npm build failed: ${e.message}`);
      return 1;
    }
    throw e;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
