// Load generator for the terminal benchmark (bench_pty.ts `llmDecodeLoad`), run as its own
// process so its token traffic is not the measuring process's: `streams` generate requests
// decoding at once, each restarted when it ends. Prints "ready" once every stream has
// decoded a few tokens, then decodes until killed.
// `deno run -A scripts/llm_load.ts SOCKET STREAMS MAX_TOKENS`
import { connect } from "../src/client/client.ts";
import { delay } from "../src/protocol/async.ts";

const [socket, streamsArg, maxTokensArg] = Deno.args;
const streams = Number(streamsArg);
const maxTokens = Number(maxTokensArg);
const c = await connect({ socket, reconnect: false, client: "bench-pty-llm-load" });
let tokens = 0;
for (let i = 0; i < streams; i++) {
  (async () => {
    while (true) {
      const s = c.stream({
        type: "generate",
        prompt: `Stream ${i}: tell a long story about terminals.`,
        max_tokens: maxTokens,
        priority: "batch",
      });
      for await (const ev of s) if (ev.event === "token") tokens++;
    }
  })();
}
const t0 = Date.now();
while (tokens < streams * 4 && Date.now() - t0 < 10_000) await delay(20);
console.log("ready");
