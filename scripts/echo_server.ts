// The bare baseline for the ping benchmark: a Deno Unix-socket server that echoes
// every byte back (a framed ping comes back as a frame the client can read).
const path = Deno.args[0];
const listener = Deno.listen({ transport: "unix", path });
Deno.addSignalListener("SIGTERM", () => {
  listener.close();
  Deno.exit(0);
});
for await (const conn of listener) {
  (async () => {
    const buf = new Uint8Array(65536);
    try {
      while (true) {
        const n = await conn.read(buf);
        if (n === null) break;
        let off = 0;
        while (off < n) off += await conn.write(buf.subarray(off, n));
      }
    } catch { /* peer gone */ }
    conn.close();
  })();
}
