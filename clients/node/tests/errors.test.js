// Errors as classes per reason (instanceof works), crashes, deadlines and
// sessions, against a real daemon.
'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { test, before, after } = require('node:test');
const ffid = require('..');
const { startDaemon, FIXTURE } = require('./daemon');

let daemon;
before(async () => {
  daemon = await startDaemon();
});
after(async () => {
  if (daemon) await daemon.stop();
});

async function withSession(options, body) {
  const s = await ffid.connect(daemon.address, options);
  try {
    return await body(s);
  } finally {
    await s.close();
  }
}

test('one class per reason, all FfidErrors', () => {
  for (const [reason, cls] of Object.entries(ffid.ERROR_CLASSES)) {
    const error = new cls('x');
    assert.ok(error instanceof ffid.FfidError && error instanceof Error);
    assert.equal(error.reason, reason);
    assert.equal(error.name, cls.name);
  }
  // The 22 of the core and the 6 of access control (UNAUTHENTICATED, ...).
  assert.equal(Object.keys(ffid.ERROR_CLASSES).length, 28);
});

test('libraries: not found, not allowed', () =>
  withSession({}, async (s) => {
    await assert.rejects(s.load('libdoesnotexist.so.9'), ffid.LibraryNotFound);
    const outside = path.join(daemon.notAllowedDir, 'libcopy.so');
    fs.copyFileSync(FIXTURE, outside);
    const error = await s.load(outside).then(() => null, (e) => e);
    assert.ok(error instanceof ffid.LibraryNotAllowed, String(error));
    assert.equal(error.reason, 'LIBRARY_NOT_ALLOWED');
    assert.equal(error.code, 7); // PERMISSION_DENIED
    assert.match(error.detail, /libcopy/);
  }));

test('symbols, declarations, types', () =>
  withSession({}, async (s) => {
    const fx = await s.load(FIXTURE);
    await assert.rejects(fx.function('int nope_not_here(int)'), ffid.SymbolNotFound);
    await assert.rejects(s.cdef('int broken(;'), ffid.DeclarationInvalid);
    await assert.rejects(s.callback('not a signature', () => 0), ffid.DeclarationInvalid);
    const add = await fx.function('int fx_add(int, int)');
    await assert.rejects(add({ a: 1 }, 2), ffid.TypeMismatch);
    await assert.rejects(add(2 ** 40, 2), ffid.ValueOutOfRange);
    await assert.rejects(add(1), ffid.ArgumentCount);
    await assert.rejects(add(Symbol('x'), 1), ffid.TypeMismatch);
  }));

test('a crash rejects with WorkerCrashed and its report; the daemon and other sessions go on', () =>
  withSession({}, async (other) =>
    withSession({}, async (s) => {
      const fx = await s.load(FIXTURE);
      const crash = await fx.function('void fx_crash_null(void)');
      const error = await crash().then(() => null, (e) => e);
      assert.ok(error instanceof ffid.WorkerCrashed, String(error));
      assert.equal(error.crashReport.signal_name, 'SIGSEGV');
      assert.equal(error.crashReport.function, 'fx_crash_null');
      assert.equal((await s.info()).state, 'SESSION_STATE_CRASHED');
      await assert.rejects(fx.function('int fx_add(int, int)'), ffid.WorkerCrashed);
      const libm = await other.load('libm.so.6');
      await libm.cdef('double cos(double);');
      assert.equal(await libm.cos(0), 1);
    })));

test('restartPolicy "restart": a new worker under the same handles', () =>
  withSession({ restartPolicy: 'restart' }, async (s) => {
    const fx = await s.load(FIXTURE);
    const abort = await fx.function('void fx_abort(void)');
    const add = await fx.function('int fx_add(int, int)');
    await assert.rejects(abort(), ffid.WorkerCrashed);
    assert.equal(await add(2, 2), 4);
    const info = await s.info();
    assert.equal(info.restarts, 1);
    assert.equal(info.restart_policy, 'RESTART_POLICY_RESTART');
  }));

test('a timeout rejects with DeadlineExceeded and says what it means', () =>
  withSession({}, async (s) => {
    const fx = await s.load(FIXTURE);
    const sleep = await fx.function('void fx_sleep_ms(int)');
    const error = await sleep.invoke([5000], { timeout: 0.3 }).then(() => null, (e) => e);
    assert.ok(error instanceof ffid.DeadlineExceeded, String(error));
    // The daemon's own message (it killed the worker) or, when gRPC's
    // deadline fires first, the client's: both say the session is over.
    assert.match(error.message, /deadline|timeout/i);
    assert.match(error.message, /new (one|session)/);
  }));

test('session limits above the server maximum are refused with ResourceLimit', async () => {
  const error = await ffid.connect(daemon.address, { cpuSeconds: 2 ** 50 }).then(
    async (s) => {
      await s.close();
      return null;
    },
    (e) => e,
  );
  // The daemon caps limits at its maximum; without a maximum it accepts.
  if (error !== null) assert.ok(error instanceof ffid.ResourceLimit, String(error));
});

test('handles of another session are invalid', () =>
  withSession({}, async (a) =>
    withSession({}, async (b) => {
      const buf = await a.alloc(8);
      const foreign = new ffid.Memory(b, buf.handle, 8, buf.address, undefined, false);
      await assert.rejects(foreign.read(1), ffid.HandleInvalid);
    })));

test('a closed session, an unreachable daemon, unknown options', async () => {
  const s = await ffid.connect(daemon.address);
  await s.close();
  assert.ok(s.closed);
  await assert.rejects(s.load('libm.so.6'), ffid.SessionNotFound);
  await assert.rejects(ffid.connect(`unix:${daemon.root}/no.sock`), (e) =>
    e instanceof ffid.Unavailable && /does not exist/.test(e.message));
  await assert.rejects(ffid.connect(daemon.address, { noSuchOption: 1 }), TypeError);
  const disposed = await ffid.connect(daemon.address);
  await disposed[Symbol.asyncDispose](); // what `await using` calls
  assert.ok(disposed.closed);
});

test('info and serverInfo describe the session and the server', () =>
  withSession({ idleTimeout: 30 }, async (s) => {
    const info = await s.info();
    assert.equal(info.id, s.id);
    assert.equal(info.state, 'SESSION_STATE_ACTIVE');
    assert.equal(info.idle_timeout.seconds, '30');
    assert.ok(s.workerPid > 0);
    const server = await s.serverInfo();
    assert.equal(typeof server.network_allowed, 'boolean');
  }));
