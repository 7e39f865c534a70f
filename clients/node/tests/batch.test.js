// Batches (one round trip, results referenced before they exist) and
// pipelined calls, against a real daemon.
'use strict';
const assert = require('node:assert/strict');
const { test } = require('node:test');
const ffid = require('..');
const { sessionForFile, FIXTURE } = require('./daemon');

let s;
let fx;
let libc;
sessionForFile(async (session) => {
  s = session;
  fx = await s.load(FIXTURE);
  libc = await s.load('libc.so.6');
  await s.cdef(`
    struct fxt_point { int x; int y; };
    struct fxt_point fxt_point_add(struct fxt_point a, struct fxt_point b);
    int fx_add(int, int); int fx_sum_ints(const int *values, size_t count); int fx_read_int(const int *p);
    int8_t fx_int8_id(int8_t);
    void *malloc(size_t); void *memset(void *, int, size_t); void free(void *);`);
});

test('malloc, memset, read and free in one round trip', async () => {
  const [malloc, memset, free] = await Promise.all(['malloc', 'memset', 'free'].map((n) => libc.resolve(n)));
  const b = s.batch();
  const p = b.call(malloc, 64);
  b.call(memset, p, 0x41, 64).discard();
  const bytes = b.read(p.add(60), 4);
  b.call(free, p);
  assert.equal(b.length, 4);
  const values = await b.run();
  assert.equal(values.length, 4);
  assert.ok(p.value instanceof ffid.Pointer);
  assert.equal(values[1], null);
  assert.equal(bytes.value.toString(), 'AAAA');
  assert.throws(() => b.call(free, p), /ran already/);
});

test('members of a result, owned memory, offsets and loads', async () => {
  const [add, pointAdd, sum, readInt] = await Promise.all(
    ['fx_add', 'fxt_point_add', 'fx_sum_ints', 'fx_read_int'].map((n) => fx.resolve(n)));
  const int = await s.typeof('int');
  const b = s.batch();
  const point = b.call(pointAdd, { x: 1, y: 2 }, { x: 3, y: 4 });
  const total = b.call(add, point.field('x'), point.field('y'));
  const m = b.alloc(8);
  b.write(m, Buffer.from([5, 0, 0, 0, 7, 0, 0, 0]));
  const summed = b.call(sum, m, 2);
  const second = b.call(readInt, m.add(4));
  const loaded = b.call(add, m.load(int), 100);
  const [, , memory] = await b.run();
  assert.deepEqual(point.value, { x: 4, y: 6 });
  assert.equal(total.value, 10);
  assert.ok(memory instanceof ffid.Memory);
  assert.equal(memory.size, 8);
  assert.equal((await memory.read()).readInt32LE(4), 7);
  assert.equal(summed.value, 12);
  assert.equal(second.value, 7);
  assert.equal(loaded.value, 105);
  const freeing = s.batch();
  freeing.free(memory);
  await freeing.run();
  await assert.rejects(memory.read(1), ffid.HandleInvalid);
});

test('a failing step stops the batch and is named; the steps before it stay done', async () => {
  const [add, id] = await Promise.all(['fx_add', 'fx_int8_id'].map((n) => fx.resolve(n)));
  const b = s.batch();
  const m = b.alloc(4);
  b.call(add, 1, 2);
  b.call(id, 300);
  b.call(add, 3, 4);
  const error = await b.run().then(() => null, (e) => e);
  assert.ok(error instanceof ffid.ValueOutOfRange, String(error));
  assert.equal(error.batchStep, 2);
  assert.throws(() => m.value, /has not run/);
  const other = s.batch();
  assert.throws(() => other.call(add, m, 1), /another batch/);
});
