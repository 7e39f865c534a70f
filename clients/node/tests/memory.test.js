// Memory handles through a real daemon: owned and typed memory, borrowed
// pointers, bounds checks, adoption, ownership of results, globals.
'use strict';
const assert = require('node:assert/strict');
const { test } = require('node:test');
const ffid = require('..');
const { sessionForFile, FIXTURE } = require('./daemon');

let s;
let fx;
sessionForFile(async (session) => {
  s = session;
  fx = await s.load(FIXTURE);
  await s.cdef(`
    struct fxt_point { int x; int y; };
    int fx_sum_ints(const int *values, size_t count);
    void fx_fill(unsigned char *buffer, size_t size, int value);
    int *fx_static_ints(void);
    int fx_read_int(const int *p);
    extern struct fxt_point fxt_origin;`);
});

test('alloc, write, read, and native code writing into it', async () => {
  const buf = await s.alloc(16);
  assert.equal(buf.size, 16);
  assert.deepEqual(await buf.read(), Buffer.alloc(16));
  await buf.write(Buffer.from('hello'));
  assert.equal((await buf.read(5)).toString(), 'hello');
  await fx.fx_fill(buf.add(8), 4, 0x41);
  assert.equal((await buf.read(4, 8)).toString(), 'AAAA');
  const copy = await s.alloc(Buffer.from('abc'));
  assert.equal(copy.size, 3);
  assert.equal((await copy.read()).toString(), 'abc');
  assert.equal(typeof buf.address, 'bigint');
  assert.equal(buf.add(8).address, buf.address + 8n);
});

test('every access to owned memory is bounds-checked', async () => {
  const buf = await s.alloc(8);
  await assert.rejects(buf.read(8, 4), ffid.OutOfBounds);
  await assert.rejects(buf.write(Buffer.alloc(9)), ffid.OutOfBounds);
});

test('typed memory: new, readValue, writeValue, arrays as pointer arguments', async () => {
  const pt = await s.new('struct fxt_point', { x: 1, y: 2 });
  assert.deepEqual(await pt.readValue(), { x: 1, y: 2 });
  await pt.writeValue([3, 4]);
  assert.deepEqual(await pt.readValue(), { x: 3, y: 4 });
  const ints = await s.new('int[4]', [1, 2, 3, 4]);
  assert.equal(await fx.fx_sum_ints(ints, 4), 10);
  const many = await s.new('struct fxt_point', undefined, { count: 3 });
  assert.equal(many.size, 24);
  assert.deepEqual(await many.readValue(), [{ x: 0, y: 0 }, { x: 0, y: 0 }, { x: 0, y: 0 }]);
  await ints.add(4).writeValue(20, 'int');
  assert.equal(await ints.add(4).readValue('int'), 20);
  await assert.rejects(ints.add(1).readValue('int'), ffid.MisalignedAccess);
});

test('borrowed pointers: read with a length, a bad address is an error', async () => {
  const p = await fx.fx_static_ints();
  assert.ok(p instanceof ffid.Pointer);
  assert.equal((await p.read(4)).length, 4);
  assert.equal(await fx.fx_read_int(p), (await p.read(4)).readInt32LE(0));
  const bad = await fx.fx_static_ints();
  const nowhere = new ffid.Pointer(s, '', 0, 16n);
  await assert.rejects(nowhere.read(4), ffid.BadAddress);
  assert.ok(bad.address > 0n);
});

test('freed memory is invalid', async () => {
  const buf = await s.alloc(4);
  await buf.free();
  await assert.rejects(buf.read(1), ffid.HandleInvalid);
  await assert.rejects(buf.free(), ffid.HandleInvalid);
});

test('result ownership: release copies the string and frees it; adopt makes it owned', async () => {
  const dup = await fx.function('char *fxt_strdup(const char *)', { result: 'release' });
  assert.equal(await dup('text'), 'text');
  const adopted = await fx.function('char *fxt_strdup(const char *)', { result: 'adopt' });
  const owned = await adopted('kept');
  assert.ok(owned instanceof ffid.Memory);
  assert.equal(owned.text, 'kept');
  assert.equal((await owned.read(4)).toString(), 'kept');
  await owned.free();
  const create = await fx.function('void *fxt_object_new(int)');
  const object = await create(7);
  const mine = await s.adopt(object, 'fxt_object_release', { library: fx, size: 4 });
  assert.equal(await mine.readValue('int'), 7);
  await assert.rejects(mine.read(8), ffid.OutOfBounds);
  await mine.free();
});

test('global variables', async () => {
  const origin = await fx.variable('fxt_origin');
  assert.deepEqual(await origin.readValue(), { x: 3, y: -4 });
  await origin.writeValue({ x: 5, y: 6 });
  assert.deepEqual(await (await fx.variable('fxt_origin', 'struct fxt_point')).readValue(), { x: 5, y: 6 });
});
