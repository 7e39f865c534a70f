// The ffid.v1 API as loaded at run time from the .proto files shipped in
// this package's proto/ (copied from the repository's proto/ at build time
// by scripts/copy-protos.js): the gRPC client constructor of service Ffi and
// the protobufjs types of the messages.
//
// Messages are plain objects as @grpc/proto-loader converts them: field
// names as in the .proto (snake_case), enums as their names, 64-bit integers
// as decimal strings, bytes as Buffers, and for each oneof a property
// naming the member that is set (e.g. `kind: "scalar"`).

import * as path from 'path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import * as protobuf from 'protobufjs';

const PROTO_DIR = path.resolve(__dirname, '..', 'proto');
const FILES = ['ffid/v1/ffid.proto', 'ffid/v1/types.proto', 'ffid/v1/errors.proto'];

/** How proto-loader converts messages (see the top of this file). */
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  arrays: true,
  objects: true,
  oneofs: true,
  includeDirs: [PROTO_DIR],
};

let clientConstructor: grpc.ServiceClientConstructor | undefined;
let root: protobuf.Root | undefined;

/** The generic gRPC client class of service ffid.v1.Ffi. */
export function ffiClient(): grpc.ServiceClientConstructor {
  if (!clientConstructor) {
    const definition = protoLoader.loadSync(FILES, LOADER_OPTIONS);
    const loaded = grpc.loadPackageDefinition(definition) as unknown as {
      ffid: { v1: { Ffi: grpc.ServiceClientConstructor } };
    };
    clientConstructor = loaded.ffid.v1.Ffi;
  }
  return clientConstructor;
}

/** The protobufjs root with every ffid.v1 message. */
export function rootTypes(): protobuf.Root {
  if (!root) {
    const loaded = new protobuf.Root();
    loaded.resolvePath = (_origin: string, target: string) =>
      target.startsWith('google/protobuf/') ? target : path.join(PROTO_DIR, target);
    loaded.loadSync(FILES, { keepCase: true });
    root = loaded;
  }
  return root;
}

// The shapes of the messages this client reads and builds. Loose on purpose:
// they describe what proto-loader produces, not every field.

/** A C type (ffid.v1.TypeDescriptor). */
export interface TypeDescriptor {
  kind?: string;
  scalar?: string;
  pointer?: { pointee?: TypeDescriptor | null; direction?: string };
  string?: { encoding?: string; is_const?: boolean };
  array?: { element: TypeDescriptor; length: string | number };
  record?: {
    name: string;
    kind: string;
    fields: { name: string; type: TypeDescriptor; bit_width?: number; offset?: string }[];
    size?: string;
  };
  enum_type?: { name: string; underlying: string; constants: { name: string; value: string }[] };
  function_pointer?: FunctionType;
  named?: string;
  is_const?: boolean;
}

/** A function signature (ffid.v1.FunctionType). */
export interface FunctionType {
  return_type?: TypeDescriptor | null;
  parameters: { name: string; type: TypeDescriptor }[];
  variadic: boolean;
}

/** A value (ffid.v1.Value): exactly one member set. */
export interface Value {
  kind?: string;
  bool_value?: boolean;
  int_value?: string | number;
  uint_value?: string | number;
  double_value?: number;
  string_value?: string;
  bytes_value?: Uint8Array;
  pointer_value?: PointerValue;
  null_value?: string | number;
  record_value?: { fields: Record<string, Value>; union_bytes?: Uint8Array };
  array_value?: { elements: Value[] };
  enum_value?: string;
  long_double_value?: Uint8Array;
  callback_handle?: string;
  long_double?: { bytes?: Uint8Array; approximate?: number; decimal?: string };
}

/** A pointer (ffid.v1.PointerValue). */
export interface PointerValue {
  handle?: string;
  offset?: string | number;
  address?: string | number;
}

/** The parts of ParseDeclarationsResponse this client uses. */
export interface ParseDeclarationsResponse {
  functions: { name: string; type: FunctionType }[];
  types: { name: string; type: TypeDescriptor }[];
  variables: { name: string; type: TypeDescriptor }[];
}

/** The parts of CallResponse this client uses. */
export interface CallResponse {
  result: Value | null;
  errno_value: number;
  out_values: Record<string, Value>;
  result_pointer: PointerValue | null;
}

/** A session as the daemon describes it (ffid.v1.Session). */
export interface SessionInfo {
  id: string;
  state: string;
  worker_pid: number;
  crash: Record<string, unknown> | null;
  idle_timeout: { seconds: string; nanos: number } | null;
  limits: Record<string, unknown> | null;
  sandbox: { allow_network: boolean } | null;
  restart_policy: string;
  restarts: number;
  sandbox_status: Record<string, unknown> | null;
}

/** What the server offers (ffid.v1.GetServerInfoResponse). */
export interface ServerInfo {
  sandbox: Record<string, unknown> | null;
  default_limits: Record<string, unknown> | null;
  max_limits: Record<string, unknown> | null;
  network_allowed: boolean;
  /** The daemon's version, "MAJOR.MINOR.PATCH". */
  version: string;
  /** Who the daemon takes this client to be: "unix:UID", "token:NAME", "x509:CN" or "anonymous". */
  principal: string;
}
