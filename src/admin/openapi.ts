/**
 * The OpenAPI 3.1 description served at /api/v1/openapi.json. Query parameters and the
 * publish body are generated from the zod schemas the routes validate with, so the two
 * cannot drift; response shapes are summarised by hand. A test checks that every route
 * the app serves is listed here.
 */
import { z } from "zod";
import {
  clientsQuery,
  historyQuery,
  logsQuery,
  publishBody,
  retainedQuery,
  sessionsQuery,
  subscriptionsQuery,
  topTopicsQuery,
} from "./schemas.ts";

type Json = Record<string, unknown>;

function queryParameters(schema: z.ZodObject): Json[] {
  const js = z.toJSONSchema(schema, { io: "input" }) as { properties?: Record<string, Json>; required?: string[] };
  return Object.entries(js.properties ?? {}).map(([name, s]) => {
    const { description, ...rest } = s;
    return {
      name,
      in: "query",
      required: js.required?.includes(name) ?? false,
      ...(description !== undefined ? { description } : {}),
      schema: rest,
    };
  });
}

const pathParam = (name: string, description: string): Json => ({
  name,
  in: "path",
  required: true,
  description,
  schema: { type: "string" },
});

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: Json, description: string) => ({ description, content: { "application/json": { schema } } });
/** References to the shared error responses (components.responses.E<code>). */
const errors = (...codes: number[]): Record<string, Json> =>
  Object.fromEntries(codes.map((c) => [String(c), { $ref: `#/components/responses/E${c}` }]));

const ERROR_TEXT: Record<number, string> = {
  400: "invalid input; the message names each bad field",
  401: "missing or wrong bearer token",
  404: "no such resource",
  413: "payload larger than mqtt.max_packet_size",
  503: "the broker is not ready or is stopping",
  507: "storage is full",
};

const page = (item: string) => ({
  type: "object",
  properties: {
    data: { type: "array", items: ref(item) },
    next_cursor: { type: ["string", "null"] },
    total: { type: "integer" },
  },
});

function op(summary: string, extra: Json): Json {
  return { summary, ...extra };
}

export function openApiDocument(version: string): Json {
  const secured = [{ bearer: [] }];
  return {
    openapi: "3.1.0",
    info: {
      title: "Ferry admin API",
      version,
      description:
        "Inspect and operate a Ferry MQTT edge broker. JSON everywhere; errors are { error: { code, message } }. " +
        "When admin.token is set (required off loopback) every route but /healthz and the dashboard page needs Authorization: Bearer <token>.",
    },
    servers: [{ url: "/" }],
    security: secured,
    paths: {
      "/": {
        get: op("Dashboard page (HTML; no data until the page's API calls succeed)", {
          security: [],
          responses: { 200: { description: "HTML" } },
        }),
      },
      "/healthz": {
        get: op("Liveness: the process answers", {
          security: [],
          responses: { 200: json({ type: "object" }, "alive") },
        }),
      },
      "/readyz": {
        get: op("Readiness: store open and listeners up", {
          responses: {
            200: json({ type: "object" }, "ready"),
            503: json({ type: "object" }, "not ready"),
            ...errors(401),
          },
        }),
      },
      "/metrics": {
        get: op("Prometheus metrics (text exposition format 0.0.4)", {
          responses: {
            200: { description: "metrics", content: { "text/plain": { schema: { type: "string" } } } },
            ...errors(401),
          },
        }),
      },
      "/api/v1/openapi.json": {
        get: op("This document", { responses: { 200: json({ type: "object" }, "OpenAPI 3.1"), ...errors(401) } }),
      },
      "/api/v1/broker": {
        get: op("Version, uptime, counts, message totals and store statistics", {
          responses: { 200: json(ref("Broker"), "broker"), ...errors(401) },
        }),
      },
      "/api/v1/metrics": {
        get: op("The metrics snapshot /metrics and $SYS render: every counter by name, gauges, uplinks, process", {
          responses: { 200: json({ type: "object" }, "metrics snapshot"), ...errors(401) },
        }),
      },
      "/api/v1/metrics/history": {
        get: op("The last hour of message rates, uplink backlog and oldest-pending age, sampled server-side", {
          responses: { 200: json({ type: "object" }, "time series"), ...errors(401) },
        }),
      },
      "/api/v1/clients": {
        get: op("Connected clients (past CONNECT), by client id", {
          parameters: queryParameters(clientsQuery),
          responses: { 200: json(page("Client"), "a page of clients"), ...errors(400, 401) },
        }),
      },
      "/api/v1/clients/{id}": {
        get: op("One connected client", {
          parameters: [pathParam("id", "client id")],
          responses: { 200: json(ref("Client"), "client"), ...errors(401, 404) },
        }),
        delete: op("Disconnect the client (MQTT 5: DISCONNECT 0x98 Administrative action); its Will is published", {
          parameters: [pathParam("id", "client id")],
          responses: { 200: json({ type: "object" }, "disconnected"), ...errors(401, 404) },
        }),
      },
      "/api/v1/sessions": {
        get: op("Sessions, connected or offline", {
          parameters: queryParameters(sessionsQuery),
          responses: { 200: json(page("Session"), "a page of sessions"), ...errors(400, 401) },
        }),
      },
      "/api/v1/sessions/{id}": {
        get: op("One session with its subscriptions, queued (first 100) and in-flight messages", {
          parameters: [pathParam("id", "client id")],
          responses: { 200: json(ref("Session"), "session"), ...errors(401, 404) },
        }),
      },
      "/api/v1/subscriptions": {
        get: op("Subscriptions of every session", {
          parameters: queryParameters(subscriptionsQuery),
          responses: { 200: json(page("Subscription"), "a page of subscriptions"), ...errors(400, 401) },
        }),
      },
      "/api/v1/retained": {
        get: op("Retained messages, by topic", {
          parameters: queryParameters(retainedQuery),
          responses: { 200: json(page("Message"), "a page of retained messages"), ...errors(400, 401) },
        }),
      },
      "/api/v1/retained/{topic}": {
        get: op("The retained message of a topic (the rest of the path; slashes allowed)", {
          parameters: [pathParam("topic", "topic name")],
          responses: { 200: json(ref("Message"), "retained message"), ...errors(401, 404) },
        }),
        delete: op("Delete a topic's retained message (nothing is sent to subscribers)", {
          parameters: [pathParam("topic", "topic name")],
          responses: { 200: json({ type: "object" }, "deleted"), ...errors(401, 404) },
        }),
      },
      "/api/v1/publish": {
        post: op("Publish a message through the broker's normal path", {
          requestBody: {
            required: true,
            content: { "application/json": { schema: z.toJSONSchema(publishBody, { io: "input" }) } },
          },
          responses: {
            200: json({ type: "object" }, "accepted (durable when QoS>0) and delivered"),
            ...errors(400, 401, 413, 507),
          },
        }),
      },
      "/api/v1/uplinks": {
        get: op("Cloud uplinks with their status", {
          responses: {
            200: json({ type: "object", properties: { data: { type: "array", items: ref("Uplink") } } }, "uplinks"),
            ...errors(401),
          },
        }),
      },
      "/api/v1/uplinks/{name}": {
        get: op("One uplink's status", {
          parameters: [pathParam("name", "uplink name")],
          responses: { 200: json(ref("Uplink"), "uplink"), ...errors(401, 404) },
        }),
      },
      "/api/v1/uplinks/{name}/pause": {
        post: op("Disconnect the uplink and stop forwarding; the cursor is kept", {
          parameters: [pathParam("name", "uplink name")],
          responses: { 200: json(ref("Uplink"), "paused"), ...errors(401, 404, 503) },
        }),
      },
      "/api/v1/uplinks/{name}/resume": {
        post: op("Reconnect a paused uplink; it forwards from its cursor", {
          parameters: [pathParam("name", "uplink name")],
          responses: { 200: json(ref("Uplink"), "resumed"), ...errors(401, 404, 503) },
        }),
      },
      "/api/v1/history": {
        get: op(
          "Messages still in the durable log, oldest first: QoS 1/2 messages and those logged for an uplink, bounded by storage retention",
          {
            parameters: queryParameters(historyQuery),
            responses: {
              200: json({
                type: "object",
                properties: {
                  data: { type: "array", items: ref("Message") },
                  next_offset: { type: "integer", description: "from_offset of the next page" },
                  end_of_log: { type: "boolean" },
                },
              }, "messages"),
              ...errors(400, 401),
            },
          },
        ),
      },
      "/api/v1/top-topics": {
        get: op("Busiest topics since start (bounded Space-Saving counter; counts may overestimate by `error`)", {
          parameters: queryParameters(topTopicsQuery),
          responses: { 200: json({ type: "object" }, "top topics"), ...errors(400, 401) },
        }),
      },
      "/api/v1/logs": {
        get: op("Recent warnings and errors, newest first", {
          parameters: queryParameters(logsQuery),
          responses: { 200: json({ type: "object" }, "log entries"), ...errors(400, 401) },
        }),
      },
    },
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
      responses: Object.fromEntries(
        Object.entries(ERROR_TEXT).map(([code, text]) => [`E${code}`, json(ref("Error"), text)]),
      ),
      schemas: {
        Error: {
          type: "object",
          required: ["error"],
          properties: {
            error: {
              type: "object",
              required: ["code", "message"],
              properties: { code: { type: "string" }, message: { type: "string" } },
            },
          },
        },
        Broker: {
          type: "object",
          properties: {
            version: { type: "string" },
            uptime_seconds: { type: "integer" },
            connections: { type: "integer" },
            store: { type: "object" },
          },
        },
        Client: {
          type: "object",
          properties: {
            client_id: { type: "string" },
            username: { type: ["string", "null"] },
            protocol: { type: "string", enum: ["3.1", "3.1.1", "5.0"] },
            state: { type: "string" },
            remote_address: { type: "string" },
            keep_alive: { type: "integer" },
          },
        },
        Session: {
          type: "object",
          properties: {
            client_id: { type: "string" },
            connected: { type: "boolean" },
            expiry_interval: { type: "integer" },
            subscriptions: { type: "integer" },
            queued: { type: "integer" },
            inflight: { type: "integer" },
          },
        },
        Subscription: {
          type: "object",
          properties: {
            client_id: { type: "string" },
            filter: { type: "string" },
            qos: { type: "integer" },
            share_group: { type: ["string", "null"] },
          },
        },
        Message: {
          type: "object",
          properties: {
            offset: { type: "integer" },
            topic: { type: "string" },
            payload: { type: "string" },
            encoding: { type: "string", enum: ["utf8", "base64"] },
            qos: { type: "integer" },
            retain: { type: "boolean" },
            received_at: { type: "string", format: "date-time" },
          },
        },
        Uplink: {
          type: "object",
          properties: {
            name: { type: "string" },
            state: { type: "string", enum: ["stopped", "connecting", "connected", "backoff", "paused"] },
            url: { type: "string", description: "endpoint in use, or being tried" },
            endpoints: {
              type: "array",
              items: {
                type: "object",
                properties: {
                  url: { type: "string" },
                  in_use: { type: "boolean" },
                  attempts: { type: "integer" },
                  last_error: { type: "string", nullable: true },
                  last_error_at: { type: "string", format: "date-time", nullable: true },
                  last_connected_at: { type: "string", format: "date-time", nullable: true },
                },
              },
            },
            backlog_messages: { type: "integer" },
            oldest_pending_ms: { type: "integer" },
            inflight: { type: "integer" },
            window: { type: "integer" },
            acknowledged: { type: "integer" },
            reconnects: { type: "integer", description: "connections that ended after being established" },
            connect_attempts: { type: "integer" },
            quota_backoffs: { type: "integer" },
          },
        },
      },
    },
  };
}
