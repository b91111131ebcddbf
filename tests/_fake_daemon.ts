// A stand-in daemon for CLI tests that need exact model output (control sequences, a
// long stream, chat turns): it speaks the framed protocol on a socket in a temp dir,
// records every request, and answers `generate` with the tokens `answer` gives.
import { decodePayload, encodeFrame, encodePayload, FrameDecoder } from "../src/protocol/mod.ts";
import type { Message } from "../src/protocol/mod.ts";

export interface FakeDaemon {
  socket: string;
  /** Every request received, in order. */
  requests: Message[];
  close(): Promise<void>;
}

/** Starts a fake daemon whose `generate` answer is `answer(request, n)` (n counts generates). */
export async function startFakeDaemon(
  answer: (request: Message, n: number) => string[],
): Promise<FakeDaemon> {
  const dir = await Deno.makeTempDir({ prefix: "umad-fake-" });
  const socket = `${dir}/umad.sock`;
  const listener = Deno.listen({ transport: "unix", path: socket });
  const requests: Message[] = [];
  const conns = new Set<Deno.Conn>();
  let generates = 0;
  const serve = async (conn: Deno.Conn) => {
    const decoder = new FrameDecoder(1 << 20);
    const buf = new Uint8Array(65536);
    const send = (m: Message) => conn.write(encodeFrame(encodePayload(m, "json")));
    try {
      for (let n; (n = await conn.read(buf)) !== null;) {
        for (const payload of decoder.push(buf.slice(0, n))) {
          const { message } = decodePayload(payload);
          requests.push(message);
          const id = message.id;
          if (message.type === "hello") {
            await send({ event: "hello", id, server: "umad", version: "0", protocol: 1, pid: 1 });
          } else if (message.type === "generate") {
            const tokens = answer(message, generates++);
            for (const text of tokens) await send({ event: "token", id, text, token_id: 1 });
            const usage = {
              prompt_tokens: 1,
              completion_tokens: tokens.length,
              ttft_ms: 1,
              total_ms: 1,
            };
            await send({ event: "eos", id, reason: "length", usage });
          }
        }
      }
    } catch {
      // the client went away
    } finally {
      conns.delete(conn);
      try {
        conn.close();
      } catch { /* closed */ }
    }
  };
  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        conns.add(conn);
        serve(conn);
      }
    } catch { /* closed */ }
  })();
  return {
    socket,
    requests,
    async close() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await accepting;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}
