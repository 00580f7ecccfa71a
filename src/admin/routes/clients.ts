/** Connected clients: list, detail, and DELETE to disconnect one (v5: DISCONNECT 0x98). */
import { Hono } from "hono";
import type { ClientConnection } from "../../core/client-connection.ts";
import { RC } from "../../mqtt/reason-codes.ts";
import type { AdminContext } from "../deps.ts";
import { notFound } from "../errors.ts";
import { paginate } from "../pagination.ts";
import { clientsQuery } from "../schemas.ts";
import { parseQuery } from "../validate.ts";
import { clientDetailView, clientView } from "../views.ts";

/** The live connection of client `id` (past CONNECT), if any. */
export function findClient(ctx: AdminContext, id: string): ClientConnection | undefined {
  // The one attached to the session first; else one still connecting with that id.
  const attached = ctx.broker.sessions.get(id)?.client;
  let connecting: ClientConnection | undefined;
  for (const x of ctx.broker.clients) {
    if (x.clientId !== id || x.state === "closed" || x.state === "awaiting-connect") continue;
    if (x === attached) return x;
    connecting ??= x;
  }
  return connecting;
}

export function clientRoutes(ctx: AdminContext): Hono {
  return new Hono()
    .get("/", (c) => {
      const q = parseQuery(c, clientsQuery);
      // Sockets that have not sent CONNECT have no id yet; GET /api/v1/broker counts them.
      const list = [...ctx.broker.clients].filter((x) =>
        x.state !== "awaiting-connect" && x.state !== "closed" &&
        (q.prefix === undefined || x.clientId.startsWith(q.prefix)) &&
        (q.username === undefined || x.username === q.username)
      );
      return c.json(paginate(list, (x) => x.clientId, q, clientView));
    })
    .get("/:id", (c) => {
      const id = c.req.param("id");
      const client = findClient(ctx, id);
      if (!client) throw notFound(`no connected client ${JSON.stringify(id)}`);
      return c.json(clientDetailView(client));
    })
    .delete("/:id", (c) => {
      const id = c.req.param("id");
      const client = findClient(ctx, id);
      if (!client) throw notFound(`no connected client ${JSON.stringify(id)}`);
      ctx.broker.logger.info(`admin API: disconnecting ${id} (${client.conn.remoteAddress})`);
      // Like any server-side disconnect, this publishes the client's Will.
      client.disconnect(RC.ADMINISTRATIVE_ACTION, "disconnected by an administrator");
      return c.json({ client_id: id, disconnected: true, reason_code: RC.ADMINISTRATIVE_ACTION });
    });
}
