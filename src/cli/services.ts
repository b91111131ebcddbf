import type { Service } from "../server/service.ts";
import type { ServeConfig } from "./serve.ts";

/** The services `umad serve` runs: terminals, and the model unless `--no-model`. */
export function defaultServices(_config: ServeConfig): Promise<Service[]> {
  const services: Service[] = [];
  return Promise.resolve(services);
}
