import { AgentClient, AgentError, ConnectionClosed, IChannel } from '../client';
import {
  AgentEvent,
  ClientMessage,
  IHelloReply,
  isFinalEvent,
  parseServerMessage
} from '../wire';

/** A channel that records what the client sends. */
class FakeChannel implements IChannel {
  sent: ClientMessage[] = [];
  closed = false;
  failNext = false;

  send(message: ClientMessage): void {
    if (this.failNext) {
      this.failNext = false;
      throw new Error('kernel gone');
    }
    this.sent.push(message);
  }

  close(): void {
    this.closed = true;
  }

  last(): ClientMessage {
    return this.sent[this.sent.length - 1];
  }
}

const status = {
  version: '0.1.0',
  model: 'gpt-4o-mini',
  endpoint: '127.0.0.1:8000',
  key_set: true,
  privacy: 'sample',
  mode: 'insert' as const,
  sandbox: null
};

const hello: IHelloReply = {
  type: 'hello',
  version: '0.1.0',
  protocol: 1,
  status,
  frames: [{ name: 'df', kind: 'DataFrame', shape: [3, 2], columns: ['a', 'b'] }],
  history: []
};

function done(code = 'result = 1'): AgentEvent {
  return {
    type: 'Done',
    mode: 'insert',
    outcome: 'inserted',
    code,
    explanation: 'Here.',
    model: 'gpt-4o-mini',
    usage: { prompt_tokens: 10, completion_tokens: 5 },
    elapsed: 1.5,
    attempts: 1,
    cached: false,
    into: null
  };
}

function setup(): { channel: FakeChannel; client: AgentClient } {
  const channel = new FakeChannel();
  return { channel, client: new AgentClient(channel) };
}

describe('message encoding', () => {
  it('sends hello, list_frames, status and reset as bare typed messages', async () => {
    const { channel, client } = setup();
    void client.hello();
    void client.listFrames();
    void client.status();
    void client.reset();
    expect(channel.sent).toEqual([
      { type: 'hello' },
      { type: 'list_frames' },
      { type: 'status' },
      { type: 'reset' }
    ]);
  });

  it('encodes an ask with a fresh id, the frames and the mode', () => {
    const { channel, client } = setup();
    const a = client.ask('how many rows?', { frames: ['df'], mode: 'run' });
    const b = client.ask('and columns?');
    expect(channel.sent[0]).toEqual({
      type: 'ask',
      id: a.id,
      question: 'how many rows?',
      frames: ['df'],
      mode: 'run'
    });
    // no frames means every frame (null on the wire); insert is the default mode
    expect(channel.sent[1]).toEqual({
      type: 'ask',
      id: b.id,
      question: 'and columns?',
      frames: null,
      mode: 'insert'
    });
    expect(a.id).not.toEqual(b.id);
  });

  it('sends an empty frame selection as null', () => {
    const { channel, client } = setup();
    client.ask('q', { frames: [] });
    expect((channel.last() as { frames: unknown }).frames).toBeNull();
  });

  it('encodes a run of existing code', () => {
    const { channel, client } = setup();
    const r = client.run('result = df.shape', ['df']);
    expect(channel.last()).toEqual({
      type: 'run',
      id: r.id,
      code: 'result = df.shape',
      frames: ['df']
    });
    expect(r.kind).toBe('run');
  });
});

describe('replies', () => {
  it('resolves hello and publishes its status and frames', async () => {
    const { client } = setup();
    const frames: unknown[] = [];
    const statuses: unknown[] = [];
    client.framesChanged.connect((_, f) => frames.push(f));
    client.statusChanged.connect((_, s) => statuses.push(s));
    const reply = client.hello();
    client.handleMessage(hello);
    await expect(reply).resolves.toEqual(hello);
    expect(frames).toEqual([hello.frames]);
    expect(statuses).toEqual([status]);
  });

  it('strips the type from a status reply', async () => {
    const { client } = setup();
    const reply = client.status();
    client.handleMessage({ type: 'status', ...status });
    await expect(reply).resolves.toEqual(status);
  });

  it('answers list_frames with the frames', async () => {
    const { client } = setup();
    const reply = client.listFrames();
    client.handleMessage({ type: 'frames', frames: hello.frames });
    await expect(reply).resolves.toEqual(hello.frames);
  });

  it('rejects the pending request a kernel error names', async () => {
    const { client } = setup();
    const reply = client.listFrames();
    client.handleMessage({
      type: 'error',
      request: 'list_frames',
      id: null,
      error: { kind: 'FrameError', title: 'Frame', message: 'boom', hint: 'fix it' }
    });
    await expect(reply).rejects.toBeInstanceOf(AgentError);
    await expect(reply).rejects.toThrow('boom fix it');
  });

  it('ignores messages it does not understand', () => {
    const { client } = setup();
    expect(() => client.handleMessage({ type: 'future_thing' })).not.toThrow();
    expect(() => client.handleMessage('nonsense')).not.toThrow();
    expect(() => client.handleMessage(null)).not.toThrow();
    expect(parseServerMessage({ type: 'event', id: 1 })).toBeNull();
  });
});

describe('event streams', () => {
  it('routes events to their request by id', async () => {
    const { client } = setup();
    const a = client.ask('a');
    const b = client.ask('b');
    const seenA: string[] = [];
    const seenB: string[] = [];
    a.event.connect((_, e) => seenA.push(e.type === 'Delta' ? e.text : e.type));
    b.event.connect((_, e) => seenB.push(e.type === 'Delta' ? e.text : e.type));
    client.handleMessage({ type: 'event', id: a.id, event: { type: 'Delta', text: 'A1', attempt: 1 } });
    client.handleMessage({ type: 'event', id: b.id, event: { type: 'Delta', text: 'B1', attempt: 1 } });
    client.handleMessage({ type: 'event', id: a.id, event: done() });
    client.handleMessage({ type: 'event', id: 'unknown', event: done() });
    expect(seenA).toEqual(['A1', 'Done']);
    expect(seenB).toEqual(['B1']);
    await expect(a.done).resolves.toMatchObject({ type: 'Done', code: 'result = 1' });
    expect(a.finished).toBe(true);
    expect(b.finished).toBe(false);
    expect(client.active.map(r => r.id)).toEqual([b.id]);
  });

  it('drops events after the final one', () => {
    const { client } = setup();
    const a = client.ask('a');
    const seen: AgentEvent[] = [];
    a.event.connect((_, e) => seen.push(e));
    client.handleMessage({ type: 'event', id: a.id, event: done() });
    client.handleMessage({ type: 'event', id: a.id, event: { type: 'Delta', text: 'late', attempt: 1 } });
    expect(seen.map(e => e.type)).toEqual(['Done']);
  });

  it('turns a kernel error for a request id into its Failed event', async () => {
    const { client } = setup();
    const a = client.ask('');
    client.handleMessage({
      type: 'error',
      request: 'ask',
      id: a.id,
      error: { kind: 'UsageError', title: 'Usage', message: 'empty', hint: null }
    });
    const final = await a.done;
    expect(final.type).toBe('Failed');
    expect(isFinalEvent(final)).toBe(true);
  });
});

describe('cancel', () => {
  it('sends cancel once with the request id', () => {
    const { channel, client } = setup();
    const a = client.ask('slow');
    a.cancel();
    a.cancel();
    expect(channel.sent.filter(m => m.type === 'cancel')).toEqual([{ type: 'cancel', id: a.id }]);
    expect(a.cancelling).toBe(true);
  });

  it('does not send cancel for a finished request', () => {
    const { channel, client } = setup();
    const a = client.ask('fast');
    client.handleMessage({ type: 'event', id: a.id, event: done() });
    a.cancel();
    expect(channel.sent.some(m => m.type === 'cancel')).toBe(false);
  });

  it('ends a cancelled request locally when the cancel cannot be sent', async () => {
    const { channel, client } = setup();
    const a = client.ask('slow');
    channel.failNext = true;
    a.cancel();
    const final = await a.done;
    expect(final).toMatchObject({ type: 'Failed', error: { kind: 'Cancelled' } });
  });
});

describe('closing', () => {
  it('fails running requests and rejects pending replies when the kernel closes', async () => {
    const { client } = setup();
    const a = client.ask('q');
    const frames = client.listFrames();
    const reasons: string[] = [];
    client.closed.connect((_, r) => reasons.push(r));
    client.handleClose('The kernel restarted.');
    await expect(frames).rejects.toBeInstanceOf(ConnectionClosed);
    const final = await a.done;
    expect(final).toMatchObject({
      type: 'Failed',
      error: { title: 'Disconnected', message: 'The kernel restarted.' }
    });
    expect(reasons).toEqual(['The kernel restarted.']);
    expect(client.isClosed).toBe(true);
  });

  it('reports a request stopped by the user as cancelled when the connection ends', async () => {
    const { client } = setup();
    const a = client.ask('q');
    a.cancel();
    client.handleClose('gone');
    await expect(a.done).resolves.toMatchObject({ error: { kind: 'Cancelled' } });
  });

  it('refuses new work after close, without throwing', async () => {
    const { channel, client } = setup();
    client.dispose();
    expect(channel.closed).toBe(true);
    await expect(client.hello()).rejects.toBeInstanceOf(ConnectionClosed);
    const a = client.ask('q');
    await expect(a.done).resolves.toMatchObject({ type: 'Failed' });
  });
});
