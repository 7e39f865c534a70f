// Authenticating to real daemons: bearer tokens on the unix socket, TLS and
// mutual TLS on TCP with certificates made by tests/testing/make_test_pki.sh,
// plaintext TCP to an --insecure daemon, the FFID_* environment variables,
// and what a wrong setting says.
'use strict';
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { test, before, after, beforeEach } = require('node:test');
const ffid = require('..');
const { startDaemon, REPO } = require('./daemon');

const ENVIRONMENT = ['FFID_ADDRESS', 'FFID_TOKEN', 'FFID_TOKEN_FILE', 'FFID_CA', 'FFID_CERT', 'FFID_KEY', 'FFID_INSECURE'];

let pki;
let skip = false;
const daemons = {};

function file(name) {
  return path.join(pki, name);
}

before(async () => {
  pki = fs.mkdtempSync(path.join(os.tmpdir(), 'ffid-node-pki-'));
  try {
    execFileSync('bash', [path.join(REPO, 'tests', 'testing', 'make_test_pki.sh'), pki], { stdio: 'pipe' });
  } catch (error) {
    if (error.status === 77) {
      skip = true;
      return;
    }
    throw error;
  }
  const tokens = ['--token-file', file('tokens')];
  const tls = ['--tls-cert', file('server.pem'), '--tls-key', file('server.key')];
  daemons.unix = await startDaemon({ flags: tokens });
  daemons.tls = await startDaemon({ flags: [...tokens, ...tls], listen: '127.0.0.1:0' });
  daemons.mtls = await startDaemon({
    flags: [...tokens, ...tls, '--tls-client-ca', file('ca.pem')],
    listen: '127.0.0.1:0',
  });
  daemons.insecure = await startDaemon({ flags: [...tokens, '--insecure'], listen: '127.0.0.1:0' });
});

after(async () => {
  for (const daemon of Object.values(daemons)) await daemon.stop();
  if (pki) fs.rmSync(pki, { recursive: true, force: true });
});

beforeEach(() => {
  for (const name of ENVIRONMENT) delete process.env[name];
});

function authTest(name, body) {
  test(name, async (t) => {
    if (skip) {
      t.skip('openssl is not installed');
      return;
    }
    await body();
  });
}

async function principal(address, options = {}) {
  const s = await ffid.connect(address, options);
  try {
    return (await s.serverInfo()).principal;
  } finally {
    await s.close();
  }
}

async function cos0(address, options = {}) {
  const s = await ffid.connect(address, options);
  try {
    const libm = await s.load('libm.so.6');
    await libm.cdef('double cos(double);');
    return await libm.cos(0);
  } finally {
    await s.close();
  }
}

authTest('a token names the principal', async () => {
  const { address } = daemons.unix;
  assert.equal(await principal(address, { token: 'alice-secret' }), 'token:alice');
  assert.equal(await cos0(address, { token: 'alice-secret' }), 1);
  assert.equal(await principal(address, { tokenFile: file('alice.token') }), 'token:alice');
  assert.equal(await principal(address), `unix:${process.getuid()}`);
});

authTest('the token from the environment', async () => {
  process.env.FFID_ADDRESS = daemons.unix.address;
  process.env.FFID_TOKEN = 'bob-secret';
  assert.equal(await principal(), 'token:bob');
  assert.equal(await principal({ token: 'alice-secret' }), 'token:alice');
  delete process.env.FFID_TOKEN;
  process.env.FFID_TOKEN_FILE = file('alice.token');
  assert.equal(await principal(), 'token:alice');
});

authTest('a wrong token is unauthenticated', async () => {
  await assert.rejects(ffid.connect(daemons.unix.address, { token: 'guessed-token' }), (error) => {
    assert.ok(error instanceof ffid.Unauthenticated, String(error));
    assert.equal(error.reason, 'UNAUTHENTICATED');
    assert.match(error.message, /bearer token is not one/);
    return true;
  });
});

authTest('TLS with the right CA', async () => {
  const { address } = daemons.tls;
  assert.equal(await principal(address, { ca: file('ca.pem') }), 'anonymous');
  assert.equal(await cos0(address, { ca: fs.readFileSync(file('ca.pem')) }), 1);
  assert.equal(await principal(address, { ca: file('ca.pem'), token: 'alice-secret' }), 'token:alice');
  await assert.rejects(ffid.connect(address, { ca: file('ca.pem'), token: 'guessed-token' }), ffid.Unauthenticated);
});

authTest('TLS with the wrong CA names the CA', async () => {
  const { address } = daemons.tls;
  await assert.rejects(ffid.connect(address, { ca: file('other-ca.pem'), connectTimeout: 1 }), (error) => {
    assert.ok(error instanceof ffid.Unavailable, String(error));
    assert.ok(
      error.message.includes(`the CA file '${file('other-ca.pem')}' (ca, FFID_CA) signed the daemon's certificate`),
      error.message,
    );
    return true;
  });
  await assert.rejects(ffid.connect(address, { connectTimeout: 1 }), /or give its CA \(ca, FFID_CA\)/);
  await assert.rejects(ffid.connect(address, { insecure: true, connectTimeout: 1 }), /drop insecure/);
});

authTest('mutual TLS names the certificate\'s common name', async () => {
  const { address } = daemons.mtls;
  const settings = { ca: file('ca.pem'), cert: file('client.pem'), key: file('client.key') };
  assert.equal(await principal(address, settings), 'x509:alice');
  assert.equal(await cos0(address, settings), 1);
  await assert.rejects(ffid.connect(address, { ca: file('ca.pem'), connectTimeout: 1 }),
    /also needs a client certificate and key/);
  process.env.FFID_ADDRESS = address;
  process.env.FFID_CA = file('ca.pem');
  process.env.FFID_CERT = file('client.pem');
  process.env.FFID_KEY = file('client.key');
  assert.equal(await principal(), 'x509:alice');
});

authTest('plaintext TCP to an --insecure daemon', async () => {
  const { address } = daemons.insecure;
  assert.equal(await principal(address, { insecure: true, token: 'alice-secret' }), 'token:alice');
  await assert.rejects(ffid.connect(address, { connectTimeout: 1 }), /started with --insecure needs insecure: true/);
  process.env.FFID_INSECURE = '1';
  assert.equal(await principal(address), 'anonymous');
});

authTest('contradictions are refused before connecting', async () => {
  const cases = [
    ['unix:/nonexistent.sock', { ca: file('ca.pem') }, /which is plaintext/],
    ['h:1', { cert: file('client.pem') }, /needs both cert and key/],
    ['h:1', { insecure: true, ca: file('ca.pem') }, /contradicts the TLS settings/],
    ['h:1', { token: 'a', tokenFile: file('alice.token') }, /not both/],
    ['h:1', { ca: '/nonexistent/ca.pem' }, /cannot read the CA file '\/nonexistent\/ca.pem'/],
  ];
  for (const [address, options, message] of cases) {
    await assert.rejects(ffid.connect(address, options), (error) => {
      assert.ok(error instanceof ffid.InvalidRequest, String(error));
      assert.match(error.message, message);
      return true;
    });
  }
});
