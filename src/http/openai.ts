/**
 * OpenAI's API (`/v1`): chat completions, completions, embeddings and models, as the
 * official clients send and read them. Each request becomes a `generate` or `embed`
 * request of the framed protocol, validated there and served by the same services;
 * its events become OpenAI's objects and chunks.
 *
 * @module
 */
import type { Message } from "../protocol/codec.ts";
import type { EndReason, Event, ToolCall, Usage } from "../protocol/events.ts";
import { VERSION } from "../version.ts";
import { type HttpContext, type Route, sendJson, startSse, writeSse } from "./gateway.ts";
import { failureOfEvent, HttpError } from "./http_errors.ts";
import type { HttpStream } from "./http_stream.ts";
import { modelCard } from "./model_card.ts";

type Body = Record<string, unknown>;

function invalid(param: string, message: string): HttpError {
  return new HttpError(400, message, "invalid_value", param);
}

function isMap(v: unknown): v is Body {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** Copies the keys that are set (not null or undefined). */
function defined(out: Message, fields: Record<string, unknown>): Message {
  for (const [k, v] of Object.entries(fields)) if (v !== undefined && v !== null) out[k] = v;
  return out;
}

/** Refuses what this engine cannot do, by name, instead of ignoring it. */
function refuseUnsupported(body: Body): void {
  const n = body.n;
  if (n !== undefined && n !== null && n !== 1) {
    throw invalid(
      "n",
      `Only n = 1 is supported (one choice per request), got ${JSON.stringify(n)}`,
    );
  }
  if (body.logprobs !== undefined && body.logprobs !== null && body.logprobs !== false) {
    throw invalid("logprobs", "logprobs are not available from this engine");
  }
  if (body.top_logprobs !== undefined && body.top_logprobs !== null && body.top_logprobs !== 0) {
    throw invalid("top_logprobs", "logprobs are not available from this engine");
  }
  for (const p of ["frequency_penalty", "presence_penalty"]) {
    const v = body[p];
    if (v !== undefined && v !== null && v !== 0) {
      throw invalid(p, `${p} is not supported; use repeat_penalty`);
    }
  }
  if (isMap(body.logit_bias) && Object.keys(body.logit_bias).length > 0) {
    throw invalid("logit_bias", "logit_bias is not supported");
  }
  if (body.best_of !== undefined && body.best_of !== null && body.best_of !== 1) {
    throw invalid("best_of", "Only best_of = 1 is supported");
  }
}

function stopOf(v: unknown): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === "string") return [v];
  if (Array.isArray(v) && v.every((s) => typeof s === "string")) return v as string[];
  throw invalid("stop", "stop must be a string or an array of strings");
}

function samplingOf(body: Body): Message {
  const maxTokens = body.max_completion_tokens ?? body.max_tokens;
  return defined({}, {
    max_tokens: maxTokens,
    temperature: body.temperature,
    top_p: body.top_p,
    seed: body.seed,
    stop: stopOf(body.stop),
    // llama-server's extensions, which its clients send through the OpenAI API.
    top_k: body.top_k,
    min_p: body.min_p,
    repeat_penalty: body.repeat_penalty,
    cache_prompt: body.cache_prompt,
  });
}

function schemaOf(format: unknown): Record<string, unknown> | undefined {
  if (format === undefined || format === null) return undefined;
  if (!isMap(format)) throw invalid("response_format", "response_format must be an object");
  switch (format.type) {
    case "text":
      return undefined;
    case "json_object":
      return { type: "object" };
    case "json_schema": {
      const js = format.json_schema;
      if (!isMap(js) || !isMap(js.schema)) {
        throw invalid(
          "response_format",
          'response_format {type: "json_schema"} needs json_schema: {name, schema}',
        );
      }
      return js.schema;
    }
    default:
      throw invalid(
        "response_format",
        `response_format.type must be "text", "json_object" or "json_schema", got ${
          JSON.stringify(format.type)
        }`,
      );
  }
}

/** A message's `content`: a string, or the text of an array of parts. */
function contentOf(v: unknown, i: number): string | null {
  if (v === undefined || v === null) return null;
  if (typeof v === "string") return v;
  if (Array.isArray(v)) {
    return v.map((part, j) => {
      if (isMap(part) && (part.type === "text" || part.type === "input_text")) {
        return String(part.text ?? "");
      }
      throw invalid(
        `messages[${i}].content[${j}]`,
        `Only text content parts are supported, got ${
          JSON.stringify(isMap(part) ? part.type : part)
        }`,
      );
    }).join("");
  }
  throw invalid(`messages[${i}].content`, "content must be a string or an array of parts");
}

/**
 * A chat completion request as a `generate` request (messages through the model's
 * chat template). Throws {@linkcode HttpError} 400 for what cannot be served.
 *
 * @example
 * ```ts
 * import { chatToGenerate } from "./openai.ts";
 * const g = chatToGenerate({ messages: [{ role: "user", content: "Hi" }], max_tokens: 8 });
 * console.log(g.type, g.max_tokens, g.stream); // generate 8 false
 * ```
 */
export function chatToGenerate(body: Body): Message {
  refuseUnsupported(body);
  if (!Array.isArray(body.messages) || body.messages.length === 0) {
    throw invalid("messages", "messages must be a non-empty array");
  }
  const messages = body.messages.map((m: unknown, i: number) => {
    if (!isMap(m) || typeof m.role !== "string") {
      throw invalid(`messages[${i}]`, "each message must be an object with a role");
    }
    const role = m.role === "developer" ? "system" : m.role === "function" ? "tool" : m.role;
    return defined({ role, content: contentOf(m.content, i) ?? "" }, {
      name: m.name,
      tool_call_id: m.tool_call_id,
      tool_calls: m.tool_calls,
    });
  });
  const out = defined({ type: "generate", messages, stream: body.stream === true }, {
    ...samplingOf(body),
    json_schema: schemaOf(body.response_format),
    tools: body.tools,
    tool_choice: body.tools ? body.tool_choice : undefined,
  });
  return out;
}

/**
 * A legacy completion request as a raw-prompt `generate` request.
 *
 * @example
 * ```ts
 * import { completionToGenerate } from "./openai.ts";
 * console.log(completionToGenerate({ prompt: "Once", max_tokens: 4 }).prompt); // Once
 * ```
 */
export function completionToGenerate(body: Body): Message {
  refuseUnsupported(body);
  let prompt = body.prompt;
  if (Array.isArray(prompt)) {
    if (prompt.length !== 1 || typeof prompt[0] !== "string") {
      throw invalid(
        "prompt",
        "prompt must be a string or an array of one string (token arrays and several " +
          "prompts per request are not supported)",
      );
    }
    prompt = prompt[0];
  }
  if (typeof prompt !== "string") throw invalid("prompt", "prompt must be a string");
  if (typeof body.suffix === "string" && body.suffix !== "") {
    throw invalid("suffix", "suffix (fill-in-the-middle) is not supported");
  }
  return defined({ type: "generate", prompt, stream: body.stream === true }, {
    ...samplingOf(body),
    json_schema: schemaOf(body.response_format),
  });
}

/** OpenAI's `finish_reason` for how a generation ended; null: it did not finish. */
export function finishReason(reason: EndReason, toolCalls?: ToolCall[]): string | null {
  if (toolCalls?.length) return "tool_calls";
  switch (reason) {
    case "stop":
    case "stop_string":
      return "stop";
    case "length":
      return "length";
    default:
      return null;
  }
}

function usageOf(u: Usage): Message {
  return {
    prompt_tokens: u.prompt_tokens,
    completion_tokens: u.completion_tokens,
    total_tokens: u.prompt_tokens + u.completion_tokens,
    prompt_tokens_details: { cached_tokens: u.cached_tokens ?? 0 },
  };
}

function toolCallsOf(calls: ToolCall[]): Message[] {
  return calls.map((c) => ({
    id: c.id,
    type: "function",
    function: { name: c.name, arguments: c.arguments },
  }));
}

const ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

function newId(prefix: string): string {
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  let s = prefix;
  for (const b of bytes) s += ALNUM[b % ALNUM.length];
  return s;
}

/** The end of a generation that did not finish: shut down, or the client left. */
function unfinished(reason: EndReason): HttpError {
  return reason === "shutdown"
    ? new HttpError(503, "The daemon is shutting down", "shutdown")
    : new HttpError(499, "The request was cancelled", "cancelled");
}

async function modelId(ctx: HttpContext): Promise<string> {
  if (typeof ctx.body.model === "string" && ctx.body.model !== "") return ctx.body.model;
  return (await modelCard((await ctx.hello()).model))?.id ?? "none";
}

interface Ending {
  reason: EndReason;
  usage: Usage;
  toolCalls?: ToolCall[];
}

/** The fields every chunk or response of one completion starts with. */
async function responseBase(ctx: HttpContext, idPrefix: string, object: string): Promise<Message> {
  return {
    id: newId(idPrefix),
    object,
    created: Math.floor(Date.now() / 1000),
    model: await modelId(ctx),
    system_fingerprint: `umad-${VERSION}`,
  };
}

/**
 * Runs a streaming generation as SSE; `chunk` shapes each piece of text, `base` heads the
 * usage chunk sent last when the request asked for it (`stream_options.include_usage`).
 */
async function streamGeneration(
  ctx: HttpContext,
  stream: HttpStream,
  base: Message,
  chunk: (text: string | null, ending: Ending | null, first: boolean) => Message[],
): Promise<void> {
  const options = ctx.body.stream_options;
  const includeUsage = isMap(options) && options.include_usage === true;
  let started = false;
  const start = () => {
    if (started) return;
    started = true;
    startSse(ctx.res);
  };
  const send = (objects: Message[]) => {
    for (const o of objects) writeSse(ctx.res, includeUsage ? { ...o, usage: null } : o);
  };
  let first = true;
  for await (const ev of stream) {
    if (ev.event === "token") {
      if (ev.text === "" && !first) continue;
      start();
      send(chunk(ev.text, null, first));
      first = false;
    } else if (ev.event === "eos") {
      const finish = finishReason(ev.reason, ev.tool_calls);
      if (finish === null) throw unfinished(ev.reason);
      start();
      send(chunk(null, { reason: ev.reason, usage: ev.usage, toolCalls: ev.tool_calls }, first));
      if (includeUsage) writeSse(ctx.res, { ...base, choices: [], usage: usageOf(ev.usage) });
      writeSse(ctx.res, "[DONE]");
      ctx.res.end();
      return;
    } else if (ev.event === "error") {
      throw failureError(ev);
    }
  }
  throw new HttpError(500, "The generation ended without a last event");
}

function failureError(ev: Event<"error">): HttpError {
  const f = failureOfEvent(ev);
  return new HttpError(f.status, f.message, f.code, f.param);
}

/** Runs a generation to its `result`. */
async function resultOf(stream: HttpStream): Promise<Event<"result">> {
  for await (const ev of stream) {
    if (ev.event === "result") {
      if (finishReason(ev.reason, ev.tool_calls) === null) throw unfinished(ev.reason);
      return ev;
    }
    if (ev.event === "error") throw failureError(ev);
  }
  throw new HttpError(500, "The generation ended without a result");
}

async function chatCompletions(ctx: HttpContext): Promise<void> {
  const input = chatToGenerate(ctx.body);
  const base = await responseBase(ctx, "chatcmpl-", "chat.completion.chunk");
  const stream = ctx.call(input);
  if (input.stream) {
    await streamGeneration(
      ctx,
      stream,
      base,
      (text, ending, first) => {
        const out: Message[] = [];
        if (text !== null || first) {
          const delta: Message = first ? { role: "assistant", content: text ?? "" } : {
            content: text,
          };
          out.push({
            ...base,
            choices: [{ index: 0, delta, logprobs: null, finish_reason: null }],
          });
        }
        if (ending) {
          if (ending.toolCalls?.length) {
            out.push({
              ...base,
              choices: [{
                index: 0,
                delta: {
                  tool_calls: toolCallsOf(ending.toolCalls).map((c, index) => ({ index, ...c })),
                },
                logprobs: null,
                finish_reason: null,
              }],
            });
          }
          out.push({
            ...base,
            choices: [{
              index: 0,
              delta: {},
              logprobs: null,
              finish_reason: finishReason(ending.reason, ending.toolCalls),
            }],
          });
        }
        return out;
      },
    );
    return;
  }
  const result = await resultOf(stream);
  const calls = result.tool_calls?.length ? toolCallsOf(result.tool_calls) : undefined;
  const message: Message = {
    role: "assistant",
    content: calls && result.text === "" ? null : result.text,
    refusal: null,
  };
  if (calls) message.tool_calls = calls;
  sendJson(ctx.res, 200, {
    ...base,
    object: "chat.completion",
    choices: [{
      index: 0,
      message,
      logprobs: null,
      finish_reason: finishReason(result.reason, result.tool_calls),
    }],
    usage: usageOf(result.usage),
  });
}

async function completions(ctx: HttpContext): Promise<void> {
  const input = completionToGenerate(ctx.body);
  const echo = ctx.body.echo === true ? String(input.prompt) : "";
  const base = await responseBase(ctx, "cmpl-", "text_completion");
  const stream = ctx.call(input);
  if (input.stream) {
    await streamGeneration(
      ctx,
      stream,
      base,
      (text, ending, first) => {
        const out: Message[] = [];
        const piece = (first ? echo : "") + (text ?? "");
        if (piece !== "" || (text !== null && first)) {
          out.push({
            ...base,
            choices: [{ text: piece, index: 0, logprobs: null, finish_reason: null }],
          });
        }
        if (ending) {
          out.push({
            ...base,
            choices: [{
              text: "",
              index: 0,
              logprobs: null,
              finish_reason: finishReason(ending.reason),
            }],
          });
        }
        return out;
      },
    );
    return;
  }
  const result = await resultOf(stream);
  sendJson(ctx.res, 200, {
    ...base,
    choices: [{
      text: echo + result.text,
      index: 0,
      logprobs: null,
      finish_reason: finishReason(result.reason),
    }],
    usage: usageOf(result.usage),
  });
}

/**
 * Float32 values as OpenAI's `encoding_format: "base64"` carries them: little-endian
 * bytes, base64.
 *
 * @example
 * ```ts
 * import { float32Base64 } from "./openai.ts";
 * console.log(float32Base64([1])); // "AACAPw=="
 * ```
 */
export function float32Base64(values: number[]): string {
  const bytes = new Uint8Array(values.length * 4);
  const view = new DataView(bytes.buffer);
  values.forEach((v, i) => view.setFloat32(i * 4, v, true));
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

async function embeddings(ctx: HttpContext): Promise<void> {
  const body = ctx.body;
  const input = body.input;
  const texts = typeof input === "string" ? [input] : input;
  if (!Array.isArray(texts) || texts.length === 0 || !texts.every((t) => typeof t === "string")) {
    throw invalid(
      "input",
      "input must be a string or a non-empty array of strings (token arrays are not supported)",
    );
  }
  const format = body.encoding_format ?? "float";
  if (format !== "float" && format !== "base64") {
    throw invalid("encoding_format", 'encoding_format must be "float" or "base64"');
  }
  if (body.dimensions !== undefined && body.dimensions !== null) {
    throw invalid("dimensions", "dimensions is not supported: the model's own size is returned");
  }
  const model = await modelId(ctx);
  for await (const ev of ctx.call({ type: "embed", input: texts })) {
    if (ev.event === "error") throw failureError(ev);
    if (ev.event !== "embed") continue;
    sendJson(ctx.res, 200, {
      object: "list",
      data: ev.embeddings.map((e, index) => ({
        object: "embedding",
        index,
        embedding: format === "base64" ? float32Base64(e) : e,
      })),
      model,
      usage: { prompt_tokens: ev.usage.prompt_tokens, total_tokens: ev.usage.total_tokens },
    });
    return;
  }
  throw new HttpError(500, "The embedding request ended without a result");
}

async function modelObjects(ctx: HttpContext): Promise<Message[]> {
  const card = await modelCard((await ctx.hello()).model);
  if (!card) return [];
  return [{
    id: card.id,
    object: "model",
    created: Math.floor(card.modified.getTime() / 1000),
    owned_by: "umad",
  }];
}

/** The `/v1` routes. */
export const openaiRoutes: Route[] = [
  { method: "POST", path: "/v1/chat/completions", family: "openai", handler: chatCompletions },
  { method: "POST", path: "/v1/completions", family: "openai", handler: completions },
  { method: "POST", path: "/v1/embeddings", family: "openai", handler: embeddings },
  {
    method: "GET",
    path: "/v1/models",
    family: "openai",
    handler: async (ctx) =>
      sendJson(ctx.res, 200, { object: "list", data: await modelObjects(ctx) }),
  },
  {
    method: "GET",
    path: "/v1/models/:model",
    family: "openai",
    handler: async (ctx) => {
      const name = ctx.params.model;
      const hello = await ctx.hello();
      const found = (await modelObjects(ctx)).find((m) =>
        m.id === name || hello.model?.name === name
      );
      if (!found) {
        throw new HttpError(404, `The model '${name}' does not exist`, "model_not_found", "model");
      }
      sendJson(ctx.res, 200, found);
    },
  },
];
