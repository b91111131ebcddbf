// `umad run` / `attach` / `ls` / `kill` driven through tmux as the outer terminal.
import assert from "node:assert/strict";
import { startPtyDaemon } from "./pty_helpers.ts";
import { delay } from "../src/protocol/async.ts";

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
