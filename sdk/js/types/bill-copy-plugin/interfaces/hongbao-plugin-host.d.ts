/// <reference path="./hongbao-plugin-types.d.ts" />
declare module 'hongbao:plugin/host@0.1.0' {
  /**
   * The current value of the scene's counter `name` (0 if it does not exist or its window
   * has ended).
   */
  export function counterGet(name: string): bigint;
  /**
   * Adds `delta` (may be negative) to the scene's counter `name` and returns the new value.
   * With `window-ms`, the counter is a fixed window: it starts at 0 again `window-ms` after
   * the add that created it. Without, it never resets. Names are chosen by the plugin, e.g.
   * `user/10001` for a per-user count.
   */
  export function counterAdd(name: string, delta: bigint, windowMs: bigint | undefined): bigint;
  /**
   * What is left of the scene's stock and budget at the start of this call.
   */
  export function stockRemaining(): Stock;
  /**
   * A line for the host's log, tagged with the plugin, activity and scene. The host bounds
   * line length and lines per call and drops the excess.
   */
  export function log(level: LogLevel, message: string): void;
  export type LogLevel = import('hongbao:plugin/types@0.1.0').LogLevel;
  export type Stock = import('hongbao:plugin/types@0.1.0').Stock;
  /**
   * Why a host function refused.
   */
  export type HostError = HostErrorInvalidName | HostErrorTooManyCounters | HostErrorUnavailable;
  /**
   * The counter name is empty, longer than the host's bound, or not printable ASCII.
   */
  export interface HostErrorInvalidName {
    tag: 'invalid-name',
    val: string,
  }
  /**
   * The scene already holds the host's maximum number of counters.
   */
  export interface HostErrorTooManyCounters {
    tag: 'too-many-counters',
  }
  /**
   * The store behind the counter did not answer in time; the call may be retried.
   */
  export interface HostErrorUnavailable {
    tag: 'unavailable',
    val: string,
  }
}
