/**
 * Downloads an npm package tarball and checks it against the integrity hash published
 * for it, for the two things umad fetches from the registry itself: the llama.cpp source
 * (`llama_source.ts`) and prebuilt library packages (`prebuilt.ts`).
 *
 * @module
 */

/** The registry base URL: `$npm_config_registry`, else registry.npmjs.org. */
export function npmRegistry(registry?: string): string {
  return (registry ?? Deno.env.get("npm_config_registry") ?? "https://registry.npmjs.org")
    .replace(/\/+$/, "");
}

/** The tarball URL of `name@version` (`@scope/pkg` → `…/@scope/pkg/-/pkg-1.0.0.tgz`). */
export function tarballUrl(name: string, version: string, registry?: string): string {
  const base = name.includes("/") ? name.slice(name.indexOf("/") + 1) : name;
  return `${npmRegistry(registry)}/${name}/-/${base}-${version}.tgz`;
}

async function sha512Base64(path: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-512", await Deno.readFile(path));
  let bin = "";
  for (const b of new Uint8Array(digest)) bin += String.fromCharCode(b);
  return btoa(bin);
}

/**
 * Writes the tarball at `url` to `path` and checks its `sha512-…` integrity; throws an
 * Error naming the URL when the download fails or the bytes differ. `onBytes` reports
 * progress (bytes so far, total or 0 when unknown).
 *
 * @example
 * ```ts ignore
 * await downloadVerified(tarballUrl("node-llama-cpp", "3.21.1"), "sha512-…", "/tmp/p.tgz");
 * ```
 */
export async function downloadVerified(
  url: string,
  integrity: string,
  path: string,
  onBytes?: (done: number, total: number) => void,
): Promise<void> {
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new Error(`Cannot fetch ${url}: ${(e as Error).message}`, { cause: e });
  }
  if (!res.ok || !res.body) {
    await res.body?.cancel();
    throw new Error(`Cannot fetch ${url}: HTTP ${res.status}`);
  }
  const total = Number(res.headers.get("content-length") ?? 0);
  let done = 0;
  const counted = res.body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, c) {
        done += chunk.length;
        onBytes?.(done, total);
        c.enqueue(chunk);
      },
    }),
  );
  await Deno.writeFile(path, counted);
  const actual = `sha512-${await sha512Base64(path)}`;
  if (actual !== integrity) {
    throw new Error(`${url} does not match its published integrity (${actual})`);
  }
}

/** Runs a tool, throwing an Error that says how to install it when it is missing. */
export async function runTool(cmd: string, args: string[], what: string): Promise<void> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  } catch (e) {
    throw new Error(
      `Cannot ${what}: "${cmd}" is not installed (${(e as Error).message}); ` +
        `install it (Debian/Ubuntu: apt-get install ${cmd}; macOS: xcode-select --install)`,
      { cause: e },
    );
  }
  if (!out.success) {
    const text = new TextDecoder().decode(out.stderr).trim();
    throw new Error(`Cannot ${what}: ${cmd} ${args.join(" ")} failed (exit ${out.code}): ${text}`);
  }
}
