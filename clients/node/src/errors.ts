// ffid's errors: one class per ErrorReason the server reports, all
// subclasses of FfidError, so `err instanceof ffid.WorkerCrashed` works.
//
// Every failing RPC carries a google.rpc.Status (in the
// grpc-status-details-bin trailer, or StreamResult.error_status on the
// Connect stream) whose details hold an ErrorInfo (reason
// "SYMBOL_NOT_FOUND", ...) and, for a worker's death, a CrashReport.

import * as protobuf from 'protobufjs';
import { status as GrpcStatus, Metadata, ServiceError } from '@grpc/grpc-js';
import { rootTypes } from './proto';

/** How a session's worker died (ffid.v1.CrashReport). */
export interface CrashReport {
  signal: number;
  signal_name: string;
  exit_code: number;
  fault_address: bigint;
  frames: string[];
  function: string;
  pid: number;
  syscall: number;
  syscall_name: string;
  limit: string;
  signal_code: number;
}

/** Options of an error's constructor. */
export interface ErrorOptions {
  /** The ErrorReason name without its prefix, e.g. "SYMBOL_NOT_FOUND". */
  reason?: string;
  /** The gRPC status code; undefined for errors the client found itself. */
  code?: GrpcStatus;
  /** ErrorInfo.metadata, when the server sent any. */
  metadata?: Record<string, string>;
  /** For a worker's death: how it died. */
  crashReport?: CrashReport;
  /** The error that caused this one (a callback's exception). */
  cause?: unknown;
}

/** The base class of every error ffid raises. */
export class FfidError extends Error {
  /** The reason this class stands for ("" for FfidError itself). */
  static readonly reasonName: string = '';
  /** The server's message: what went wrong and what to do about it. */
  readonly detail: string;
  /** The ErrorReason name without its prefix, or "" when there was none. */
  readonly reason: string;
  /** The gRPC status code, or undefined for errors found by the client. */
  readonly code: GrpcStatus | undefined;
  /** ErrorInfo.metadata (e.g. "batch_step"). */
  readonly metadata: Record<string, string>;
  /** For WORKER_CRASHED and the other ways a worker dies: how. */
  readonly crashReport: CrashReport | undefined;

  constructor(message: string, options: ErrorOptions = {}) {
    const reason = options.reason || (new.target as typeof FfidError).reasonName;
    super(reason ? `${reason}: ${message}` : message);
    this.name = new.target.name;
    this.detail = message;
    this.reason = reason;
    this.code = options.code;
    this.metadata = { ...(options.metadata ?? {}) };
    this.crashReport = options.crashReport;
    if (options.cause !== undefined) {
      Object.defineProperty(this, 'cause', { value: options.cause, enumerable: false, writable: true });
    }
  }

  /** For a batch that failed: the index of the step that failed. */
  get batchStep(): number | undefined {
    const step = this.metadata['batch_step'];
    return step === undefined ? undefined : Number(step);
  }
}

/** The library file does not exist or the loader cannot find the soname. */
export class LibraryNotFound extends FfidError {
  static override readonly reasonName = 'LIBRARY_NOT_FOUND';
}
/** The library's real path is outside the server's allowlist. */
export class LibraryNotAllowed extends FfidError {
  static override readonly reasonName = 'LIBRARY_NOT_ALLOWED';
}
/** dlopen failed for another reason (wrong ELF class, missing dependency). */
export class LibraryLoadFailed extends FfidError {
  static override readonly reasonName = 'LIBRARY_LOAD_FAILED';
}
/** The library does not export the symbol. */
export class SymbolNotFound extends FfidError {
  static override readonly reasonName = 'SYMBOL_NOT_FOUND';
}
/** A C declaration could not be parsed. */
export class DeclarationInvalid extends FfidError {
  static override readonly reasonName = 'DECLARATION_INVALID';
}
/** A value's kind does not suit its type, or a type cannot be used there. */
export class TypeMismatch extends FfidError {
  static override readonly reasonName = 'TYPE_MISMATCH';
}
/** A value does not fit in its type's range. */
export class ValueOutOfRange extends FfidError {
  static override readonly reasonName = 'VALUE_OUT_OF_RANGE';
}
/** Too few or too many arguments for the function. */
export class ArgumentCount extends FfidError {
  static override readonly reasonName = 'ARGUMENT_COUNT';
}
/** A handle that was freed, never existed, or belongs to another session. */
export class HandleInvalid extends FfidError {
  static override readonly reasonName = 'HANDLE_INVALID';
}
/** A read or write outside an allocation's bounds. */
export class OutOfBounds extends FfidError {
  static override readonly reasonName = 'OUT_OF_BOUNDS';
}
/** The session's worker process died; `crashReport` says how. */
export class WorkerCrashed extends FfidError {
  static override readonly reasonName = 'WORKER_CRASHED';
}
/** The session does not exist (or was closed). */
export class SessionNotFound extends FfidError {
  static override readonly reasonName = 'SESSION_NOT_FOUND';
}
/** The call did not finish within its timeout. */
export class DeadlineExceeded extends FfidError {
  static override readonly reasonName = 'DEADLINE_EXCEEDED';
}
/** A resource limit was reached (memory, CPU time, sizes). */
export class ResourceLimit extends FfidError {
  static override readonly reasonName = 'RESOURCE_LIMIT';
}
/** The worker's sandbox refused an operation. */
export class SandboxViolation extends FfidError {
  static override readonly reasonName = 'SANDBOX_VIOLATION';
}
/** A client callback failed or did not answer; `cause` is its exception. */
export class CallbackFailed extends FfidError {
  static override readonly reasonName = 'CALLBACK_FAILED';
}
/** A request field is missing or malformed. */
export class InvalidRequest extends FfidError {
  static override readonly reasonName = 'INVALID_REQUEST';
}
/** The type or feature is valid but not supported (here or by this server). */
export class Unsupported extends FfidError {
  static override readonly reasonName = 'UNSUPPORTED';
}
/** The worker could not be started. */
export class WorkerStartFailed extends FfidError {
  static override readonly reasonName = 'WORKER_START_FAILED';
}
/** The memory at a borrowed address cannot be read or written. */
export class BadAddress extends FfidError {
  static override readonly reasonName = 'BAD_ADDRESS';
}
/** An internal error in ffid itself. */
export class Internal extends FfidError {
  static override readonly reasonName = 'INTERNAL';
}
/** A typed read or write at an address not aligned for its type. */
export class MisalignedAccess extends FfidError {
  static override readonly reasonName = 'MISALIGNED_ACCESS';
}
/** No identity where the daemon requires one, or a bearer token it does not know. */
export class Unauthenticated extends FfidError {
  static override readonly reasonName = 'UNAUTHENTICATED';
}
/** The principal's policy refuses it everything. */
export class PrincipalDenied extends FfidError {
  static override readonly reasonName = 'PRINCIPAL_DENIED';
}
/** The principal's policy does not allow the symbol. */
export class SymbolNotAllowed extends FfidError {
  static override readonly reasonName = 'SYMBOL_NOT_ALLOWED';
}
/** The library's SHA-256 differs from its pin in the daemon's allowlist. */
export class LibraryPinMismatch extends FfidError {
  static override readonly reasonName = 'LIBRARY_PIN_MISMATCH';
}
/** The principal has as many sessions as its policy allows. */
export class SessionQuota extends FfidError {
  static override readonly reasonName = 'SESSION_QUOTA';
}
/** The principal makes more calls per second than its policy allows. */
export class RateLimited extends FfidError {
  static override readonly reasonName = 'RATE_LIMITED';
}
/** The daemon cannot be reached (not running, wrong address, gone). */
export class Unavailable extends FfidError {}

/** The error class of each reason. */
export const ERROR_CLASSES: Readonly<Record<string, typeof FfidError>> = Object.freeze(
  Object.fromEntries(
    [
      LibraryNotFound, LibraryNotAllowed, LibraryLoadFailed, SymbolNotFound, DeclarationInvalid,
      TypeMismatch, ValueOutOfRange, ArgumentCount, HandleInvalid, OutOfBounds, WorkerCrashed,
      SessionNotFound, DeadlineExceeded, ResourceLimit, SandboxViolation, CallbackFailed,
      InvalidRequest, Unsupported, WorkerStartFailed, BadAddress, Internal, MisalignedAccess,
      Unauthenticated, PrincipalDenied, SymbolNotAllowed, LibraryPinMismatch, SessionQuota, RateLimited,
    ].map((cls) => [cls.reasonName, cls]),
  ),
);

const ERROR_DOMAIN = 'ffid.dev';
const DETAILS_KEY = 'grpc-status-details-bin';

// google.rpc.Status, google.protobuf.Any and google.rpc.ErrorInfo, declared
// here (three small, stable messages) rather than shipping their .proto.
const rpcRoot = new protobuf.Root();
const AnyType = new protobuf.Type('Any')
  .add(new protobuf.Field('type_url', 1, 'string'))
  .add(new protobuf.Field('value', 2, 'bytes'));
const StatusType = new protobuf.Type('Status')
  .add(new protobuf.Field('code', 1, 'int32'))
  .add(new protobuf.Field('message', 2, 'string'))
  .add(new protobuf.Field('details', 3, 'Any', 'repeated'));
const ErrorInfoType = new protobuf.Type('ErrorInfo')
  .add(new protobuf.Field('reason', 1, 'string'))
  .add(new protobuf.Field('domain', 2, 'string'))
  .add(new protobuf.MapField('metadata', 3, 'string', 'string'));
rpcRoot.define('rpc').add(AnyType).add(StatusType).add(ErrorInfoType);

interface ParsedDetails {
  code: number | undefined;
  message: string;
  reason: string;
  metadata: Record<string, string>;
  crashReport: CrashReport | undefined;
}

function toCrashReport(raw: Uint8Array): CrashReport {
  const type = rootTypes().lookupType('ffid.v1.CrashReport');
  const object = type.toObject(type.decode(raw), { longs: String, defaults: true, arrays: true });
  return { ...object, fault_address: BigInt(object.fault_address) } as CrashReport;
}

/** Reason, metadata and crash report from a serialized google.rpc.Status. */
function parseStatus(raw: Uint8Array): ParsedDetails {
  const result: ParsedDetails = { code: undefined, message: '', reason: '', metadata: {}, crashReport: undefined };
  let status: { code?: number; message?: string; details?: { type_url: string; value: Uint8Array }[] };
  try {
    status = StatusType.toObject(StatusType.decode(raw), { defaults: true, arrays: true });
  } catch {
    return result; // a malformed trailer must not hide the error
  }
  result.code = status.code;
  result.message = status.message ?? '';
  for (const detail of status.details ?? []) {
    const name = detail.type_url.slice(detail.type_url.lastIndexOf('/') + 1);
    try {
      if (name === 'google.rpc.ErrorInfo') {
        const info = ErrorInfoType.toObject(ErrorInfoType.decode(detail.value), { defaults: true, objects: true });
        if (info.domain === '' || info.domain === ERROR_DOMAIN) {
          result.reason = info.reason;
          result.metadata = { ...info.metadata };
        }
      } else if (name === 'ffid.v1.CrashReport') {
        result.crashReport = toCrashReport(detail.value);
      }
    } catch {
      // An undecodable detail is skipped; the message still says what failed.
    }
  }
  return result;
}

/** The error for a failure's status code, message and status details. */
export function errorFromStatus(code: GrpcStatus | undefined, message: string, details?: Uint8Array): FfidError {
  const parsed = details && details.length ? parseStatus(details) : undefined;
  const reason = parsed?.reason ?? '';
  let cls: typeof FfidError = ERROR_CLASSES[reason] ?? FfidError;
  let text = message;
  if (!reason) {
    if (code === GrpcStatus.DEADLINE_EXCEEDED) {
      cls = DeadlineExceeded;
      text = text || 'the call did not finish within its timeout';
    } else if (code === GrpcStatus.UNAVAILABLE) {
      cls = Unavailable;
    }
  }
  return new cls(text || (code !== undefined ? GrpcStatus[code] : 'unknown error'), {
    reason: reason || undefined,
    code,
    metadata: parsed?.metadata,
    crashReport: parsed?.crashReport,
  });
}

/** The error for a failed unary RPC. */
export function errorFromServiceError(error: ServiceError): FfidError {
  const metadata: Metadata | undefined = error.metadata;
  const values = metadata ? metadata.get(DETAILS_KEY) : [];
  const details = values.length && typeof values[0] !== 'string' ? (values[0] as Buffer) : undefined;
  return errorFromStatus(error.code, error.details ?? error.message, details);
}

/** The error for a StreamResult's serialized google.rpc.Status. */
export function errorFromStatusBytes(raw: Uint8Array): FfidError {
  const parsed = parseStatus(raw);
  return errorFromStatus(parsed.code as GrpcStatus | undefined, parsed.message, raw);
}
