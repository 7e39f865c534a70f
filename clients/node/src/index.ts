/**
 * ffid for Node.js: call native C libraries out of process.
 *
 * ```ts
 * import * as ffid from 'ffid';
 *
 * const s = await ffid.connect();
 * const libm = await s.load('libm.so.6');
 * await libm.cdef('double cos(double);');
 * await libm.cos(0.5);      // 0.8775825618903728
 * await s.close();
 * ```
 *
 * A session is one worker process on the daemon's side: a crash in a
 * library kills that worker (WorkerCrashed), never the daemon or this
 * process.
 */

export {
  connect,
  defaultAddress,
  cast,
  Session,
  Library,
  Pointer,
  Memory,
  Callback,
} from './session';
export type {
  ConnectOptions,
  CallOptions,
  FunctionOptions,
  CallbackOptions,
  CallbackFunction,
  InvocationInfo,
  DeclaredFunctions,
  NativeFunction,
} from './session';
export { Cast, UnionValue, LongDouble } from './values';
export { Batch, BatchResult } from './batch';
export type { TypeDescriptor, FunctionType, Value, SessionInfo, ServerInfo } from './proto';
export {
  FfidError,
  FfidError as Error,
  ERROR_CLASSES,
  LibraryNotFound,
  LibraryNotAllowed,
  LibraryLoadFailed,
  SymbolNotFound,
  DeclarationInvalid,
  TypeMismatch,
  ValueOutOfRange,
  ArgumentCount,
  HandleInvalid,
  OutOfBounds,
  WorkerCrashed,
  SessionNotFound,
  DeadlineExceeded,
  ResourceLimit,
  SandboxViolation,
  CallbackFailed,
  InvalidRequest,
  Unsupported,
  WorkerStartFailed,
  BadAddress,
  Internal,
  MisalignedAccess,
  Unauthenticated,
  PrincipalDenied,
  SymbolNotAllowed,
  LibraryPinMismatch,
  SessionQuota,
  RateLimited,
  Unavailable,
} from './errors';
export type { AuthOptions, PemSource } from './connection';
export type { CrashReport, ErrorOptions } from './errors';
