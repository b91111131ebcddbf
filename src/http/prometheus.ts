/**
 * The daemon's `metrics` map in Prometheus's text format (version 0.0.4), for
 * `GET /metrics`: latency summaries become histograms in seconds, maps of counts
 * become labelled counters, every other number a gauge named after its path, and
 * llama-server's main counters appear under their `llamacpp:` names too, so dashboards
 * made for it keep working.
 *
 * @module
 */

/** A `metrics` map, or part of one. */
export type Tree = Record<string, unknown>;

/** Maps of counts that become one labelled counter: path → [metric, label]. */
const LABELLED: Record<string, [string, string]> = {
  requests: ["umad_requests_total", "type"],
  errors: ["umad_errors_total", "code"],
  "llm.requests": ["umad_llm_requests_total", "outcome"],
  "http.responses": ["umad_http_responses_total", "status"],
  "http.routes": ["umad_http_requests_total", "route"],
};

const HELP: Record<string, string> = {
  umad_uptime_s: "Seconds since the daemon started.",
  umad_connections_now: "Connections open now (framed and HTTP).",
  umad_requests_total: "Requests received, by type.",
  umad_errors_total: "Error replies sent, by code.",
  umad_llm_ttft_seconds: "Time from a generate request to its first token.",
  umad_llm_inter_token_seconds: "Time between consecutive tokens of a stream.",
  umad_llm_queue_depth: "Generate requests waiting for a stream.",
  umad_llm_active_streams: "Generations decoding now.",
  umad_llm_requests_total: "Finished generations, by how they ended.",
  umad_llm_tokens_out: "Tokens generated since start.",
  umad_llm_tokens_in: "Prompt tokens since start.",
  umad_pty_running: "Terminal sessions running now.",
  umad_pty_sessions: "Terminal sessions listed now (running and exited).",
  umad_pty_attachments: "Clients attached to terminal sessions now.",
};

function isTree(v: unknown): v is Tree {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function isHistogram(v: unknown): v is { count: number; sum: number; buckets: Tree } {
  return isTree(v) && typeof v.count === "number" && typeof v.sum === "number" &&
    isTree(v.buckets);
}

function metricName(parts: string[]): string {
  return ("umad_" + parts.join("_")).replace(/[^a-zA-Z0-9_:]/g, "_");
}

function labelValue(s: string): string {
  return s.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function num(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

/**
 * Renders a `metrics` map as Prometheus text.
 *
 * @example
 * ```ts
 * import { renderPrometheus } from "./prometheus.ts";
 * const text = renderPrometheus({ llm: { queue_depth: 2 }, requests: { ping: 3 } });
 * console.log(text.includes('umad_requests_total{type="ping"} 3')); // true
 * ```
 */
export function renderPrometheus(metrics: Tree): string {
  const out: string[] = [];
  const head = (name: string, type: string) => {
    if (HELP[name]) out.push(`# HELP ${name} ${HELP[name]}`);
    out.push(`# TYPE ${name} ${type}`);
  };
  const walk = (node: Tree, path: string[]) => {
    for (const [key, value] of Object.entries(node)) {
      const parts = [...path, key];
      const dotted = parts.join(".");
      if (LABELLED[dotted] && isTree(value)) {
        const [name, label] = LABELLED[dotted];
        head(name, "counter");
        for (const [k, v] of Object.entries(value)) {
          if (typeof v === "number") out.push(`${name}{${label}="${labelValue(k)}"} ${num(v)}`);
        }
      } else if (isHistogram(value)) {
        const ms = key.endsWith("_ms");
        const name = metricName(ms ? [...path, key.slice(0, -3) + "_seconds"] : parts);
        const scale = ms ? 1e-3 : 1;
        head(name, "histogram");
        // Integer-like keys come first in a JS object: order the bounds by value.
        const buckets = Object.entries(value.buckets).sort(([a], [b]) =>
          (a === "+Inf" ? Infinity : Number(a)) - (b === "+Inf" ? Infinity : Number(b))
        );
        for (const [le, count] of buckets) {
          const bound = le === "+Inf" ? "+Inf" : String(Number(le) * scale);
          out.push(`${name}_bucket{le="${bound}"} ${num(Number(count))}`);
        }
        out.push(`${name}_sum ${num(value.sum * scale)}`);
        out.push(`${name}_count ${num(value.count)}`);
      } else if (isTree(value)) {
        walk(value, parts);
      } else if (typeof value === "number" || typeof value === "boolean") {
        const name = metricName(parts);
        head(name, name.endsWith("_total") ? "counter" : "gauge");
        out.push(`${name} ${typeof value === "boolean" ? (value ? 1 : 0) : num(value)}`);
      }
    }
  };
  walk(metrics, []);
  const llm = isTree(metrics.llm) ? metrics.llm : null;
  if (llm) {
    const alias = (name: string, type: string, help: string, v: unknown) => {
      if (typeof v !== "number") return;
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name} ${num(v)}`);
    };
    alias("llamacpp:prompt_tokens_total", "counter", "Prompt tokens processed.", llm.tokens_in);
    alias("llamacpp:tokens_predicted_total", "counter", "Generated tokens.", llm.tokens_out);
    alias(
      "llamacpp:requests_processing",
      "gauge",
      "Requests decoding now.",
      llm.active_streams,
    );
    alias("llamacpp:requests_deferred", "gauge", "Requests waiting.", llm.queue_depth);
  }
  return out.join("\n") + "\n";
}
