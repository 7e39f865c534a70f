// Sessions, libraries, functions, memory and callbacks: the promise-based
// API over the ffid.v1.Ffi service. Every method that talks to the daemon
// returns a Promise.

import * as fs from 'fs';
import { AsyncLocalStorage } from 'async_hooks';
import * as grpc from '@grpc/grpc-js';
import {
  ArgumentCount,
  CallbackFailed,
  DeadlineExceeded,
  DeclarationInvalid,
  SessionNotFound,
  Unavailable,
  Unsupported,
  errorFromServiceError,
  errorFromStatusBytes,
} from './errors';
import { Batch } from './batch';
import { AUTH_OPTIONS, AuthOptions, resolveConnection, tokenInterceptors, unreachable } from './connection';
import {
  CallResponse,
  FunctionType,
  ParseDeclarationsResponse,
  PointerValue,
  ServerInfo,
  SessionInfo,
  TypeDescriptor,
  Value,
  ffiClient,
} from './proto';
import {
  Cast,
  Deferred,
  isDeferred,
  PointerCodec,
  TypeRegistry,
  clone,
  fromValue,
  kindOf,
  returnsVoid,
  toValue,
  valueKind,
  variadicType,
} from './values';

/**
 * Options of connect(): how to reach the daemon and authenticate (token,
 * tokenFile, ca, cert, key, insecure; each defaults to its FFID_*
 * environment variable), and the session's settings.
 */
export interface ConnectOptions extends AuthOptions {
  /** Seconds to wait for the daemon (default 10). */
  connectTimeout?: number;
  /** Seconds the daemon keeps the session without requests while no client is attached. */
  idleTimeout?: number;
  /** The worker's RLIMIT_AS in bytes (default: the server's). */
  addressSpaceBytes?: number | bigint;
  /** CPU seconds the worker may use over its life. */
  cpuSeconds?: number | bigint;
  /** RLIMIT_NOFILE of the worker. */
  openFiles?: number | bigint;
  /** RLIMIT_FSIZE of the worker, in bytes. */
  fileSizeBytes?: number | bigint;
  /** Seconds any one call may run, whatever its timeout. */
  maxCallDuration?: number;
  /** Let the worker use the network (the daemon must run with --allow-network). */
  allowNetwork?: boolean;
  /** "never" (default: a crashed session stays dead) or "restart". */
  restartPolicy?: 'never' | 'restart';
}

/** Options of one call. */
export interface CallOptions {
  /** Seconds; when they pass the daemon kills the worker and the call rejects with DeadlineExceeded. */
  timeout?: number;
  /** Capture errno right after the native call (read it as session.errno). */
  errno?: boolean;
}

/** Options of Library.function(). */
export interface FunctionOptions {
  /** Out-parameters (by index or name): the call returns their values after the result. */
  out?: (number | string)[];
  /** In-out parameters: passed a value, their values after the call are returned as for out. */
  inout?: (number | string)[];
  /** Capture errno on every call of this function. */
  useErrno?: boolean;
  /** What happens to a returned pointer or string: "borrow" (default), "adopt" or "release". */
  result?: 'borrow' | 'adopt' | 'release';
  /** The destructor's symbol for "adopt" and "release" (default free). */
  destructor?: string;
}

/** Options of Session.callback(). */
export interface CallbackOptions {
  /** What the native caller gets when the callback fails (default 0 / NULL). */
  default?: unknown;
  /** "return_default" (default) or "terminate": kill the worker when the callback fails. */
  onError?: 'return_default' | 'terminate';
  /** Seconds native code waits for the answer of one invocation (default 60). */
  timeout?: number;
}

/** What Session.currentInvocation() says about the callback invocation running. */
export interface InvocationInfo {
  /** The invocation's id, unique within the session. */
  id: string;
  /** The callback handle that native code called. */
  callback: string;
  /** The Linux thread id of the native thread that called it (and waits). */
  nativeThreadId: number;
}

/** A JavaScript function native code may call. Its arguments are converted from C. */
export type CallbackFunction = (...args: any[]) => unknown;

const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': -1,
  'grpc.max_send_message_length': -1,
  // Each session owns its connection: a shared subchannel would hand a new
  // session the broken connection of an earlier one to a restarted daemon.
  'grpc.use_local_subchannel_pool': 1,
};
const DELETE_TIMEOUT = 10;

/** $FFID_ADDRESS, else the daemon's default socket. */
export function defaultAddress(): string {
  const fromEnv = process.env['FFID_ADDRESS'];
  if (fromEnv) return fromEnv;
  const runtime = process.env['XDG_RUNTIME_DIR'];
  if (runtime) return `unix:${runtime}/ffid/ffid.sock`;
  return `unix:/tmp/ffid-${process.getuid ? process.getuid() : 0}/ffid.sock`;
}

function checkAddress(address: string): void {
  if (!address) throw new Unavailable("the daemon's address is empty");
  if (address.startsWith('unix:')) {
    let socketPath = address.slice('unix:'.length);
    if (socketPath.startsWith('//')) socketPath = socketPath.slice(2);
    if (!fs.existsSync(socketPath)) {
      throw new Unavailable(
        `cannot connect to ffid at ${address}: ${socketPath} does not exist: is the daemon running? ` +
          '(start it with ffid, or pass an address or set FFID_ADDRESS)',
      );
    }
  }
}

function positive(value: unknown, name: string): number {
  if (typeof value !== 'number' || !(value > 0)) {
    throw new RangeError(`${name} must be a positive number of seconds, got ${String(value)}`);
  }
  return value;
}

function duration(seconds: number, name: string): { seconds: string; nanos: number } {
  positive(seconds, name);
  const whole = Math.floor(seconds);
  return { seconds: String(whole), nanos: Math.round((seconds - whole) * 1e9) };
}

const SESSION_OPTIONS = new Set<string>([
  'connectTimeout', 'idleTimeout', 'addressSpaceBytes', 'cpuSeconds', 'openFiles', 'fileSizeBytes',
  'maxCallDuration', 'allowNetwork', 'restartPolicy', ...AUTH_OPTIONS,
]);
const LIMITS: [keyof ConnectOptions, string][] = [
  ['addressSpaceBytes', 'address_space_bytes'],
  ['cpuSeconds', 'cpu_seconds'],
  ['openFiles', 'open_files'],
  ['fileSizeBytes', 'file_size_bytes'],
];

function createSessionRequest(options: ConnectOptions): Record<string, unknown> {
  const unknown = Object.keys(options).filter((k) => !SESSION_OPTIONS.has(k));
  if (unknown.length) {
    throw new TypeError(`unknown option(s) ${unknown.join(', ')}; this client knows ${[...SESSION_OPTIONS].join(', ')}`);
  }
  const request: Record<string, any> = {};
  if (options.idleTimeout !== undefined) request.idle_timeout = duration(options.idleTimeout, 'idleTimeout');
  const limits: Record<string, unknown> = {};
  for (const [option, field] of LIMITS) {
    const value = options[option];
    if (value === undefined) continue;
    if ((typeof value !== 'number' && typeof value !== 'bigint') || BigInt(value) <= 0n ||
        (typeof value === 'number' && !Number.isInteger(value))) {
      throw new RangeError(`${option} must be a positive integer, got ${String(value)}`);
    }
    limits[field] = String(value);
  }
  if (options.maxCallDuration !== undefined) limits.max_call_duration = duration(options.maxCallDuration, 'maxCallDuration');
  if (Object.keys(limits).length) request.limits = limits;
  if (options.allowNetwork !== undefined) request.sandbox = { allow_network: Boolean(options.allowNetwork) };
  if (options.restartPolicy !== undefined) {
    const policies: Record<string, string> = { never: 'RESTART_POLICY_NEVER', restart: 'RESTART_POLICY_RESTART' };
    if (!(options.restartPolicy in policies)) {
      throw new RangeError(`restartPolicy: expected "never" or "restart", got ${String(options.restartPolicy)}`);
    }
    request.restart_policy = policies[options.restartPolicy];
  }
  return request;
}

/**
 * Connects to the ffid daemon and starts a session: one worker process on
 * the daemon's side. `address` is "unix:/path/to/socket" or "host:port";
 * without one, $FFID_ADDRESS, else the daemon's default socket. A host:port
 * address uses TLS (options.ca: the daemon's CA; options.cert and key:
 * mutual TLS) unless options.insecure; options.token (or tokenFile) is sent
 * with every request. Settings not given come from FFID_TOKEN,
 * FFID_TOKEN_FILE, FFID_CA, FFID_CERT, FFID_KEY and FFID_INSECURE.
 * Contradictory or unreadable settings reject with InvalidRequest, an
 * unreachable daemon (or a failed TLS handshake) with Unavailable saying
 * what to check, a token the daemon does not know with Unauthenticated.
 * Close the session (`await s.close()`) when done: the open connection
 * keeps the process running.
 */
export async function connect(address?: string | ConnectOptions, options: ConnectOptions = {}): Promise<Session> {
  if (typeof address === 'object' && address !== null) {
    options = address;
    address = undefined;
  }
  const target = address || defaultAddress();
  const request = createSessionRequest(options);
  const connection = resolveConnection(target, options);
  checkAddress(target);
  const connectTimeout = options.connectTimeout ?? 10;
  const Client = ffiClient();
  const client = new Client(target, connection.credentials, {
    ...CHANNEL_OPTIONS,
    interceptors: tokenInterceptors(connection),
  });
  try {
    await new Promise<void>((resolve, reject) => {
      client.waitForReady(Date.now() + connectTimeout * 1000, (error?: Error) => {
        if (error) {
          reject(unreachable(connection, connectTimeout));
        } else {
          resolve();
        }
      });
    });
    const created = await unary<{ session: SessionInfo }>(client, 'CreateSession', request);
    const session = new Session(target, client, created.session);
    await session._attach();
    return session;
  } catch (error) {
    client.close();
    throw error;
  }
}

function unary<T>(client: grpc.Client, method: string, request: unknown, timeout?: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const options: grpc.CallOptions = {};
    if (timeout !== undefined) options.deadline = Date.now() + timeout * 1000;
    const fn = (client as unknown as Record<string, Function>)[method]!;
    fn.call(client, request, new grpc.Metadata(), options, (error: grpc.ServiceError | null, response: T) => {
      if (error) reject(errorFromServiceError(error));
      else resolve(response);
    });
  });
}

// The requests that may be made from inside a callback: they travel as
// StreamCalls tagged with the invocation and run on the native thread that
// waits for the callback.
const STREAM_FIELDS: Record<string, string> = {
  Call: 'call',
  Read: 'read',
  Write: 'write',
  Allocate: 'allocate',
  Free: 'free',
  RegisterCallback: 'register_callback',
  ReleaseCallback: 'release_callback',
};
// Requests the daemon answers itself: safe anywhere.
const DAEMON_ONLY = new Set(['ParseDeclarations', 'GetSession', 'DeleteSession', 'GetServerInfo']);

interface PendingResult {
  resolve(result: Record<string, unknown>): void;
  reject(error: Error): void;
}

interface Invocation {
  invocation: string;
  callback: string;
  arguments: Value[];
  native_thread_id: string;
  call_tag: string;
}

let typeNames = 0;
let callbackNames = 0;

/** One ffid session: a worker process and everything it holds. */
export class Session {
  /** The session id. */
  readonly id: string;
  /** The daemon's address. */
  readonly address: string;
  /** The worker's process id (informational). */
  readonly workerPid: number;
  /** errno as the last call that captured it left it. */
  errno = 0;

  /** @internal */ readonly _client: grpc.Client;
  /** @internal */ readonly _types = new TypeRegistry();
  /** @internal */ readonly _functions = new Map<string, FunctionType>();
  /** @internal */ readonly _variables = new Map<string, TypeDescriptor>();
  /** @internal */ _declaring: Promise<unknown> = Promise.resolve();
  /** @internal */ readonly _codec: PointerCodec;
  /** @internal */ _lastCallbackFailure: unknown = undefined;
  private readonly parsedTypes = new Map<string, TypeDescriptor>();
  private stream: grpc.ClientDuplexStream<unknown, any> | undefined;
  private readonly pending = new Map<string, PendingResult>();
  private nextTag = 1n;
  private readonly callbacks = new Map<string, { fn: CallbackFunction; type: FunctionType }>();
  private readonly invocation = new AsyncLocalStorage<InvocationInfo>();
  private readonly pendingFree: string[] = [];
  private readonly finalizer = new FinalizationRegistry<string>((handle) => this.pendingFree.push(handle));
  private isClosed = false;

  /** @internal */
  constructor(address: string, client: grpc.Client, info: SessionInfo) {
    this.address = address;
    this.id = info.id;
    this.workerPid = info.worker_pid;
    this._client = client;
    const session = this; // eslint-disable-line @typescript-eslint/no-this-alias
    this._codec = {
      pointerOf: (obj) => (obj instanceof Pointer ? obj._pointerValue() : undefined),
      callbackOf: (obj) => (obj instanceof Callback ? obj.handle : undefined),
      makePointer: (value) => session._makePointer(value),
    };
  }

  /** Attaches the Connect stream that keeps the session and carries callbacks. @internal */
  async _attach(): Promise<void> {
    const stream = (this._client as unknown as { Connect(): grpc.ClientDuplexStream<unknown, any> }).Connect();
    try {
      await new Promise<void>((resolve, reject) => {
        const onData = (message: Record<string, any>) => {
          stream.off('error', onError);
          if (message.kind === 'attached') resolve();
          else reject(new Unavailable(`the daemon did not confirm the Connect stream of session ${this.id}`));
        };
        const onError = (error: grpc.ServiceError) => {
          stream.off('data', onData);
          reject(errorFromServiceError(error));
        };
        stream.once('data', onData);
        stream.once('error', onError);
        stream.write({ attach: { session: this.id } });
      });
    } catch (error) {
      stream.cancel();
      await this.deleteSession();
      throw error;
    }
    this.stream = stream;
    stream.on('data', (message: Record<string, any>) => this.onStreamMessage(message));
    stream.on('error', () => this.onStreamEnd());
    stream.on('end', () => this.onStreamEnd());
  }

  private onStreamMessage(message: Record<string, any>): void {
    if (message.kind === 'result') {
      const result = message.result as Record<string, any>;
      const pending = this.pending.get(String(result.tag));
      if (!pending) return;
      this.pending.delete(String(result.tag));
      if (result.error_status && result.error_status.length) pending.reject(errorFromStatusBytes(result.error_status));
      else pending.resolve(result);
    } else if (message.kind === 'invocation') {
      void this.runCallback(message.invocation as Invocation);
    }
  }

  private onStreamEnd(): void {
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) p.reject(new Unavailable("the session's Connect stream closed"));
  }

  private async runCallback(invocation: Invocation): Promise<void> {
    const entry = this.callbacks.get(invocation.callback);
    const result: Record<string, unknown> = { invocation: invocation.invocation };
    let failure: unknown;
    let returned: unknown;
    if (!entry) {
      failure = new Error(`no callback ${invocation.callback} in this client`);
    } else {
      try {
        const params = entry.type.parameters ?? [];
        const args = invocation.arguments.map((v, i) => fromValue(v, params[i]?.type, this._codec));
        const info: InvocationInfo = {
          id: invocation.invocation,
          callback: invocation.callback,
          nativeThreadId: Number(invocation.native_thread_id),
        };
        returned = await this.invocation.run(info, async () => entry.fn(...args));
        if (!returnsVoid(entry.type)) {
          result.result = toValue(returned, entry.type.return_type ?? undefined, "the callback's result", this._codec);
        }
      } catch (error) {
        failure = error;
      }
    }
    if (failure !== undefined) {
      this._lastCallbackFailure = failure;
      delete result.result;
      const name = failure instanceof Error ? failure.name : 'Error';
      const text = failure instanceof Error ? failure.message : String(failure);
      result.error = { message: `${name}: ${text}`.slice(0, 1000) };
    }
    try {
      this.stream?.write({ callback_result: result });
    } catch {
      // The stream closed; the native side sees that.
    }
  }

  private streamRequest(invocation: string, field: string, request: unknown, timeout?: number): Promise<any> {
    const stream = this.stream;
    if (!stream) return Promise.reject(new Unavailable("the session's Connect stream is closed"));
    const tag = String(this.nextTag++);
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      if (timeout !== undefined) {
        timer = setTimeout(() => {
          this.pending.delete(tag);
          reject(new DeadlineExceeded(`no answer within ${timeout}s`));
        }, timeout * 1000);
      }
      this.pending.set(tag, {
        resolve: (result) => {
          if (timer) clearTimeout(timer);
          resolve(result[field]);
        },
        reject: (error) => {
          if (timer) clearTimeout(timer);
          reject(error);
        },
      });
      stream.write({ call: { tag, invocation, [field]: request } });
    });
  }

  /** Sends one request: unary, or on the Connect stream inside a callback. @internal */
  async _call<T = any>(method: string, request: Record<string, unknown>, timeout?: number): Promise<T> {
    if (this.isClosed) throw new SessionNotFound(`session ${this.id} was closed`);
    const invocation = this.invocation.getStore();
    if (invocation !== undefined && !DAEMON_ONLY.has(method)) {
      const field = STREAM_FIELDS[method];
      if (!field) {
        throw new Unsupported(
          `${method} cannot be made from inside a callback (the worker is inside the native call that called ` +
            'it): only calls, reads, writes, allocations, frees and callback registrations; resolve functions ' +
            'before the call',
        );
      }
      return this.streamRequest(invocation.id, field, request, timeout);
    }
    while (this.pendingFree.length) {
      const handle = this.pendingFree.pop()!;
      try {
        await unary(this._client, 'Free', { session: this.id, memory: handle }, DELETE_TIMEOUT);
      } catch {
        // The session's end releases it anyway.
      }
    }
    try {
      return await unary<T>(this._client, method, { session: this.id, ...request }, timeout);
    } catch (error) {
      // gRPC's own deadline (the server's carry a message of their own): say what it means.
      if (error instanceof DeadlineExceeded && timeout !== undefined && /^deadline exceeded/i.test(error.detail)) {
        throw new DeadlineExceeded(
          `the call did not finish within its timeout of ${timeout}s; the daemon kills the session's worker ` +
            'for it (a native call cannot be interrupted), so later calls on this session fail with ' +
            'WorkerCrashed: open a new session',
          { code: error.code },
        );
      }
      throw error;
    }
  }

  /**
   * The callback invocation the calling code runs inside (in a callback's
   * function, and in what it awaits), or undefined outside callbacks.
   */
  currentInvocation(): InvocationInfo | undefined {
    return this.invocation.getStore();
  }

  /**
   * Sends a request on the Connect stream now (inside a callback: tagged
   * with its invocation) and resolves with its response. @internal
   */
  _pipelined(method: string, request: Record<string, unknown>): Promise<any> {
    if (this.isClosed) return Promise.reject(new SessionNotFound(`session ${this.id} was closed`));
    return this.streamRequest(this.invocation.getStore()?.id ?? '0', STREAM_FIELDS[method]!, request);
  }

  /** Registers an owned handle for release when its object is garbage-collected. @internal */
  _track(memory: Memory): void {
    this.finalizer.register(memory, memory.handle, memory);
  }

  /** @internal */
  _untrack(memory: Memory): void {
    this.finalizer.unregister(memory);
  }

  /** @internal */
  _makePointer(value: PointerValue): Pointer {
    const handle = value.handle ?? '';
    return new Pointer(this, handle, handle ? Number(value.offset ?? 0) : 0, BigInt(value.address ?? 0) - (handle ? BigInt(value.offset ?? 0) : 0n));
  }

  private async deleteSession(): Promise<void> {
    try {
      await unary(this._client, 'DeleteSession', { session: this.id }, DELETE_TIMEOUT);
    } catch {
      // Closing the stream makes the daemon delete it anyway.
    }
  }

  /** Ends the session (the daemon stops its worker) and closes the connection. Idempotent. */
  async close(): Promise<void> {
    if (this.isClosed) return;
    this.isClosed = true;
    await this.deleteSession();
    this.stream?.cancel();
    this.stream = undefined;
    this._client.close();
  }

  /** `await using s = await ffid.connect()` (TypeScript 5.2+) closes the session at the block's end. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** How console.log and util.inspect show it. */
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `Session(${this.id} at ${this.address}${this.isClosed ? ', closed' : ''})`;
  }

  /** Whether close() was called. */
  get closed(): boolean {
    return this.isClosed;
  }

  /** The session as the daemon sees it: state, limits, sandbox layers, restarts, crash report. */
  async info(): Promise<SessionInfo> {
    return (await this._call<{ session: SessionInfo }>('GetSession', {})).session;
  }

  /** What the server offers: sandbox layers, default and maximum limits. */
  async serverInfo(): Promise<ServerInfo> {
    return this._call<ServerInfo>('GetServerInfo', {});
  }

  /** Loads a shared library (a path or a soname such as "libm.so.6") into the worker. */
  async load(name: string, options: { useErrno?: boolean } = {}): Promise<Library & DeclaredFunctions> {
    const response = await this._call<{ library: string; path: string }>('LoadLibrary', { name });
    return new Library(this, response.library, response.path, Boolean(options.useErrno))._proxy();
  }

  /**
   * Declares C functions, types and extern variables (cffi-style). Declared
   * functions become methods of every library of the session.
   */
  cdef(source: string): Promise<void> {
    const parsing = this._call<ParseDeclarationsResponse>('ParseDeclarations', { source }).then((response) =>
      this._addDeclarations(response),
    );
    this._declaring = this._declaring.then(() => parsing).catch(() => undefined);
    return parsing;
  }

  /** @internal */
  _addDeclarations(response: ParseDeclarationsResponse): void {
    for (const t of response.types ?? []) this._types.add(t.name, t.type);
    for (const f of response.functions ?? []) this._functions.set(f.name, f.type);
    for (const v of response.variables ?? []) this._variables.set(v.name, v.type);
  }

  /** The type descriptor of a C type written as text ("struct point", "int[4]", "char *"). */
  async typeof(ctype: string): Promise<TypeDescriptor> {
    const key = ctype.split(/\s+/).filter(Boolean).join(' ');
    const known = this._types.get(key) ?? this.parsedTypes.get(key);
    if (known) return this._types.resolve(known);
    const name = `__ffid_type_${++typeNames}`;
    const response = await this._call<ParseDeclarationsResponse>('ParseDeclarations', { source: typedefSource(key, name) });
    const found = response.types.find((t) => t.name === name);
    if (!found) throw new DeclarationInvalid(`'${ctype}' is not a C type`);
    this.parsedTypes.set(key, found.type);
    return this._types.resolve(found.type);
  }

  /** Allocates `size` zero-filled bytes (or a copy of a Buffer) owned by the session. */
  async alloc(size: number | Uint8Array, init?: Uint8Array): Promise<Memory> {
    if (size instanceof Uint8Array) {
      init = size;
      size = size.length;
    }
    if (!Number.isInteger(size) || size <= 0) throw new RangeError(`alloc needs a positive size in bytes, got ${size}`);
    const response = await this._call<{ memory: string; size: string; address: string }>('Allocate', {
      size: String(size),
      initial_bytes: init ? Buffer.from(init) : Buffer.alloc(0),
    });
    return this.ownedMemory(response.memory, Number(response.size), BigInt(response.address), undefined);
  }

  /** Allocates memory for a C type (`count` elements of it), initialized with `value`. */
  async new(ctype: string, value?: unknown, options: { count?: number } = {}): Promise<Memory> {
    const descriptor = await this.typeof(ctype);
    const count = options.count ?? 0;
    const request: Record<string, unknown> = { size: String(count), type: descriptor };
    if (value !== undefined && value !== null) {
      const target = count > 1 ? { array: { element: descriptor, length: String(count) } } : descriptor;
      request.initial_value = toValue(value, target, 'initial value', this._codec);
    }
    const response = await this._call<{ memory: string; size: string; address: string }>('Allocate', request);
    const typed = count > 1 ? { array: { element: descriptor, length: String(count) } } : descriptor;
    return this.ownedMemory(response.memory, Number(response.size), BigInt(response.address), typed);
  }

  private ownedMemory(handle: string, size: number, address: bigint, ctype: TypeDescriptor | undefined,
                      text?: unknown): Memory {
    const memory = new Memory(this, handle, size, address, ctype, true, text);
    this._track(memory);
    return memory;
  }

  /** Takes ownership of a pointer native code returned: released with `destructor` (default free). */
  async adopt(pointer: Pointer, destructor = '', options: { library?: Library; size?: number } = {}): Promise<Memory> {
    const response = await this._call<{ memory: string; address: string }>('Adopt', {
      pointer: pointer._pointerValue(),
      destructor,
      library: options.library?.handle ?? '',
      size: String(options.size ?? 0),
    });
    return this.ownedMemory(response.memory, options.size ?? 0, BigInt(response.address), undefined);
  }

  /** Memory a batch step allocated; tracked for the garbage collector unless the batch freed it. @internal */
  _memory(handle: string, size: number, address: bigint, tracked: boolean): Memory {
    return tracked ? this.ownedMemory(handle, size, address, undefined) : new Memory(this, handle, size, address, undefined, false);
  }

  /**
   * A batch: steps added with b.call(fn, ...args), b.alloc, b.read,
   * b.write, b.free, run in one round trip by `await b.run()`; a step may
   * take an earlier step's result (a BatchResult) before it exists.
   */
  batch(): Batch {
    return new Batch(this);
  }

  /** @internal */
  _adopted(value: PointerValue, text: unknown): Memory {
    return this.ownedMemory(value.handle ?? '', 0, BigInt(value.address ?? 0), undefined, text);
  }

  /**
   * Makes a JavaScript function a C function pointer. `signature` is a
   * function type ("int(const void *, const void *)") or a prototype. The
   * function may be async; inside it, calls, reads, writes and allocations
   * of this session run on the native thread that waits for it.
   */
  async callback(signature: string, fn: CallbackFunction, options: CallbackOptions = {}): Promise<Callback> {
    if (typeof fn !== 'function') throw new TypeError('callback() needs a function');
    const text = signature.trim().replace(/;+$/, '').trim();
    const at = text.indexOf('(');
    if (at < 0) {
      throw new DeclarationInvalid(`'${signature}' is not a function signature such as 'int(const void *, const void *)'`);
    }
    const sources = [`${text.slice(0, at)} __ffid_callback_${++callbackNames}${text.slice(at)};`, `${text};`];
    let response: ParseDeclarationsResponse | undefined;
    for (let i = 0; i < sources.length; i++) {
      try {
        response = await this._call<ParseDeclarationsResponse>('ParseDeclarations', { source: sources[i] });
        break;
      } catch (error) {
        if (!(error instanceof DeclarationInvalid) || i === sources.length - 1) throw error;
      }
    }
    if (!response || response.functions.length !== 1) {
      throw new DeclarationInvalid(`'${signature}' is not one function signature`);
    }
    const type = this._types.resolveFunction(response.functions[0]!.type);
    const policies: Record<string, string> = {
      return_default: 'CALLBACK_FAILURE_POLICY_RETURN_DEFAULT',
      terminate: 'CALLBACK_FAILURE_POLICY_TERMINATE_WORKER',
    };
    const onError = options.onError ?? 'return_default';
    if (!(onError in policies)) throw new RangeError(`onError: expected "return_default" or "terminate", got ${onError}`);
    const request: Record<string, unknown> = { type, name: fn.name || '', failure_policy: policies[onError] };
    if (options.default !== undefined && options.default !== null) {
      request.default_result = toValue(options.default, type.return_type ?? undefined, "the callback's default result", this._codec);
    }
    if (options.timeout !== undefined) request.timeout = duration(options.timeout, 'timeout');
    const registered = await this._call<{ callback: string; address: string }>('RegisterCallback', request);
    this.callbacks.set(registered.callback, { fn, type });
    return new Callback(this, registered.callback, fn, type, BigInt(registered.address));
  }

  /** @internal */
  _forgetCallback(handle: string): void {
    this.callbacks.delete(handle);
  }
}

function typedefSource(text: string, name: string): string {
  // The declarator's name goes where an abstract declarator has its hole:
  // after "(*" for function pointers, else before the first '['.
  const fp = text.indexOf('(*');
  if (fp >= 0) return `typedef ${text.slice(0, fp + 2)}${name}${text.slice(fp + 2)};`;
  const bracket = text.indexOf('[');
  if (bracket >= 0) return `typedef ${text.slice(0, bracket)} ${name}${text.slice(bracket)};`;
  return `typedef ${text} ${name};`;
}

/** `lib.name(...)` for every function cdef() declared. */
export interface DeclaredFunctions {
  [name: string]: any;
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** A loaded library. Functions declared by cdef() are its methods: `await lib.cos(0.5)`. */
export class Library {
  /** The library handle. */
  readonly handle: string;
  /** The real path that was loaded. */
  readonly path: string;
  /** @internal */ readonly _session: Session;
  private readonly useErrno: boolean;
  private readonly resolved = new Map<string, Promise<NativeFunction>>();

  /** @internal */
  constructor(session: Session, handle: string, path: string, useErrno: boolean) {
    this._session = session;
    this.handle = handle;
    this.path = path;
    this.useErrno = useErrno;
  }

  /** @internal */
  _proxy(): Library & DeclaredFunctions {
    return new Proxy(this, {
      get(target, property, receiver) {
        if (typeof property === 'symbol' || property in target || property === 'then' || !IDENTIFIER.test(property)) {
          return Reflect.get(target, property, receiver);
        }
        return (...args: unknown[]) => target.callDeclared(property, args);
      },
    }) as Library & DeclaredFunctions;
  }

  private async callDeclared(name: string, args: unknown[]): Promise<any> {
    const fn = await this.resolve(name);
    return fn(...args);
  }

  /** Declares C functions and types for the whole session (see Session.cdef). */
  async cdef(source: string): Promise<this> {
    await this._session.cdef(source);
    return this;
  }

  /** Resolves a function declared by cdef() now (calling it does so on first use). */
  resolve(name: string): Promise<NativeFunction> {
    let found = this.resolved.get(name);
    if (!found) {
      found = (async () => {
        await this._session._declaring;
        const type = this._session._functions.get(name);
        if (!type) {
          throw new TypeError(
            `'${name}' is not declared: declare it first with cdef("... ${name}(...);") or resolve it with ` +
              'function("<prototype>")',
          );
        }
        return this.resolveTyped(name, type, {});
      })();
      this.resolved.set(name, found);
      found.catch(() => this.resolved.delete(name));
    }
    return found;
  }

  /** Resolves one function from its C prototype: `await lib.function("double pow(double, double)")`. */
  async function(declaration: string, options: FunctionOptions = {}): Promise<NativeFunction> {
    const source = `${declaration.trim().replace(/;+$/, '').trim()};`;
    const response = await this._session._call<ParseDeclarationsResponse>('ParseDeclarations', { source });
    if (response.functions.length !== 1) {
      throw new DeclarationInvalid(`expected one function prototype, got ${response.functions.length}: '${declaration}'`);
    }
    this._session._addDeclarations({ functions: [], types: response.types, variables: [] });
    const parsed = response.functions[0]!;
    return this.resolveTyped(parsed.name, parsed.type, options);
  }

  private async resolveTyped(name: string, type: FunctionType, options: FunctionOptions): Promise<NativeFunction> {
    const session = this._session;
    const directed = clone(type);
    const out = selectParams(directed, options.out ?? [], 'out');
    const inout = selectParams(directed, options.inout ?? [], 'inout');
    for (const i of out) directed.parameters[i]!.type.pointer!.direction = 'POINTER_DIRECTION_OUT';
    for (const i of inout) directed.parameters[i]!.type.pointer!.direction = 'POINTER_DIRECTION_INOUT';
    const typed = session._types.resolveFunction(directed);
    const response = await session._call<{ function: string; address: string }>('ResolveFunction', {
      library: this.handle,
      symbol: name,
      type: typed,
    });
    const spec = new FunctionSpec(name, response.function, typed, out, inout, options.useErrno ?? this.useErrno,
      options.result ?? 'borrow', options.destructor ?? '');
    return makeFunction(session, spec, BigInt(response.address));
  }

  /** A global variable as Memory of its type (the library owns it). */
  async variable(name: string, ctype?: string): Promise<Memory> {
    const session = this._session;
    await session._declaring;
    let type: TypeDescriptor | undefined;
    if (ctype !== undefined) type = await session.typeof(ctype);
    else if (session._variables.has(name)) type = session._types.resolve(session._variables.get(name)!);
    if (!type) throw new TypeError(`variable '${name}' is not declared: cdef("extern <type> ${name};") or pass its type`);
    const response = await session._call<{ memory: string; address: string; type: TypeDescriptor }>('ResolveVariable', {
      library: this.handle,
      symbol: name,
      type,
    });
    return new Memory(session, response.memory, 0, BigInt(response.address), session._types.resolve(response.type), false);
  }

  /** Unloads the library; its functions become invalid. */
  async unload(): Promise<void> {
    await this._session._call('UnloadLibrary', { library: this.handle });
    this.resolved.clear();
  }
}

function selectParams(type: FunctionType, selectors: (number | string)[], what: string): number[] {
  const names = type.parameters.map((p) => p.name);
  const indexes: number[] = [];
  for (const selector of selectors) {
    let index = -1;
    if (typeof selector === 'number' && Number.isInteger(selector) && selector >= 0 && selector < names.length) index = selector;
    else if (typeof selector === 'string') index = names.indexOf(selector);
    if (index < 0) {
      throw new RangeError(
        `${what}: ${JSON.stringify(selector)} names no parameter of this function (parameters: ${names.map((n) => n || '?').join(', ')})`,
      );
    }
    if (kindOf(type.parameters[index]!.type) !== 'pointer') {
      throw new RangeError(`${what}: ${JSON.stringify(selector)}: parameter ${index} is not a pointer`);
    }
    indexes.push(index);
  }
  return indexes.sort((a, b) => a - b);
}

const OWNERSHIP: Record<string, string> = {
  borrow: 'RESULT_OWNERSHIP_BORROW',
  adopt: 'RESULT_OWNERSHIP_ADOPT',
  release: 'RESULT_OWNERSHIP_RELEASE',
};

/** A resolved function's handle and signature. Immutable. */
export class FunctionSpec {
  private readonly paramNames: string[];

  constructor(
    readonly name: string,
    readonly handle: string,
    readonly type: FunctionType,
    readonly out: number[],
    readonly inout: number[],
    readonly useErrno: boolean,
    readonly ownership: string,
    readonly destructor: string,
  ) {
    if (!(ownership in OWNERSHIP)) throw new RangeError(`result: expected "borrow", "adopt" or "release", got ${ownership}`);
    this.paramNames = type.parameters.map(
      (p, i) => `parameter ${i + 1}${p.name ? ` ('${p.name}')` : ''} of '${name}'`,
    );
  }

  /**
   * The CallRequest for a call with `args`. With `refs` (a batch step),
   * arguments that are BatchResults of earlier steps become placeholders,
   * listed in `refs` with their argument index.
   */
  request(args: unknown[], errno: boolean | undefined, codec: PointerCodec,
          refs?: [number, Deferred][]): Record<string, unknown> {
    const params = this.type.parameters;
    const given = [...args];
    const values: Value[] = [];
    const expected = params.length - this.out.length;
    const countError = (more: boolean) =>
      new ArgumentCount(
        `${this.name}() takes ${expected} argument${expected === 1 ? '' : 's'}${more ? ' or more' : ''}, got ${args.length}`,
      );
    const convert = (arg: unknown, type: TypeDescriptor | undefined, name: string): Value => {
      const inner = arg instanceof Cast ? arg.value : arg;
      if (!isDeferred(inner)) return toValue(arg, type, name, codec);
      if (!refs) throw new TypeError(`${name}: a BatchResult is an argument only in a step of its batch`);
      refs.push([values.length, inner]);
      return {};
    };
    params.forEach((p, i) => {
      if (this.out.includes(i)) {
        values.push({});
        return;
      }
      if (!given.length) throw countError(this.type.variadic);
      const type = this.inout.includes(i) ? p.type.pointer!.pointee ?? undefined : p.type;
      values.push(convert(given.shift(), type, this.paramNames[i]!));
    });
    if (given.length && !this.type.variadic) throw countError(false);
    // After `...` a BatchResult is a pointer unless a cast names its type.
    const variadicTypes = given.map((extra) => (isDeferred(extra) ? { pointer: {} } : variadicType(extra, codec)));
    given.forEach((extra, j) => {
      values.push(convert(extra, undefined, `parameter ${params.length + j + 1} (variadic) of '${this.name}'`));
    });
    return {
      function: this.handle,
      arguments: values,
      variadic_types: variadicTypes,
      capture_errno: errno ?? this.useErrno,
      result_ownership: OWNERSHIP[this.ownership],
      result_destructor: this.destructor,
    };
  }

  result(response: CallResponse, session: Session): unknown {
    let result: unknown = null;
    if (valueKind(response.result) !== undefined) {
      result = fromValue(response.result, this.type.return_type ?? undefined, session._codec);
    }
    if (this.ownership === 'adopt' && response.result_pointer) {
      const text = typeof result === 'string' || Buffer.isBuffer(result) ? result : undefined;
      result = session._adopted(response.result_pointer, text);
    }
    const indexes = [...new Set([...this.out, ...this.inout])].sort((a, b) => a - b);
    if (!indexes.length) return result;
    const outs = indexes.map((i) => {
      const value = response.out_values?.[String(i)];
      return value ? fromValue(value, this.type.parameters[i]!.type.pointer!.pointee ?? undefined, session._codec) : null;
    });
    if (returnsVoid(this.type)) return outs.length === 1 ? outs[0] : outs;
    return [result, ...outs];
  }
}

/** A resolved native function: `await f(args...)`. */
export interface NativeFunction {
  (...args: unknown[]): Promise<any>;
  /** Calls with options: `await f.invoke([0.5], { timeout: 2, errno: true })`. */
  invoke(args: unknown[], options?: CallOptions): Promise<any>;
  /**
   * Sends the call on the session's Connect stream at once (before this
   * returns) and resolves with its result: many calls can be in flight, and
   * they run in the order sent.
   */
  callAsync(...args: unknown[]): Promise<any>;
  /** The symbol. */
  readonly symbol: string;
  /** The function handle. */
  readonly handle: string;
  /** The signature it was resolved with. */
  readonly type: FunctionType;
  /** Its address in the worker (informational). */
  readonly address: bigint;
}

function makeFunction(session: Session, spec: FunctionSpec, address: bigint): NativeFunction {
  // A CallbackFailed gets the callback's exception as its cause.
  const withCause = (error: unknown): unknown => {
    if (error instanceof CallbackFailed && session._lastCallbackFailure !== undefined) {
      const cause = session._lastCallbackFailure;
      session._lastCallbackFailure = undefined;
      return new CallbackFailed(error.detail, {
        reason: error.reason, code: error.code, metadata: error.metadata, crashReport: error.crashReport, cause,
      });
    }
    return error;
  };
  const finish = (request: Record<string, unknown>, response: CallResponse): unknown => {
    if (request.capture_errno) session.errno = response.errno_value;
    return spec.result(response, session);
  };
  const invoke = async (args: unknown[], options: CallOptions = {}): Promise<any> => {
    const request = spec.request(args, options.errno, session._codec);
    let response: CallResponse;
    try {
      response = await session._call<CallResponse>('Call', request, options.timeout);
    } catch (error) {
      throw withCause(error);
    }
    return finish(request, response);
  };
  const callAsync = (...args: unknown[]): Promise<any> => {
    let request: Record<string, unknown>;
    try {
      request = spec.request(args, undefined, session._codec);
    } catch (error) {
      return Promise.reject(error);
    }
    return session._pipelined('Call', request).then(
      (response: CallResponse) => finish(request, response),
      (error: unknown) => Promise.reject(withCause(error)),
    );
  };
  const fn = ((...args: unknown[]) => invoke(args)) as NativeFunction;
  Object.defineProperty(fn, 'name', { value: spec.name });
  Object.defineProperties(fn, {
    invoke: { value: invoke },
    callAsync: { value: callAsync },
    _spec: { value: spec },
    symbol: { value: spec.name, enumerable: true },
    handle: { value: spec.handle, enumerable: true },
    type: { value: spec.type, enumerable: true },
    address: { value: address, enumerable: true },
  });
  return fn;
}

/**
 * A native address in the session's worker: a memory handle plus a byte
 * offset, or a bare address. Pointers a function returns are borrowed: the
 * library still owns them (ffid never frees them).
 */
export class Pointer {
  /** @internal */ readonly _session: Session;
  /** The memory handle, or "" for a bare address. */
  readonly handle: string;
  /** The byte offset from the handle's start. */
  readonly offset: number;
  private readonly base: bigint;
  // The Memory this pointer points into, kept alive while the pointer is.
  private owner: Pointer | undefined;

  /** @internal */
  constructor(session: Session, handle: string, offset: number, base: bigint) {
    this._session = session;
    this.handle = handle;
    this.offset = offset;
    this.base = base;
  }

  /** The address in the worker. */
  get address(): bigint {
    return this.base + BigInt(this.offset);
  }

  /** The pointer `delta` bytes further. */
  add(delta: number): Pointer {
    if (!Number.isInteger(delta)) throw new TypeError(`add() needs an integer number of bytes, got ${delta}`);
    const pointer = new Pointer(this._session, this.handle, this.offset + delta, this.base);
    pointer.owner = this.owner ?? this;
    return pointer;
  }

  /** @internal */
  _pointerValue(): PointerValue {
    if (this.handle) return { handle: this.handle, offset: String(this.offset) };
    return { address: this.address.toString() };
  }

  /** Reads `length` bytes at `offset`; a bad address rejects with BadAddress. */
  async read(length: number, offset = 0): Promise<Buffer> {
    if (length < 0 || offset < 0) throw new RangeError('length and offset must not be negative');
    const response = await this._session._call<{ data: Buffer }>('Read', {
      pointer: this.add(offset)._pointerValue(),
      length: String(length),
    });
    return Buffer.from(response.data);
  }

  /** Writes bytes at `offset`. */
  async write(data: Uint8Array | string, offset = 0): Promise<void> {
    if (offset < 0) throw new RangeError('offset must not be negative');
    await this._session._call('Write', { pointer: this.add(offset)._pointerValue(), data: Buffer.from(data) });
  }

  /** @internal */
  async _descriptor(ctype?: string): Promise<TypeDescriptor> {
    if (ctype !== undefined) return this._session.typeof(ctype);
    throw new TypeError('this pointer has no C type: pass one, e.g. readValue("int")');
  }

  /** Reads one value of a C type here (aligned for it, else MisalignedAccess). */
  async readValue(ctype?: string): Promise<any> {
    const type = await this._descriptor(ctype);
    const response = await this._session._call<{ value: Value }>('Read', { pointer: this._pointerValue(), type });
    return fromValue(response.value, type, this._session._codec);
  }

  /** Writes one value of a C type here. */
  async writeValue(value: unknown, ctype?: string): Promise<void> {
    const type = await this._descriptor(ctype);
    await this._session._call('Write', {
      pointer: this._pointerValue(),
      type,
      value: toValue(value, type, 'the value', this._session._codec),
    });
  }

  toString(): string {
    const kind = this.constructor.name;
    return `${kind}(0x${this.address.toString(16)}${this.handle ? ` ${this.handle}+${this.offset}` : ''})`;
  }

  /** How console.log and util.inspect show it. */
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }
}

/**
 * Native memory owned by the session (from alloc, new, adopt or an adopted
 * result), or a library's global variable. Every access is bounds-checked;
 * it is freed by free(), when the object is garbage-collected, or at the
 * session's end.
 */
export class Memory extends Pointer {
  /** The size in bytes (0: unknown). */
  readonly size: number;
  /** The C type, for memory made by new() or variable(). */
  readonly ctype: TypeDescriptor | undefined;
  /** For an adopted string result: the string. */
  readonly text: unknown;
  private readonly owned: boolean;

  /** @internal */
  constructor(session: Session, handle: string, size: number, address: bigint, ctype: TypeDescriptor | undefined,
              owned: boolean, text?: unknown) {
    super(session, handle, 0, address);
    this.size = size;
    this.ctype = ctype;
    this.owned = owned;
    this.text = text;
  }

  /** Reads `length` bytes at `offset` (default: to the end). */
  override async read(length?: number, offset = 0): Promise<Buffer> {
    if (length === undefined) {
      if (this.size === 0) throw new RangeError('the size of this memory is unknown: give read() a length');
      length = this.size - offset;
      if (length <= 0) return Buffer.alloc(0);
    }
    return super.read(length, offset);
  }

  /** @internal */
  override async _descriptor(ctype?: string): Promise<TypeDescriptor> {
    if (ctype === undefined && this.ctype) return this.ctype;
    return super._descriptor(ctype);
  }

  /** Releases the memory now (with its destructor, for adopted memory). */
  async free(): Promise<void> {
    if (this.owned) this._session._untrack(this);
    await this._session._call('Free', { memory: this.handle });
  }
}

/** A JavaScript function registered as a C function pointer; pass it where one is expected. */
export class Callback {
  /** @internal */ readonly _session: Session;
  /** The callback handle. */
  readonly handle: string;
  /** The JavaScript function. */
  readonly fn: CallbackFunction;
  /** Its C signature. */
  readonly type: FunctionType;
  /** The address of its native entry point in the worker. */
  readonly address: bigint;

  /** @internal */
  constructor(session: Session, handle: string, fn: CallbackFunction, type: FunctionType, address: bigint) {
    this._session = session;
    this.handle = handle;
    this.fn = fn;
    this.type = type;
    this.address = address;
  }

  /** Releases the callback; native code that still calls it gets its failure behaviour. */
  async release(): Promise<void> {
    await this._session._call('ReleaseCallback', { callback: this.handle });
    this._session._forgetCallback(this.handle);
  }
}

/** Marks a value's C type, for variadic arguments: `ffid.cast("double", 2)`. */
export function cast(ctype: string, value: unknown): Cast {
  return new Cast(ctype, value);
}

