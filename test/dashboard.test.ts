/**
 * The dashboard in a real browser (Debian's chromium driven by playwright-core): it asks
 * for the token, then shows connections and message rates that follow real MQTT traffic,
 * uplink state and the busiest topics. Saves a screenshot to a temp file. Skipped when
 * /usr/bin/chromium is missing (`apt-get install chromium`; `.ci/run` installs it).
 */
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Browser, chromium } from "playwright-core";
import type { FerryConfig } from "../src/config/schema.ts";
import { type DeepPartial, startBroker } from "./helpers/broker.ts";
import { connect, eventually, type TestClient } from "./helpers/clients.ts";
import { freePort } from "./helpers/cloud-broker.ts";

setDefaultTimeout(60_000);

const CHROMIUM = "/usr/bin/chromium";
const HAVE_CHROMIUM = existsSync(CHROMIUM);
const TOKEN = "dashboard-token-0123456789";
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/**
 * A broker `edgeId` with the admin API (`admin`) and an uplink whose cloud is down, so the
 * uplink table has a backlog and the log has warnings; and a headless browser.
 */
async function dashboardAndBrowser(edgeId: string, admin: DeepPartial<FerryConfig["admin"]>) {
  const deadCloud = `mqtt://127.0.0.1:${await freePort()}`;
  const b = await startBroker({
    edge_id: edgeId,
    admin,
    uplinks: [{
      name: "cloud",
      url: deadCloud,
      forward: [{ filter: "factory/#", qos: 1 }],
      backoff: { min_ms: 200, max_ms: 1000, jitter: 0 },
    }] as FerryConfig["uplinks"],
  });
  cleanups.push(() => b.stop());
  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
  cleanups.push(() => browser.close());
  return { b, base: `http://127.0.0.1:${b.server.admin!.port}`, browser };
}

describe("dashboard", () => {
  if (!HAVE_CHROMIUM) console.warn(`dashboard tests skipped: ${CHROMIUM} not found (apt-get install chromium)`);

  test.skipIf(!HAVE_CHROMIUM)(
    "asks for the token, then live connection count and message rate follow MQTT traffic; screenshot saved",
    async () => {
      const { b, base, browser } = await dashboardAndBrowser("line-7", { port: 0, token: TOKEN });
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      const pageErrors: string[] = [];
      page.on("pageerror", (e) => pageErrors.push(e.message));
      await page.goto(`${base}/`);

      // The token is asked once and kept in sessionStorage.
      await page.waitForSelector("#login.show", { timeout: 10_000 });
      await page.fill("#token", TOKEN);
      await page.click("#login-form button");
      await page.waitForFunction(() => document.getElementById("status")?.textContent === "live", null, {
        timeout: 10_000,
      });
      expect(await page.evaluate(() => sessionStorage.getItem("ferry-admin-token"))).toBe(TOKEN);
      expect(await page.textContent("#connections")).toBe("0");
      expect(await page.textContent("#identity")).toContain("line-7");

      // Clients connect: the connection count follows.
      const clients: TestClient[] = [];
      for (let i = 0; i < 3; i++) {
        const c = await connect(b.url, { protocolVersion: 5, clientId: `sensor-${i}` });
        clients.push(c);
        cleanups.push(() => c.end(true));
      }
      await page.waitForFunction(() => document.getElementById("connections")?.textContent === "3", null, {
        timeout: 10_000,
      });
      await clients[0]!.client.subscribeAsync("factory/line7/temperature", { qos: 0 });

      // They publish: the inbound message rate becomes non-zero and the top topics fill in.
      const topics = ["factory/line7/temperature", "factory/line7/pressure", "factory/line7/vibration", "office/door"];
      let n = 0;
      const publisher = setInterval(() => {
        for (const [i, c] of clients.entries()) {
          for (let k = 0; k <= i; k++) {
            c.client.publish(topics[(n + k) % topics.length]!, String(20 + (n % 7)), { qos: 1 });
          }
        }
        n++;
      }, 20);
      cleanups.push(() => clearInterval(publisher));
      await page.waitForFunction(() => Number(document.getElementById("rate-in")?.textContent ?? "0") > 10, null, {
        timeout: 10_000,
      });
      await page.waitForFunction(
        () => document.getElementById("topics")?.textContent?.includes("factory/line7/temperature") ?? false,
        null,
        {
          timeout: 10_000,
        },
      );
      const uplinkRow = await page.textContent("#uplinks");
      expect(uplinkRow).toContain("cloud");
      await page.waitForFunction(
        () => (document.getElementById("logs")?.textContent ?? "").includes("uplink cloud"),
        null,
        { timeout: 10_000 },
      );
      // A few more samples, so the charts have a shape.
      await page.waitForFunction(
        () =>
          (document.querySelector("#chart-in polyline")?.getAttribute("points")?.split(" ").length ?? 0) > 3 &&
          Number(document.getElementById("rate-out")?.textContent ?? "0") > 0,
        null,
        { timeout: 15_000 },
      );
      expect(Number(await page.textContent("#rate-in"))).toBeGreaterThan(10);
      expect(Number(await page.textContent("#rate-out"))).toBeGreaterThan(0);
      const points = await page.evaluate(() =>
        document.querySelector("#chart-in polyline")?.getAttribute("points")?.split(" ").length ?? 0
      );
      expect(points).toBeGreaterThan(3);

      const shot = join(mkdtempSync(join(tmpdir(), "ferry-dashboard-")), "dashboard.png");
      await page.screenshot({ path: shot, fullPage: true });
      console.log(`dashboard screenshot: ${shot}`);
      expect(existsSync(shot)).toBe(true);
      expect(pageErrors).toEqual([]);
    },
  );

  test.skipIf(!HAVE_CHROMIUM)(
    "charts of the last hour with axes, kept server-side (a fresh tab shows them at once), the drain estimate and the clients table; screenshots saved",
    async () => {
      const { b, base, browser } = await dashboardAndBrowser("line-9", { port: 0, history_interval_seconds: 1 });
      const pageErrors: string[] = [];

      const sensor = await connect(b.url, { protocolVersion: 5, clientId: "sensor-a", username: "alice" });
      cleanups.push(() => sensor.end(true));
      const legacy = await connect(b.url, { protocolVersion: 4, clientId: "legacy-plc", clean: false });
      cleanups.push(() => legacy.end(true));
      await legacy.client.subscribeAsync("factory/#", { qos: 1 });
      // Traffic for a few history points: into the dead uplink's backlog, and out to the subscriber.
      let n = 0;
      const publisher = setInterval(() => {
        for (let k = 0; k < 5; k++) sensor.client.publish(`factory/line9/m${k}`, String(n++), { qos: 1 });
      }, 20);
      cleanups.push(() => clearInterval(publisher));
      // A few history points with traffic in them (one a second), kept by the server.
      await eventually(
        async () => {
          const { points } = (await (await fetch(`${base}/api/v1/metrics/history`)).json()) as {
            points: Array<{ in: number }>;
          };
          return points.length >= 3 && points.some((p) => p.in > 10);
        },
        15_000,
        "three history points",
      );

      // A tab opened now draws the history at its first poll: the server kept it.
      const page = await browser.newPage({ viewport: { width: 1400, height: 1300 } });
      page.on("pageerror", (e) => pageErrors.push(e.message));
      await page.goto(`${base}/`);
      await page.waitForFunction(() => document.getElementById("status")?.textContent === "live", null, {
        timeout: 10_000,
      });
      const pointsOf = (id: string, series: string) =>
        page.evaluate(
          ([i, s]) =>
            document.querySelector(`#${i} polyline[data-series="${s}"]`)?.getAttribute("points")?.split(" ").length ??
              0,
          [id, series] as const,
        );
      expect(await pointsOf("hist-rates", "in")).toBeGreaterThanOrEqual(3);
      expect(await pointsOf("hist-backlog", "backlog")).toBeGreaterThanOrEqual(3);
      expect(await pointsOf("hist-oldest", "oldest_pending_seconds")).toBeGreaterThanOrEqual(3);
      // Axes: five y ticks with numbers, the hour on x.
      const ticks = await page.evaluate(() => ({
        y: Array.from(document.querySelectorAll("#hist-rates text.ytick"), (t) => t.textContent),
        x: Array.from(document.querySelectorAll("#hist-rates text.xtick"), (t) => t.textContent),
      }));
      expect(ticks.y).toHaveLength(5);
      expect(ticks.y[0]).toBe("0");
      expect(Number(String(ticks.y[4]).replace("k", "000"))).toBeGreaterThan(10);
      // x: the history so far (at least a minute, at most an hour), ending now.
      expect(ticks.x.at(-1)).toBe("now");
      expect(ticks.x.length).toBeGreaterThanOrEqual(3);
      for (const t of ticks.x.slice(0, -1)) expect(t).toMatch(/^-\d+ (s|min)$/);
      // The inbound line is off the floor: its highest point is above the x axis.
      const inYs = await page.evaluate(() =>
        (document.querySelector('#hist-rates polyline[data-series="in"]')?.getAttribute("points") ?? "").split(" ")
          .map((p) => Number(p.split(",")[1]))
      );
      expect(Math.min(...inYs)).toBeLessThan(100);

      // Drain estimate: the cloud is down, so the backlog grows and nothing drains.
      await page.waitForFunction(() => /Backlog \d/.test(document.getElementById("drain")?.textContent ?? ""), null, {
        timeout: 10_000,
      });
      expect(await page.textContent("#drain")).toContain("not shrinking");

      // The clients table lists both clients with what an operator looks for.
      const rows = await page.$$eval(
        "#clients tr",
        (trs) => trs.map((tr) => Array.from(tr.children, (td) => td.textContent)),
      );
      const a = rows.find((r) => r[0] === "sensor-a")!;
      expect(a[1]).toBe("alice");
      expect(a[2]).toMatch(/^127\.0\.0\.1:\d+$/);
      expect(a[3]).toBe("5.0 · tcp");
      expect(a[4]).toContain("ago");
      const l = rows.find((r) => r[0] === "legacy-plc")!;
      expect(l[1]).toBe("–");
      expect(l[3]).toBe("3.1.1 · tcp");

      // The numbers follow the traffic: stop it, and the live rate falls to 0.
      await page.waitForFunction(() => Number(document.getElementById("rate-in")?.textContent ?? "0") > 10, null, {
        timeout: 10_000,
      });
      const dir = mkdtempSync(join("/tmp", "ferry-dashboard-"));
      await page.screenshot({ path: join(dir, "with-traffic.png"), fullPage: true });
      clearInterval(publisher);
      await page.waitForFunction(() => document.getElementById("rate-in")?.textContent === "0.0", null, {
        timeout: 10_000,
      });
      // A history point without traffic.
      await page.waitForFunction(
        () => document.getElementById("hist-rates-now")?.textContent?.startsWith("in 0.0") ?? false,
        null,
        { timeout: 10_000 },
      );
      await page.screenshot({ path: join(dir, "after-traffic.png"), fullPage: true });
      console.log(`dashboard screenshots: ${dir}/with-traffic.png, ${dir}/after-traffic.png`);
      expect(pageErrors).toEqual([]);
    },
  );
});
