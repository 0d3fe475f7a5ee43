/// <reference path="./hongbao-plugin-types.d.ts" />
declare module 'hongbao:plugin/rate-limit@0.1.0' {
  /**
   * Decides for the request in `ctx`.
   */
  export function check(ctx: CallContext): Decision;
  export type CallContext = import('hongbao:plugin/types@0.1.0').CallContext;
  export type PluginError = import('hongbao:plugin/types@0.1.0').PluginError;
  /**
   * The plugin's answer.
   */
  export type Decision = DecisionAllow | DecisionReject;
  /**
   * Go on with the grant.
   */
  export interface DecisionAllow {
    tag: 'allow',
  }
  /**
   * Refuse with `rate_limited`; the reason is logged and counted, not shown to the user.
   */
  export interface DecisionReject {
    tag: 'reject',
    val: string,
  }
}
