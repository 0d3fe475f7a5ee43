/// <reference path="./hongbao-plugin-types.d.ts" />
declare module 'hongbao:plugin/reconciliation@0.1.0' {
  /**
   * Judges `summary`; an empty list means the books add up.
   */
  export function judge(ctx: CallContext, summary: SceneSummary): Array<Finding>;
  export type CallContext = import('hongbao:plugin/types@0.1.0').CallContext;
  export type PluginError = import('hongbao:plugin/types@0.1.0').PluginError;
  /**
   * One scene's books, as the host counted them.
   */
  export interface SceneSummary {
    /**
     * Grants in the token store.
     */
    issuedCount: bigint,
    /**
     * Their cents.
     */
    issuedCents: bigint,
    /**
     * Red-packet entries in the ledger.
     */
    creditedCount: bigint,
    /**
     * Their cents.
     */
    creditedCents: bigint,
    /**
     * Grants not yet credited.
     */
    inFlightCount: bigint,
    /**
     * Their cents.
     */
    inFlightCents: bigint,
    /**
     * The oldest in-flight grant's open time, ms since the Unix epoch.
     */
    oldestInFlightMs?: bigint,
    /**
     * Tokens the ledger refused and that wait for funding.
     */
    parkedCount: bigint,
    /**
     * The store's stock counter: grants counted.
     */
    stockUsedCount: bigint,
    /**
     * The store's stock counter: cents counted.
     */
    stockUsedCents: bigint,
  }
  /**
   * How bad a finding is.
   * # Variants
   * 
   * ## `"info"`
   * 
   * ## `"warning"`
   * 
   * ## `"critical"`
   */
  export type Severity = 'info' | 'warning' | 'critical';
  /**
   * A repair the host knows how to do.
   */
  export type RepairAction = RepairActionRequeueInFlightOlderThanMs | RepairActionRecountStock | RepairActionManual;
  /**
   * Put in-flight tokens older than this many milliseconds back in the crediting queue
   * (crediting is idempotent, so this is always safe).
   */
  export interface RepairActionRequeueInFlightOlderThanMs {
    tag: 'requeue-in-flight-older-than-ms',
    val: bigint,
  }
  /**
   * Recount the stock counter from the grants.
   */
  export interface RepairActionRecountStock {
    tag: 'recount-stock',
  }
  /**
   * Nothing automatic: a person must look. The text says what to do.
   */
  export interface RepairActionManual {
    tag: 'manual',
    val: string,
  }
  /**
   * Something that does not add up.
   */
  export interface Finding {
    /**
     * A stable code, e.g. `credit_lag`.
     */
    code: string,
    /**
     * How bad.
     */
    severity: Severity,
    /**
     * For people.
     */
    message: string,
    /**
     * What would repair it, if anything.
     */
    repair?: RepairAction,
  }
}
