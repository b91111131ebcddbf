/**
 * Ollama's API (`/api`): version, tags, show, ps, generate, chat (NDJSON streams with
 * `done_reason` and the timing fields in nanoseconds) and embed, as the `ollama`
 * clients send and read them. Options map onto `generate`'s fields; `num_ctx` and the
 * other load-time options are accepted and change nothing (the model stays loaded).
 *
 * @module
 */
import type { Message } from "../protocol/codec.ts";
import type { EndReason, Event, ToolCall, Usage } from "../protocol/events.ts";
import { VERSION } from "../version.ts";
import {
  type HttpContext,
  type Route,
  sendJson,
  sendText,
  startNdjson,
  writeNdjson,
} from "./gateway.ts";
import { failureOfEvent, HttpError } from "./http_errors.ts";
import type { HttpStream } from "./http_stream.ts";
import { type ModelCard, modelCard } from "./model_card.ts";

type Body = Record<string, unknown>;

function isMap(v: unknown): v is Body {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function bad(message: string): HttpError {
  return new HttpError(400, message);
}

/**
 * Ollama's `options` as `generate` fields: `num_predict` (-1 and -2: the daemon's
 * default), `temperature`, `top_k`, `top_p`, `min_p`, `seed`, `stop`, `repeat_penalty`.
 * Anything else (`num_ctx`, `num_thread`, `mirostat`, ...) is accepted and ignored.
 *
 * @example
 * ```ts
 * import { optionsToGenerate } from "./ollama.ts";
 * console.log(optionsToGenerate({ num_predict: 5, num_ctx: 8192 })); // { max_tokens: 5 }
 * ```
 */
export function optionsToGenerate(options: unknown): Message {
  if (options === undefined || options === null) return {};
  if (!isMap(options)) throw bad("options must be an object");
  const out: Message = {};
  const n = options.num_predict;
  if (n !== undefined && n !== null && !(n === -1 || n === -2)) out.max_tokens = n;
  for (const key of ["temperature", "top_k", "top_p", "min_p", "seed", "repeat_penalty"]) {
    const v = options[key];
    if (v !== undefined && v !== null) out[key] = v;
  }
  const stop = options.stop;
  if (stop !== undefined && stop !== null) out.stop = typeof stop === "string" ? [stop] : stop;
  return out;
}

/** Ollama's `format`: "json" or a JSON schema → `generate.json_schema`. */
function formatOf(format: unknown): Record<string, unknown> | undefined {
  if (format === undefined || format === null || format === "") return undefined;
  if (format === "json") return { type: "object" };
  if (isMap(format)) return format;
  throw bad('format must be "json" or a JSON schema object');
}

function refuseImages(images: unknown, where: string): void {
  if (Array.isArray(images) && images.length > 0) {
    throw bad(`${where}: images are not supported by this model server`);
  }
}

/** An Ollama chat message as a `generate` message (tool call arguments as JSON text). */
function messageOf(m: unknown, i: number): Message {
  if (!isMap(m) || typeof m.role !== "string") {
    throw bad(`messages[${i}] must be an object with a role and content`);
  }
  refuseImages(m.images, `messages[${i}]`);
  const out: Message = { role: m.role, content: typeof m.content === "string" ? m.content : "" };
  if (Array.isArray(m.tool_calls)) {
    out.tool_calls = m.tool_calls.map((c: unknown) => {
      const fn = isMap(c) && isMap(c.function) ? c.function : {};
      const args = fn.arguments;
      return {
        type: "function",
        function: {
          name: fn.name,
          arguments: typeof args === "string" ? args : JSON.stringify(args ?? {}),
        },
      };
    });
  }
  if (typeof m.tool_name === "string") out.name = m.tool_name;
  return out;
}

/**
 * An `/api/chat` body as a `generate` request.
 *
 * @example
 * ```ts
 * import { chatToGenerate } from "./ollama.ts";
 * const g = chatToGenerate({ model: "m", messages: [{ role: "user", content: "Hi" }] });
 * console.log(g.stream); // true
 * ```
 */
export function chatToGenerate(body: Body): Message {
  if (!Array.isArray(body.messages)) throw bad("messages must be an array");
  const out: Message = {
    type: "generate",
    messages: body.messages.map(messageOf),
    stream: body.stream !== false,
    ...optionsToGenerate(body.options),
  };
  const schema = formatOf(body.format);
  if (schema) out.json_schema = schema;
  if (body.tools !== undefined && body.tools !== null) out.tools = body.tools;
  return out;
}

/**
 * An `/api/generate` body as a `generate` request: the prompt goes through the chat
 * template as a user turn (after `system`, when given) unless `raw` is true.
 *
 * @example
 * ```ts
 * import { generateToGenerate } from "./ollama.ts";
 * const g = generateToGenerate({ prompt: "Hi", raw: true, options: { num_predict: 3 } });
 * console.log(g.prompt, g.max_tokens); // Hi 3
 * ```
 */
export function generateToGenerate(body: Body): Message {
  if (typeof body.prompt !== "string") throw bad("prompt must be a string");
  refuseImages(body.images, "generate");
  if (typeof body.suffix === "string" && body.suffix !== "") {
    throw bad("suffix (fill-in-the-middle) is not supported");
  }
  if (typeof body.template === "string" && body.template !== "") {
    throw bad("template overrides are not supported: the model's own chat template is used");
  }
  if (Array.isArray(body.context) && body.context.length > 0) {
    throw bad("context (token ids of an earlier answer) is not supported; use /api/chat");
  }
  const out: Message = { type: "generate", stream: body.stream !== false };
  if (body.raw === true) {
    out.prompt = body.prompt;
  } else {
    const messages: Message[] = [];
    if (typeof body.system === "string" && body.system !== "") {
      messages.push({ role: "system", content: body.system });
    }
    messages.push({ role: "user", content: body.prompt });
    out.messages = messages;
  }
  Object.assign(out, optionsToGenerate(body.options));
  const schema = formatOf(body.format);
  if (schema) out.json_schema = schema;
  return out;
}

/** Ollama's `done_reason`. */
function doneReason(reason: EndReason): string {
  return reason === "length" ? "length" : "stop";
}

/** The timing fields of a finished answer, in nanoseconds as Ollama gives them. */
export function timings(u: Usage): Message {
  const ns = (ms: number) => Math.max(0, Math.round(ms * 1e6));
  return {
    total_duration: ns(u.total_ms),
    load_duration: 0,
    prompt_eval_count: u.prompt_tokens,
    prompt_eval_duration: ns(u.ttft_ms),
    eval_count: u.completion_tokens,
    eval_duration: ns(u.total_ms - u.ttft_ms),
  };
}

function toolCallsOf(calls: ToolCall[]): Message[] {
  return calls.map((c, index) => {
    let args: unknown = c.arguments;
    try {
      args = JSON.parse(c.arguments);
    } catch { /* not JSON: pass the text on */ }
    return { id: c.id, function: { index, name: c.name, arguments: args } };
  });
}

function failureError(ev: Event<"error">): HttpError {
  const f = failureOfEvent(ev);
  return new HttpError(f.status, f.message, f.code, f.param);
}

function unfinished(reason: EndReason): HttpError {
  return reason === "shutdown"
    ? new HttpError(503, "The daemon is shutting down")
    : new HttpError(499, "The request was cancelled");
}

/** The name to answer with: the one the request gave, else the loaded model's tag. */
async function modelName(ctx: HttpContext): Promise<string> {
  if (typeof ctx.body.model === "string" && ctx.body.model !== "") return ctx.body.model;
  const card = await modelCard((await ctx.hello()).model);
  return card ? tagOf(card) : "none";
}

function tagOf(card: ModelCard): string {
  return card.id.includes(":") ? card.id : `${card.id}:latest`;
}

/** Streams or answers one generation; `piece` wraps text as `response` or `message`. */
async function answer(
  ctx: HttpContext,
  stream: HttpStream,
  streaming: boolean,
  model: string,
  piece: (text: string, toolCalls?: ToolCall[]) => Message,
): Promise<void> {
  const createdAt = () => new Date().toISOString();
  if (streaming) {
    let started = false;
    for await (const ev of stream) {
      if (ev.event === "token") {
        if (ev.text === "") continue;
        if (!started) startNdjson(ctx.res);
        started = true;
        writeNdjson(ctx.res, { model, created_at: createdAt(), ...piece(ev.text), done: false });
      } else if (ev.event === "eos") {
        if (ev.reason === "cancelled" || ev.reason === "shutdown") throw unfinished(ev.reason);
        if (!started) startNdjson(ctx.res);
        writeNdjson(ctx.res, {
          model,
          created_at: createdAt(),
          ...piece("", ev.tool_calls),
          done: true,
          done_reason: doneReason(ev.reason),
          ...timings(ev.usage),
        });
        ctx.res.end();
        return;
      } else if (ev.event === "error") {
        throw failureError(ev);
      }
    }
    throw new HttpError(500, "The generation ended without a last event");
  }
  for await (const ev of stream) {
    if (ev.event === "error") throw failureError(ev);
    if (ev.event !== "result") continue;
    if (ev.reason === "cancelled" || ev.reason === "shutdown") throw unfinished(ev.reason);
    sendJson(ctx.res, 200, {
      model,
      created_at: createdAt(),
      ...piece(ev.text, ev.tool_calls),
      done: true,
      done_reason: doneReason(ev.reason),
      ...timings(ev.usage),
    });
    return;
  }
  throw new HttpError(500, "The generation ended without a result");
}

/** The answer to a request that only loads or unloads (empty prompt or messages). */
function loadAnswer(ctx: HttpContext, model: string, extra: Message): void {
  const unload = ctx.body.keep_alive === 0 || ctx.body.keep_alive === "0";
  sendJson(ctx.res, 200, {
    model,
    created_at: new Date().toISOString(),
    ...extra,
    done: true,
    done_reason: unload ? "unload" : "load",
  });
}

async function generate(ctx: HttpContext): Promise<void> {
  const model = await modelName(ctx);
  if (ctx.body.prompt === undefined || ctx.body.prompt === "") {
    loadAnswer(ctx, model, { response: "" });
    return;
  }
  const input = generateToGenerate(ctx.body);
  await answer(ctx, ctx.call(input), input.stream === true, model, (text) => ({ response: text }));
}

async function chat(ctx: HttpContext): Promise<void> {
  const model = await modelName(ctx);
  if (Array.isArray(ctx.body.messages) && ctx.body.messages.length === 0) {
    loadAnswer(ctx, model, { message: { role: "assistant", content: "" } });
    return;
  }
  const input = chatToGenerate(ctx.body);
  await answer(ctx, ctx.call(input), input.stream === true, model, (text, calls) => {
    const message: Message = { role: "assistant", content: text };
    if (calls?.length) message.tool_calls = toolCallsOf(calls);
    return { message };
  });
}

async function embedTexts(ctx: HttpContext, texts: string[]): Promise<Event<"embed">> {
  for await (const ev of ctx.call({ type: "embed", input: texts })) {
    if (ev.event === "error") throw failureError(ev);
    if (ev.event === "embed") return ev;
  }
  throw new HttpError(500, "The embedding request ended without a result");
}

async function embed(ctx: HttpContext): Promise<void> {
  const input = ctx.body.input;
  const texts = typeof input === "string" ? [input] : input;
  if (!Array.isArray(texts) || !texts.every((t) => typeof t === "string")) {
    throw bad("input must be a string or an array of strings");
  }
  const model = await modelName(ctx);
  const t0 = performance.now();
  const ev = await embedTexts(ctx, texts);
  sendJson(ctx.res, 200, {
    model,
    embeddings: ev.embeddings,
    total_duration: Math.round((performance.now() - t0) * 1e6),
    load_duration: 0,
    prompt_eval_count: ev.usage.prompt_tokens,
  });
}

/** The legacy `/api/embeddings`: one `prompt`, one `embedding`. */
async function embeddings(ctx: HttpContext): Promise<void> {
  if (typeof ctx.body.prompt !== "string") throw bad("prompt must be a string");
  const ev = await embedTexts(ctx, [ctx.body.prompt]);
  sendJson(ctx.res, 200, { embedding: ev.embeddings[0] });
}

function details(card: ModelCard): Message {
  return {
    parent_model: "",
    format: "gguf",
    family: card.family,
    families: [card.family],
    parameter_size: card.parameterSize,
    quantization_level: card.quantization,
  };
}

function listing(card: ModelCard): Message {
  return {
    name: tagOf(card),
    model: tagOf(card),
    modified_at: card.modified.toISOString(),
    size: card.size,
    digest: card.digest,
    details: details(card),
  };
}

async function tags(ctx: HttpContext): Promise<void> {
  const card = await modelCard((await ctx.hello()).model);
  sendJson(ctx.res, 200, { models: card ? [listing(card)] : [] });
}

async function ps(ctx: HttpContext): Promise<void> {
  const card = await modelCard((await ctx.hello()).model);
  sendJson(ctx.res, 200, {
    models: card
      ? [{
        ...listing(card),
        // The model stays loaded for the daemon's lifetime.
        expires_at: "9999-12-31T23:59:59Z",
        size_vram: 0,
        context_length: card.info.n_ctx,
      }]
      : [],
  });
}

async function show(ctx: HttpContext): Promise<void> {
  const card = await modelCard((await ctx.hello()).model);
  const want = ctx.body.model ?? ctx.body.name;
  if (!card) throw new HttpError(404, `model '${want}' not found`);
  const caps = ["completion"];
  sendJson(ctx.res, 200, {
    license: "",
    modelfile: `# served by umad ${VERSION}\nFROM ${card.info.path}\n`,
    parameters: "",
    template: "",
    details: details(card),
    model_info: {
      "general.architecture": card.family,
      "general.name": card.info.name,
      "general.parameter_count": card.info.n_params,
      [`${card.family}.context_length`]: card.info.n_ctx_train,
      "umad.context_length_per_stream": card.info.n_ctx,
    },
    capabilities: caps,
    modified_at: card.modified.toISOString(),
  });
}

/** The `/api` routes. */
export const ollamaRoutes: Route[] = [
  {
    method: "GET",
    path: "/api/version",
    family: "ollama",
    handler: (ctx) => sendJson(ctx.res, 200, { version: VERSION }),
  },
  { method: "GET", path: "/api/tags", family: "ollama", handler: tags },
  { method: "GET", path: "/api/ps", family: "ollama", handler: ps },
  { method: "POST", path: "/api/show", family: "ollama", handler: show },
  { method: "POST", path: "/api/generate", family: "ollama", handler: generate },
  { method: "POST", path: "/api/chat", family: "ollama", handler: chat },
  { method: "POST", path: "/api/embed", family: "ollama", handler: embed },
  { method: "POST", path: "/api/embeddings", family: "ollama", handler: embeddings },
  {
    method: "GET",
    path: "/",
    family: "ollama",
    handler: (ctx) => sendText(ctx.res, 200, "umad is running (Ollama and OpenAI APIs)"),
  },
];
