declare module 'hongbao:plugin/types@0.1.0' {
  /**
   * Where and when the call happens. Fields that do not apply to a capability are zero or
   * empty (reconciliation runs per scene, not per user, so `act-id`, `rain-id` and `stage`
   * are 0 there).
   */
  export interface CallContext {
    /**
     * The activity (campaign), e.g. `spring-festival-2027`.
     */
    activityId: string,
    /**
     * The scene inside the activity, e.g. `eve-rain`.
     */
    sceneId: string,
    /**
     * The award type the grant is for, e.g. `cash`.
     */
    awardType: string,
    /**
     * The app backend asking.
     */
    appId: bigint,
    /**
     * The user (account id in the wallet).
     */
    actId: bigint,
    /**
     * The red-packet rain round; 0 outside a rain.
     */
    rainId: number,
    /**
     * The stage inside the rain.
     */
    stage: number,
    /**
     * The host's wall clock for this call, in milliseconds since the Unix epoch. The guest's
     * `wasi:clocks` read this same instant, so a replay sees the same time.
     */
    nowMs: bigint,
    /**
     * The seed of this call's randomness. The guest's `wasi:random` streams are derived
     * from it, so a replay draws the same numbers.
     */
    randomSeed: bigint,
    /**
     * The locale the app asked for (BCP 47, e.g. `zh-CN`, `en`), if any.
     */
    locale?: string,
    /**
     * The plugin's settings from the scene YAML (`plugins.<capability>.settings`), in key
     * order. They let one `.wasm` serve scenes that differ only in numbers or words.
     */
    settings: Array<[string, string]>,
  }
  /**
   * A refusal the plugin chose. Distinct from a trap: the host counts both, but only this one
   * carries the plugin's reason.
   */
  export type PluginError = PluginErrorUnsupported | PluginErrorInvalidInput | PluginErrorHostFailed | PluginErrorOther;
  /**
   * The input is outside what this plugin handles (e.g. a locale or award type it has no
   * copy for); the message says which value.
   */
  export interface PluginErrorUnsupported {
    tag: 'unsupported',
    val: string,
  }
  /**
   * The input contradicts itself or the plugin's configuration.
   */
  export interface PluginErrorInvalidInput {
    tag: 'invalid-input',
    val: string,
  }
  /**
   * A host function the plugin needed failed; the message carries the host's error.
   */
  export interface PluginErrorHostFailed {
    tag: 'host-failed',
    val: string,
  }
  /**
   * Anything else.
   */
  export interface PluginErrorOther {
    tag: 'other',
    val: string,
  }
  /**
   * Stock left in the calling scene. `none` means the scene sets no such limit.
   */
  export interface Stock {
    /**
     * Grants the scene can still make (count limit minus grants made).
     */
    countRemaining?: bigint,
    /**
     * Cents the scene can still grant (scene budget minus cents granted), already capped
     * by what is left of the activity's budget.
     */
    budgetRemainingCents?: bigint,
  }
  /**
   * Severity of a log line.
   * # Variants
   * 
   * ## `"trace"`
   * 
   * ## `"debug"`
   * 
   * ## `"info"`
   * 
   * ## `"warn"`
   * 
   * ## `"error"`
   */
  export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error';
}
