// Calls through a real daemon: the first call, scalars, strings, structs,
// enums, variadic functions, out-parameters, errno.
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
});

test('the first call: cos in libm', async () => {
  const libm = await s.load('libm.so.6');
  await libm.cdef('double cos(double);');
  // libm's result (V8's Math.cos may differ from it in the last bit).
  assert.equal(await libm.cos(0.5), 0.8775825618903728);
  assert.match(libm.path, /libm/);
});

test('a call waits for a cdef that was not awaited', async () => {
  const libm = await s.load('libm.so.6');
  libm.cdef('double sqrt(double);');
  assert.equal(await libm.sqrt(2), Math.SQRT2);
});

test('integers: widths, signs and 64-bit limits', async () => {
  await s.cdef(`
    int8_t fx_int8_id(int8_t); uint8_t fx_uint8_max(void); int fx_add(int, int);
    int64_t fx_int64_min(void); int64_t fx_int64_max(void); uint64_t fx_uint64_max(void);
    uint64_t fx_uint64_id(uint64_t); int64_t fx_int64_id(int64_t); int64_t fx_int8_widen(int8_t);`);
  assert.equal(await fx.fx_add(2, 3), 5);
  assert.equal(await fx.fx_add(-7, 2), -5);
  assert.equal(await fx.fx_int8_id(-128), -128);
  assert.equal(await fx.fx_uint8_max(), 255);
  assert.equal(await fx.fx_int8_widen(-1), -1);
  assert.equal(await fx.fx_int64_min(), -(2n ** 63n));
  assert.equal(await fx.fx_int64_max(), 2n ** 63n - 1n);
  assert.equal(await fx.fx_uint64_max(), 2n ** 64n - 1n);
  assert.equal(await fx.fx_uint64_id(2n ** 64n - 2n), 2n ** 64n - 2n);
  assert.equal(await fx.fx_int64_id(2 ** 40), 2 ** 40);
  await assert.rejects(fx.fx_int8_id(128), ffid.ValueOutOfRange);
  await assert.rejects(fx.fx_uint64_id(2n ** 64n), ffid.ValueOutOfRange);
});

test('floating point and bool', async () => {
  await s.cdef(`
    float fx_float_third(void); double fx_double_add(double, double); double fx_double_nan(void);
    double fx_double_neg_inf(void); double fx_double_neg_zero(void); bool fx_bool_not(bool);
    int fx_bool_to_int(bool); long double fxt_long_double_half(long double);`);
  assert.equal(await fx.fx_float_third(), Math.fround(1 / 3));
  assert.equal(await fx.fx_double_add(0.25, 2), 2.25);
  assert.ok(Number.isNaN(await fx.fx_double_nan()));
  assert.equal(await fx.fx_double_neg_inf(), -Infinity);
  assert.ok(Object.is(await fx.fx_double_neg_zero(), -0));
  assert.equal(await fx.fx_bool_not(false), true);
  assert.equal(await fx.fx_bool_to_int(true), 1);
  const half = await fx.fxt_long_double_half(5);
  assert.equal(Number(half), 2.5);
  assert.equal(half.decimal, '2.5');
  await assert.rejects(fx.fx_double_add('x', 1), ffid.TypeMismatch);
});

test('strings: UTF-8 in and out, NULL, bytes', async () => {
  await s.cdef(`
    size_t fx_strlen(const char *); const char *fx_greeting(void); const char *fx_null_string(void);
    int fx_string_is_null(const char *); size_t fx_utf8_count(const char *);`);
  assert.equal(await fx.fx_greeting(), 'h\u00e9llo w\u00f6rld \u2713');
  assert.equal(await fx.fx_strlen('h\u00e9llo'), 6);
  assert.equal(await fx.fx_utf8_count('h\u00e9llo'), 5);
  assert.equal(await fx.fx_strlen(Buffer.from([0x61, 0xff, 0x62])), 3);
  assert.equal(await fx.fx_null_string(), null);
  assert.equal(await fx.fx_string_is_null(null), 1);
});

test('structs by value, as objects or arrays; typedefs; enums', async () => {
  await s.cdef(`
    struct fxt_point { int x; int y; };
    typedef struct fxt_point fxt_point_t;
    struct fxt_point fxt_point_add(struct fxt_point a, struct fxt_point b);
    fxt_point_t fxt_point_scale(fxt_point_t p, int k);
    enum fxt_color { FXT_RED = 1, FXT_GREEN = 2, FXT_BLUE = 4 };
    enum fxt_color fxt_color_next(enum fxt_color c);`);
  assert.deepEqual(await fx.fxt_point_add({ x: 1, y: 2 }, [10, 20]), { x: 11, y: 22 });
  assert.deepEqual(await fx.fxt_point_scale({ y: 3, x: 2 }, 5), { x: 10, y: 15 });
  assert.equal(await fx.fxt_color_next('FXT_RED'), 'FXT_GREEN');
  await assert.rejects(fx.fxt_point_add([1, 2, 3], [0, 0]), ffid.TypeMismatch);
});

test('variadic functions: promotions and ffid.cast', async () => {
  await s.cdef('int fx_sum_variadic(int n, ...); double fx_sum_variadic_doubles(int n, ...);');
  assert.equal(await fx.fx_sum_variadic(3, 1, 2, 3), 6);
  assert.equal(await fx.fx_sum_variadic_doubles(2, 0.5, ffid.cast('double', 2)), 2.5);
  const libc = await s.load('libc.so.6');
  const snprintf = await libc.function('int snprintf(char *, size_t, const char *, ...)');
  const buf = await s.alloc(32);
  assert.equal(await snprintf(buf, 32, '%d-%s-%.1f', 42, 'x', 1.5), 8);
  assert.equal((await buf.read(8)).toString(), '42-x-1.5');
});

test('out-parameters and in-out parameters', async () => {
  const libm = await s.load('libm.so.6');
  const frexp = await libm.function('double frexp(double x, int *exp)', { out: ['exp'] });
  assert.deepEqual(await frexp(8), [0.5, 4]);
  const libc = await s.load('libc.so.6');
  const strtol = await libc.function('long strtol(const char *, char **end, int)', { out: ['end'] });
  assert.deepEqual(await strtol('123abc', 10), [123, 'abc']);
});

test('errno is captured on request', async () => {
  const set = await fx.function('int fx_set_errno(int)', { useErrno: true });
  await set(42);
  assert.equal(s.errno, 42);
  const again = await fx.function('int fx_set_errno(int)');
  await again.invoke([7], { errno: true });
  assert.equal(s.errno, 7);
});

test('argument count and undeclared functions are refused before any native code runs', async () => {
  const add = await fx.function('int fx_add(int a, int b)');
  await assert.rejects(add(1), (e) => e instanceof ffid.ArgumentCount && /takes 2 arguments, got 1/.test(e.message));
  await assert.rejects(add(1, 2, 3), ffid.ArgumentCount);
  await assert.rejects(fx.not_declared_anywhere(1), /is not declared/);
  assert.equal(add.symbol, 'fx_add');
  assert.equal(typeof add.address, 'bigint');
});

test('callAsync: many calls in flight on the Connect stream, run in the order sent', async () => {
  const add = await fx.function('int fx_add(int, int)');
  const counter = await fx.function('int fx_counter(void)');
  const sums = await Promise.all(Array.from({ length: 100 }, (_, i) => add.callAsync(i, 1)));
  assert.deepEqual(sums, Array.from({ length: 100 }, (_, i) => i + 1));
  const counts = await Promise.all(Array.from({ length: 20 }, () => counter.callAsync()));
  counts.forEach((count, i) => assert.equal(count, counts[0] + i));
  await assert.rejects(add.callAsync(1), ffid.ArgumentCount);
  // Refused by the daemon: the error comes back in the StreamResult.
  await assert.rejects(add.callAsync('x', 1), (e) => e instanceof ffid.TypeMismatch && /parameter 1/.test(e.message));
});

test('unions by value: an object with one member in; out every member and the bytes (and back in)', async () => {
  await s.cdef(`
    union fxt_number { int i; float f; double d; };
    union fxt_tagged { int i; float f; const char *s; unsigned char bytes[8]; };
    union fxt_number fxt_number_from_float(float f);
    double fxt_number_as_double(union fxt_number n, int which);
    union fxt_tagged fxt_tagged_from_int(int i);`);
  const number = await fx.fxt_number_from_float(1.5);
  assert.ok(number instanceof ffid.UnionValue);
  assert.equal(number.members.f, 1.5);
  assert.equal(number.members.i, 0x3fc00000);
  assert.ok(Buffer.isBuffer(number.bytes));
  assert.equal(number.bytes.length, 8);
  assert.equal(number.bytes.readFloatLE(0), 1.5);
  assert.equal(await fx.fxt_number_as_double(number, 1), 1.5); // as it came: its bytes
  assert.equal(await fx.fxt_number_as_double(number.bytes, 1), 1.5);
  assert.equal(await fx.fxt_number_as_double({ d: 0.25 }, 2), 0.25);
  const tagged = await fx.fxt_tagged_from_int(65);
  assert.equal(tagged.members.i, 65);
  assert.equal(Number(tagged.members.s.address), 65); // a char * member: its address, not followed
});

test('long double results keep every bit: exact decimal, nearest double, bytes', async () => {
  await s.cdef('long double fxt_long_double_third(long double x);');
  const third = await fx.fxt_long_double_third(1);
  assert.ok(third instanceof ffid.LongDouble);
  assert.equal(third.decimal, '0.33333333333333333334');
  assert.equal(String(third), '0.33333333333333333334');
  assert.equal(third.approximate, 1 / 3);
  assert.equal(third * 3, 1); // acts as its nearest double
  assert.equal(third.bytes.length, 16);
  const ninth = await fx.fxt_long_double_third(third); // passed back: nothing lost
  assert.ok(ninth.decimal.startsWith('0.1111111111111111111'), ninth.decimal);
});
