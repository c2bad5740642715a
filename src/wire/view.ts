/**
 * What every header view shares: which bytes it looks at. A view is made once and re-pointed
 * at each packet (no allocation per packet); `wrap` in a subclass validates before it points,
 * and a failed wrap leaves the view empty, never on the previous packet.
 */
const EMPTY = new Uint8Array(0);

export abstract class ByteView {
  protected b: Uint8Array = EMPTY;
  protected o = 0;
  protected n = 0;

  /** Point the view without validation: for writing a header into a buffer you own. */
  wrapUnchecked(buf: Uint8Array, off: number, len: number): void {
    this.b = buf;
    this.o = off;
    this.n = len;
  }

  /** The underlying buffer, the view's offset in it and its length in bytes. */
  get buffer(): Uint8Array { return this.b; }
  get offset(): number { return this.o; }
  get length(): number { return this.n; }

  /** Look at nothing: the first step of every wrap. */
  protected clear(): void {
    this.b = EMPTY;
    this.o = 0;
    this.n = 0;
  }
}
