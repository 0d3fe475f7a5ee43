/// <reference path="./hongbao-plugin-types.d.ts" />
declare module 'hongbao:plugin/inventory@0.1.0' {
  /**
   * Chooses the amount for the grant in `ctx`.
   */
  export function choose(ctx: CallContext, request: AmountRequest): Allocation;
  export type CallContext = import('hongbao:plugin/types@0.1.0').CallContext;
  export type PluginError = import('hongbao:plugin/types@0.1.0').PluginError;
  export type Stock = import('hongbao:plugin/types@0.1.0').Stock;
  /**
   * What the plugin has to work with.
   */
  export interface AmountRequest {
    /**
     * The amount the caller asked for, if the scene lets callers ask.
     */
    requestedCents?: bigint,
    /**
     * The scene's configured lower bound.
     */
    minCents: bigint,
    /**
     * The scene's configured upper bound (never above the single red-packet cap).
     */
    maxCents: bigint,
    /**
     * What is left (the same as `host.stock-remaining`, handed in to save a call).
     */
    stock: Stock,
  }
  /**
   * The plugin's answer. The host still checks and reserves the amount in the same store
   * transaction that records the grant, so a chosen amount can still be refused there.
   */
  export type Allocation = AllocationAmount | AllocationOutOfStock;
  /**
   * Grant this many cents (must be within `min-cents..=max-cents`, else the host treats
   * the answer as invalid and applies the failure policy).
   */
  export interface AllocationAmount {
    tag: 'amount',
    val: bigint,
  }
  /**
   * Refuse the grant with `out_of_stock`.
   */
  export interface AllocationOutOfStock {
    tag: 'out-of-stock',
  }
}
