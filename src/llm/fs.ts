/**
 * Filesystem checks shared by the library loader, the source fetcher, the benches and the
 * tests.
 *
 * @module
 */

/** True when `path` exists (any kind of file, a dangling link excluded). */
export function pathExists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}
