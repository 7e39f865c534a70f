// Batches: many steps in one round trip (the Batch RPC). A step's result can
// be passed to a later step of the same batch before it exists (promise
// pipelining): every step returns a BatchResult that later steps take as an
// argument, a pointer to read or write, or the memory to free.

import type { CallResponse, PointerValue, TypeDescriptor } from './proto';
import type { FunctionSpec, Memory, NativeFunction, Session } from './session';

const PENDING = Symbol('pending');

/**
 * The result of one batch step: before the batch runs, a reference that
 * later steps of the same batch can take; after it ran, `value` is the
 * result (a call's return value, a Memory for alloc, a Buffer for read,
 * null for write and free).
 */
export class BatchResult {
  /** @internal */ readonly _batch: Batch;
  /** The step's index in its batch. */
  readonly step: number;
  private readonly path: string[];
  private readonly offset: number;
  private readonly loadType: TypeDescriptor | undefined;

  /** @internal */
  constructor(batch: Batch, step: number, path: string[] = [], offset = 0, loadType?: TypeDescriptor) {
    this._batch = batch;
    this.step = step;
    this.path = path;
    this.offset = offset;
    this.loadType = loadType;
  }

  /** A member (or, by index, an array element) of this step's result: `r.field('origin', 'x')`. */
  field(...path: (string | number)[]): BatchResult {
    return new BatchResult(this._batch, this.step, [...this.path, ...path.map(String)], this.offset, this.loadType);
  }

  /** The pointer `delta` bytes further than this (pointer) result. */
  add(delta: number): BatchResult {
    if (!Number.isInteger(delta)) throw new TypeError(`add() needs an integer number of bytes, got ${delta}`);
    return new BatchResult(this._batch, this.step, this.path, this.offset + delta, this.loadType);
  }

  /** The value of C type `type` (from `await session.typeof('int')`) where this pointer points. */
  load(type: TypeDescriptor): BatchResult {
    return new BatchResult(this._batch, this.step, this.path, this.offset, type);
  }

  /** Leaves this step's response out of the batch's answer (later steps can still use it). */
  discard(): this {
    this._batch._discard(this.step);
    return this;
  }

  /** @internal The BatchReference that puts this result at `argument`. */
  _reference(argument: number): Record<string, unknown> {
    const reference: Record<string, unknown> = {
      step: this.step,
      argument,
      field_path: this.path,
      offset: String(this.offset),
    };
    if (this.loadType) reference.load_type = this.loadType;
    return reference;
  }

  /** The step's result, once the batch ran. */
  get value(): any {
    const value = this._batch._values[this.step];
    if (value === PENDING) throw new Error(`batch step ${this.step} has not run yet (or its result was discarded)`);
    return value;
  }
}

interface Step {
  message: Record<string, any>;
  decode(result: Record<string, any>): unknown;
}

/**
 * The steps of one batch (`session.batch()`), run in order in the session's
 * worker by `await b.run()`, stopping at the first that fails: its error has
 * `batchStep` set, and what the steps before it did stays done.
 */
export class Batch {
  private readonly session: Session;
  private readonly steps: Step[] = [];
  private readonly freedSteps = new Set<number>();
  /** @internal */ readonly _values: unknown[] = [];
  private ran = false;

  /** @internal */
  constructor(session: Session) {
    this.session = session;
  }

  /** How many steps the batch has. */
  get length(): number {
    return this.steps.length;
  }

  private add(message: Record<string, any>, decode: (result: Record<string, any>) => unknown): BatchResult {
    if (this.ran) throw new Error('this batch ran already; start a new one');
    this.steps.push({ message, decode });
    this._values.push(PENDING);
    return new BatchResult(this, this.steps.length - 1);
  }

  /** @internal */
  _discard(step: number): void {
    this.steps[step]!.message.discard_result = true;
  }

  private own(target: unknown): target is BatchResult {
    if (!(target instanceof BatchResult)) return false;
    if (target._batch !== this) throw new TypeError(`batch step ${target.step} belongs to another batch`);
    return true;
  }

  /** Calls a resolved function; any argument may be a BatchResult of an earlier step. */
  call(fn: NativeFunction, ...args: unknown[]): BatchResult {
    const spec = (fn as unknown as { _spec?: FunctionSpec })._spec;
    if (!spec) throw new TypeError('call() takes a resolved function (await lib.function(...) or lib.resolve(name))');
    args.forEach((arg) => this.own(arg));
    const refs: [number, BatchResult][] = [];
    const request = spec.request(args, undefined, this.session._codec, refs as [number, any][]);
    const references = refs.map(([argument, ref]) => ref._reference(argument));
    return this.add({ call: request, references }, (result) => spec.result(result.call as CallResponse, this.session));
  }

  /** Allocates zero-filled memory (or a copy of `init`); its result is the Memory. */
  alloc(size: number, init?: Uint8Array): BatchResult {
    if (!Number.isInteger(size) || size <= 0) throw new RangeError(`alloc needs a positive size in bytes, got ${size}`);
    const index = this.steps.length;
    return this.add(
      { allocate: { size: String(size), initial_bytes: init ? Buffer.from(init) : Buffer.alloc(0) } },
      (result) => {
        const allocated = result.allocate as { memory: string; size: string; address: string };
        return this.session._memory(allocated.memory, Number(allocated.size), BigInt(allocated.address),
          !this.freedSteps.has(index));
      },
    );
  }

  private pointerStep(kind: 'read' | 'write' | 'free', body: Record<string, unknown>, target: unknown): Record<string, any> {
    const message: Record<string, any> = { [kind]: body, references: [] };
    if (this.own(target)) {
      message.references.push(target._reference(0));
      if (kind === 'free') this.freedSteps.add(target.step);
      return message;
    }
    const pointer: PointerValue | undefined = this.session._codec.pointerOf(target);
    if (!pointer) throw new TypeError(`${kind}() takes a Pointer, a Memory or a BatchResult`);
    if (kind === 'free') {
      if (!pointer.handle) throw new TypeError('free() needs owned memory, not a raw address');
      body.memory = pointer.handle;
      this.session._untrack(target as Memory);
    } else {
      body.pointer = pointer;
    }
    return message;
  }

  /** Reads `length` bytes at a pointer (or a BatchResult pointer); its result is a Buffer. */
  read(pointer: unknown, length: number): BatchResult {
    return this.add(this.pointerStep('read', { length: String(length) }, pointer),
      (result) => Buffer.from((result.read as { data: Uint8Array }).data));
  }

  /** Writes bytes at a pointer (or a BatchResult pointer). */
  write(pointer: unknown, data: Uint8Array | string): BatchResult {
    const message = this.pointerStep('write', { data: Buffer.from(data) }, pointer);
    message.discard_result = true;
    return this.add(message, () => null);
  }

  /** Frees owned memory (or the memory an earlier alloc step made). */
  free(memory: unknown): BatchResult {
    const message = this.pointerStep('free', {}, memory);
    message.discard_result = true;
    return this.add(message, () => null);
  }

  /** Runs the batch in one round trip; resolves with every step's value (null for discarded ones). */
  async run(): Promise<unknown[]> {
    if (this.ran) throw new Error('this batch ran already; start a new one');
    this.ran = true;
    const response = await this.session._call<{ results: Record<string, any>[] }>('Batch', {
      steps: this.steps.map((step) => step.message),
    });
    return this.steps.map((step, i) => {
      if (step.message.discard_result) return null;
      const value = step.decode(response.results[i] ?? {});
      this._values[i] = value;
      return value;
    });
  }
}
