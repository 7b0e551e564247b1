// The headless-browser harness of yjs-browser.mjs and pusher-browser.mjs: bundle a page script
// with esbuild into a temp dir, serve it from a throwaway HTTP server on 127.0.0.1, and drive it
// in headless Chromium (/usr/bin/chromium, or $CHROMIUM) through playwright-core.
//
// A script uses it in this order (each step under its own `phase`, so a failure names it):
//   const server = await servePage({ entry, tmpPrefix, html, routes, log });   // bundle + serve
//   browser = await launchChromium(timeoutMs);
//   const page = await openPage(browser, { viewport, problems, log });
//   await page.goto(`http://127.0.0.1:${server.address().port}/?...`);
//   ...
//   await closeBrowser(browser, 5000); server.close();
// The temp dirs go when the process exits; Chromium itself is killed by playwright's own exit
// handler, so a script may also end (finish) without closing anything.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { chromium } from 'playwright-core';
import { sleep } from './common.mjs';

/** This folder: page entries are resolved against it. */
const HERE = path.dirname(fileURLToPath(import.meta.url));

export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const CHROME_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

// The temp dirs of the bundles, removed when the process exits (finish() exits the process).
const tmpDirs = new Set();
process.on('exit', () => {
  for (const dir of tmpDirs) rmSync(dir, { recursive: true, force: true });
  tmpDirs.clear();
});

/**
 * Bundles the page script `entry` (a file of this folder, with its npm imports) for the browser
 * into bundle.js of a new temp dir `<tmp>/<tmpPrefix>XXXXXX`; resolves to the bundle's bytes.
 */
async function bundlePage(entry, tmpPrefix) {
  const dir = mkdtempSync(path.join(os.tmpdir(), tmpPrefix));
  tmpDirs.add(dir);
  const outfile = path.join(dir, 'bundle.js');
  await esbuild.build({
    entryPoints: [path.join(HERE, entry)],
    bundle: true,
    format: 'iife',
    platform: 'browser',
    target: 'es2020',
    outfile,
    logLevel: 'silent',
  });
  return readFileSync(outfile);
}

/**
 * Bundles `entry` (see bundlePage) and serves it on 127.0.0.1 (a free port): `html` at /, the
 * bundle at /bundle.js (`html` loads it with <script src="/bundle.js">), an empty 204 at
 * /favicon.ico and 404 elsewhere. `routes` maps 'METHOD /path' (e.g. 'POST /pusher/auth') to a
 * handler(req, res), tried first. Resolves to the listening http.Server.
 */
export async function servePage({ entry, tmpPrefix, html, routes = {}, log = () => {} }) {
  const bundle = await bundlePage(entry, tmpPrefix);
  const server = http.createServer((req, res) => {
    const p = new URL(req.url, 'http://x').pathname;
    const route = routes[`${req.method} ${p}`];
    if (route) {
      route(req, res);
    } else if (p === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(html);
    } else if (p === '/bundle.js') {
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'no-store' });
      res.end(bundle);
    } else if (p === '/favicon.ico') {
      res.writeHead(204); // no icon, and no 404 in the page's console
      res.end();
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found');
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  log(`page bundle ${bundle.length} bytes, served on 127.0.0.1:${server.address().port}`);
  return server;
}

/** Launches headless Chromium (CHROMIUM, CHROME_ARGS) within `timeout` ms. */
export function launchChromium(timeout) {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROME_ARGS, timeout });
}

/**
 * Opens a page of `browser` with the given viewport. Its uncaught exceptions ("pageerror: ...")
 * and console errors and warnings ("console.error: ...") are appended to `problems` (for the
 * failure report) and logged.
 */
export async function openPage(browser, { viewport, problems, log = () => {} }) {
  const page = await browser.newPage({ viewport });
  page.on('pageerror', (e) => {
    problems.push(`pageerror: ${e.message}`);
    log(`page error: ${e.message}`);
  });
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') {
      problems.push(`console.${m.type()}: ${m.text()}`);
      log(`page console.${m.type()}: ${m.text()}`);
    }
  });
  return page;
}

/**
 * Closes the browser, waiting at most `ms` (playwright kills Chromium at exit anyway). Rejects
 * when browser.close() does; a failure path should add .catch(() => {}).
 */
export function closeBrowser(browser, ms) {
  return Promise.race([browser.close(), sleep(ms)]);
}
