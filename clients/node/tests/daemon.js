// Runs the real ffid daemon (the built binary) on a temporary unix socket
// for a test file, with the repository's fixture libraries allowed.
//
// Paths come from the environment (ctest sets them through run.sh), else
// the default build:
//   FFID_BIN                the ffid daemon   (build/default/bin/ffid)
//   FFID_WORKER_BIN         ffid-worker       (beside FFID_BIN)
//   FFID_FIXTURE            libffid_fixture.so (build/default/tests/fixtures/)
//   FFID_CALLBACKS_FIXTURE  libffid_callbacks_fixture.so (beside FFID_FIXTURE)
'use strict';
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..', '..', '..');
const FFID_BIN = process.env.FFID_BIN || path.join(REPO, 'build', 'default', 'bin', 'ffid');
const WORKER_BIN = process.env.FFID_WORKER_BIN || path.join(path.dirname(FFID_BIN), 'ffid-worker');
const FIXTURE = process.env.FFID_FIXTURE ||
  path.join(REPO, 'build', 'default', 'tests', 'fixtures', 'libffid_fixture.so');
const CALLBACKS_FIXTURE = process.env.FFID_CALLBACKS_FIXTURE ||
  path.join(path.dirname(FIXTURE), 'libffid_callbacks_fixture.so');
const SYSTEM_LIBRARY_GLOBS = ['/lib/*', '/lib64/*', '/usr/lib/*', '/usr/lib64/*', '/usr/local/lib/*'];

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Starts ffid; resolves to { address, root, allowedDir, notAllowedDir,
 * log(), stop() }. allowedDir is on the allowlist, notAllowedDir is not.
 * `allowLibrary(dirs)` may return the allowlist's globs (default: the
 * fixtures' directory, allowedDir and the system library directories).
 * `flags` are more command-line flags; `listen` a host:port to listen on
 * instead of a unix socket (`address` is then the one the daemon reports).
 * stop() ends it with SIGTERM and asserts it exited cleanly.
 */
async function startDaemon({ allowLibrary, flags = [], listen } = {}) {
  for (const file of [FFID_BIN, WORKER_BIN, FIXTURE, CALLBACKS_FIXTURE]) {
    assert.ok(fs.existsSync(file), `${file} does not exist: build first (cmake --build --preset default)`);
  }
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ffid-node-test-'));
  const socket = path.join(root, 'ffid.sock');
  const logPath = path.join(root, 'ffid.log');
  const allowedDir = path.join(root, 'allowed');
  const notAllowedDir = path.join(root, 'not-allowed');
  fs.mkdirSync(allowedDir);
  fs.mkdirSync(notAllowedDir);
  const globs = allowLibrary
    ? allowLibrary({ fixtureDir: path.dirname(FIXTURE), allowedDir, notAllowedDir })
    : [`${path.dirname(FIXTURE)}/*`, `${allowedDir}/*`, ...SYSTEM_LIBRARY_GLOBS];
  const argv = ['--listen', listen || `unix:${socket}`, '--worker-path', WORKER_BIN];
  for (const glob of globs) argv.push('--allow-library', glob);
  argv.push(...flags);
  // Sanitized builds: a native crash kills the worker with its real signal,
  // and no LeakSanitizer (a worker's seccomp policy refuses its tracer).
  const asan = process.env.ASAN_OPTIONS;
  const env = {
    ...process.env,
    ASAN_OPTIONS: `${asan ? `${asan}:` : ''}handle_segv=0:handle_sigbus=0:handle_sigfpe=0:detect_leaks=0`,
  };
  const logFd = fs.openSync(logPath, 'w');
  const child = spawn(FFID_BIN, argv, { stdio: ['ignore', logFd, logFd], env });
  fs.closeSync(logFd);
  let exited = null;
  const exit = new Promise((resolve) => child.on('exit', (code, signal) => {
    exited = { code, signal };
    resolve(exited);
  }));
  const log = () => fs.readFileSync(logPath, 'utf8');
  const deadline = Date.now() + 30000;
  const listening = () => /ffid: listening on (\S+)\n/.exec(log());
  while (!((listen || fs.existsSync(socket)) && listening())) {
    if (exited || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`ffid did not start (${FFID_BIN} ${argv.join(' ')}); its log:\n${log()}`);
    }
    await sleep(10);
  }
  return {
    address: listen ? listening()[1] : `unix:${socket}`,
    root,
    allowedDir,
    notAllowedDir,
    log,
    async stop() {
      if (!exited) child.kill('SIGTERM');
      const status = await exit;
      const text = log();
      fs.rmSync(root, { recursive: true, force: true });
      assert.deepEqual(status, { code: 0, signal: null }, `ffid did not exit cleanly; its log:\n${text}`);
    },
  };
}

/**
 * For a test file: one daemon and one session for all its tests, started
 * before them (then `ready(session, daemon)` runs) and ended after them.
 */
function sessionForFile(ready) {
  const { before, after } = require('node:test');
  const ffid = require('..');
  let daemon;
  let session;
  before(async () => {
    daemon = await startDaemon();
    session = await ffid.connect(daemon.address);
    await ready(session, daemon);
  });
  after(async () => {
    if (session) await session.close();
    if (daemon) await daemon.stop();
  });
}

module.exports = { startDaemon, sessionForFile, FIXTURE, CALLBACKS_FIXTURE, REPO };
