/**
 * `tokenize`, `detokenize` and `embed`: requests the engine worker answers from the
 * loaded model's vocabulary and weights. This side (main thread) sends them to the worker
 * and turns its replies into events; `model_request_handler.ts` answers them there.
 *
 * @module
 */
import type { DetokenizeRequest, EmbedRequest, TokenizeRequest } from "../protocol/messages.ts";
import type { Stream } from "../protocol/service.ts";

/** Main → worker: one model request. */
export type ModelRequestMessage =
  | {
    op: "tokenize";
    rid: number;
    text: string;
    special: boolean;
    addSpecial: boolean;
    pieces: boolean;
  }
  | { op: "detokenize"; rid: number; tokens: number[] }
  | { op: "embed"; rid: number; input: string[] }
  | { op: "embed.cancel"; rid: number };

/** Worker → main: the answer to one model request. */
export type ModelReplyMessage =
  | { op: "reply"; rid: number; kind: "tokenize"; tokens: number[]; pieces?: string[] }
  | { op: "reply"; rid: number; kind: "detokenize"; text: string }
  | {
    op: "reply";
    rid: number;
    kind: "embed";
    embeddings: number[][];
    prompt_tokens: number;
  }
  | {
    op: "reply";
    rid: number;
    kind: "error";
    code: "E_PROTO_BAD_REQUEST" | "E_LIMIT_PROMPT_TOO_LARGE" | "E_INTERNAL";
    message: string;
  };

/** Counts of answered model requests, for metrics. */
export interface ModelRequestCounts {
  /** `tokenize` requests answered. */
  tokenize: number;
  /** `detokenize` requests answered. */
  detokenize: number;
  /** `embed` requests answered. */
  embed: number;
  /** Texts embedded. */
  embed_inputs: number;
  /** Tokens embedded. */
  embed_tokens: number;
  /** Requests answered with an error. */
  errors: number;
}

/** Sends model requests to the worker and answers their streams. */
export class ModelRequestClient {
  /** Counts for metrics. */
  readonly counts: ModelRequestCounts = {
    tokenize: 0,
    detokenize: 0,
    embed: 0,
    embed_inputs: 0,
    embed_tokens: 0,
    errors: 0,
  };
  readonly #post: (msg: ModelRequestMessage) => void;
  readonly #pending = new Map<number, { stream: Stream; onAbort?: () => void }>();
  #nextRid = 1;

  /** `post` sends a message to the engine worker. */
  constructor(post: (msg: ModelRequestMessage) => void) {
    this.#post = post;
  }

  /** Requests waiting for the worker. */
  get pending(): number {
    return this.#pending.size;
  }

  /** Sends one request; its stream is answered when the worker replies. */
  handle(request: TokenizeRequest | DetokenizeRequest | EmbedRequest, stream: Stream): void {
    const rid = this.#nextRid++;
    const entry: { stream: Stream; onAbort?: () => void } = { stream };
    this.#pending.set(rid, entry);
    switch (request.type) {
      case "tokenize":
        this.#post({
          op: "tokenize",
          rid,
          text: request.text,
          special: request.special,
          addSpecial: request.add_special,
          pieces: request.pieces,
        });
        return;
      case "detokenize":
        this.#post({ op: "detokenize", rid, tokens: request.tokens });
        return;
      case "embed":
        entry.onAbort = () => {
          if (!this.#pending.delete(rid)) return;
          this.#post({ op: "embed.cancel", rid });
          stream.end();
        };
        stream.signal.addEventListener("abort", entry.onAbort, { once: true });
        this.#post({ op: "embed", rid, input: request.input });
        return;
    }
  }

  /** A reply from the worker. */
  onReply(msg: ModelReplyMessage): void {
    const entry = this.#pending.get(msg.rid);
    if (!entry) return;
    this.#pending.delete(msg.rid);
    if (entry.onAbort) entry.stream.signal.removeEventListener("abort", entry.onAbort);
    const { stream } = entry;
    switch (msg.kind) {
      case "tokenize":
        this.counts.tokenize++;
        stream.send(
          "tokenize",
          msg.pieces ? { tokens: msg.tokens, pieces: msg.pieces } : {
            tokens: msg.tokens,
          },
        );
        break;
      case "detokenize":
        this.counts.detokenize++;
        stream.send("detokenize", { text: msg.text });
        break;
      case "embed":
        this.counts.embed++;
        this.counts.embed_inputs += msg.embeddings.length;
        this.counts.embed_tokens += msg.prompt_tokens;
        stream.send("embed", {
          embeddings: msg.embeddings,
          usage: { prompt_tokens: msg.prompt_tokens, total_tokens: msg.prompt_tokens },
        });
        break;
      case "error":
        this.counts.errors++;
        stream.fail(msg.code, msg.message);
        return;
    }
    stream.end();
  }

  /** The worker is gone: every waiting request fails. */
  failAll(message: string): void {
    for (const [rid, { stream }] of this.#pending) {
      this.#pending.delete(rid);
      stream.fail("E_INTERNAL", message);
    }
  }
}
