// deno-lint-ignore-file no-control-regex
// `umad run` / `attach` / `ls` / `kill` driven through tmux as the outer terminal.
import assert from "node:assert/strict";
import { startPtyDaemon } from "./pty_helpers.ts";
import { delay } from "../src/protocol/async.ts";
import { decodePayload, encodeMessageFrame } from "../src/protocol/codec.ts";
import { RelayFrames } from "../src/cli/relay.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const MAIN = `${ROOT}main.ts`;

function hasTmux(): boolean {
  try {
    return new Deno.Command("tmux", { args: ["-V"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

async function run(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  const o = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  return { code: o.code, out: dec.decode(o.stdout) + dec.decode(o.stderr) };
}

function shq(s: string): string {
  return `'${s.replaceAll("'", "'\\''")}'`;
}

class Tmux {
  constructor(readonly socket: string) {}
  async cmd(...args: string[]): Promise<string> {
    const r = await run("tmux", ["-S", this.socket, "-f", "/dev/null", ...args]);
    if (r.code !== 0) throw new Error(`tmux ${args.join(" ")}: ${r.out}`);
    return r.out;
  }
  /** Starts a detached session running `shell` (kept open after it ends). */
  async start(name: string, shell: string, cols = 100, rows = 30): Promise<void> {
    await this.cmd(
      "new-session",
      "-d",
      "-s",
      name,
      "-x",
      String(cols),
      "-y",
      String(rows),
      `${shell}; echo "[rc=$?]"; sleep 600`,
    );
  }
  capture(target: string): Promise<string> {
    return this.cmd("capture-pane", "-p", "-J", "-t", target);
  }
  keys(target: string, ...keys: string[]): Promise<string> {
    return this.cmd("send-keys", "-t", target, ...keys);
  }
  async waitFor(target: string, re: RegExp, ms = 20000): Promise<string> {
    const deadline = Date.now() + ms;
    let screen = "";
    while (Date.now() < deadline) {
      screen = await this.capture(target);
      if (re.test(screen)) return screen;
      await delay(100);
    }
    throw new Error(`Timed out waiting for ${re} in tmux pane ${target}:\n${screen}`);
  }
  async kill(): Promise<void> {
    await run("tmux", ["-S", this.socket, "kill-server"]).catch(() => {});
  }
}

Deno.test({
  name: "umad run, detach, ls, attach and exit work through tmux as the outer terminal",
  ignore: !hasTmux(),
  async fn() {
    const daemon = await startPtyDaemon();
    const dir = await Deno.makeTempDir({ prefix: "umad-tmux-" });
    const tmux = new Tmux(`${dir}/tmux.sock`);
    const umad = (command: string, args: string) =>
      `${shq(Deno.execPath())} run -A ${shq(MAIN)} ${command} --socket ${
        shq(daemon.socket)
      } ${args}`;
    try {
      await tmux.start("one", `env PS1='umad$ ' ${umad("run", "--name demo -- /bin/sh -i")}`);
      await tmux.waitFor("one", /umad\$ $/m);
      await tmux.keys("one", "echo hello-$((40+2))", "Enter");
      await tmux.waitFor("one", /^hello-42$/m);
      await tmux.keys("one", "stty size", "Enter");
      await tmux.waitFor("one", /^30 100$/m);

      // The outer window changes size: the session follows (SIGWINCH).
      await tmux.cmd("resize-window", "-t", "one", "-x", "120", "-y", "35");
      await delay(300);
      await tmux.keys("one", "stty size", "Enter");
      await tmux.waitFor("one", /^35 120$/m);

      // Ctrl-\ detaches; the session keeps running.
      await tmux.keys("one", "C-\\");
      await tmux.waitFor("one", /\[detached from session [0-9a-f]+\][\s\S]*\[rc=0\]/);
      const ls = await run(Deno.execPath(), ["run", "-A", MAIN, "ls", "--socket", daemon.socket]);
      assert.equal(ls.code, 0, ls.out);
      assert.match(ls.out, /SESSION\s+NAME\s+PID\s+SIZE\s+CLIENTS\s+STATE/);
      assert.match(ls.out, /demo\s+\d+\s+120x35\s+0\s+running/);

      // Re-attach from another outer terminal: the screen comes back from the snapshot.
      await tmux.start("two", umad("attach", "demo"), 120, 35);
      const screen = await tmux.waitFor("two", /^hello-42$/m);
      assert.match(screen, /^35 120$/m);
      // A read-only watcher sees typing but cannot type.
      await tmux.start("three", umad("attach", "demo --readonly"), 120, 35);
      await tmux.waitFor("three", /^hello-42$/m);
      await tmux.keys("three", "echo from-readonly", "Enter");
      await tmux.keys("two", "echo from-$((1+1))-writer", "Enter");
      await tmux.waitFor("three", /^from-2-writer$/m);
      assert.doesNotMatch(await tmux.capture("two"), /from-readonly/);

      // The program exits: both attached clients say so and return.
      await tmux.keys("two", "exit 5", "Enter");
      await tmux.waitFor("two", /\[session [0-9a-f]+ exited with code 5\][\s\S]*\[rc=0\]/);
      await tmux.waitFor("three", /\[session [0-9a-f]+ exited with code 5\]/);

      // kill removes the exited session; attaching to it then fails with exit code 1.
      const kill = await run(Deno.execPath(), [
        "run",
        "-A",
        MAIN,
        "kill",
        "demo",
        "--socket",
        daemon.socket,
      ]);
      assert.equal(kill.code, 0, kill.out);
      const gone = await run(Deno.execPath(), [
        "run",
        "-A",
        MAIN,
        "attach",
        "demo",
        "--socket",
        daemon.socket,
      ]);
      assert.equal(gone.code, 1);
      assert.match(gone.out, /not found/);
    } finally {
      await tmux.kill();
      await daemon.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "umad run returns the program's exit status and usage errors exit 2",
  ignore: !hasTmux(),
  async fn() {
    const daemon = await startPtyDaemon();
    const dir = await Deno.makeTempDir({ prefix: "umad-tmux-" });
    const tmux = new Tmux(`${dir}/tmux.sock`);
    try {
      const cmd = `${shq(Deno.execPath())} run -A ${shq(MAIN)} run --socket ${
        shq(daemon.socket)
      } -- /bin/sh -c 'echo ran-in-$PWD; exit 3'`;
      await tmux.start("one", `cd /tmp && ${cmd}`);
      await tmux.waitFor("one", /ran-in-\/tmp[\s\S]*exited with code 3\][\s\S]*\[rc=3\]/);
      const usage = await run(Deno.execPath(), ["run", "-A", MAIN, "attach"]);
      assert.equal(usage.code, 2);
      const help = await run(Deno.execPath(), ["run", "-A", MAIN, "kill", "--help"]);
      assert.equal(help.code, 0);
      assert.match(help.out, /Usage: umad kill SESSION/);
    } finally {
      await tmux.kill();
      await daemon.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

/** Runs `umad ...` to completion. */
function umadCli(args: string[]) {
  return run(Deno.execPath(), ["run", "-A", MAIN, ...args]);
}

Deno.test("umad capture prints the screen and scrollback; umad wait waits for a pattern", async () => {
  const daemon = await startPtyDaemon();
  try {
    const { connect } = await import("../src/client/client.ts");
    const c = await connect({ socket: daemon.socket, reconnect: false });
    try {
      const r = await c.request({
        type: "pty.spawn",
        argv: ["/bin/sh", "-c", "seq 1 300; sleep 1; printf 'ok> '; exec sleep 60"],
        cols: 50,
        rows: 10,
        name: "job",
      });
      const waited = await umadCli(["wait", "job", "ok> $", "--regex", "--socket", daemon.socket]);
      assert.equal(waited.code, 0, waited.out);
      assert.match(waited.out, /^ok> $/m);
      const screen = await umadCli(["capture", "job", "--socket", daemon.socket]);
      assert.equal(screen.code, 0, screen.out);
      assert.equal(
        screen.out,
        [...Array.from({ length: 9 }, (_, i) => `${292 + i}`), "ok>"].join("\n") + "\n",
      );
      const back = await umadCli([
        "capture",
        String(r.session),
        "-S",
        "-3",
        "-E",
        "-1",
        "--socket",
        daemon.socket,
      ]);
      assert.equal(back.out, "289\n290\n291\n");
      const ansi = await umadCli(["capture", "job", "--ansi", "--socket", daemon.socket]);
      assert.match(ansi.out, /\x1b\[0m\n$/);
      const miss = await umadCli([
        "wait",
        "job",
        "never",
        "--timeout",
        "200",
        "--socket",
        daemon.socket,
      ]);
      assert.equal(miss.code, 1);
      assert.match(miss.out, /no match/);
      const usage = await umadCli(["capture", "job", "--start", "x"]);
      assert.equal(usage.code, 2);
      const gone = await umadCli(["capture", "nope", "--socket", daemon.socket]);
      assert.equal(gone.code, 1);
      assert.match(gone.out, /not found/);
    } finally {
      await c.close();
    }
  } finally {
    await daemon.stop();
  }
});

Deno.test("umad ls --watch prints the sessions, then their events, escaping control characters", async () => {
  const daemon = await startPtyDaemon();
  const proc = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "ls", "--watch", "--socket", daemon.socket],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  try {
    const reader = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let out = "";
    const until = async (re: RegExp) => {
      const deadline = Date.now() + 20_000;
      while (!re.test(out)) {
        const left = deadline - Date.now();
        let timer: ReturnType<typeof setTimeout> | undefined;
        const r = await Promise.race([
          reader.read(),
          new Promise<null>((res) => timer = setTimeout(() => res(null), Math.max(0, left))),
        ]);
        clearTimeout(timer);
        if (r === null) throw new Error(`no ${re} in:\n${out}`);
        if (r.done) throw new Error(`ls --watch ended:\n${out}`);
        out += r.value;
      }
    };
    await until(/no sessions/);
    const { connect } = await import("../src/client/client.ts");
    const c = await connect({ socket: daemon.socket, reconnect: false });
    try {
      const r = await c.request({
        type: "pty.spawn",
        argv: ["/bin/sh", "-c", "printf '\\033]2;t\\033[31m\\007'; read x; exit 2"],
        name: "evil\x1b[2Jname",
        cols: 70,
        rows: 20,
      });
      await until(/created\s+[0-9a-f]+\s+evil\\x1b\[2Jname\s+pid \d+\s+70x20/);
      // ESC ends an OSC string: the title is "t", then comes a color the title never sees.
      await until(/title\s+[0-9a-f]+\s+"t"/);
      c.send({
        type: "pty.input",
        session: r.session as string,
        data: new TextEncoder().encode("\r"),
      });
      await until(/exited\s+[0-9a-f]+\s+code 2 \(exited\)/);
      assert.doesNotMatch(out, /\x1b/);
      reader.releaseLock();
    } finally {
      await c.close();
    }
  } finally {
    try {
      proc.kill("SIGINT");
    } catch { /* gone */ }
    await proc.status;
    await proc.stdout.cancel().catch(() => {});
    await daemon.stop();
  }
});

Deno.test({
  name: "an attached umad run says the daemon shut down, and a lost connection is not a detach",
  ignore: !hasTmux(),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "umad-tmux-" });
    const tmux = new Tmux(`${dir}/tmux.sock`);
    const daemon = await startPtyDaemon();
    const killed = await startPtyDaemon();
    const umad = (socket: string, args: string) =>
      `${shq(Deno.execPath())} run -A ${shq(MAIN)} run --socket ${shq(socket)} ${args}`;
    try {
      await tmux.start("one", umad(daemon.socket, "-- /bin/sh -c 'echo up-one; exec sleep 600'"));
      await tmux.start("two", umad(killed.socket, "-- /bin/sh -c 'echo up-two; exec sleep 600'"));
      await tmux.waitFor("one", /up-one/);
      await tmux.waitFor("two", /up-two/);
      await daemon.stop(); // SIGTERM: an orderly shutdown
      const one = await tmux.waitFor("one", /\[rc=\d+\]/);
      assert.match(one, /\[session [0-9a-f]+ ended: the daemon shut down\]/);
      assert.doesNotMatch(one, /detached/);
      Deno.kill(killed.pid, "SIGKILL"); // gone without a word
      const two = await tmux.waitFor("two", /\[rc=\d+\]/);
      assert.match(
        two,
        /\[lost the connection to the daemon; session [0-9a-f]+ may still be running/,
      );
      assert.match(two, /\[rc=1\]/);
      assert.doesNotMatch(two, /detached/);
    } finally {
      await tmux.kill();
      await daemon.stop();
      await killed.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test("leaving a session that never used the alternate screen leaves the outer cursor where it is", async () => {
  // The outer terminal is xterm.js (headless), fed by a PTY that umad run writes to.
  const { spawnPty } = await import("../src/pty/mod.ts");
  const xterm = (await import("@xterm/headless")).default;
  const daemon = await startPtyDaemon();
  try {
    const outer = new xterm.Terminal({ cols: 80, rows: 12, allowProposedApi: true });
    outer.write("earlier-output\r\n");
    const p = spawnPty({
      file: Deno.execPath(),
      argv: [
        Deno.execPath(),
        "run",
        "-A",
        MAIN,
        "run",
        "--socket",
        daemon.socket,
        "--",
        "/bin/sh",
        "-c",
        "echo inside-1; echo inside-2",
      ],
      env: Deno.env.toObject(),
      cols: 80,
      rows: 12,
    });
    p.onData = (b) => outer.write(b);
    await new Promise<void>((r) => p.onExit = () => r());
    await new Promise<void>((r) => outer.write("AFTER", r));
    const lines = Array.from(
      { length: 12 },
      (_, i) => outer.buffer.active.getLine(i)!.translateToString(true),
    );
    const text = lines.join("\n");
    assert.match(
      text,
      /^earlier-output\ninside-1\ninside-2\n(\n)?\[session [0-9a-f]+ exited with code 0\]\nAFTER/,
      text,
    );
  } finally {
    await daemon.stop();
  }
});

Deno.test({
  name: "modes a session set come back in tmux when umad attach re-attaches, one by one",
  ignore: !hasTmux(),
  async fn() {
    const daemon = await startPtyDaemon();
    const dir = await Deno.makeTempDir({ prefix: "umad-tmux-" });
    const tmux = new Tmux(`${dir}/tmux.sock`);
    const { connect } = await import("../src/client/client.ts");
    const c = await connect({ socket: daemon.socket, reconnect: false });
    // [name, what the program prints, tmux format, value expected after re-attach]
    const modes: [string, string, string, string][] = [
      ["cursor-hidden", "\\033[?25l", "#{cursor_flag}", "0"],
      ["keypad", "\\033=", "#{keypad_flag}", "1"],
      ["cursor-keys", "\\033[?1h", "#{keypad_cursor_flag}", "1"],
      ["mouse-std", "\\033[?1000h", "#{mouse_standard_flag}", "1"],
      ["mouse-drag-sgr", "\\033[?1002h\\033[?1006h", "#{mouse_button_flag}#{mouse_sgr_flag}", "11"],
      ["mouse-any", "\\033[?1003h", "#{mouse_any_flag}", "1"],
      ["mouse-utf8", "\\033[?1000h\\033[?1005h", "#{mouse_utf8_flag}", "1"],
      ["alt-screen", "\\033[?1049h", "#{alternate_on}", "1"],
      ["title", "\\033]2;re-attached title\\007", "#{pane_title}", "re-attached title"],
      ["region", "\\033[3;12r", "#{scroll_region_upper},#{scroll_region_lower}", "2,11"],
      ["origin", "\\033[3;12r\\033[?6h", "#{origin_flag}", "1"],
      ["insert", "\\033[4h", "#{insert_flag}", "1"],
      ["no-wrap", "\\033[?7l", "#{wrap_flag}", "0"],
    ];
    try {
      for (const [name, seq] of modes) {
        const r = await c.request({
          type: "pty.spawn",
          argv: ["/bin/sh", "-c", `printf '${seq}'; printf 'SET'; exec sleep 600`],
          name,
          cols: 80,
          rows: 24,
        });
        // A first client comes and goes (it got the raw output): what follows is a
        // re-attach, restored from the snapshot.
        const session = r.session as string;
        await c.request({ type: "pty.wait", session, pattern: "SET", timeout_ms: 10_000 });
        const first = c.stream({ type: "pty.attach", session }, (e) => e.event === "pty.detached");
        await first.next();
        await c.request({ type: "pty.detach", session });
        for await (const _ of first) { /* to its end */ }
      }
      const attach = (name: string) =>
        `${shq(Deno.execPath())} run -A ${shq(MAIN)} attach ${name} --socket ${shq(daemon.socket)}`;
      await tmux.start("base", "sleep 600", 80, 24);
      for (const [name] of modes) {
        await tmux.cmd("new-window", "-d", "-t", "base", "-n", name, attach(name));
      }
      for (const [name, , format, expected] of modes) {
        const deadline = Date.now() + 30_000;
        let got = "";
        while (Date.now() < deadline) {
          got = (await tmux.cmd("display-message", "-p", "-t", `base:${name}`, format)).trim();
          if (got === expected) break;
          await delay(200);
        }
        assert.equal(got, expected, `${name}: ${format}`);
      }
      // And a plain session leaves tmux's defaults alone.
      await c.request({
        type: "pty.spawn",
        argv: ["/bin/sh", "-c", "printf SET; exec sleep 600"],
        name: "plain",
      });
      await tmux.cmd("new-window", "-d", "-t", "base", "-n", "plain", attach("plain"));
      await tmux.waitFor("base:plain", /SET/);
      const flags = await tmux.cmd(
        "display-message",
        "-p",
        "-t",
        "base:plain",
        "#{cursor_flag}#{keypad_flag}#{mouse_any_flag}#{alternate_on}#{wrap_flag}",
      );
      assert.equal(flags.trim(), "10001");
    } finally {
      await c.close();
      await tmux.kill();
      await daemon.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test("the relay's fast frames are the codec's bytes, and what it does not know goes to the codec", () => {
  const f = new RelayFrames("build", "a");
  for (const n of [0, 1, 3, 64, 255]) {
    const data = Uint8Array.from({ length: n }, (_, i) => (i * 7) & 0xff);
    const want = encodeMessageFrame({ type: "pty.input", session: "build", data }, "msgpack");
    assert.deepEqual(f.input(data), want, `${n} bytes`);
  }
  assert.equal(f.input(new Uint8Array(256)), null, "a paste: the codec frames it");
  // Output: nothing is known until the codec decoded one and writes it back the same.
  const out = (m: Record<string, unknown>) => encodeMessageFrame(m as never, "msgpack").subarray(4);
  const echo = out({ event: "pty.output", id: "a", session: "s1", data: new Uint8Array([104]) });
  assert.equal(f.output(echo), null);
  f.learn(echo, decodePayload(echo).message);
  const next = out({
    event: "pty.output",
    id: "a",
    session: "s1",
    data: new Uint8Array([105, 106]),
  });
  assert.deepEqual(f.output(next), new Uint8Array([105, 106]));
  // Another session, another attach id, another event, or a field more: the codec decodes it.
  for (
    const other of [
      { event: "pty.output", id: "a", session: "s2", data: new Uint8Array([1]) },
      { event: "pty.output", id: "b", session: "s1", data: new Uint8Array([1]) },
      { event: "pty.snapshot", id: "a", session: "s1", data: new Uint8Array([1]) },
      { event: "pty.output", id: "a", session: "s1", data: new Uint8Array([1]), seq: 3 },
    ]
  ) assert.equal(f.output(out(other)), null, JSON.stringify(other.event));
});
