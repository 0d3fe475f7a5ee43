/// <reference path="./hongbao-plugin-types.d.ts" />
declare module 'hongbao:plugin/compensation@0.1.0' {
  /**
   * Decides what to do about `failure`.
   */
  export function decide(ctx: CallContext, failure: Failure): Remedy;
  export type CallContext = import('hongbao:plugin/types@0.1.0').CallContext;
  export type PluginError = import('hongbao:plugin/types@0.1.0').PluginError;
  /**
   * The step that failed.
   * # Variants
   * 
   * ## `"store-grant"`
   * 
   * Recording a grant in the token store.
   * ## `"ledger-credit"`
   * 
   * Crediting a token to the ledger (the throttled writer).
   * ## `"ledger-refused"`
   * 
   * The ledger refused a credit (budget not funded, conflicting entry).
   * ## `"withdrawal-credit"`
   * 
   * Crediting pending tokens before a withdrawal.
   */
  export type Step = 'store-grant' | 'ledger-credit' | 'ledger-refused' | 'withdrawal-credit';
  /**
   * The failure to decide on.
   */
  export interface Failure {
    /**
     * Which step.
     */
    step: Step,
    /**
     * 1 for the first retry decision, counting up.
     */
    attempt: number,
    /**
     * The host's stable error code, e.g. `store_unavailable`.
     */
    errorCode: string,
    /**
     * The host's error message.
     */
    errorMessage: string,
    /**
     * The order number concerned, if any.
     */
    orderNo?: string,
    /**
     * Its amount, if any.
     */
    amountCents?: bigint,
    /**
     * When this step first failed, ms since the Unix epoch.
     */
    firstFailedMs: bigint,
  }
  /**
   * The plugin's answer.
   */
  export type Remedy = RemedyRetryAfterMs | RemedyReleaseStock | RemedyGiveUpAndAlert;
  /**
   * Try the step again after this many milliseconds (the host caps it).
   */
  export interface RemedyRetryAfterMs {
    tag: 'retry-after-ms',
    val: bigint,
  }
  /**
   * Stop retrying and give the reserved stock back (only for `store-grant`; the host
   * treats it as `give-up-and-alert` elsewhere, because credits are owed).
   */
  export interface RemedyReleaseStock {
    tag: 'release-stock',
  }
  /**
   * Stop retrying and raise an alert with this reason. Tokens stay owed and visible to
   * reconciliation.
   */
  export interface RemedyGiveUpAndAlert {
    tag: 'give-up-and-alert',
    val: string,
  }
}
