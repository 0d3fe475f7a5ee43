/// <reference path="./interfaces/hongbao-plugin-host.d.ts" />
/// <reference path="./interfaces/hongbao-plugin-rate-limit.d.ts" />
/// <reference path="./interfaces/hongbao-plugin-types.d.ts" />
declare module 'hongbao:plugin/rate-limit-plugin@0.1.0' {
  export type * as HongbaoPluginHost010 from 'hongbao:plugin/host@0.1.0'; // import hongbao:plugin/host@0.1.0
  export type * as HongbaoPluginTypes010 from 'hongbao:plugin/types@0.1.0'; // import hongbao:plugin/types@0.1.0
  export * as rateLimit from 'hongbao:plugin/rate-limit@0.1.0'; // export hongbao:plugin/rate-limit@0.1.0
}
