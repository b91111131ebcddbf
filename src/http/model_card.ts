/**
 * The served model as the HTTP APIs list it: an id clients may name, its file's size
 * and date, and the family, size and quantization their model lists show.
 *
 * @module
 */
import type { ModelInfo } from "../protocol/events.ts";

/** The model, described for `/v1/models`, `/api/tags`, `/api/show` and `/props`. */
export interface ModelCard {
  /** The id clients name: the file's name without `.gguf`. */
  id: string;
  info: ModelInfo;
  /** The file's size in bytes (0 when it cannot be read). */
  size: number;
  /** The file's modification time. */
  modified: Date;
  /** Architecture, from the model's description ("llama"). */
  family: string;
  /** Parameter count as model lists print it ("85M", "7.2B"). */
  parameterSize: string;
  /** The weights' type, from the description ("F16", "Q4_K_M"). */
  quantization: string;
  /** A stable identity (SHA-256 of path, size and mtime; not of the file's bytes). */
  digest: string;
}

const cache = new Map<string, ModelCard>();

/**
 * The card for the daemon's model, or null with none loaded.
 *
 * @example
 * ```ts ignore
 * const card = await modelCard((await ctx.hello()).model);
 * console.log(card?.id); // "umad-demo-random-v1"
 * ```
 */
export async function modelCard(info: ModelInfo | null | undefined): Promise<ModelCard | null> {
  if (!info) return null;
  const hit = cache.get(info.path);
  if (hit) return { ...hit, info };
  let size = 0;
  let modified = new Date(0);
  try {
    const st = await Deno.stat(info.path);
    size = st.size;
    modified = st.mtime ?? modified;
  } catch { /* the file moved after loading: list it anyway */ }
  const words = info.description.split(/\s+/).filter(Boolean);
  const digestInput = new TextEncoder().encode(`${info.path}\0${size}\0${modified.getTime()}`);
  const digest = [...new Uint8Array(await crypto.subtle.digest("SHA-256", digestInput))]
    .map((b) => b.toString(16).padStart(2, "0")).join("");
  const card: ModelCard = {
    id: (info.path.split("/").pop() ?? info.name).replace(/\.gguf$/i, ""),
    info,
    size,
    modified,
    family: words[0] ?? "unknown",
    parameterSize: parameterSize(info.n_params),
    quantization: words.length > 1 ? words[words.length - 1] : "unknown",
    digest,
  };
  cache.set(info.path, card);
  return card;
}

/**
 * A parameter count the way model lists print it.
 *
 * @example
 * ```ts
 * import { parameterSize } from "./model_card.ts";
 * console.log(parameterSize(85_000_000), parameterSize(7_241_732_096)); // 85M 7.2B
 * ```
 */
export function parameterSize(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(1).replace(/\.0$/, "")}B`;
  if (n >= 1e6) return `${Math.round(n / 1e6)}M`;
  return `${Math.round(n / 1e3)}K`;
}
