// PROTOCOL.md "Socket": the daemon refuses unsafe socket directories (exit 2), the
// client refuses an unsafe socket before it sends a byte. Real daemons, real sockets.
import assert from "node:assert/strict";
import { connect } from "../src/client/client.ts";
import { UnsafeSocketError } from "../src/client/errors.ts";
import { RawClient, runUmad, startDaemon } from "./_daemon.ts";

const AS_ROOT = Deno.uid() === 0;
/** `nobody`: a uid that is not ours. */
const OTHER_UID = 65534;

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "umad-sock-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** A listener that counts connections and bytes: a "daemon" that must hear nothing. */
function fakeDaemon(path: string) {
  const listener = Deno.listen({ transport: "unix", path });
  const seen = { connections: 0, bytes: 0 };
  const done = (async () => {
    try {
      for await (const conn of listener) {
        seen.connections++;
        (async () => {
          const buf = new Uint8Array(1024);
          try {
            for (let n; (n = await conn.read(buf)) !== null;) seen.bytes += n;
          } catch { /* closed */ }
          conn.close();
        })();
      }
    } catch { /* closed */ }
  })();
  return {
    seen,
    async close() {
      listener.close();
      await done;
    },
  };
}

Deno.test("a symlinked socket directory is refused by the daemon (exit 2) and by the client", async () => {
  await withTempDir(async (parent) => {
    Deno.mkdirSync(`${parent}/real`, { mode: 0o700 });
    Deno.symlinkSync(`${parent}/real`, `${parent}/link`);
    const refused = await runUmad(["serve", "--no-model", "--socket", `${parent}/link/umad.sock`]);
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /link" is a symlink/);

    const d = await startDaemon([], { dir: `${parent}/real` });
    try {
      await assert.rejects(
        connect({ socket: `${parent}/link/umad.sock`, reconnect: false }),
        (e: unknown) => e instanceof UnsafeSocketError && /is a symlink/.test(e.message),
      );
      const ping = await runUmad(["ping", "--socket", `${parent}/link/umad.sock`]);
      assert.equal(ping.code, 2, ping.stderr);
      assert.match(ping.stderr, /Refusing to connect/);
      // The real path works.
      const client = await connect({ socket: d.socket, reconnect: false });
      assert.ok(await client.ping() >= 0);
      await client.close();
    } finally {
      await d.stop();
    }
  });
});

Deno.test("a default socket directory that is a symlink is refused with exit code 2", async () => {
  await withTempDir(async (runtime) => {
    Deno.mkdirSync(`${runtime}/elsewhere`, { mode: 0o700 });
    Deno.symlinkSync(`${runtime}/elsewhere`, `${runtime}/umad`);
    const r = await runUmad(["serve", "--no-model"], {
      env: { XDG_RUNTIME_DIR: runtime, UMAD_SOCKET: "" },
    });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /umad" is a symlink/);
  });
});

Deno.test("an explicit directory others may write is refused without the sticky bit, served with it", async () => {
  await withTempDir(async (parent) => {
    const open = `${parent}/open`;
    Deno.mkdirSync(open);
    Deno.chmodSync(open, 0o777);
    const r = await runUmad(["serve", "--no-model", "--socket", `${open}/umad.sock`]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /mode 0777: others may write it and it has no sticky bit/);

    const sticky = `${parent}/sticky`;
    Deno.mkdirSync(sticky);
    Deno.chmodSync(sticky, 0o1777);
    const d = await startDaemon([], { dir: sticky });
    try {
      const ping = await runUmad(["ping", "--socket", d.socket, "-c", "1"]);
      assert.equal(ping.code, 0, ping.stderr);
      assert.equal(Deno.statSync(d.socket).mode! & 0o777, 0o600);
    } finally {
      await d.stop();
    }
  });
});

Deno.test("UMA Serve's socket directly in /tmp (sticky) is served", async () => {
  const socket = `/tmp/uma.test.${Deno.pid}.${crypto.randomUUID().slice(0, 8)}.sock`;
  const d = await startDaemon([], { socket });
  try {
    const c = await RawClient.connect(socket);
    assert.equal((await c.request({ type: "ping", id: "1" })).event, "pong");
    c.close();
    const ping = await runUmad(["ping", "-c", "1"], { env: { UMAD_SOCKET: socket } });
    assert.equal(ping.code, 0, ping.stderr);
  } finally {
    await d.stop();
    for (const f of [socket, `${socket}.lock`]) await Deno.remove(f).catch(() => {});
  }
});

Deno.test({
  name: "a socket directory owned by another uid is refused by the daemon and the client",
  ignore: !AS_ROOT, // only root can hand a directory to another uid; protocol_test covers the rule
  fn: async () => {
    await withTempDir(async (parent) => {
      const theirs = `${parent}/theirs`;
      Deno.mkdirSync(theirs, { mode: 0o700 });
      const fake = fakeDaemon(`${theirs}/umad.sock`);
      Deno.chownSync(theirs, OTHER_UID, OTHER_UID);
      try {
        const r = await runUmad(["serve", "--no-model", "--socket", `${theirs}/other.sock`]);
        assert.equal(r.code, 2, r.stderr);
        assert.match(r.stderr, new RegExp(`belongs to uid ${OTHER_UID}`));
        await assert.rejects(
          connect({ socket: `${theirs}/umad.sock`, reconnect: false }),
          UnsafeSocketError,
        );
        assert.deepEqual(fake.seen, { connections: 0, bytes: 0 });
      } finally {
        await fake.close();
      }
    });
  },
});

Deno.test({
  name: "a fake daemon socket owned by another uid is refused before the client sends anything",
  ignore: !AS_ROOT,
  fn: async () => {
    await withTempDir(async (dir) => {
      const socket = `${dir}/umad.sock`;
      const fake = fakeDaemon(socket);
      try {
        Deno.chownSync(socket, OTHER_UID, OTHER_UID);
        await assert.rejects(
          connect({ socket, reconnect: false }),
          (e: unknown) =>
            e instanceof UnsafeSocketError && e.message.includes(`belongs to uid ${OTHER_UID}`),
        );
        // The CLI refuses too (exit 2) and prints nothing a fake daemon said.
        const gen = await runUmad(["generate", "--socket", socket, "hello"]);
        assert.equal(gen.code, 2, gen.stderr);
        assert.equal(gen.stdout, "");
        assert.match(gen.stderr, /Refusing to connect/);
        assert.deepEqual(fake.seen, { connections: 0, bytes: 0 });
        // Once the socket is ours, the same client dials it (the rule, not the path, refused).
        Deno.chownSync(socket, Deno.uid()!, Deno.gid()!);
        const dialing = connect({ socket, reconnect: false, timeoutMs: 300 });
        await assert.rejects(dialing); // the fake never says hello
        assert.equal(fake.seen.connections, 1);
      } finally {
        await fake.close();
      }
    });
  },
});

Deno.test("a socket path longer than sun_path is a configuration error (exit 2) naming both lengths", async () => {
  await withTempDir(async (dir) => {
    const long = `${dir}/${"s".repeat(120)}.sock`;
    const bytes = new TextEncoder().encode(long).length;
    for (const cmd of [["serve", "--no-model"], ["ping"]]) {
      const r = await runUmad([...cmd, "--socket", long]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, new RegExp(`is ${bytes} bytes long, over the 107 bytes`));
    }
  });
});

Deno.test("the socket rules, as a pure function of lstat facts", async () => {
  const { checkSocketDir, checkSocketFile, checkSocketPathLength } = await import(
    "../src/protocol/socket_path.ts"
  );
  const dir = (uid: number, mode: number, extra: Record<string, boolean> = {}) => ({
    isSymlink: false,
    isDirectory: true,
    isSocket: false,
    uid,
    mode: 0o40000 | mode,
    ...extra,
  });
  const me = 1000;
  const verdict = (facts: ReturnType<typeof dir>, kind: "default" | "explicit") =>
    checkSocketDir(facts, { uid: me, kind }).ok;
  // Default directory: ours and 0700 only.
  assert.equal(verdict(dir(me, 0o700), "default"), true);
  assert.equal(verdict(dir(me, 0o750), "default"), false);
  assert.equal(verdict(dir(me, 0o1777), "default"), false);
  assert.equal(verdict(dir(0, 0o700), "default"), false);
  assert.equal(verdict(dir(me, 0o700, { isSymlink: true }), "default"), false);
  // Explicit path: ours or root's, writable by others only when sticky.
  assert.equal(verdict(dir(me, 0o755), "explicit"), true);
  assert.equal(verdict(dir(0, 0o1777), "explicit"), true); // /tmp
  assert.equal(verdict(dir(0, 0o777), "explicit"), false);
  assert.equal(verdict(dir(me, 0o775), "explicit"), false);
  assert.equal(verdict(dir(me, 0o1775), "explicit"), true);
  assert.equal(verdict(dir(OTHER_UID, 0o700), "explicit"), false);
  assert.equal(verdict(dir(0, 0o1777, { isSymlink: true }), "explicit"), false);
  assert.equal(verdict(dir(me, 0o700, { isDirectory: false }), "explicit"), false);
  // The socket file: a socket of ours or root's.
  const sock = (uid: number, extra: Record<string, boolean> = {}) => ({
    isSymlink: false,
    isDirectory: false,
    isSocket: true,
    uid,
    mode: 0o140600,
    ...extra,
  });
  assert.equal(checkSocketFile(sock(me), { uid: me }).ok, true);
  assert.equal(checkSocketFile(sock(0), { uid: me }).ok, true);
  assert.equal(checkSocketFile(sock(OTHER_UID), { uid: me }).ok, false);
  assert.equal(
    checkSocketFile(sock(me, { isSymlink: true, isSocket: false }), { uid: me }).ok,
    false,
  );
  assert.equal(checkSocketFile(sock(me, { isSocket: false }), { uid: me }).ok, false);
  // sun_path: 107 bytes on Linux, 103 on macOS (multibyte characters count as bytes).
  assert.equal(checkSocketPathLength("/" + "a".repeat(106), "linux").ok, true);
  assert.equal(checkSocketPathLength("/" + "a".repeat(107), "linux").ok, false);
  assert.equal(checkSocketPathLength("/" + "a".repeat(102), "darwin").ok, true);
  assert.equal(checkSocketPathLength("/" + "a".repeat(103), "darwin").ok, false);
  assert.equal(checkSocketPathLength("/" + "é".repeat(54), "linux").ok, false);
});
