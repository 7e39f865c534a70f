// Callbacks through a real daemon: JavaScript functions as C function
// pointers, invoked over the session's Connect stream.
'use strict';
const assert = require('node:assert/strict');
const { test } = require('node:test');
const ffid = require('..');
const { sessionForFile, CALLBACKS_FIXTURE } = require('./daemon');

let s;
let cb;
sessionForFile(async (session) => {
  s = session;
  cb = await s.load(CALLBACKS_FIXTURE);
  await s.cdef(`
    struct fxc_vec { float x; float y; double weight; };
    int fxc_sort(void *base, size_t count, size_t size, int (*compare)(const void *, const void *));
    double fxc_apply_vec(double (*f)(struct fxc_vec, float, double), float x, float y, double weight);
    long fxc_threads_call(int (*f)(int, int), int threads, int per_thread);
    int fxc_nest(int (*f)(int), int depth);
    int fxc_fill(void (*fill)(int *out, int value), int value);
    int fxc_call_once(int (*f)(int), int x);`);
});

test('qsort-style sort with a comparator that reads the native array', async () => {
  const arr = await s.new('int[5]', [5, -3, 9, 0, 2]);
  const compare = await s.callback('int(const void *, const void *)', async (a, b) => {
    const [x, y] = [await a.readValue('int'), await b.readValue('int')];
    return x - y;
  });
  assert.ok((await cb.fxc_sort(arr, 5, 4, compare)) > 0);
  assert.deepEqual(await arr.readValue(), [-3, 0, 2, 5, 9]);
});

test('structs and floats by value; a plain (not async) function', async () => {
  const f = await s.callback('double(struct fxc_vec v, float k, double w)', (v, k, w) => (v.x + v.y) * k + v.weight * w);
  assert.equal(await cb.fxc_apply_vec(f, 1.5, 2.5, 4), (1.5 + 2.5) * 2 + 4 * 0.5);
});

test('callbacks from threads the library started', async () => {
  const seen = new Set();
  const native = new Set();
  const f = await s.callback('int(int thread, int i)', (thread, i) => {
    seen.add(thread);
    native.add(s.currentInvocation().nativeThreadId);
    return thread * 100 + i;
  });
  // 4 threads x 5 calls: sum of thread*100 + i.
  assert.equal(await cb.fxc_threads_call(f, 4, 5), (0 + 1 + 2 + 3) * 100 * 5 + 4 * (0 + 1 + 2 + 3 + 4));
  assert.deepEqual([...seen].sort(), [0, 1, 2, 3]);
  assert.equal(native.size, 4);
  assert.equal(s.currentInvocation(), undefined);
});

test('nesting: a callback calls back into the library', async () => {
  let nest;
  const f = await s.callback('int(int)', async (depth) => (depth > 0 ? nest(f, depth - 1) : 100));
  nest = await cb.resolve('fxc_nest');
  assert.equal(await cb.fxc_nest(f, 3), 104);
});

test('a callback writes through a pointer native code passed', async () => {
  const fill = await s.callback('void(int *out, int value)', async (out, value) => {
    await out.writeValue(value * 2, 'int');
  });
  assert.equal(await cb.fxc_fill(fill, 21), 42);
});

test('a callback that throws: the native call rejects with CallbackFailed, caused by the exception', async () => {
  const boom = new RangeError('no such thing');
  const f = await s.callback('int(int)', () => {
    throw boom;
  }, { default: -1 });
  const error = await cb.fxc_call_once(f, 1).then(() => null, (e) => e);
  assert.ok(error instanceof ffid.CallbackFailed, String(error));
  assert.equal(error.cause, boom);
  assert.match(error.message, /RangeError: no such thing/);
  // The session goes on.
  const g = await s.callback('int(int)', (x) => x + 1);
  assert.equal(await cb.fxc_call_once(g, 1), 2);
});

test('a released callback fails instead of crashing the worker', async () => {
  const f = await s.callback('int(int)', (x) => x);
  await f.release();
  await assert.rejects(cb.fxc_call_once(f, 1), ffid.FfidError);
});

test('loading inside a callback is refused: resolve functions before the call', async () => {
  let inner;
  const f = await s.callback('int(int)', async () => {
    inner = await s.load('libm.so.6').then(() => null, (e) => e);
    return 0;
  });
  await cb.fxc_call_once(f, 1);
  assert.ok(inner instanceof ffid.Unsupported, String(inner));
});
