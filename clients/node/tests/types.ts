// Type-checked only (npm run typecheck, part of node_client_build): what a
// TypeScript user of the package writes compiles against the shipped .d.ts.
import * as ffid from '..';

export async function firstCall(address?: string): Promise<number> {
  const s: ffid.Session = await ffid.connect(address, { restartPolicy: 'restart', connectTimeout: 5 });
  try {
    const libm = await s.load('libm.so.6');
    await libm.cdef('double cos(double);');
    const cosine: number = await libm.cos(0.5);
    const pow: ffid.NativeFunction = await libm.function('double pow(double, double)', { useErrno: true });
    await pow.invoke([2, 10], { timeout: 1, errno: true });
    const buf: ffid.Memory = await s.alloc(16);
    const bytes: Buffer = await buf.read(4, 0);
    const next: ffid.Pointer = buf.add(4);
    await next.writeValue(bytes.length, 'int');
    const address: bigint = next.address;
    const cb: ffid.Callback = await s.callback('int(int)', (x: number) => x + 1, { default: -1, timeout: 2 });
    const invocation: ffid.InvocationInfo | undefined = s.currentInvocation();
    await cb.release();
    const b: ffid.Batch = s.batch();
    const r: ffid.BatchResult = b.call(pow, 2, 3).discard();
    b.call(pow, r.field('x').add(8), 1);
    const values: unknown[] = await b.run();
    const pipelined: number = await pow.callAsync(2, values.length);
    const info: ffid.SessionInfo = await s.info();
    return cosine + pipelined + Number(address) + info.restarts + (invocation ? invocation.nativeThreadId : 0);
  } catch (error) {
    if (error instanceof ffid.WorkerCrashed) {
      const report: ffid.CrashReport | undefined = error.crashReport;
      return report ? report.signal : -1;
    }
    if (error instanceof ffid.FfidError) return error.code ?? -2;
    throw error;
  } finally {
    await s.close();
  }
}

// Options are checked: an unknown restart policy does not compile.
// @ts-expect-error
void ffid.connect({ restartPolicy: 'sometimes' });

// Authentication options are typed: PEMs as file names or Buffers, the
// principal on ServerInfo, an error class per access-control reason.
export async function authenticated(ca: Buffer): Promise<string> {
  const auth: ffid.AuthOptions = { cert: 'me.pem', key: Buffer.from('key'), tokenFile: '/run/token' };
  const s = await ffid.connect('ffid.internal:7000', { ...auth, ca, connectTimeout: 2 });
  try {
    const info: ffid.ServerInfo = await s.serverInfo();
    return info.principal;
  } catch (error) {
    if (error instanceof ffid.Unauthenticated) return error.reason;
    throw error;
  } finally {
    await s.close();
  }
}
