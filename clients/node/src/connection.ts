// How connect() reaches the daemon and proves who it is: the transport (the
// unix socket, TLS or mutual TLS on TCP, plaintext TCP for a daemon started
// with --insecure) and a bearer token, from connect()'s options or the
// environment. Every ffid client shares these names and rules:
//
//   FFID_ADDRESS     "unix:/path" or "host:port"
//   FFID_TOKEN       a bearer token, sent as "authorization: Bearer TOKEN"
//   FFID_TOKEN_FILE  a file holding the token (FFID_TOKEN wins if both are set)
//   FFID_CA          PEM file of the CA certificates that signed the daemon's
//                    certificate (default: the system's roots)
//   FFID_CERT        PEM file of the client certificate chain (mutual TLS)
//   FFID_KEY         PEM file of its private key
//   FFID_INSECURE    "1" (or "true", "yes"): plaintext TCP
//
// A unix: address is always plaintext; any other uses TLS unless insecure.

import * as fs from 'fs';
import * as grpc from '@grpc/grpc-js';
import { InvalidRequest, Unavailable } from './errors';

/** A PEM: a file name, or its contents. */
export type PemSource = string | Buffer;

/** How to authenticate; every field falls back to its FFID_* environment variable. */
export interface AuthOptions {
  /** A bearer token, sent as "authorization: Bearer TOKEN" (default $FFID_TOKEN). */
  token?: string;
  /** A file holding the token (default $FFID_TOKEN_FILE). */
  tokenFile?: string;
  /** The CA certificates that signed the daemon's certificate (default $FFID_CA, else the system's roots). */
  ca?: PemSource;
  /** The client certificate chain, for mutual TLS (default $FFID_CERT). */
  cert?: PemSource;
  /** The client certificate's private key (default $FFID_KEY). */
  key?: PemSource;
  /** Plaintext TCP, for a daemon started with --insecure (default $FFID_INSECURE=1). */
  insecure?: boolean;
}

export const AUTH_OPTIONS = ['token', 'tokenFile', 'ca', 'cert', 'key', 'insecure'] as const;

/** What connect() makes of its options and the environment. */
export interface Connection {
  address: string;
  token?: string;
  tls: boolean;
  credentials: grpc.ChannelCredentials;
  /** For messages: where the CA and the client certificate came from. */
  caName?: string;
  certName?: string;
}

function env(name: string): string | undefined {
  return process.env[name] || undefined;
}

function readPem(source: PemSource, what: string): [Buffer, string] {
  if (Buffer.isBuffer(source)) return [source, `the ${what} given as a Buffer`];
  try {
    return [fs.readFileSync(source), `the ${what} file '${source}'`];
  } catch (error) {
    throw new InvalidRequest(`cannot read the ${what} file '${source}': ${(error as Error).message}`);
  }
}

/** Applies the environment to the settings not given and checks the combination (InvalidRequest). */
export function resolveConnection(address: string, options: AuthOptions): Connection {
  let { token, tokenFile } = options;
  if (token !== undefined && tokenFile !== undefined) {
    throw new InvalidRequest('give token or tokenFile, not both');
  }
  if (token === undefined && tokenFile === undefined) {
    token = env('FFID_TOKEN');
    if (token === undefined) tokenFile = env('FFID_TOKEN_FILE');
  }
  if (tokenFile !== undefined) {
    try {
      token = fs.readFileSync(tokenFile, 'utf8').trim();
    } catch (error) {
      throw new InvalidRequest(`cannot read the token file '${tokenFile}': ${(error as Error).message}`);
    }
    if (!token) throw new InvalidRequest(`the token file '${tokenFile}' is empty`);
  }
  token = token?.trim() || undefined;
  if (token !== undefined && /[\r\n]/.test(token)) {
    throw new InvalidRequest('the bearer token holds a line break: it must be one line');
  }
  const ca = options.ca ?? env('FFID_CA');
  const cert = options.cert ?? env('FFID_CERT');
  const key = options.key ?? env('FFID_KEY');
  const insecure = options.insecure ?? ['1', 'true', 'yes'].includes((env('FFID_INSECURE') ?? '').toLowerCase());
  const tlsSettings = ca !== undefined || cert !== undefined || key !== undefined;
  const plaintext = { address, token, tls: false, credentials: grpc.credentials.createInsecure() };
  if (address.startsWith('unix:')) {
    if (tlsSettings) {
      throw new InvalidRequest(
        'TLS settings (ca, cert, key; FFID_CA, FFID_CERT, FFID_KEY) apply to TCP addresses, but ' +
          `${address} is the daemon's unix socket, which is plaintext: drop them or give a host:port address`,
      );
    }
    return plaintext;
  }
  if (insecure) {
    if (tlsSettings) {
      throw new InvalidRequest(
        'insecure (plaintext TCP, FFID_INSECURE) contradicts the TLS settings given (ca, cert, key; ' +
          'FFID_CA, FFID_CERT, FFID_KEY): give one or the other',
      );
    }
    return plaintext;
  }
  if ((cert === undefined) !== (key === undefined)) {
    throw new InvalidRequest('mutual TLS needs both cert and key (FFID_CERT and FFID_KEY); only one was given');
  }
  const [rootCerts, caName] = ca !== undefined ? readPem(ca, 'CA') : [null, undefined];
  const [certChain, certName] = cert !== undefined ? readPem(cert, 'client certificate') : [null, undefined];
  const [privateKey] = key !== undefined ? readPem(key, 'client key') : [null];
  return {
    address,
    token,
    tls: true,
    credentials: grpc.credentials.createSsl(rootCerts, privateKey, certChain),
    caName,
    certName,
  };
}

/** The client options that send the token (if any) with every RPC. */
export function tokenInterceptors(connection: Connection): grpc.Interceptor[] {
  if (!connection.token) return [];
  const header = `Bearer ${connection.token}`;
  return [
    (options, nextCall) =>
      new grpc.InterceptingCall(nextCall(options), {
        start(metadata, listener, next) {
          metadata.set('authorization', header);
          next(metadata, listener);
        },
      }),
  ];
}

/** What to check when the connection did not come up in time. */
export function unreachable(connection: Connection, timeout: number): Unavailable {
  let message = `cannot connect to ffid at ${connection.address} within ${timeout}s`;
  if (!connection.tls) {
    message += ': is the daemon running? (pass an address or set FFID_ADDRESS)';
    if (!connection.address.startsWith('unix:')) {
      message +=
        '; plaintext TCP reaches only a daemon started with --insecure: for one with --tls-cert, ' +
        'drop insecure (FFID_INSECURE) and give its CA (ca, FFID_CA)';
    }
    return new Unavailable(message);
  }
  const ca = connection.caName
    ? `that ${connection.caName} (ca, FFID_CA) signed the daemon's certificate`
    : "that the daemon's certificate is signed by a CA the system trusts, or give its CA (ca, FFID_CA)";
  const cert = connection.certName
    ? `that the daemon's --tls-client-ca signed ${connection.certName}; `
    : 'a daemon with --tls-client-ca (mutual TLS) also needs a client certificate and key ' +
      '(cert/key, FFID_CERT/FFID_KEY); ';
  return new Unavailable(
    `${message}: is the daemon running with TLS there? If the TLS handshake failed, check ${ca} and ` +
      `that the certificate names the host you connect to; ${cert}` +
      'a daemon started with --insecure needs insecure: true (FFID_INSECURE=1)',
  );
}
