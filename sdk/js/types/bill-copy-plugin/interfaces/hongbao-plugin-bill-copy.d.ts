/// <reference path="./hongbao-plugin-types.d.ts" />
declare module 'hongbao:plugin/bill-copy@0.1.0' {
  /**
   * Renders the bill text for `award` in `ctx.locale` (or the plugin's default locale).
   */
  export function render(ctx: CallContext, award: Award): BillText;
  export type CallContext = import('hongbao:plugin/types@0.1.0').CallContext;
  export type PluginError = import('hongbao:plugin/types@0.1.0').PluginError;
  /**
   * The award being granted.
   */
  export interface Award {
    /**
     * What the user receives, in cents.
     */
    amountCents: bigint,
    /**
     * The scene's display name from the scene YAML.
     */
    sceneName: string,
    /**
     * The activity's display name from the scene YAML.
     */
    activityName: string,
  }
  /**
   * The rendered text and the locale it is written in.
   */
  export interface BillText {
    /**
     * The locale actually used (the requested one or the plugin's fallback).
     */
    locale: string,
    /**
     * The text; the host bounds its length.
     */
    text: string,
  }
}
