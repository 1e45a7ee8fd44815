// Load every example workflow of the pack in the REAL ComfyUI frontend (headless Chromium) and report problems.
//
// usage: node check_workflows.js --url http://127.0.0.1:8188 --workflows DIR --out DIR [--timeout MS]
//   env CFM_PLAYWRIGHT_DIR: a node_modules folder holding playwright-core (default: node's own resolution)
//   env CFM_CHROMIUM: the Chromium binary (default /usr/bin/chromium)
//
// For each UI-format workflow in DIR (what the template browser lists) it
//   1. checks GET /workflow_templates lists it and fetches it the way the template browser does
//      (GET /api/workflow_templates/<pack folder>/<name>.json), comparing it with the file;
//   2. loads it with app.loadGraphData(json, true, true, name) — the template browser's call — with the
//      missing-nodes and missing-models dialogs enabled;
//   3. collects what the frontend says: open dialogs (missing nodes / models, load errors), toasts (zod schema
//      alerts, "Workflow Links Fixed"), console errors/warnings and page errors raised during the load, node types
//      the frontend does not know, and nodes the frontend flags as broken. A missing-models dialog is expected
//      exactly when the workflow declares files (node properties.models, the frontend's own source of truth) that
//      the server lacks (GET /models/<directory>), and must list exactly those files;
//   4. re-serializes the loaded graph and compares it with the file: node types, widgets_values (so the widget
//      order and the seed control values are what this frontend expects) and links;
//   5. saves a screenshot <out>/<name>.png (the minimap hidden by a page-only style; no setting is changed).
// Then it opens the template browser itself (Templates → Custom Nodes → <pack folder>), requires a card for every
// workflow (screenshot <out>/templates.png) and loads one by clicking its card.
// A self-test first loads a copy of a workflow with one node type renamed and requires the missing-node report,
// and one with a declared model file renamed and requires the missing-models dialog to list it, so the check
// cannot pass by seeing nothing. Prints one JSON report; exit 0 = no problem, 1 = problems, 2 = error.
'use strict';
const fs = require('fs');
const path = require('path');

function parseArgs(argv) {
  const args = { url: 'http://127.0.0.1:8188', workflows: null, out: null, timeout: 120000 };
  for (let i = 2; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in args)) throw new Error(`unknown option ${argv[i]}`);
    args[key] = key === 'timeout' ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!args.workflows || !args.out) throw new Error('--workflows DIR and --out DIR are required');
  return args;
}

function loadPlaywright() {
  const dir = process.env.CFM_PLAYWRIGHT_DIR;
  return require(dir ? path.join(path.resolve(dir), 'playwright-core') : 'playwright-core');
}

// Console lines that say a node type or model is missing, or that the workflow is malformed.
const BAD_CONSOLE = /missing|not found|unknown node|invalid workflow|zod|failed to load|cannot read|undefined/i;

async function openDialogsAndToasts(page) {
  return page.evaluate(() => {
    const visible = el => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
    const texts = sel => [...document.querySelectorAll(sel)].filter(visible).map(e => e.innerText.trim()).filter(Boolean);
    return { dialogs: texts('.p-dialog'), toasts: texts('.p-toast-message') };
  });
}

async function closeDialogsAndToasts(page) {
  for (let i = 0; i < 5; i++) {
    const open = await openDialogsAndToasts(page);
    if (!open.dialogs.length && !open.toasts.length) return;
    await page.keyboard.press('Escape');
    await page.evaluate(() => {
      document.querySelectorAll('.p-dialog-close-button, .p-toast-close-button, .p-dialog-header-close')
        .forEach(b => b.click());
    });
    await page.waitForTimeout(300);
  }
}

// Load one workflow through the frontend's own loader; return what the frontend reported and the re-serialized graph.
async function loadInFrontend(page, workflow, name, consoleLines) {
  const before = consoleLines.length;
  const result = await page.evaluate(async ({ workflow, name }) => {
    const app = window.app;
    await app.loadGraphData(workflow, true, true, name);
    await new Promise(r => setTimeout(r, 300));
    const known = window.LiteGraph.registered_node_types;
    const nodes = app.graph.nodes.map(n => ({
      id: n.id, type: n.type, known: n.type in known, broken: !!(n.has_errors || n.flags?.is_missing),
      widgets: (n.widgets || []).map(w => w.name),
    }));
    return { nodes, serialized: JSON.parse(JSON.stringify(app.graph.serialize())) };
  }, { workflow, name });
  await page.waitForTimeout(700); // dialogs and toasts are mounted asynchronously
  const open = await openDialogsAndToasts(page);
  const consoleNew = consoleLines.slice(before);
  return { ...result, ...open, console: consoleNew };
}

function compareGraphs(file, loaded) {
  const problems = [];
  const byId = new Map(loaded.nodes.map(n => [n.id, n]));
  for (const node of file.nodes) {
    const got = byId.get(node.id);
    if (!got) { problems.push(`node ${node.id} (${node.type}) is gone after loading`); continue; }
    if (got.type !== node.type) problems.push(`node ${node.id}: type ${got.type} != ${node.type}`);
    const a = JSON.stringify(node.widgets_values ?? []), b = JSON.stringify(got.widgets_values ?? []);
    if (a !== b) problems.push(`node ${node.id} (${node.type}): widgets_values after load ${b} != file ${a}`);
    const linkIn = (n) => JSON.stringify((n.inputs || []).filter(i => i.link != null).map(i => [i.name, i.link]));
    if (linkIn(node) !== linkIn(got)) problems.push(`node ${node.id} (${node.type}): linked inputs ${linkIn(got)} != ${linkIn(node)}`);
  }
  if (loaded.nodes.length !== file.nodes.length) problems.push(`${loaded.nodes.length} nodes loaded, file has ${file.nodes.length}`);
  const norm = ls => JSON.stringify([...ls].map(l => Array.isArray(l) ? l : [l.id, l.origin_id, l.origin_slot, l.target_id, l.target_slot, l.type]).sort((x, y) => x[0] - y[0]));
  if (norm(loaded.links) !== norm(file.links)) problems.push(`links after load ${norm(loaded.links)} != file ${norm(file.links)}`);
  return problems;
}

// The model files a workflow declares the way the frontend reads them: properties.models entries whose name is
// selected in the node's widgets (src/utils/modelMetadataUtil.ts), keyed "directory / name" like the dialog's labels.
function declaredModels(workflow) {
  const out = new Set();
  for (const n of workflow.nodes || []) {
    const values = new Set((n.widgets_values || []).filter(v => typeof v === 'string'));
    for (const m of (n.properties && n.properties.models) || []) if (values.has(m.name) && m.url) out.add(`${m.directory} / ${m.name}`);
  }
  return [...out].sort();
}

async function missingOnServer(page, declared) {
  const missing = [];
  for (const label of declared) {
    const [directory, name] = label.split(' / ');
    const files = await page.evaluate(async d => { const r = await fetch(`/models/${d}`); return r.ok ? r.json() : null; }, directory);
    if (!files || !files.includes(name)) missing.push(label);
  }
  return missing;
}

// A missing-models dialog is fine when it lists exactly the expected files ("directory / name" labels).
function isExpectedModelsDialog(text, expectedMissing) {
  if (!/missing models/i.test(text) || !expectedMissing.length) return false;
  const listed = (text.match(/[\w.-]+ \/ [\w./-]+\.(?:safetensors|sft|ckpt|pt|pth|bin)/g) || []).sort();
  return JSON.stringify([...new Set(listed)].sort()) === JSON.stringify(expectedMissing);
}

function problemsOf(report, expectedMissing = []) {
  const problems = [];
  for (const n of report.nodes) {
    if (!n.known) problems.push(`node type ${n.type} (node ${n.id}) is not registered in the frontend`);
    if (n.broken) problems.push(`node ${n.id} (${n.type}) is flagged broken`);
  }
  const modelsDialogs = report.dialogs.filter(d => isExpectedModelsDialog(d, expectedMissing));
  if (expectedMissing.length && modelsDialogs.length !== 1) {
    problems.push(`expected one missing-models dialog listing ${JSON.stringify(expectedMissing)}`);
  }
  for (const d of report.dialogs) if (!modelsDialogs.includes(d)) problems.push(`dialog: ${d.replace(/\s+/g, ' ').slice(0, 400)}`);
  for (const t of report.toasts) problems.push(`toast: ${t.replace(/\s+/g, ' ').slice(0, 400)}`);
  // The missing-models dialog asks each download URL for the file size; without internet (CI, this sandbox) that
  // request fails with this one console line, which says nothing about the workflow.
  const offlineSizeProbe = c => expectedMissing.length && /Failed to load resource: net::ERR_(NAME_NOT_RESOLVED|INTERNET_DISCONNECTED|CONNECTION_REFUSED)/.test(c);
  for (const c of report.console) if (BAD_CONSOLE.test(c) && !/^(debug|log|info):/.test(c) && !offlineSizeProbe(c)) problems.push(`console ${c.slice(0, 400)}`);
  return problems;
}

// The template browser as a user sees it: every workflow has a card, and clicking one loads it.
async function checkTemplateBrowser(page, pack, names, workflows, out, consoleLines) {
  const problems = [];
  await page.getByText('Templates', { exact: true }).first().click();
  const dialog = page.locator('.p-dialog').first();
  await dialog.getByText(pack, { exact: true }).first().click();
  for (const name of names) {
    try {
      await dialog.locator(`[data-testid="template-workflow-${name}"]`).waitFor({ timeout: 30000 });
    } catch (e) {
      problems.push(`template browser: no card for ${name}`);
    }
  }
  await page.waitForTimeout(1000); // thumbnails
  await page.screenshot({ path: path.join(out, 'templates.png') });
  const chosen = names[names.length - 1];
  const before = consoleLines.length;
  await dialog.locator(`[data-testid="template-workflow-${chosen}"]`).click();
  const expected = workflows[chosen].nodes.map(n => n.type).sort();
  try {
    await page.waitForFunction(types => JSON.stringify(window.app.graph.nodes.map(n => n.type).sort()) ===
      JSON.stringify(types), expected, { timeout: 30000 });
  } catch (e) {
    const got = await page.evaluate(() => window.app.graph.nodes.map(n => n.type).sort());
    problems.push(`template browser: clicking ${chosen} loaded ${JSON.stringify(got)}`);
  }
  await page.waitForTimeout(700);
  const open = await openDialogsAndToasts(page);
  const nodes = await page.evaluate(() => window.app.graph.nodes.map(n => ({
    id: n.id, type: n.type, known: n.type in window.LiteGraph.registered_node_types,
    broken: !!(n.has_errors || n.flags?.is_missing) })));
  const expectedMissing = await missingOnServer(page, declaredModels(workflows[chosen]));
  problems.push(...problemsOf({ nodes, ...open, console: consoleLines.slice(before) }, expectedMissing)
    .map(p => `template browser: ${p}`));
  if (open.dialogs.length) await page.screenshot({ path: path.join(out, 'templates_clicked_dialog.png') });
  return { loadedByClick: chosen, problems };
}

async function main() {
  const args = parseArgs(process.argv);
  fs.mkdirSync(args.out, { recursive: true });
  const base = args.url.replace(/\/$/, '');
  const files = fs.readdirSync(args.workflows).filter(f => f.endsWith('.json')).sort();
  if (!files.length) throw new Error(`no .json workflows in ${args.workflows}`);
  const { chromium } = loadPlaywright();
  const browser = await chromium.launch({
    executablePath: process.env.CFM_CHROMIUM || '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const report = { url: base, frontend: null, pack: null, selfTest: null, workflows: {}, problems: [] };
  try {
    const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
    const consoleLines = [];
    page.on('console', m => consoleLines.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', e => consoleLines.push(`pageerror: ${e}`));
    const started = Date.now();
    await page.goto(base + '/', { waitUntil: 'networkidle', timeout: args.timeout });
    await page.waitForFunction(() => window.app && window.app.graph && window.app.canvas && window.LiteGraph &&
      window.LiteGraph.registered_node_types && Object.keys(window.LiteGraph.registered_node_types).length > 100,
      null, { timeout: args.timeout });
    await page.waitForTimeout(1500); // the fresh-profile "Get Started with a Template" dialog opens after boot
    await closeDialogsAndToasts(page);
    await page.addStyleTag({ content: '.minimap-main-container { display: none !important; }' });
    report.frontend = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ || null);
    report.bootSeconds = (Date.now() - started) / 1000;

    const templates = await page.evaluate(async () => (await fetch('/workflow_templates')).json());
    const names = files.map(f => f.replace(/\.json$/, ''));
    report.pack = Object.keys(templates).find(k => names.every(n => templates[k].includes(n))) || null;
    if (!report.pack) report.problems.push(`GET /workflow_templates does not list all of ${names}: ${JSON.stringify(templates)}`);

    // Self-test: a renamed node type must be reported, or this check would pass by seeing nothing.
    const probe = JSON.parse(fs.readFileSync(path.join(args.workflows, files[0]), 'utf8'));
    const victim = probe.nodes.find(n => n.type !== 'MarkdownNote' && n.type !== 'Note');
    victim.type = 'CFMSelfTestNoSuchNode';
    const self = await loadInFrontend(page, probe, 'self-test.json', consoleLines);
    const selfProblems = problemsOf(self);
    report.selfTest = {
      detected: selfProblems.some(p => p.includes('CFMSelfTestNoSuchNode')) &&
        self.dialogs.some(d => /missing/i.test(d) && d.includes('CFMSelfTestNoSuchNode')),
      dialogs: self.dialogs.map(d => d.replace(/\s+/g, ' ').slice(0, 300)),
    };
    if (!report.selfTest.detected) report.problems.push('self-test: a missing node type was not reported');
    await closeDialogsAndToasts(page);

    // Self-test 2: a declared model file the server lacks must be listed by the missing-models dialog.
    const withModel = files.map(f => JSON.parse(fs.readFileSync(path.join(args.workflows, f), 'utf8')))
      .find(w => declaredModels(w).length);
    if (withModel) {
      const node = withModel.nodes.find(n => n.properties && n.properties.models && n.properties.models.length);
      const fake = 'cfm-selftest-no-such-file.safetensors';
      node.widgets_values = node.widgets_values.map(v => v === node.properties.models[0].name ? fake : v);
      node.properties.models[0].name = fake;
      const expected = await missingOnServer(page, declaredModels(withModel));
      const self2 = await loadInFrontend(page, withModel, 'self-test-models.json', consoleLines);
      report.selfTest.modelsDetected = expected.some(l => l.endsWith(fake)) &&
        self2.dialogs.some(d => isExpectedModelsDialog(d, expected));
      if (!report.selfTest.modelsDetected) report.problems.push(`self-test: the missing model ${fake} was not listed: ${JSON.stringify(self2.dialogs)}`);
      await closeDialogsAndToasts(page);
    }

    for (const file of files) {
      const name = file.replace(/\.json$/, '');
      const fromDisk = JSON.parse(fs.readFileSync(path.join(args.workflows, file), 'utf8'));
      const entry = { problems: [] };
      let workflow = fromDisk;
      if (report.pack) {
        const served = await page.evaluate(async (u) => {
          const r = await fetch(u);
          return { status: r.status, json: r.ok ? await r.json() : null };
        }, `/api/workflow_templates/${encodeURIComponent(report.pack)}/${encodeURIComponent(file)}`);
        if (served.status !== 200) entry.problems.push(`template route answered ${served.status}`);
        else if (JSON.stringify(served.json) !== JSON.stringify(fromDisk)) entry.problems.push('template route serves different JSON');
        else workflow = served.json;
      }
      entry.declaredModels = declaredModels(fromDisk);
      entry.expectedMissing = await missingOnServer(page, entry.declaredModels);
      const loaded = await loadInFrontend(page, workflow, file, consoleLines);
      entry.dialogs = loaded.dialogs.map(d => d.replace(/\s+/g, ' ').slice(0, 400));
      entry.problems.push(...problemsOf(loaded, entry.expectedMissing), ...compareGraphs(fromDisk, loaded.serialized));
      entry.nodes = loaded.nodes.length;
      entry.links = loaded.serialized.links.length;
      if (loaded.dialogs.length) {  // the dialog as the user sees it, then the canvas without it
        entry.dialogScreenshot = path.join(args.out, `${name}_dialog.png`);
        await page.screenshot({ path: entry.dialogScreenshot });
        await closeDialogsAndToasts(page);
      }
      entry.screenshot = path.join(args.out, `${name}.png`);
      await page.screenshot({ path: entry.screenshot });
      report.workflows[name] = entry;
      report.problems.push(...entry.problems.map(p => `${name}: ${p}`));
      await closeDialogsAndToasts(page);
    }
    if (report.pack) {
      const workflows = Object.fromEntries(files.map(f => [f.replace(/\.json$/, ''),
        JSON.parse(fs.readFileSync(path.join(args.workflows, f), 'utf8'))]));
      report.templateBrowser = await checkTemplateBrowser(page, report.pack, names, workflows, args.out, consoleLines);
      report.problems.push(...report.templateBrowser.problems);
    }
  } finally {
    await browser.close();
  }
  report.ok = report.problems.length === 0;
  console.log(JSON.stringify(report, null, 2));
  process.exit(report.ok ? 0 : 1);
}

main().catch(e => { console.error(e && e.stack || String(e)); process.exit(2); });
