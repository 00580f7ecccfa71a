/** Time as the core sees it; tests inject a manual clock so nothing has to sleep. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  setInterval(fn: () => void, ms: number): unknown;
  clearInterval(handle: unknown): void;
}

/** Web timers fire after 1 ms when asked for more than 2^31-1 ms (24.8 days). */
const MAX_TIMER_MS = 0x7fff_ffff;

interface LongTimer {
  current: ReturnType<typeof setTimeout> | undefined;
}

/** The web-standard timers every runtime provides. */
export const systemClock: Clock = {
  now: () => Date.now(),
  // Session Expiry and Will Delay go up to 2^32-1 seconds, so longer delays are chained;
  // otherwise a 30-day session would expire the moment its client disconnected.
  setTimeout: (fn, ms) => {
    const timer: LongTimer = { current: undefined };
    const due = Date.now() + ms;
    const arm = () => {
      const left = due - Date.now();
      timer.current = left > MAX_TIMER_MS ? setTimeout(arm, MAX_TIMER_MS) : setTimeout(fn, Math.max(0, left));
    };
    arm();
    return timer;
  },
  clearTimeout: (h) => clearTimeout((h as LongTimer | undefined)?.current),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearInterval: (h) => clearInterval(h as ReturnType<typeof setInterval>),
};
