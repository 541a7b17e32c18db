// A scriptable EventSource: tests push events and connection changes into it.
export class FakeEventSource {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 2;
  static all: FakeEventSource[] = [];
  readyState = FakeEventSource.CONNECTING;
  private listeners = new Map<string, ((e: any) => void)[]>();

  constructor(
    readonly url: string,
    readonly init?: { withCredentials?: boolean },
  ) {
    FakeEventSource.all.push(this);
  }

  addEventListener(type: string, fn: (e: any) => void) {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), fn]);
  }

  close() {
    this.readyState = FakeEventSource.CLOSED;
  }

  private fire(type: string, e: any) {
    for (const fn of this.listeners.get(type) ?? []) fn(e);
  }

  open() {
    this.readyState = FakeEventSource.OPEN;
    this.fire("open", {});
  }

  error(closed = false) {
    this.readyState = closed ? FakeEventSource.CLOSED : FakeEventSource.CONNECTING;
    this.fire("error", {});
  }

  emit(type: string, data: unknown, lastEventId = "") {
    this.fire(type, { data: typeof data === "string" ? data : JSON.stringify(data), lastEventId });
  }

  static reset() {
    FakeEventSource.all = [];
  }
}
