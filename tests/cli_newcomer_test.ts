// What a newcomer meets first (hardening finding 5): no daemon running, configuration
// mistakes, model text on a terminal, a closed pipe, chat from the command line.
import assert from "node:assert/strict";
import { runUmad, startDaemon } from "./_daemon.ts";
import { startFakeDaemon } from "./_fake_daemon.ts";
import { tinyModel } from "./llm_helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;

Deno.test("every client command with no daemon says it is not running and how to start it (exit 1)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const socket = `${dir}/none.sock`;
    for (const cmd of [["ping"], ["status"], ["ls"], ["generate", "hi"], ["kill", "x"]]) {
      const r = await runUmad([...cmd, "--socket", socket]);
      assert.equal(r.code, 1, `${cmd[0]}: ${r.stderr}`);
      assert.match(
        r.stderr,
        /the umad daemon is not running \(nothing listens on ".*none\.sock"\)/,
      );
      assert.match(r.stderr, new RegExp(`Start it with "umad serve --socket ${socket}"`));
      assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
    }
    // The default socket, as a newcomer has it.
    const r = await runUmad(["ping"], { env: { XDG_RUNTIME_DIR: dir, UMAD_SOCKET: "" } });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`nothing listens on "${dir}/umad/umad.sock"`));
    assert.match(r.stderr, /Start it with "umad serve"/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("serve with a missing model file exits 2 and names the file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const r = await runUmad([
      "serve",
      "--socket",
      `${dir}/umad.sock`,
      "--model",
      `${dir}/nope.gguf`,
    ]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /Model file ".*nope\.gguf" does not exist/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Runs `umad ...args` with its stdout on a pseudo-terminal (Python's pty module). */
async function runOnTty(args: string[]): Promise<{ code: number; output: string }> {
  const out = await new Deno.Command("python3", {
    args: [
      "-c",
      "import os, pty, sys; sys.exit(os.waitstatus_to_exitcode(pty.spawn(sys.argv[1:])))",
      Deno.execPath(),
      "run",
      "-A",
      `${ROOT}main.ts`,
      ...args,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(120_000),
  }).output();
  return { code: out.code, output: new TextDecoder().decode(out.stdout) };
}

Deno.test("umad generate on a terminal shows model text's control sequences escaped, and ends with a newline", async () => {
  const hostile = ["Hi", "\x1b]0;owned\x07", "\x1b[2J", " there\tok", "\u009b31m"];
  const fake = await startFakeDaemon(() => hostile);
  try {
    const tty = await runOnTty(["generate", "--socket", fake.socket, "hello"]);
    assert.equal(tty.code, 0, tty.output);
    assert.ok(!tty.output.includes("\x1b"), JSON.stringify(tty.output));
    assert.ok(!tty.output.includes("\u009b"), JSON.stringify(tty.output));
    assert.match(tty.output, /Hi\\x1b\]0;owned\\x07\\x1b\[2J there\tok\\x9b31m\r?\n$/);
    // Into a pipe the text is passed on as it is (a program reads it), with the newline.
    const piped = await runUmad(["generate", "--socket", fake.socket, "hello"]);
    assert.equal(piped.code, 0, piped.stderr);
    assert.equal(piped.stdout, hostile.join("") + "\n");
  } finally {
    await fake.close();
  }
});

Deno.test("umad generate | head -c1 is not an error: exit 0, nothing on stderr", async () => {
  const fake = await startFakeDaemon(() => Array.from({ length: 20_000 }, (_, i) => `word${i} `));
  try {
    const out = await new Deno.Command("bash", {
      args: [
        "-c",
        `"$0" run -A "${ROOT}main.ts" generate --socket "$1" hello 2>"$2" | head -c1 >/dev/null; ` +
        `echo "\${PIPESTATUS[0]}"`,
        Deno.execPath(),
        fake.socket,
        `${fake.socket}.err`,
      ],
      stdout: "piped",
    }).output();
    assert.equal(new TextDecoder().decode(out.stdout).trim(), "0");
    assert.equal(Deno.readTextFileSync(`${fake.socket}.err`), "");
  } finally {
    await fake.close();
  }
});

Deno.test("umad generate --system/--chat sends the conversation so far with each turn", async () => {
  const fake = await startFakeDaemon((_, n) => [`answer ${n + 1}`]);
  try {
    const r = await runUmad(
      ["generate", "--socket", fake.socket, "--system", "Be brief.", "--chat", "--max-tokens", "8"],
      { stdin: "first question\n\nsecond question\n" },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "answer 1\nanswer 2\n");
    const gens = fake.requests.filter((m) => m.type === "generate");
    assert.equal(gens.length, 2);
    assert.equal(gens[0].max_tokens, 8);
    assert.deepEqual(gens[1].messages, [
      { role: "system", content: "Be brief." },
      { role: "user", content: "first question" },
      { role: "assistant", content: "answer 1" },
      { role: "user", content: "second question" },
    ]);
    assert.equal(gens[1].prompt, undefined);
  } finally {
    await fake.close();
  }
});

Deno.test("umad generate --chat on a terminal is a REPL: a prompt, escaped answers, Ctrl-D ends it", async () => {
  const fake = await startFakeDaemon((_, n) => [`answer \x1b[31m${n + 1}`]);
  try {
    // Type two lines and Ctrl-D ahead; the terminal's line discipline hands them over.
    const script = [
      "import os, pty, sys",
      "pid, fd = pty.fork()",
      "if pid == 0: os.execvp(sys.argv[1], sys.argv[1:])",
      'os.write(fd, b"first\\nsecond\\n\\x04")',
      'out = b""',
      "while True:",
      "    try: chunk = os.read(fd, 4096)",
      "    except OSError: break",
      "    if not chunk: break",
      "    out += chunk",
      "_, status = os.waitpid(pid, 0)",
      "sys.stdout.write(out.decode())",
      "sys.exit(os.waitstatus_to_exitcode(status))",
    ].join("\n");
    const out = await new Deno.Command("python3", {
      args: [
        "-c",
        script,
        Deno.execPath(),
        "run",
        "-A",
        `${ROOT}main.ts`,
        "generate",
        "--socket",
        fake.socket,
        "--chat",
      ],
      stdin: "null",
      stdout: "piped",
      signal: AbortSignal.timeout(120_000),
    }).output();
    const screen = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, screen);
    assert.match(screen, /> /);
    assert.match(screen, /answer \\x1b\[31m1\r?\n/);
    assert.match(screen, /answer \\x1b\[31m2\r?\n/);
    assert.ok(!screen.includes("\x1b[31m"), "no raw escape reached the terminal");
    const gens = fake.requests.filter((m) => m.type === "generate");
    assert.deepEqual(gens.map((m) => (m.messages as unknown[]).length), [1, 3]);
  } finally {
    await fake.close();
  }
});

Deno.test("umad generate --messages FILE answers the conversation in the file; a bad file exits 2", async () => {
  const fake = await startFakeDaemon(() => ["ok"]);
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/chat.json`;
    const conversation = [
      { role: "user", content: "Hello" },
      { role: "assistant", content: "Hi!" },
      { role: "user", content: "Tell me more" },
    ];
    Deno.writeTextFileSync(file, JSON.stringify(conversation));
    const r = await runUmad(["generate", "--socket", fake.socket, "--messages", file]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "ok\n");
    assert.deepEqual(fake.requests.find((m) => m.type === "generate")!.messages, conversation);
    Deno.writeTextFileSync(file, '[{"role": "user"}]');
    const bad = await runUmad(["generate", "--socket", fake.socket, "--messages", file]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /must be a JSON array of \{"role": string, "content": string\}/);
  } finally {
    await fake.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("umad generate against the real daemon ends its text with a newline", async () => {
  const d = await startDaemon(["--model", tinyModel(), "--parallel", "1", "--threads", "1"]);
  try {
    const r = await runUmad([
      "generate",
      "--socket",
      d.socket,
      "--max-tokens",
      "4",
      "--seed",
      "1",
      "hi",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.length > 1 && r.stdout.endsWith("\n"), JSON.stringify(r.stdout));
  } finally {
    await d.stop();
  }
});

Deno.test("deno task install puts a umad command on PATH that talks to the daemon", async () => {
  const root = await Deno.makeTempDir({ prefix: "umad-install-" });
  const d = await startDaemon();
  try {
    const install = await new Deno.Command(Deno.execPath(), {
      args: ["task", "install"],
      cwd: ROOT,
      env: { DENO_INSTALL_ROOT: root },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(install.code, 0, new TextDecoder().decode(install.stderr));
    const ping = await new Deno.Command("umad", {
      args: ["ping", "--socket", d.socket, "-c", "2"],
      cwd: root, // anywhere: the command does not depend on the checkout being the cwd
      env: { PATH: `${root}/bin:${Deno.env.get("PATH")}` },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(ping.code, 0, new TextDecoder().decode(ping.stderr));
    assert.match(new TextDecoder().decode(ping.stdout), /^n=2 p50=/);
  } finally {
    await d.stop();
    await Deno.remove(root, { recursive: true });
  }
});
