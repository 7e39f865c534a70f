// The shared conformance list (tests/conformance/scenarios.json, format in
// tests/conformance/README.md) run with the Node client's API: one test per
// scenario, each in a new session of one daemon started as the file says.
'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { test, before, after } = require('node:test');
const ffid = require('..');
const { startDaemon, FIXTURE, CALLBACKS_FIXTURE, REPO } = require('./daemon');

const SCENARIOS = process.env.FFID_CONFORMANCE ||
  path.join(REPO, 'tests', 'conformance', 'scenarios.json');
const FORMAT = 1;

const list = fs.existsSync(SCENARIOS) ? JSON.parse(fs.readFileSync(SCENARIOS, 'utf8')) : null;

let daemon;
let places;

// Placeholders in every string of the file.
function fill(value) {
  if (typeof value === 'string') {
    return value
      .replaceAll('{fixture_dir}', path.dirname(FIXTURE))
      .replaceAll('{fixture}', FIXTURE)
      .replaceAll('{callbacks_fixture}', CALLBACKS_FIXTURE)
      .replaceAll('{allowed_dir}', places.allowedDir)
      .replaceAll('{not_allowed_dir}', places.notAllowedDir);
  }
  if (Array.isArray(value)) return value.map(fill);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, fill(v)]));
  }
  return value;
}

const SPECIAL_DOUBLES = { nan: NaN, inf: Infinity, '-inf': -Infinity, '-0': -0 };

// A JSON value of the file -> what the Node API takes.
function toJs(value, refs) {
  if (Array.isArray(value)) return value.map((v) => toJs(v, refs));
  if (value && typeof value === 'object') {
    if ('$int' in value) return BigInt(value.$int);
    if ('$double' in value) return SPECIAL_DOUBLES[value.$double];
    if ('$ref' in value) {
      assert.ok(value.$ref in refs, `no ${value.$ref} bound in this scenario`);
      return refs[value.$ref];
    }
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toJs(v, refs)]));
  }
  return value;
}

// Compares a result with an expected JSON value as the format says.
function check(actual, expected, where) {
  if (expected === null) {
    assert.equal(actual, null, `${where}: expected NULL/void`);
  } else if (Array.isArray(expected)) {
    assert.ok(Array.isArray(actual), `${where}: expected an array, got ${String(actual)}`);
    assert.equal(actual.length, expected.length, `${where}: length`);
    expected.forEach((e, i) => check(actual[i], e, `${where}[${i}]`));
  } else if (typeof expected === 'object' && '$int' in expected) {
    assert.equal(BigInt(actual), BigInt(expected.$int), where);
  } else if (typeof expected === 'object' && '$double' in expected) {
    assert.ok(Object.is(actual, SPECIAL_DOUBLES[expected.$double]), `${where}: expected ${expected.$double}, got ${actual}`);
  } else if (typeof expected === 'object') {
    assert.ok(actual && typeof actual === 'object', `${where}: expected a struct, got ${String(actual)}`);
    for (const [name, value] of Object.entries(expected)) check(actual[name], value, `${where}.${name}`);
  } else if (typeof expected === 'number' && Number.isInteger(expected) && typeof actual === 'bigint') {
    assert.equal(actual, BigInt(expected), where);
  } else {
    assert.equal(actual, expected, where);
  }
}

// Runs `body`; resolves to { value } or { error } (an ffid error).
async function attempt(body) {
  try {
    return { value: await body() };
  } catch (error) {
    if (!(error instanceof ffid.FfidError)) throw error;
    return { error };
  }
}

function checkError(outcome, reason, where) {
  assert.ok(outcome.error, `${where}: expected ${reason}, got ${JSON.stringify(outcome.value, (k, v) =>
    (typeof v === 'bigint' ? v.toString() : v))}`);
  assert.equal(outcome.error.reason, reason, `${where}: ${outcome.error.message}`);
  assert.ok(outcome.error instanceof ffid.ERROR_CLASSES[reason], `${where}: ${outcome.error.name} for ${reason}`);
}

function sessionOptions(session = {}) {
  const options = {};
  if (session.restart_policy) options.restartPolicy = session.restart_policy;
  const names = {
    address_space_bytes: 'addressSpaceBytes', cpu_seconds: 'cpuSeconds', open_files: 'openFiles',
    file_size_bytes: 'fileSizeBytes',
  };
  for (const [name, value] of Object.entries(session.limits ?? {})) options[names[name]] = value;
  return options;
}

// The arguments of a call: variadic ones cast to the scenario's types.
function callArguments(scenario, fn, refs) {
  const args = toJs(scenario.arguments ?? [], refs);
  const fixed = fn.type.parameters.length - (scenario.out ?? []).length;
  (scenario.variadic_types ?? []).forEach((type, i) => {
    args[fixed + i] = ffid.cast(type, args[fixed + i]);
  });
  return args;
}

// A call's outcome against `expect`: result, out-parameters, errno, error, crash.
function checkCall(outcome, expect, fn, scenario, session, where) {
  if (expect.error) {
    checkError(outcome, expect.error, where);
    for (const [field, value] of Object.entries(expect.crash ?? {})) {
      assert.ok(outcome.error.crashReport, `${where}: no crash report`);
      assert.equal(outcome.error.crashReport[field], value, `${where}: crash report ${field}`);
    }
    return;
  }
  assert.ok(!outcome.error, `${where}: ${outcome.error && outcome.error.message}`);
  let result = outcome.value;
  const out = scenario.out ?? [];
  if (out.length) {
    // The client resolves to [result, ...outs] in parameter order; for a
    // void function, to its one out value (or the array of them).
    const names = fn.type.parameters.map((p) => p.name);
    const order = [...out].sort((a, b) => names.indexOf(a) - names.indexOf(b));
    const rt = fn.type.return_type;
    let outs;
    if (!rt || rt.scalar === 'SCALAR_KIND_VOID') {
      outs = order.length === 1 ? [result] : result;
      result = null;
    } else {
      outs = result.slice(1);
      result = result[0];
    }
    for (const [name, value] of Object.entries(expect.out ?? {})) {
      check(outs[order.indexOf(name)], value, `${where}: out ${name}`);
    }
  }
  if ('result' in expect) check(result, expect.result, `${where}: result`);
  if ('errno' in expect) assert.equal(session.errno, expect.errno, `${where}: errno`);
}

// load, cdef, resolve, call: stops at the first failure.
async function loadAndResolve(s, scenario, prototype, options = {}) {
  const lib = await s.load(scenario.library);
  if (scenario.cdef) await lib.cdef(scenario.cdef);
  const fn = await lib.function(prototype, { out: scenario.out ?? [], ...options });
  return { lib, fn };
}

async function runAfter(s, lib, scenario) {
  const later = scenario.after;
  if (!later) return;
  const outcome = await attempt(async () => {
    const fn = await lib.function(later.function ?? scenario.function);
    return fn(...toJs(later.arguments ?? [], {}));
  });
  checkCall(outcome, later.expect, { type: { parameters: [] } }, later, s, 'after');
}

const BEHAVIOURS = {
  add: () => (...args) => args.reduce((sum, x) => sum + x, 0),
  compare_ints: () => async (a, b) => {
    const [x, y] = [await a.readValue('int'), await b.readValue('int')];
    return x < y ? -1 : x > y ? 1 : 0;
  },
  store_int: () => async (out, value) => {
    await out.writeValue(value, 'int');
  },
  nest: (context) => async (depth) => (depth === 0 ? 0 : context.fn(context.callback, depth - 1)),
  fail: () => () => {
    throw new Error('the conformance scenario fails this callback on purpose');
  },
};

const KINDS = {
  async call(scenario, s) {
    let lib;
    let fn;
    const outcome = await attempt(async () => {
      ({ lib, fn } = await loadAndResolve(s, scenario, scenario.function, { useErrno: Boolean(scenario.errno) }));
      return fn(...callArguments(scenario, fn, {}));
    });
    checkCall(outcome, scenario.expect, fn ?? { type: { parameters: [] } }, scenario, s, 'call');
    if (lib) await runAfter(s, lib, scenario);
  },

  async deadline(scenario, s) {
    const outcome = await attempt(async () => {
      const { fn } = await loadAndResolve(s, scenario, scenario.function);
      return fn.invoke(callArguments(scenario, fn, {}), { timeout: scenario.timeout_ms / 1000 });
    });
    checkCall(outcome, scenario.expect, { type: { parameters: [] } }, scenario, s, 'call');
  },

  async crash(scenario, s) {
    return KINDS.call(scenario, s);
  },

  async callback(scenario, s) {
    let lib;
    const threads = new Set();
    let invocations = 0;
    const refs = {};
    const context = {};
    const outcome = await attempt(async () => {
      ({ lib, fn: context.fn } = await loadAndResolve(s, scenario, scenario.function));
      const behaviour = BEHAVIOURS[scenario.callback.behaviour];
      assert.ok(behaviour, `unknown behaviour ${scenario.callback.behaviour}`);
      const body = behaviour(context);
      context.callback = refs.callback = await s.callback(scenario.callback.declaration, (...args) => {
        invocations += 1;
        threads.add(s.currentInvocation().nativeThreadId);
        return body(...args);
      });
      if (scenario.memory) refs.memory = await s.new(scenario.memory.type, toJs(scenario.memory.value, {}));
      return context.fn(...callArguments(scenario, context.fn, refs));
    });
    const expect = scenario.expect;
    checkCall(outcome, expect, context.fn ?? { type: { parameters: [] } }, scenario, s, 'call');
    if ('invocations' in expect) assert.equal(invocations, expect.invocations, 'invocations');
    if ('min_threads' in expect) {
      assert.ok(threads.size >= expect.min_threads, `ran on ${threads.size} native threads`);
    }
    if ('memory' in expect) check(await refs.memory.readValue(), expect.memory, 'memory');
    if (lib) await runAfter(s, lib, scenario);
  },

  async memory(scenario, s) {
    const lib = await s.load(scenario.library);
    if (scenario.cdef) await lib.cdef(scenario.cdef);
    const bound = {};
    for (const [i, step] of scenario.steps.entries()) {
      const where = `step ${i} (${step.op})`;
      const at = (name) => {
        assert.ok(name in bound, `${where}: no memory ${name}`);
        const memory = bound[name];
        return step.offset ? memory.add(step.offset) : memory;
      };
      const outcome = await attempt(async () => {
        switch (step.op) {
          case 'alloc':
            bound[step.as] = await s.alloc(step.size);
            return null;
          case 'new':
            bound[step.as] = await s.new(step.type, toJs(step.value, {}));
            return null;
          case 'write':
            return at(step.memory).write(Buffer.from(step.hex, 'hex'));
          case 'read':
            return (await at(step.memory).read(step.length)).toString('hex');
          case 'write_value':
            return at(step.memory).writeValue(toJs(step.value, {}), step.type);
          case 'read_value':
            return at(step.memory).readValue(step.type);
          case 'free':
            return bound[step.memory].free();
          case 'call': {
            const fn = await lib.function(step.function);
            const result = await fn(...toJs(step.arguments ?? [], bound));
            if (step.as) bound[step.as] = result;
            return result;
          }
          default:
            throw new Error(`${where}: unknown op`);
        }
      });
      const expect = step.expect ?? {};
      if (expect.error) {
        checkError(outcome, expect.error, where);
        continue;
      }
      assert.ok(!outcome.error, `${where}: ${outcome.error && outcome.error.message}`);
      if ('hex' in expect) assert.equal(outcome.value, expect.hex, where);
      if ('value' in expect) check(outcome.value, expect.value, where);
      if ('result' in expect) check(outcome.value ?? null, expect.result, where);
    }
  },

  async closed_session(scenario, s) {
    const { fn } = await loadAndResolve(s, scenario, scenario.function);
    await s.close();
    checkCall(await attempt(() => fn(...toJs(scenario.arguments ?? [], {}))), scenario.expect, fn, scenario, s, 'call');
  },
};

if (!list) {
  test('conformance list', { skip: `${SCENARIOS} does not exist yet` }, () => {});
} else {
  before(async () => {
    assert.equal(list.format, FORMAT, `this runner reads format ${FORMAT}; update it with the list`);
    daemon = await startDaemon({
      allowLibrary: (dirs) => {
        places = dirs;
        return fill(list.daemon.allow_library);
      },
    });
    for (const step of fill(list.setup ?? [])) {
      if ('write' in step) fs.writeFileSync(step.write, step.text);
      else if ('copy' in step) fs.copyFileSync(step.copy, step.to);
      else throw new Error(`unknown setup step ${JSON.stringify(step)}`);
    }
  });
  after(async () => {
    if (daemon) await daemon.stop();
  });

  for (const raw of list.scenarios) {
    test(raw.name, async () => {
      const scenario = fill(raw);
      const run = KINDS[scenario.kind];
      assert.ok(run || scenario.kind === 'session', `unknown kind ${scenario.kind}`);
      const opened = await attempt(() => ffid.connect(daemon.address, sessionOptions(scenario.session)));
      if (scenario.kind === 'session') {
        if (scenario.expect.error) checkError(opened, scenario.expect.error, 'connect');
        else assert.ok(!opened.error, opened.error && opened.error.message);
        if (opened.value) await opened.value.close();
        return;
      }
      assert.ok(!opened.error, opened.error && opened.error.message);
      const s = opened.value;
      try {
        await run(scenario, s);
      } finally {
        await s.close();
      }
    });
  }
}
