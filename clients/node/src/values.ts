// JavaScript values <-> ffid.v1.Value, guided by the C type where it is
// known.
//
// JS -> C: null/undefined is NULL; booleans, numbers and bigints as numbers
// (a number's C type decides whether it travels as an integer or a double);
// strings as strings (an enum constant's name for enums); Buffers and
// Uint8Arrays as bytes; plain objects (by member name) or arrays (by
// position) for structs and unions; arrays for C arrays; Pointer/Memory
// objects and integer addresses for pointers; Callback objects for function
// pointers.
//
// C -> JS: integers as numbers, or bigints when outside Number's safe range;
// strings as strings (Buffers when not UTF-8); pointers as Pointer objects;
// NULL as null; structs as objects; arrays as arrays; enums as the
// constant's name (a number for other values).

import { TypeMismatch, ValueOutOfRange, Internal } from './errors';
import type { FunctionType, PointerValue, TypeDescriptor, Value } from './proto';

const INT64_MIN = -(1n << 63n);
const INT64_LIMIT = 1n << 63n;
const UINT64_LIMIT = 1n << 64n;

const INTEGER_KINDS = new Set(
  [
    'CHAR', 'SIGNED_CHAR', 'UNSIGNED_CHAR', 'SHORT', 'UNSIGNED_SHORT', 'INT', 'UNSIGNED_INT', 'LONG',
    'UNSIGNED_LONG', 'LONG_LONG', 'UNSIGNED_LONG_LONG', 'INT8', 'UINT8', 'INT16', 'UINT16', 'INT32',
    'UINT32', 'INT64', 'UINT64', 'SIZE_T', 'SSIZE_T', 'INTPTR_T', 'UINTPTR_T', 'PTRDIFF_T', 'WCHAR_T',
    'CHAR16_T', 'CHAR32_T',
  ].map((name) => `SCALAR_KIND_${name}`),
);
const FLOAT_KINDS = new Set(['SCALAR_KIND_FLOAT', 'SCALAR_KIND_DOUBLE', 'SCALAR_KIND_LONG_DOUBLE']);
const COMPLEX_KINDS = new Set(['SCALAR_KIND_COMPLEX_FLOAT', 'SCALAR_KIND_COMPLEX_DOUBLE']);

/** Which member of a TypeDescriptor's oneof is set. */
export function kindOf(d: TypeDescriptor | null | undefined): string | undefined {
  if (!d) return undefined;
  if (d.kind) return d.kind;
  for (const k of ['scalar', 'pointer', 'string', 'array', 'record', 'enum_type', 'function_pointer', 'named']) {
    if ((d as Record<string, unknown>)[k] !== undefined && (d as Record<string, unknown>)[k] !== null) return k;
  }
  return undefined;
}

/** Whether a function returns nothing. */
export function returnsVoid(type: FunctionType): boolean {
  const r = type.return_type;
  return !r || (kindOf(r) === 'scalar' && r.scalar === 'SCALAR_KIND_VOID');
}

/** A deep copy of a descriptor (they are plain data). */
export function clone<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

/**
 * The named types (struct/union/enum tags, typedefs) a session's cdefs
 * declared, so that values can be converted by their C type on the client.
 */
export class TypeRegistry {
  private readonly types = new Map<string, TypeDescriptor>();

  add(name: string, d: TypeDescriptor): void {
    this.types.set(name, d);
    if (kindOf(d) === 'record' && d.record!.name) {
      const keyword = d.record!.kind === 'RECORD_KIND_UNION' ? 'union' : 'struct';
      if (!this.types.has(`${keyword} ${d.record!.name}`)) this.types.set(`${keyword} ${d.record!.name}`, d);
    }
    if (kindOf(d) === 'enum_type' && d.enum_type!.name) {
      if (!this.types.has(`enum ${d.enum_type!.name}`)) this.types.set(`enum ${d.enum_type!.name}`, d);
    }
  }

  get(name: string): TypeDescriptor | undefined {
    return this.types.get(name);
  }

  /**
   * A copy of `d` with every known named reference replaced by its
   * definition; references behind plain pointers stay (recursive types).
   */
  resolve(d: TypeDescriptor): TypeDescriptor {
    const copy = clone(d);
    this.resolveInPlace(copy, 0);
    return copy;
  }

  resolveFunction(type: FunctionType): FunctionType {
    const copy = clone(type);
    this.resolveFunctionInPlace(copy, 0);
    return copy;
  }

  private resolveFunctionInPlace(type: FunctionType, depth: number): void {
    if (type.return_type) this.resolveInPlace(type.return_type, depth + 1);
    for (const p of type.parameters ?? []) this.resolveInPlace(p.type, depth + 1);
  }

  private resolveInPlace(d: TypeDescriptor, depth: number): void {
    if (depth > 64 || !d) return;
    switch (kindOf(d)) {
      case 'named': {
        const found = this.types.get(d.named!);
        if (found && kindOf(found) !== 'named') {
          const isConst = d.is_const;
          for (const key of Object.keys(d)) delete (d as Record<string, unknown>)[key];
          Object.assign(d, clone(found));
          if (isConst) d.is_const = true;
          this.resolveInPlace(d, depth + 1);
        } else if (found && found.named !== d.named) {
          d.named = found.named;
          this.resolveInPlace(d, depth + 1);
        }
        break;
      }
      case 'array':
        this.resolveInPlace(d.array!.element, depth + 1);
        break;
      case 'record':
        for (const field of d.record!.fields ?? []) this.resolveInPlace(field.type, depth + 1);
        break;
      case 'pointer':
        if (d.pointer!.pointee && d.pointer!.direction && d.pointer!.direction !== 'POINTER_DIRECTION_UNSPECIFIED') {
          this.resolveInPlace(d.pointer!.pointee, depth + 1);
        }
        break;
      case 'function_pointer':
        this.resolveFunctionInPlace(d.function_pointer!, depth + 1);
        break;
      default:
        break;
    }
  }
}

/** What the conversions need from the session: its pointer objects. */
export interface PointerCodec {
  /** The PointerValue of a Pointer-like object, or undefined. */
  pointerOf(obj: unknown): PointerValue | undefined;
  /** The callback handle of a Callback object, or undefined. */
  callbackOf(obj: unknown): string | undefined;
  /** A Pointer object for a PointerValue the server sent. */
  makePointer(value: PointerValue): unknown;
}

/** A value known only later: the result of an earlier step of a batch. */
export interface Deferred {
  /** The BatchReference that puts this value at `argument`. */
  _reference(argument: number): Record<string, unknown>;
}

/** Whether `obj` is a Deferred (a BatchResult). */
export function isDeferred(obj: unknown): obj is Deferred {
  return typeof obj === 'object' && obj !== null && typeof (obj as Deferred)._reference === 'function';
}

/**
 * A union result (or typed read): every member read from the same bytes
 * (only the caller knows which one is set; a `char *` member is its address,
 * a Pointer, not followed) and the bytes themselves. Passed back as an
 * argument, it is its bytes, unchanged.
 */
export class UnionValue {
  constructor(
    /** Each member's reading of `bytes`, by name. */
    readonly members: Record<string, unknown>,
    /** The union's memory, sizeof(union) bytes. */
    readonly bytes: Buffer,
  ) {}
}

/**
 * A `long double` result at full precision (x87 80-bit extended: 64 bits of
 * mantissa, more than a double's 53). It acts as its nearest double in
 * arithmetic and comparisons (`valueOf`) and prints as its exact decimal
 * (`toString`); passed back as an argument its bytes are used, so nothing
 * is lost.
 */
export class LongDouble {
  constructor(
    /** The value in memory order (16 bytes; the first 10 hold it). */
    readonly bytes: Buffer,
    /** The nearest double (an infinity beyond its range). */
    readonly approximate: number,
    /** The shortest decimal that reads back as exactly this value ("0.33333333333333333334"). */
    readonly decimal: string,
  ) {}

  valueOf(): number {
    return this.approximate;
  }

  toString(): string {
    return this.decimal;
  }
}

/** A value with an explicit C type, for variadic arguments: ffid.cast("double", 2). */
export class Cast {
  constructor(
    readonly ctype: string,
    readonly value: unknown,
  ) {}
}

function intValue(n: bigint, param: string): Value {
  if (n >= INT64_MIN && n < INT64_LIMIT) return { int_value: n.toString() };
  if (n >= 0n && n < UINT64_LIMIT) return { uint_value: n.toString() };
  throw new ValueOutOfRange(`${param}: ${n} does not fit in 64 bits`);
}

function fieldType(d: TypeDescriptor | undefined, name: string): TypeDescriptor | undefined {
  if (!d || kindOf(d) !== 'record') return undefined;
  return d.record!.fields.find((f) => f.name === name)?.type;
}

function isPlainObject(obj: unknown): obj is Record<string, unknown> {
  if (typeof obj !== 'object' || obj === null) return false;
  const proto = Object.getPrototypeOf(obj);
  return proto === Object.prototype || proto === null;
}

/**
 * Converts `obj` to a Value for a parameter of type `d` (undefined when the
 * type is not known). Kinds the server would reject are sent anyway: its
 * message names the parameter and the type.
 */
export function toValue(obj: unknown, d: TypeDescriptor | undefined, param: string, codec: PointerCodec): Value {
  const kind = kindOf(d);
  if (obj === null || obj === undefined) return { null_value: 'NULL_VALUE_UNSPECIFIED' };
  if (obj instanceof Cast) return toValue(obj.value, d ?? castDescriptor(obj), param, codec);
  if (obj instanceof UnionValue) return { record_value: { fields: {}, union_bytes: obj.bytes } };
  if (obj instanceof LongDouble) return { long_double: { bytes: obj.bytes, decimal: obj.decimal } };
  const callback = codec.callbackOf(obj);
  if (callback !== undefined) return { callback_handle: callback };
  const pointer = codec.pointerOf(obj);
  if (pointer !== undefined) return { pointer_value: pointer };
  const scalar = kind === 'scalar' ? d!.scalar! : '';
  if (typeof obj === 'boolean') {
    return INTEGER_KINDS.has(scalar) ? { int_value: obj ? '1' : '0' } : { bool_value: obj };
  }
  if (typeof obj === 'number' || typeof obj === 'bigint') {
    if ((kind === 'pointer' || kind === 'string' || kind === 'function_pointer') &&
        (typeof obj === 'bigint' || Number.isInteger(obj))) {
      const n = BigInt(obj);
      if (n === 0n) return { null_value: 'NULL_VALUE_UNSPECIFIED' };
      if (n > 0n && n < UINT64_LIMIT) return { pointer_value: { address: n.toString() } };
    }
    if (FLOAT_KINDS.has(scalar) || (typeof obj === 'number' && !Number.isInteger(obj))) {
      return { double_value: Number(obj) };
    }
    return intValue(BigInt(obj), param);
  }
  if (typeof obj === 'string') {
    return kind === 'enum_type' ? { enum_value: obj } : { string_value: obj };
  }
  if (obj instanceof Uint8Array) return { bytes_value: Buffer.from(obj) };
  if (obj instanceof ArrayBuffer) return { bytes_value: Buffer.from(new Uint8Array(obj)) };
  if (Array.isArray(obj)) {
    if (kind === 'record') {
      const names = d!.record!.fields.map((f) => f.name);
      if (obj.length > names.length) {
        throw new TypeMismatch(
          `${param}: an array of ${obj.length} values for a record of ${names.length} members (${names.join(', ')})`,
        );
      }
      const byName: Record<string, unknown> = {};
      obj.forEach((member, i) => (byName[names[i]!] = member));
      return toValue(byName, d, param, codec);
    }
    let element: TypeDescriptor | undefined;
    if (kind === 'array') element = d!.array!.element;
    else if (kind === 'pointer' && d!.pointer!.pointee) element = d!.pointer!.pointee;
    if (kind === 'scalar' && COMPLEX_KINDS.has(scalar) && obj.length === 2) element = { scalar: 'SCALAR_KIND_DOUBLE' };
    return {
      array_value: { elements: obj.map((item, i) => toValue(item, element, `${param}, element ${i}`, codec)) },
    };
  }
  if (isPlainObject(obj)) {
    const fields: Record<string, Value> = {};
    for (const [name, member] of Object.entries(obj)) {
      fields[name] = toValue(member, fieldType(d, name), `${param}, member '${name}'`, codec);
    }
    return { record_value: { fields } };
  }
  const what = typeof obj === 'object' ? (obj as object).constructor?.name ?? 'object' : typeof obj;
  throw new TypeMismatch(`${param}: cannot pass a JavaScript ${what} to C`);
}

/** A 64-bit integer as a number when it is safe, else as a bigint. */
export function toInteger(text: string | number | bigint): number | bigint {
  const n = BigInt(text);
  return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
}

/** Which member of a Value's oneof is set. */
export function valueKind(value: Value | null | undefined): string | undefined {
  if (!value) return undefined;
  if (value.kind) return value.kind;
  for (const [k, v] of Object.entries(value)) if (v !== undefined && v !== null && k !== 'kind') return k;
  return undefined;
}

/** Converts a Value (a result, an out-value, a callback's argument) to JS. */
export function fromValue(value: Value | null | undefined, d: TypeDescriptor | undefined, codec: PointerCodec): unknown {
  switch (valueKind(value)) {
    case undefined:
    case 'null_value':
      return null;
    case 'bool_value':
      return value!.bool_value;
    case 'int_value':
      return toInteger(value!.int_value!);
    case 'uint_value':
      return toInteger(value!.uint_value!);
    case 'double_value':
      return value!.double_value;
    case 'string_value':
      return value!.string_value;
    case 'bytes_value':
      return Buffer.from(value!.bytes_value!);
    case 'pointer_value':
      return codec.makePointer(value!.pointer_value!);
    case 'record_value': {
      const unionBytes = value!.record_value!.union_bytes;
      const record = kindOf(d) === 'record' ? d : undefined;
      const fields = value!.record_value!.fields;
      const names = record ? record.record!.fields.map((f) => f.name) : Object.keys(fields).sort();
      const out: Record<string, unknown> = {};
      for (const name of names) {
        if (name in fields) out[name] = fromValue(fields[name], fieldType(record, name), codec);
      }
      if (unionBytes && unionBytes.length > 0) return new UnionValue(out, Buffer.from(unionBytes));
      return out;
    }
    case 'array_value': {
      const element = kindOf(d) === 'array' ? d!.array!.element : undefined;
      return value!.array_value!.elements.map((item) => fromValue(item, element, codec));
    }
    case 'enum_value':
      return value!.enum_value;
    case 'long_double_value':
      return longDoubleToNumber(Buffer.from(value!.long_double_value!));
    case 'long_double': {
      const ld = value!.long_double!;
      return new LongDouble(Buffer.from(ld.bytes ?? []), ld.approximate ?? 0, ld.decimal ?? '');
    }
    case 'callback_handle':
      return value!.callback_handle;
    default:
      throw new Internal(`unknown value kind ${valueKind(value)}`);
  }
}

/** The nearest double to an x87 80-bit extended value (16 bytes, little endian). */
export function longDoubleToNumber(raw: Buffer): number {
  const mantissa = raw.readBigUInt64LE(0);
  const exponentSign = raw.readUInt16LE(8);
  const sign = exponentSign & 0x8000 ? -1 : 1;
  const exponent = exponentSign & 0x7fff;
  if (exponent === 0x7fff) {
    return (mantissa << 1n) & ((1n << 64n) - 1n) ? NaN : sign * Infinity;
  }
  if (exponent === 0 && mantissa === 0n) return sign * 0;
  // mantissa * 2^(exponent - 16383 - 63), in two steps to stay in range.
  return sign * Number(mantissa) * 2 ** (exponent - 16383) * 2 ** -63;
}

/**
 * The C type a JS value is passed as after `...`, following C's default
 * argument promotions: int (long long when it does not fit), double,
 * char *, void *; a Cast names its type.
 */
export function variadicType(obj: unknown, codec: PointerCodec): TypeDescriptor {
  if (obj instanceof Cast) return { named: obj.ctype };
  if (obj === null || obj === undefined || codec.pointerOf(obj) !== undefined) return { pointer: {} };
  if (typeof obj === 'boolean') return { scalar: 'SCALAR_KIND_INT' };
  if (typeof obj === 'number' && !Number.isInteger(obj)) return { scalar: 'SCALAR_KIND_DOUBLE' };
  if (typeof obj === 'number' || typeof obj === 'bigint') {
    const n = BigInt(obj);
    if (n >= -(1n << 31n) && n < 1n << 31n) return { scalar: 'SCALAR_KIND_INT' };
    if (n >= INT64_LIMIT) return { scalar: 'SCALAR_KIND_UNSIGNED_LONG_LONG' };
    return { scalar: 'SCALAR_KIND_LONG_LONG' };
  }
  if (typeof obj === 'string' || obj instanceof Uint8Array) return { string: { is_const: true } };
  const what = typeof obj === 'object' ? (obj as object).constructor?.name ?? 'object' : typeof obj;
  throw new TypeMismatch(
    `cannot pass a JavaScript ${what} as a variadic argument; pass a number, bigint, string, Buffer, null, ` +
      'a pointer, or ffid.cast("type", value)',
  );
}

/** How a Cast's value is converted: by the scalar its type names. */
export function castDescriptor(cast: Cast): TypeDescriptor | undefined {
  const text = cast.ctype.replace(/\s+/g, ' ').trim();
  if (text === 'float' || text === 'double' || text === 'long double') return { scalar: 'SCALAR_KIND_DOUBLE' };
  return undefined;
}
