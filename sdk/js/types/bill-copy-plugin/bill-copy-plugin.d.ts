/// <reference path="./interfaces/hongbao-plugin-bill-copy.d.ts" />
/// <reference path="./interfaces/hongbao-plugin-host.d.ts" />
/// <reference path="./interfaces/hongbao-plugin-types.d.ts" />
declare module 'hongbao:plugin/bill-copy-plugin@0.1.0' {
  export type * as HongbaoPluginHost010 from 'hongbao:plugin/host@0.1.0'; // import hongbao:plugin/host@0.1.0
  export type * as HongbaoPluginTypes010 from 'hongbao:plugin/types@0.1.0'; // import hongbao:plugin/types@0.1.0
  export * as billCopy from 'hongbao:plugin/bill-copy@0.1.0'; // export hongbao:plugin/bill-copy@0.1.0
}
