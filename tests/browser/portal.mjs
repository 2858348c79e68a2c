// The portal in a real browser: Playwright drives Debian's Chromium against a running
// `shoal serve` (tests/e2e/portal.rs starts it, uploads an image and makes a Reader, then
// runs this script). Every step is something a user does or sees; the script exits
// non-zero at the first thing that is not as it should be.
//
// Env: SHOAL_URL, SHOAL_RG (a group holding the image apps/web), READER_TENANT,
// READER_APP_ID, READER_SECRET, SCREENSHOTS (a directory to write PNGs to).
import { chromium } from "playwright-core";
import { readFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const env = (k) => { const val = process.env[k]; if (!val) throw new Error(`${k} is not set`); return val; };
const BASE = env("SHOAL_URL"), RG = env("SHOAL_RG"), SHOTS = env("SCREENSHOTS");
const ORIGIN = new URL(BASE).origin;
const AXE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
mkdirSync(SHOTS, { recursive: true });

const LAPTOP = { width: 1366, height: 800 }, PHONE = { width: 390, height: 844 };
const problems = [];          // console errors, page errors, requests to other hosts
const expectedFailures = [];  // URLs of requests the test makes fail on purpose
const t0 = Date.now();
const step = (s) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${s}`);
function check(cond, what) { if (!cond) throw new Error(`not as expected: ${what}`); }

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--no-first-run", "--disable-component-update", "--disable-sync"],
});

async function newPage(viewport, label) {
  const ctx = await browser.newContext({ viewport, isMobile: viewport === PHONE });
  // The route guard: the portal may talk to the Shoal server and nothing else.
  await ctx.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith("data:") || new URL(url).origin === ORIGIN) return route.continue();
    problems.push(`${label}: request to another host: ${url}`);
    return route.abort();
  });
  const page = await ctx.newPage();
  page.on("pageerror", (e) => problems.push(`${label}: page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    const at = m.location()?.url || "";
    if (m.text().startsWith("Failed to load resource") && expectedFailures.some((u) => at.includes(u))) return;
    problems.push(`${label}: console error: ${m.text()} (${at})`);
  });
  return page;
}

async function axe(page, name) {
  await page.evaluate(AXE);
  const r = await page.evaluate(() => globalThis.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21aa"] } }));
  const bad = r.violations.filter((x) => x.impact === "serious" || x.impact === "critical");
  for (const v of bad) problems.push(`${name}: accessibility (${v.impact}): ${v.id}: ${v.help} — ${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join("; ")}`);
}

async function shot(page, name) {
  await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
}

/// Waits until `fn` (run in the page) is truthy; `what` says what was awaited. (Not
/// page.waitForFunction: it evaluates a string, which the portal's CSP forbids.)
async function until(page, what, fn, arg, timeout = 60000) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    try { if (await page.evaluate(fn, arg)) return; } catch (e) { last = e; }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${what} did not happen within ${timeout / 1000} s${last ? ` (${last.message.split("\n")[0]})` : ""}`);
}

const field = (id, name) => `[data-instance="${id}"] [data-field="${name}"]`;

async function signInAsOwner(page, shotName) {
  await page.goto(`${BASE}/ui/`);
  await page.waitForSelector("#owner-signin");
  if (shotName) { await axe(page, shotName); await shot(page, shotName); }
  await page.click("#owner-signin");
  await page.waitForSelector("#sets-table");
}

let exit = 0;
let load = null;
try {
  const page = await newPage(LAPTOP, "owner");
  step("sign in as the local owner");
  await signInAsOwner(page);
  await axe(page, "overview");

  step("create a scale set from the image");
  await page.click("nav >> text=Create");
  await page.waitForSelector("#create-form");
  await page.fill("#c-group", RG);
  await page.fill("#c-name", "portal");
  const image = await page.$eval("#c-image", (s) => [...s.options].map((o) => o.textContent));
  check(image.some((t) => t.includes("apps/web:1.0.0")), `the image list offers apps/web:1.0.0 (${image})`);
  await page.selectOption("#c-size", "Shoal_1vCPU_256MB");
  await page.fill("#c-count", "2");
  await axe(page, "create");
  await shot(page, "create-laptop");
  await page.click("#c-submit");
  await page.waitForURL(`**/ui/scalesets/${RG}/portal`);
  await until(page, "two healthy instances in the grid", () => {
    const h = document.querySelector("#set-health");
    return h && h.dataset.healthy === "2" && h.dataset.total === "2";
  });

  step("scale 2 → 5 and see five healthy instances without reloading");
  await page.evaluate(() => { window.__sameDocument = true; });
  await page.fill("#capacity", "5");
  await page.click("#scale");
  await page.click("#confirm-ok");
  await until(page, "five healthy instances in the grid", () => {
    const h = document.querySelector("#set-health");
    return h && h.dataset.healthy === "5" && h.dataset.total === "5"
      && document.querySelectorAll("article.instance.h-healthy").length === 5;
  }, undefined, 90000);
  check(await page.evaluate(() => window.__sameDocument === true), "the page was not reloaded");
  await axe(page, "scale set");

  step("enable autoscale and add a CPU rule in the CLI's sentence");
  await page.fill("#as-min", "5");
  await page.fill("#as-max", "6");
  await page.fill("#as-default", "5");
  await page.fill("#as-interval", "1s");
  await page.click("#as-create");
  await page.waitForSelector("#rule-add");
  // A sentence that is not one is refused on the page, and nothing is sent.
  await page.fill("#rule-condition", "CPU is high");
  await page.fill("#rule-scale", "out 1");
  await page.click("#rule-submit");
  await until(page, "the bad condition refused", () => document.querySelector("#rule-error")?.textContent.includes("is not a condition"));
  await page.fill("#rule-condition", "Percentage CPU > 50 max 5s");
  await page.fill("#rule-timegrain", "max 1s");
  await page.fill("#rule-cooldown", "1m");
  await page.click("#rule-submit");
  await until(page, "the rule shown as a sentence", () => [...document.querySelectorAll("table.rules code")].some((c) => c.textContent === "Percentage CPU > 50 max 5s"));

  step("a CPU-burning load: the CPU chart rises and the autoscale action appears on the instance chart");
  const addr = await page.textContent(field(0, "address"));
  let burning = true;
  const burn = async () => { while (burning) { try { await fetch(`http://${addr}/work?ms=500`); } catch { await new Promise((r) => setTimeout(r, 200)); } } };
  load = { stop: () => { burning = false; }, done: Promise.all([burn(), burn()]) };
  await until(page, "CPU above 50 % on the chart", () => Number(document.querySelector("#chart-cpu")?.dataset.max) > 50, undefined, 90000);
  await until(page, "a scale-out marker on the instance chart", () =>
    [...document.querySelectorAll("#chart-instances .marker")].some((m) => m.getAttribute("aria-label").startsWith("Autoscale scale out (5 → 6)")), undefined, 120000);
  load.stop(); await load.done; load = null;
  const label = await page.getAttribute("#chart-instances .marker.scale-out", "aria-label");
  check(label.includes("Percentage CPU"), `the marker says which rule fired: ${label}`);
  // Hovering shows the same text (the marker's <title>).
  await page.hover("#chart-instances .marker.scale-out circle");
  await until(page, "six instances", () => document.querySelector("#set-health")?.dataset.total === "6", undefined, 60000);
  await shot(page, "scaleset-laptop");

  step("restart an instance and see its state change");
  const pidBefore = await page.textContent(field(0, "pid"));
  await page.click(`[data-instance="0"] button[data-action="restart"]`);
  await page.click("#confirm-ok");
  await until(page, "instance 0 running again as a new process", ([sel, pid]) => {
    const p = document.querySelector(sel)?.textContent;
    return p && p !== pid && p !== "-";
  }, [field(0, "pid"), pidBefore]);
  await until(page, "instance 0 running", (sel) => document.querySelector(sel)?.textContent === "running", field(0, "power"));

  step("a failing action shows the ARM error");
  expectedFailures.push(`/virtualMachineScaleSets/portal?`);
  await page.fill("#capacity", "5000");
  await page.click("#scale");
  await page.click("#confirm-ok");
  await until(page, "the ARM error under the actions", () => /failed\. [A-Za-z]+: .+/.test(document.querySelector("#action-result")?.textContent || ""));
  const err = await page.textContent("#action-result");
  check(/capacity/i.test(err), `the error names what was wrong: ${err}`);
  expectedFailures.pop();

  step("the instance page: charts and output");
  await page.click(`[data-instance="1"] h4 a`);
  await page.waitForSelector("#logs");
  await until(page, "the instance's output", () => document.querySelector("#logs")?.textContent.includes("listening"));
  await axe(page, "instance");
  await shot(page, "instance-laptop");

  step("every other page, at laptop and phone width");
  const pages = [["overview", "/ui/"], ["network", "/ui/network"], ["activity", "/ui/activity"], ["access", "/ui/access"]];
  for (const [name, path] of pages) {
    await page.goto(`${BASE}${path}`);
    await page.waitForLoadState("networkidle");
    await page.waitForTimeout(500);
    await axe(page, name);
    await shot(page, `${name}-laptop`);
  }
  const phone = await newPage(PHONE, "phone");
  await signInAsOwner(phone, "signin-phone");
  for (const [name, path] of [...pages, ["scaleset", `/ui/scalesets/${RG}/portal`], ["instance", `/ui/scalesets/${RG}/portal/instances/1`], ["create", "/ui/create"]]) {
    await phone.goto(`${BASE}${path}`);
    await phone.waitForLoadState("networkidle");
    await phone.waitForTimeout(1000);
    await axe(phone, `${name} (phone)`);
    await shot(phone, `${name}-phone`);
  }

  step("a Reader signs in with the form: every action is off, with the reason");
  const reader = await newPage(LAPTOP, "reader");
  await reader.goto(`${BASE}/ui/`);
  await reader.fill("#tenant", env("READER_TENANT"));
  await reader.fill("#clientId", env("READER_APP_ID"));
  await reader.fill("#clientSecret", env("READER_SECRET"));
  await axe(reader, "sign-in");
  await shot(reader, "signin-laptop");
  await reader.click("#signin button[type=submit]");
  await reader.waitForSelector("#sets-table");
  await reader.goto(`${BASE}/ui/scalesets/${RG}/portal`);
  await until(reader, "the grid for the Reader", () => document.querySelectorAll("article.instance").length > 0);
  const buttons = await reader.$$eval("main button[data-action], #scale, #rule-submit, #as-create", (bs) => bs.map((b) => [b.textContent, b.disabled, b.title]));
  check(buttons.length >= 8, `the Reader sees the action buttons (${buttons.length})`);
  for (const [text, disabled, title] of buttons) check(disabled && title.includes("does not allow"), `"${text}" is off for a Reader with the reason (${title})`);
  check(await reader.isVisible("#role-note"), "the page says why the actions are off");
  await axe(reader, "scale set (Reader)");
  await shot(reader, "scaleset-reader-laptop");
} catch (e) {
  console.error(`FAILED: ${e.message}`);
  exit = 1;
} finally {
  if (load) { load.stop(); await load.done; }
  await browser.close();
}
for (const p of problems) console.error(`PROBLEM: ${p}`);
if (problems.length) exit = 1;
step(exit ? "failed" : "all portal checks passed");
process.exit(exit);
