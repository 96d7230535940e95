import type { Kernel } from '@jupyterlab/services';

import { connectAgent, ConnectError } from '../connection';
import { COMM_TARGET, LOAD_EXTENSION_CODE } from '../wire';

/** A comm whose kernel side either has the target (answers hello) or not (closes). */
class FakeComm {
  onMsg: (msg: unknown) => void = () => undefined;
  onClose: (msg: unknown) => void = () => undefined;
  isDisposed = false;
  opened: unknown[] = [];
  sent: unknown[] = [];

  constructor(
    readonly targetName: string,
    private readonly _kernel: FakeKernel
  ) {}

  open(data: unknown): void {
    this.opened.push(data);
    // the kernel answers asynchronously, like a real one
    setTimeout(() => {
      if (this._kernel.loaded) {
        this.onMsg({ content: { data: this._kernel.hello } });
      } else {
        this.onClose({});
      }
    }, 0);
  }

  send(data: unknown): void {
    this.sent.push(data);
  }

  close(): void {
    this.isDisposed = true;
  }
}

class FakeKernel {
  loaded = false;
  loadFails: { ename: string; evalue: string } | null = null;
  status = 'idle';
  supportsSubshells = false;
  executed: unknown[] = [];
  comms: FakeComm[] = [];
  hello = {
    type: 'hello',
    version: '0.1.0',
    status: { model: 'm', endpoint: 'h', key_set: true },
    frames: [],
    history: []
  };

  constructor(readonly language = 'python') {}

  get info(): Promise<unknown> {
    return Promise.resolve({ language_info: { name: this.language } });
  }

  createComm(target: string): FakeComm {
    const comm = new FakeComm(target, this);
    this.comms.push(comm);
    return comm;
  }

  requestExecute(content: unknown): { done: Promise<unknown> } {
    this.executed.push(content);
    const failure = this.loadFails;
    if (!failure) {
      this.loaded = true;
    }
    return {
      done: Promise.resolve({
        content: failure ? { status: 'error', ...failure, traceback: [] } : { status: 'ok' }
      })
    };
  }
}

function asKernel(k: FakeKernel): Kernel.IKernelConnection {
  return k as unknown as Kernel.IKernelConnection;
}

describe('connectAgent', () => {
  it('says hello with the comm_open when the extension is loaded', async () => {
    const kernel = new FakeKernel();
    kernel.loaded = true;
    const { hello, client } = await connectAgent(asKernel(kernel));
    expect(hello.version).toBe('0.1.0');
    expect(kernel.comms).toHaveLength(1);
    expect(kernel.comms[0].targetName).toBe(COMM_TARGET);
    expect(kernel.comms[0].opened).toEqual([{ type: 'hello' }]);
    expect(kernel.executed).toEqual([]);
    client.dispose();
    expect(kernel.comms[0].isDisposed).toBe(true);
  });

  it('loads the extension silently when the kernel closes the comm, then retries', async () => {
    const kernel = new FakeKernel();
    const { hello } = await connectAgent(asKernel(kernel));
    expect(hello.type).toBe('hello');
    expect(kernel.executed).toEqual([
      {
        code: LOAD_EXTENSION_CODE,
        silent: true,
        store_history: false,
        allow_stdin: false,
        stop_on_error: false
      }
    ]);
    expect(kernel.comms).toHaveLength(2);
  });

  it('reports a kernel environment without the package and how to fix it', async () => {
    const kernel = new FakeKernel();
    kernel.loadFails = {
      ename: 'ModuleNotFoundError',
      evalue: "No module named 'dataagent_jupyter'"
    };
    const error = await connectAgent(asKernel(kernel)).catch(e => e);
    expect(error).toBeInstanceOf(ConnectError);
    expect(error.reason).toBe('load-failed');
    expect(error.hint).toMatch(/%pip install dataagent-jupyter/);
  });

  it('refuses a kernel that is not Python, without touching it', async () => {
    const kernel = new FakeKernel('R');
    const error = await connectAgent(asKernel(kernel)).catch(e => e);
    expect(error).toBeInstanceOf(ConnectError);
    expect(error.reason).toBe('not-python');
    expect(error.message).toMatch(/runs R/);
    expect(kernel.comms).toHaveLength(0);
    expect(kernel.executed).toHaveLength(0);
  });

  it('tells when it waits for a busy kernel', async () => {
    const kernel = new FakeKernel();
    kernel.status = 'busy';
    const waiting: boolean[] = [];
    await connectAgent(asKernel(kernel), { onWaiting: w => waiting.push(w) });
    expect(waiting).toEqual([true, false]);
  });
});
