/**
 * The engine worker's side of `tokenize`, `detokenize` and `embed` (see
 * `model_requests.ts`). Tokenizing answers at once; embeddings are queued and decoded by
 * {@linkcode Embedder} in the time decoding leaves spare.
 *
 * @module
 */
import { Embedder, EmbedError } from "./embedder.ts";
import { grammarIndexOf, type LlamaModel } from "./llama.ts";
import type { ModelReplyMessage, ModelRequestMessage } from "./model_requests.ts";

const decoder = new TextDecoder();

/** Answers model requests for one model. */
export class ModelRequestHandler {
  /** The loaded model. */
  readonly model: LlamaModel;
  /** Decodes embedding requests. */
  readonly embedder: Embedder;
  readonly #reply: (msg: ModelReplyMessage) => void;

  /** `reply` posts an answer back to the main thread. */
  constructor(model: LlamaModel, threads: number, reply: (msg: ModelReplyMessage) => void) {
    this.model = model;
    this.embedder = new Embedder(model, { threads });
    this.#reply = reply;
    // Vocabulary tables that chat prompts and grammars need, built while the model loads
    // rather than inside the first request that needs them (tens of ms on a 150k vocabulary).
    model.controlTokens();
    grammarIndexOf(model);
  }

  /** True while embeddings wait to be decoded. */
  get busy(): boolean {
    return this.embedder.busy;
  }

  /** Decodes up to `budget` tokens of waiting embeddings. */
  step(budget: number): number {
    return this.embedder.step(budget);
  }

  /** Answers or queues one request from the main thread. */
  handle(msg: ModelRequestMessage): void {
    const { rid } = msg;
    const fail = (
      code: "E_PROTO_BAD_REQUEST" | "E_LIMIT_PROMPT_TOO_LARGE" | "E_INTERNAL",
      message: string,
    ) => this.#reply({ op: "reply", rid, kind: "error", code, message });
    const m = this.model;
    try {
      switch (msg.op) {
        case "tokenize": {
          const tokens = Array.from(m.tokenize(msg.text, msg.addSpecial, msg.special));
          if (!msg.pieces) {
            this.#reply({ op: "reply", rid, kind: "tokenize", tokens });
            return;
          }
          // A piece may be part of a character (byte-level BPE): it shows as U+FFFD.
          const pieces = tokens.map((t) => decoder.decode(m.pieceSpecial(t)));
          this.#reply({ op: "reply", rid, kind: "tokenize", tokens, pieces });
          return;
        }
        case "detokenize": {
          const bad = msg.tokens.find((t) => !m.isToken(t));
          if (bad !== undefined) {
            fail(
              "E_PROTO_BAD_REQUEST",
              `detokenize: token ${bad} is not in the vocabulary (0 to ${m.nVocab - 1})`,
            );
            return;
          }
          this.#reply({ op: "reply", rid, kind: "detokenize", text: m.detokenize(msg.tokens) });
          return;
        }
        case "embed":
          this.embedder.enqueue(
            rid,
            msg.input,
            (embeddings, promptTokens) =>
              this.#reply({
                op: "reply",
                rid,
                kind: "embed",
                embeddings,
                prompt_tokens: promptTokens,
              }),
            (err) => fail(err.code, err.message),
          );
          return;
        case "embed.cancel":
          this.embedder.cancel(rid);
          return;
      }
    } catch (e) {
      if (e instanceof EmbedError) fail(e.code, e.message);
      else fail("E_INTERNAL", `${msg.op} failed: ${(e as Error).message}`);
    }
  }

  /** Frees the embedding context. */
  close(): void {
    this.embedder.close();
  }
}
