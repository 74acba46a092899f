/*
 * A progress bar on stderr for benchmarks that run longer than 2 s, only when stderr is a
 * terminal (scripts and --json output stay clean).
 */
export class Progress {
  private drawn = false;

  constructor(
    private readonly label: string,
    private readonly expectedMs: number,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {}

  private get visible(): boolean {
    return Boolean(this.stream.isTTY) && this.expectedMs > 2000;
  }

  update(fraction: number, note = ''): void {
    if (!this.visible) return;
    const f = Math.max(0, Math.min(1, fraction));
    const width = 30;
    const full = Math.round(f * width);
    this.stream.write(
      `\r${this.label} [${'#'.repeat(full)}${'.'.repeat(width - full)}] ${String(Math.round(f * 100)).padStart(3)}% ${note}`.padEnd(
        80,
      ),
    );
    this.drawn = true;
  }

  done(): void {
    if (this.drawn) this.stream.write(`\r${' '.repeat(80)}\r`);
    this.drawn = false;
  }
}
