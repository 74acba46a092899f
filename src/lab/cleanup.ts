/*
 * Runs `fn`, and runs `cleanup` afterwards whatever happens: normal end, error, or SIGINT/
 * SIGTERM (Ctrl-C during the demo or a benchmark must not leave namespaces and pins).
 */
export async function withCleanup<T>(cleanup: () => void, fn: () => Promise<T> | T): Promise<T> {
  let done = false;
  const once = () => {
    if (!done) {
      done = true;
      cleanup();
    }
  };
  const onSignal = (sig: NodeJS.Signals) => {
    once();
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    return await fn();
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    once();
  }
}
